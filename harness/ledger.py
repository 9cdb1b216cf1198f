"""``ledger.json``: run id, git sha, environment fingerprint and the hash of every artifact."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness.rundir import RunDir
from suite.settings import project_root

KEY_PACKAGES = ("llama-cpp-python", "sentence-transformers", "torch", "qdrant-client", "papermill",
                "locust", "mcp", "fastapi", "suite-workbench")


def git_sha(root: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(), capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment_fingerprint() -> dict:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "")
    except OSError:
        pass
    variant = Path(sys.prefix, ".llama-build-variant")
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "packages": versions,
            "llama_build": variant.read_text().strip() if variant.exists() else None}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_ledger(run_dir: Path) -> Path:
    run = RunDir(Path(run_dir))
    artifacts = {}
    for path in sorted(run.path.rglob("*")):
        if path.is_file() and path not in (run.ledger_file, run.attestation_file) and not path.name.endswith(".tmp"):
            artifacts[str(path.relative_to(run.path))] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    ledger = {"run_id": run.run_id, "git_sha": git_sha(), "environment": environment_fingerprint(),
              "artifacts": artifacts}
    return run.write_json(run.ledger_file, ledger)
