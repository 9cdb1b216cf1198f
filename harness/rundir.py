"""The run directory ``runs/<run-id>/`` and what lives in it."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from suite.fsio import write_json
from suite.settings import project_root


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def default_runs_dir() -> Path:
    return project_root() / "runs"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_dir: Path | None = None, run_id: str | None = None) -> RunDir:
        path = Path(runs_dir or default_runs_dir()) / (run_id or new_run_id())
        for sub in ("notebooks", "results", "figures", "load", "backups"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        return cls(path.resolve())

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def results(self) -> Path:
        return self.path / "results"

    @property
    def notebooks(self) -> Path:
        return self.path / "notebooks"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def load(self) -> Path:
        return self.path / "load"

    @property
    def meta_file(self) -> Path:
        """``run.json``: run id, sequence, parameters, start and end."""
        return self.path / "run.json"

    @property
    def steps_file(self) -> Path:
        """``steps.json``: each runbook's state, written on every change."""
        return self.path / "steps.json"

    @property
    def started_services_file(self) -> Path:
        """``started_services.json``: the services this run started (torn down at its end)."""
        return self.path / "started_services.json"

    @property
    def ledger_file(self) -> Path:
        return self.path / "ledger.json"

    @property
    def attestation_file(self) -> Path:
        """``attestation.intoto.jsonl``: the signed in-toto statement over every other file (``harness.attest``)."""
        return self.path / "attestation.intoto.jsonl"

    @property
    def progress_file(self) -> Path:
        """``progress.log``: lines runbooks print for the terminal of `harness run` (load progress)."""
        return self.path / "progress.log"

    def started_services(self) -> list[str]:
        """The services this run started, in the order it started them (none: an empty list)."""
        return list((self.read_json(self.started_services_file, default=None) or {}).get("services", []))

    def record_started(self, phase: int, names: list[str], started_at: str) -> None:
        """Add services this run started (a resumed run adds to the first attempt's list)."""
        record = self.read_json(self.started_services_file, default=None) or {
            "phase": phase, "services": [], "started_at": started_at}
        record["services"] += [n for n in names if n not in record["services"]]
        self.write_json(self.started_services_file, record)

    def write_json(self, name: str | Path, data: Any) -> Path:
        """Write ``data`` as JSON crash-safe (``suite.fsio``); ``name`` is relative to the run directory."""
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)  # e.g. target/ of a run without a target file
        return write_json(path, data, default=str)

    def read_json(self, name: str | Path, default: Any = None) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            return default
