"""Container healthcheck: ``python -m suite.healthcheck NAME [--live]``.

Exit 0 when the service's ``/ready`` (``--live``: ``/health``) answers 200 within the timeout, else 1
with the reason on stderr. Compose runs it (``depends_on: condition: service_healthy`` waits for it);
it reads the settings file the containers share (``SUITE_SETTINGS_FILE``), so ports follow the
settings. Standard library only: it runs every few seconds in every container.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request

from suite import services, tls
from suite.settings import Settings


def check(url: str, timeout_s: float, context: ssl.SSLContext | None = None) -> str | None:
    """None when ``url`` answers 200, else why not (``context`` verifies an https URL)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:  # nosec B310: an http URL built from the settings
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suite.healthcheck")
    parser.add_argument("service", choices=list(services.BY_NAME))
    parser.add_argument("--live", action="store_true", help="liveness (/health) instead of readiness (/ready)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--settings-file", default=os.environ.get("SUITE_SETTINGS_FILE"))
    args = parser.parse_args(argv)
    settings = Settings.from_file(args.settings_file) if args.settings_file else Settings()
    spec = services.get(args.service)
    url = settings.url(spec.name) + (spec.health_path if args.live else spec.ready_path)
    problem = check(url, args.timeout, tls.client_context(settings) if url.startswith("https:") else None)
    if problem:
        print(f"{spec.name} not {'alive' if args.live else 'ready'}: {url}: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
