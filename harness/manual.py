"""Which run a runbook opened by hand writes into: one manual session is one run.

Run by hand (JupyterLab, nbmake, any kernel; ``run_dir`` left empty), every runbook of a session must
land in the same run directory, or ``09_report`` judges a run that holds one runbook and says NO-GO.
The run is the first of:

1. ``HARNESS_RUN_DIR`` in the kernel's environment: a run directory, or a run id under ``runs/``
   (created when missing). Named once, e.g. ``HARNESS_RUN_DIR=release-1.4 jupyter lab``;
2. ``runs/current``: a file holding a run id, written by ``harness manual start`` and removed by
   ``harness manual stop`` (which also closes the run);
3. the newest manual run that is not closed and was active (a runbook started or recorded) within
   the last ``HARNESS_MANUAL_HOURS`` hours (default 8): kernel restarts and notebooks opened one after
   another join it;
4. a new ``runs/manual-<date>-<time>``.

``harness manual show`` says which one a runbook opened now would use, and why.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.result import now_iso
from harness.rundir import RunDir, default_runs_dir

RUN_DIR_ENV = "HARNESS_RUN_DIR"
HOURS_ENV = "HARNESS_MANUAL_HOURS"
DEFAULT_HOURS = 8.0
POINTER = "current"


@dataclass(frozen=True)
class ManualRun:
    """A manual run directory and why it was chosen (``Runbook.open`` says both)."""

    path: Path
    reason: str
    new: bool = False


def window_hours(environ: dict[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    raw = env.get(HOURS_ENV, "")
    try:
        return float(raw) if raw.strip() else DEFAULT_HOURS
    except ValueError:
        raise ValueError(f"{HOURS_ENV}={raw!r} is not a number of hours") from None


def pointer_file(runs_dir: Path | None = None) -> Path:
    return Path(runs_dir or default_runs_dir()) / POINTER


def _named(name: str, root: Path) -> Path:
    """A run named by the environment or the pointer: a path, or a run id under ``root``."""
    given = Path(name).expanduser()
    if given.is_absolute() or given.parent != Path("."):
        return given.resolve()
    return (root / name).resolve()


def last_active(run: Path) -> float:
    """When a runbook last started or recorded something in ``run`` (its run.json, steps, results)."""
    files = [run / "run.json", run / "steps.json", *(run / "results").glob("*.json")]
    return max((f.stat().st_mtime for f in files if f.is_file()), default=0.0)


def open_manual_runs(root: Path) -> list[Path]:
    """Manual runs under ``root`` that were not closed, newest activity first."""
    import json

    found = []
    for meta_file in root.glob("*/run.json") if root.is_dir() else []:
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("manual") and not meta.get("closed_at"):
            found.append(meta_file.parent)
    return sorted(found, key=last_active, reverse=True)


def choose(runs_dir: Path | None = None, environ: dict[str, str] | None = None,
           now: float | None = None) -> ManualRun:
    """The run a runbook opened by hand now writes into (nothing is created here)."""
    env = os.environ if environ is None else environ
    root = Path(runs_dir or default_runs_dir())
    if env.get(RUN_DIR_ENV, "").strip():
        path = _named(env[RUN_DIR_ENV].strip(), root)
        return ManualRun(path, f"named by {RUN_DIR_ENV}", new=not path.is_dir())
    pointer = pointer_file(root)
    if pointer.is_file() and pointer.read_text().strip():
        path = _named(pointer.read_text().strip(), root)
        return ManualRun(path, f"named by {pointer}; `harness manual stop` ends it", new=not path.is_dir())
    hours = window_hours(env)
    now = time.time() if now is None else now
    for run in open_manual_runs(root):
        idle_s = now - last_active(run)
        if idle_s <= hours * 3600:
            return ManualRun(run.resolve(), f"joined the newest manual run (last active {_ago(idle_s)}; "
                                            f"runs idle over {hours:g} h are not joined, {HOURS_ENV})")
        break  # the newest one is too old: so are the others
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return ManualRun((root / f"manual-{stamp}").resolve(),
                     f"a new manual run (no open manual run active in the last {hours:g} h)", new=True)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def start(runs_dir: Path | None = None, name: str = "") -> Path:
    """A new manual run, named in ``runs/current`` so every runbook opened by hand joins it."""
    root = Path(runs_dir or default_runs_dir())
    run_id = name or time.strftime("manual-%Y%m%d-%H%M%S")
    if "/" in run_id or run_id in (".", "..", POINTER):
        raise ValueError(f"{run_id!r} is not a run id (a plain folder name under {root})")
    run = open_run(root / run_id)
    root.mkdir(parents=True, exist_ok=True)
    tmp = pointer_file(root).with_suffix(".tmp")
    tmp.write_text(run.run_id + "\n")
    os.replace(tmp, pointer_file(root))
    return run.path


def stop(runs_dir: Path | None = None) -> Path | None:
    """Close the current manual run (no later runbook joins it) and remove ``runs/current``; the run
    closed, or None when there was none."""
    root = Path(runs_dir or default_runs_dir())
    chosen = choose(root, environ={k: v for k, v in os.environ.items() if k != RUN_DIR_ENV})
    pointer_file(root).unlink(missing_ok=True)
    if chosen.new:
        return None
    return close(chosen.path)


def close(path: Path) -> Path:
    """Mark a manual run finished: no runbook opened by hand joins it any more, and the next run's
    report compares itself with it ("since last run" takes finished runs only)."""
    run = RunDir(Path(path).resolve())
    meta = run.read_json(run.meta_file, default={}) or {}
    meta["closed_at"] = meta["finished_at"] = now_iso()
    run.write_json(run.meta_file, meta)
    return run.path


def update_step(run: RunDir, notebook: str, **fields: Any) -> None:
    """Set ``fields`` on ``notebook``'s entry of a manual run's ``steps.json`` (made when missing); a
    field given as None is removed. Kernels of one session and JupyterLab's save hook may write it at
    the same moment: a file lock serialises them."""
    with open(run.path / ".steps.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            steps = run.read_json(run.steps_file, default=[])
            step = next((s for s in steps if s["notebook"] == notebook), None)
            if step is None:
                step = {"notebook": notebook}
                steps.append(step)
            for key, value in fields.items():
                if value is None:
                    step.pop(key, None)
                else:
                    step[key] = value
            run.write_json(run.steps_file, steps)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_run(path: Path) -> RunDir:
    """The run directory at ``path``, created with a manual ``run.json`` when it has none."""
    run = RunDir.create(path.parent, path.name)
    if run.read_json(run.meta_file, default=None) is None:
        from harness.sequence import default_sequence, run_meta

        run.write_json(run.meta_file, run_meta(run, default_sequence(), {}, manual=True))
    return run
