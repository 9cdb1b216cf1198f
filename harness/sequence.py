"""Run a sequence of runbooks with papermill into one run directory, and always leave a report.

A sequence file (``runbooks/sequence.yaml``) lists the runbooks in order; an entry may be marked
``always`` (runs even after a failure) or ``report: true`` (the step that writes the report: always
runs, and is judged by what ran before it, never by itself).

Lifecycle: every step's state (``harness.result.Status``) is written to ``steps.json`` as it
changes (pending / running / pass / fail / skip), so a run that stops half-way still shows where it
stopped. After a failed step the remaining steps are skipped, except ``always`` ones. Services the
run started are torn down at the end unless ``keep_up``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import keys
from harness import params as params_mod
from harness.errors import SequenceError
from harness.result import CheckResult, Status, load_results, now_iso
from harness.rundir import RunDir
from suite.settings import Settings, project_root

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class Step:
    notebook: str
    always: bool = False
    report: bool = False  # this step writes the report
    status: Status = Status.PENDING
    started_at: str | None = None
    duration_s: float = 0.0
    error: str = ""
    output: str = ""
    html: str = ""


@dataclass
class Sequence:
    name: str
    path: Path
    steps: list[Step] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def notebook_paths(self) -> list[Path]:
        return [self.folder / s.notebook for s in self.steps]


def default_sequence() -> Path:
    return project_root() / "runbooks" / "sequence.yaml"


def load_sequence(path: Path | None = None) -> Sequence:
    path = Path(path or default_sequence())
    if not path.is_file():
        raise SequenceError(f"sequence file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SequenceError(f"sequence file {path} is not valid YAML: {exc}") from None
    steps = []
    for item in data.get("runbooks", []):
        if isinstance(item, str):
            step = Step(item)
        else:
            report = bool(item.get("report"))
            step = Step(item["notebook"], always=report or bool(item.get("always")), report=report)
        if not (path.parent / step.notebook).is_file():
            raise SequenceError(f"{path.name} names {step.notebook}, which does not exist in {path.parent}",
                                notebook=step.notebook)
        steps.append(step)
    if not steps:
        raise SequenceError(f"sequence file {path} lists no runbooks (expected a 'runbooks:' list)")
    return Sequence(data.get("name", path.stem), path.resolve(), steps)


@dataclass
class RunOutcome:
    run: RunDir
    steps: list[Step]
    results: list[CheckResult]

    @property
    def report(self) -> Path:
        return self.run.report

    @property
    def ok(self) -> bool:
        return all(s.status is Status.PASS for s in self.steps) and \
            not any(r.status is Status.FAIL for r in self.results)


def run_sequence(sequence: Path | None = None, raw_params: dict[str, Any] | None = None,
                 runs_dir: Path | None = None, keep_up: bool = False,
                 progress: Progress | None = None, run_id: str | None = None) -> RunOutcome:
    """Validate parameters, then execute each runbook; see the module docstring for the lifecycle."""
    say = progress or (lambda m: log.info("%s", m))
    seq = load_sequence(sequence)
    typed = params_mod.resolve(seq.notebook_paths(), raw_params or {})  # refuses before any kernel
    run = RunDir.create(runs_dir, run_id)
    meta = {"run_id": run.run_id, "sequence": seq.name, "sequence_file": str(seq.path),
            "parameters": {k: v for k, v in (raw_params or {}).items()}, "started_at": now_iso(),
            "keep_up": keep_up}
    run.write_json(run.meta_file, meta)
    say(f"run {run.run_id}: {len(seq.steps)} runbooks from {seq.path.name} -> {run.path}")

    def save_steps() -> None:
        run.write_json(run.steps_file, [asdict(s) for s in seq.steps])

    failed = False
    save_steps()
    key_state = _mint_run_keys(run.run_id, meta, say)
    try:
        for i, step in enumerate(seq.steps, 1):
            if failed and not step.always:
                step.status = Status.SKIP
                step.error = "not run: an earlier runbook failed"
                save_steps()
                say(f"[{i}/{len(seq.steps)}] {step.notebook}: skipped (an earlier runbook failed)")
                continue
            say(f"[{i}/{len(seq.steps)}] {step.notebook}: running …")
            _execute(seq, step, run, typed[step.notebook], save_steps)
            say(f"[{i}/{len(seq.steps)}] {step.notebook}: {step.status} in {step.duration_s:.1f}s"
                + (f" — {step.error}" if step.error else ""))
            failed = failed or step.status is Status.FAIL
    finally:
        if not run.report.exists():  # the report runbook did not write it: write it here
            from harness import report

            report.write_report(run.path)
        if not keep_up:
            _teardown(run, say)
        _revoke_run_keys(key_state, meta, say)
        meta["finished_at"] = now_iso()
        run.write_json(run.meta_file, meta)
        from harness import ledger

        ledger.write_ledger(run.path)
    return RunOutcome(run, seq.steps, collect_results(run))


def _execute(seq: Sequence, step: Step, run: RunDir, parameters: dict[str, Any],
             save_steps: Callable[[], None]) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = seq.folder / step.notebook
    output = run.notebooks / step.notebook
    step.status, step.started_at = Status.RUNNING, now_iso()
    step.output = str(output.relative_to(run.path))
    save_steps()
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source), str(output),
            parameters={**parameters, "run_dir": str(run.path), "run_id": run.run_id},
            kernel_name="python3", cwd=str(seq.folder), progress_bar=False, log_output=False,
            report_mode=False,
        )
        step.status = Status.PASS
    except PapermillExecutionError as exc:
        step.status = Status.FAIL
        step.error = f"cell {exc.exec_count}: {exc.ename}: {str(exc.evalue)[:500]}"
    except Exception as exc:  # kernel died, notebook unreadable: still a failed step, never a lost run
        step.status = Status.FAIL
        step.error = f"{type(exc).__name__}: {str(exc)[:500]}"
    finally:
        step.duration_s = round(time.perf_counter() - t0, 2)
        if output.exists():
            step.html = str(_export_html(output).relative_to(run.path))
        save_steps()


def _export_html(notebook: Path) -> Path:
    """A code-free HTML rendering of an executed notebook, for reviewers."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def _teardown(run: RunDir, say: Progress) -> None:
    started = run.read_json(run.started_services_file, default=None)
    if not started:
        return
    from harness.bringup import tear_down

    names = started.get("services", [])
    say(f"tearing down services this run started: {', '.join(names)} (use --keep-up to leave them)")
    started["teardown_exit"] = tear_down(names)
    run.write_json(run.started_services_file, started)


