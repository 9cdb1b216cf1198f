"""Container healthcheck: ``python -m suite.healthcheck NAME [--live]``.

Exit 0 when the service's ``/ready`` (``--live``: ``/health``) answers 200 within the timeout, else 1
with the reason on stderr. Compose runs it (``depends_on: condition: service_healthy`` waits for it);
it reads the settings file the containers share (``SUITE_SETTINGS_FILE``), so ports follow the
settings. Standard library only (the settings file is read as JSON: importing the settings model costs
0.7 s of CPU): it runs every few seconds in every container.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from suite import services


def check(url: str, timeout_s: float) -> str | None:
    """None when ``url`` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # nosec B310: an http URL built from the settings
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def base_url(name: str, settings_file: str | None) -> str:
    """``Settings.url(name)`` from a settings dump (``Settings.dump_file``), or from the defaults."""
    if not settings_file:
        from suite.settings import Settings

        return Settings().url(name)
    with open(settings_file, encoding="utf-8") as fh:
        data = json.load(fh)
    port = int(data["ports"][name.replace("-", "_")]) + int(data.get("port_offset", 0))
    return f"http://{data.get('host', '127.0.0.1')}:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.healthcheck")
    parser.add_argument("service", choices=list(services.BY_NAME))
    parser.add_argument("--live", action="store_true", help="liveness (/health) instead of readiness (/ready)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--settings-file", default=os.environ.get("SUITE_SETTINGS_FILE"))
    args = parser.parse_args(argv)
    spec = services.get(args.service)
    try:
        url = base_url(spec.name, args.settings_file) + (spec.health_path if args.live else spec.ready_path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{spec.name}: settings file {args.settings_file} unreadable: {exc!r}", file=sys.stderr)
        return 1
    problem = check(url, args.timeout)
    if problem:
        print(f"{spec.name} not {'alive' if args.live else 'ready'}: {url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
