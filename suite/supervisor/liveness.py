"""Liveness by ``/health``, shared by both watches (supervisord's and the docker backend's).

A service is declared hung after ``liveness_failures`` failed probes in a row; one that has not answered
once since it (re)started is left alone during ``liveness_start_period_s`` (a model still loading).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from suite.settings import Settings, SupervisionSettings


def watch_main_settings(prog: str, argv: list[str] | None) -> Settings:
    """A watch's command line (``--settings-file``), its logging (stderr, httpx quiet: one line per
    probe otherwise), and the settings it watches with."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--settings-file", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return Settings.from_file(Path(args.settings_file))


class Liveness:
    def __init__(self, supervision: SupervisionSettings) -> None:
        self.sup = supervision
        self.failures: dict[str, int] = {}
        self.answered: dict[str, object] = {}  # the instance (pid, container) that has answered once

    def forget(self, name: str) -> None:
        self.failures.pop(name, None)

    def observe(self, name: str, instance: object, started_at: float, ok: bool) -> int:
        """Record one probe of ``name`` (``instance``: its pid or container id); the count of failures
        in a row when that reaches the limit (kill it now), else 0."""
        if ok:
            self.failures[name], self.answered[name] = 0, instance
            return 0
        if self.answered.get(name) != instance and time.time() - started_at < self.sup.liveness_start_period_s:
            return 0  # still starting: its first answer has not come yet
        self.failures[name] = self.failures.get(name, 0) + 1
        if self.failures[name] < self.sup.liveness_failures:
            return 0
        count, self.failures[name] = self.failures[name], 0
        return count