def _mint_run_keys(run_id: str, meta: dict[str, Any], say: Progress) -> dict[str, str]:
    """Keys of each role owned by this run (harness.keys), given to every kernel through the
    environment; the environment entry to restore when the run ends."""
    try:
        minted = keys.mint_run_keys(Settings(), run_id)
    except (RuntimeError, OSError, ValueError) as exc:  # the runbooks then fail on their own, visibly
        meta["run_keys"] = {"error": str(exc)[:300]}
        say(f"could not mint this run's API keys: {exc}")
        return {}
    previous = os.environ.get(keys.ENV)
    os.environ.update(minted.to_env())
    meta["run_keys"] = {"run_id": run_id, "roles": list(keys.ROLES),
                        "ttl_s": Settings().auth.run_key_ttl_s}
    say(f"minted this run's API keys ({', '.join(keys.ROLES)}; revoked when the run ends)")
    return {"run_id": run_id, "previous": previous or ""}


def _revoke_run_keys(state: dict[str, str], meta: dict[str, Any], say: Progress) -> None:
    """Revoke every key the run minted, pass or fail, and restore the environment."""
    if not state:
        return
    if state["previous"]:
        os.environ[keys.ENV] = state["previous"]
    else:
        os.environ.pop(keys.ENV, None)
    try:
        message = keys.revoke_run(Settings(), state["run_id"])
    except (RuntimeError, OSError) as exc:  # they still expire on their own (auth.run_key_ttl_s)
        message = f"revocation failed: {exc}"
    meta.setdefault("run_keys", {})["revoked"] = message
    say(message)


def collect_results(run: RunDir) -> list[CheckResult]:
    out: list[CheckResult] = []
    for path in sorted(run.results.glob("*.json")):
        out.extend(load_results(path))
    return out
