"""Container healthcheck: ``python -m suite.healthcheck NAME [--live]``.

Exit 0 when the service's ``/ready`` (``--live``: ``/health``) answers 200 within the timeout, else 1
with the reason on stderr. Compose runs it (``depends_on: condition: service_healthy`` waits for it);
it reads the settings file the containers share (``SUITE_SETTINGS_FILE``), so ports follow the
settings (https verified against the stack's CA when ``tls.enabled``). Standard library only (the settings file is read as JSON: importing the settings model costs
0.7 s of CPU): it runs every few seconds in every container.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

from suite import services

WILDCARDS = ("0.0.0.0", "::", "")  # suite.settings.WILDCARDS (held equal by tests/test_tls.py), not imported


def check(url: str, timeout_s: float, context: ssl.SSLContext | None = None) -> str | None:
    """None when ``url`` answers 200, else why not (``context`` verifies an https URL)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:  # nosec B310: an http URL built from the settings
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def target(name: str, settings_file: str | None) -> tuple[str, str | None]:
    """``Settings.url(name)`` and ``Settings.ca_file`` from a settings dump (``Settings.dump_file``), or
    from the defaults: its ``urls`` entry, else this host (loopback for a wildcard bind), https when
    ``tls.enabled``."""
    if not settings_file:
        from suite.settings import Settings

        settings = Settings()
        return settings.url(name), str(settings.ca_file)
    with open(settings_file, encoding="utf-8") as fh:
        data = json.load(fh)
    tls = data.get("tls") or {}
    ca = tls.get("ca_file") or os.path.join(tls.get("dir") or os.path.join(data["data_dir"], "tls"), "ca.crt")
    if name in (data.get("urls") or {}):
        return data["urls"][name].rstrip("/"), ca
    port = int(data["ports"][name.replace("-", "_")]) + int(data.get("port_offset", 0))
    host = data.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls.get('enabled') else 'http'}://{host}:{port}", ca


def client_context(ca: str) -> ssl.SSLContext:
    """``suite.tls.trust(ca)`` without its import: the stack's CA when the file exists, else the system's."""
    ctx = ssl.create_default_context(cafile=ca if os.path.exists(ca) else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.healthcheck")
    parser.add_argument("service", choices=list(services.BY_NAME))
    parser.add_argument("--live", action="store_true", help="liveness (/health) instead of readiness (/ready)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--settings-file", default=os.environ.get("SUITE_SETTINGS_FILE"))
    args = parser.parse_args(argv)
    spec = services.get(args.service)
    try:
        base, ca = target(spec.name, args.settings_file)
        url = base + (spec.health_path if args.live else spec.ready_path)
        context = client_context(ca) if url.startswith("https:") else None
    except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
        print(f"{spec.name}: settings file {args.settings_file} unreadable: {exc!r}", file=sys.stderr)
        return 1
    problem = check(url, args.timeout, context)
    if problem:
        print(f"{spec.name} not {'alive' if args.live else 'ready'}: {url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
