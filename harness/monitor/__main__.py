"""``python -m harness.monitor render --out DIR``: write the monitoring configuration for compose.

The default ``--out`` is ``deploy/monitoring`` (the files compose mounts); run it after changing
ports, the port offset or ``inference.queue_limit`` in the settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.monitor.config import write_compose_configs
from suite.settings import Settings, project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.monitor")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write prometheus.yml, alertmanager.yml and the rules")
    render.add_argument("--out", type=Path, default=project_root() / "deploy" / "monitoring")
    args = parser.parse_args(argv)
    written = write_compose_configs(Settings(), args.out)
    for path in written.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
