"""Run a sequence of runbooks with papermill into one run directory, and always leave a report.

A sequence file (``runbooks/sequence.yaml``) lists the runbooks in order, by file name: they sit
beside it (a path is refused: the executed copy goes to ``runs/<id>/notebooks/<file name>``). An
entry may say ``always: true`` (runs even after a failure), ``report: true`` (the step that writes
the report: always runs, and the verdict is judged by the steps before it, never by itself),
``brings_up: true`` (the step that starts services: ``harness resume`` re-runs it when they are
gone) or ``required: false`` (a runbook that may be missing without making the run NO-GO).

Lifecycle (papermill's start / step / complete callbacks, kept on disk): every step's state
(``harness.result.Status``) is written to ``steps.json`` as it changes (pending / running / pass /
fail / skip), so a run that stops half-way shows where it stopped, and ``resume_sequence`` continues
from the first runbook that did not pass, keeping what passed. After a failed step the rest are
skipped, except ``always`` ones. At the end (also after Ctrl-C): secret values swept out of the
run directory, a report if the report step did not write one, teardown of the services the run
started (unless ``keep_up``), ``ledger.json``, and the signed attestation over every file of the run
(``harness.attest``; when a signing key is configured). One run per stack at a time (``harness.lock``).
A waiver file (``harness.waivers``) is checked before anything starts and copied into the run
directory, where every runbook's gate, the verdict and the report read it.

A target file (``--target FILE``, ``harness.target``) is validated before anything starts too: every
runbook gets it as its ``target`` parameter and checks that stack instead of starting the suite's;
``run.json`` names it (``target``: name, digest, parts, what was not allowed), the file is copied to
``target/``, the secrets its parts' environment variables hold join the redactor, and no suite keys
are minted (the parts' own keys are used).

Kernels talk to papermill over IPC (unix sockets), not TCP: no port is opened, and ipykernel has no
"running over TCP without encryption" warning to print.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from jupyter_client.manager import AsyncKernelManager

from harness import keys
from harness import params as params_mod
from harness import waivers as waivers_mod
from harness.errors import ParameterError, RunbookError, SequenceError
from harness.ledger import git_sha
from harness.lock import RunLock
from harness.redact import Redactor, redact_notebook_writes, redact_parameters
from harness.result import CheckResult, Status, load_results, now_iso
from harness.rundir import RunDir, new_run_id
from suite import services
from suite.fsio import write_atomic
from suite.settings import Settings, project_root

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class Step:
    notebook: str
    always: bool = False
    report: bool = False  # this step writes the report
    brings_up: bool = False  # this step starts the services the later ones need
    required: bool = True  # missing or failed: NO-GO
    status: Status = Status.PENDING
    started_at: str | None = None
    duration_s: float = 0.0
    error: str = ""
    output: str = ""
    html: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        known = {f.name for f in fields(cls)}
        step = cls(**{k: v for k, v in data.items() if k in known})
        step.status = Status.parse(step.status)
        return step

    def reset(self) -> None:
        self.status, self.started_at, self.duration_s, self.error = Status.PENDING, None, 0.0, ""


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

    def parameter(self, name: str, raw: dict[str, Any]) -> Any:
        """The value a parameter will have in the first runbook that declares it (None if none does)."""
        for path in self.notebook_paths():
            values = params_mod.effective(path, raw)
            if name in values:
                return values[name]
        return None


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
        elif isinstance(item, dict) and isinstance(item.get("notebook"), str):
            report = bool(item.get("report"))
            step = Step(item["notebook"], always=report or bool(item.get("always")), report=report,
                        brings_up=bool(item.get("brings_up")), required=bool(item.get("required", True)))
        else:
            raise SequenceError(f"{path.name}: runbook entry {item!r} is neither a notebook file name nor "
                                f"a mapping with a 'notebook:' file name")
        if not _plain_file_name(step.notebook):
            # The runs keep each executed notebook under its file name (runs/<id>/notebooks/NAME) and the
            # parameters by file name: a path would be written over its own source, or not found.
            raise SequenceError(f"{path.name} names {step.notebook!r}, which is not a plain file name: name "
                                f"notebooks by file name (no directory part, no '..', not absolute) and put "
                                f"the sequence file beside them", notebook=step.notebook)
        if not (path.parent / step.notebook).is_file():
            raise SequenceError(f"{path.name} names {step.notebook}, which does not exist in {path.parent}",
                                notebook=step.notebook)
        steps.append(step)
    if not steps:
        raise SequenceError(f"sequence file {path} lists no runbooks (expected a 'runbooks:' list)")
    return Sequence(data.get("name", path.stem), path.resolve(), steps)


def _plain_file_name(name: str) -> bool:
    """``05_load.ipynb``: yes; ``/abs/x.ipynb``, ``sub/x.ipynb``, ``../x.ipynb``, ``..``, ``""``: no."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def run_meta(run: RunDir, sequence: Path, raw_params: dict[str, Any], *, manual: bool = False,
             secret: set[str] | frozenset[str] = frozenset(), keep_up: bool = False,
             profile: Any = None) -> dict[str, Any]:
    """``run.json`` of a new run: what it is meant to run (the sequence's runbooks), with what."""
    try:
        seq = load_sequence(sequence)
        name, path, planned = seq.name, str(seq.path), [
            {"notebook": s.notebook, "required": s.required, "report": s.report} for s in seq.steps]
    except SequenceError:
        name, path, planned = Path(sequence).stem, str(sequence), []
    return {"run_id": run.run_id, "sequence": name, "sequence_file": path, "runbooks": planned,
            "parameters": redact_parameters(raw_params, secret), "secret_parameters": sorted(secret),
            "profile": profile, "settings_profile": _settings(None).profile, "manual": manual,
            "keep_up": keep_up, "git_sha": git_sha(), "started_at": now_iso()}


@dataclass
class RunOutcome:
    run: RunDir
    steps: list[Step]
    results: list[CheckResult]

    @property
    def report(self) -> Path:
        return self.run.report


def run_sequence(sequence: Path | None = None, raw_params: dict[str, Any] | None = None,
                 runs_dir: Path | None = None, keep_up: bool = False, progress: Progress | None = None,
                 run_id: str | None = None, settings: Settings | None = None,
                 waivers: Path | None = None, target: Path | None = None) -> RunOutcome:
    """Validate parameters, the waiver file and the target file and take the stack's run lock
    (refusing before anything starts), then execute each runbook; see the module docstring for the
    lifecycle."""
    say = progress or (lambda m: log.info("%s", m))
    raw = dict(raw_params or {})
    if target is not None:
        raw["target"] = str(Path(target).expanduser().resolve())
    tgt = _target_of(raw)  # refuses an invalid target file before anything starts
    seq = load_sequence(sequence)
    typed = params_mod.resolve(seq.notebook_paths(), raw)  # refuses before any kernel
    secret = params_mod.secret_names(seq.notebook_paths())
    accepted = waivers_mod.load(waivers) if waivers else []  # refuses a whole-stage or endless waiver
    run_id = run_id or new_run_id()
    with _locked(settings, run_id, say):
        run = RunDir.create(runs_dir, run_id)
        meta = run_meta(run, seq.path, raw, secret=secret, keep_up=keep_up,
                        profile=seq.parameter("profile", raw))
        if tgt is not None:
            meta["target"] = _install_target(tgt, run, say)
        else:  # our own suite: the target generated from the settings, named the same way in the report
            from harness.target import suite_target

            meta["target"] = suite_target(_settings(settings), int(seq.parameter("phase", raw) or 3)).summary()
        if waivers:
            meta["waivers"] = waivers_mod.install(waivers, run.path)
            _announce_waivers(accepted, waivers_mod.run_date(meta), say)
        run.write_json(run.meta_file, meta)
        say(f"run {run.run_id}: {len(seq.steps)} runbooks from {seq.path.name} -> {run.path}")
        return _drive(seq, run, typed, _redactor(raw, secret), meta, say, keep_up=keep_up, settings=settings)


def _target_of(raw: dict[str, Any]) -> Any:
    """The target file a run's ``target`` parameter names, validated (None: the suite's own stack)."""
    if not raw.get("target"):
        return None
    from harness.target import load

    return load(raw["target"])


def _install_target(tgt: Any, run: RunDir, say: Progress) -> dict[str, Any]:
    """Copy the target file into the run (``target/``) and say what the run may not do."""
    folder = run.path / "target"
    folder.mkdir(exist_ok=True)
    shutil.copy2(tgt.source, folder / Path(tgt.source).name)
    summary = tgt.summary()
    summary["copy"] = f"target/{Path(tgt.source).name}"
    say(f"target {tgt.name} ({tgt.digest[:19]}…): " + ", ".join(f"{p.name} {p.base_url}" for p in tgt.parts()))
    for line in summary["not_allowed"]:
        say(f"  not allowed: {line}")
    return summary


def resume_sequence(run_dir: Path, raw_params: dict[str, Any] | None = None, keep_up: bool = False,
                    progress: Progress | None = None, settings: Settings | None = None) -> RunOutcome:
    """Continue a run from its first runbook that did not pass, with the run's own parameters.

    Runbooks that passed keep their results and are not run again. The one exception is the
    ``brings_up`` step when the services of the run's phase are no longer all up and ready (``suite
    status``; e.g. the interrupted run tore them down): it runs again first, to start them, and the
    run continues where it stopped. Secret parameters were never stored: give them again in
    ``raw_params`` (nothing else may be given).
    """
    say = progress or (lambda m: log.info("%s", m))
    run = RunDir(Path(run_dir).resolve())
    meta = run.read_json(run.meta_file, default=None)
    if not meta or meta.get("manual"):
        raise SequenceError(f"{run.path} is not a run directory of `harness run` (no run.json, or a manual run)")
    from harness import attest

    if changed := attest.tampered(run.path):
        raise SequenceError(f"{run.path} changed since it was signed ({'; '.join(changed[:5])}): resuming would "
                            f"sign those changes; start a new run")
    seq = load_sequence(Path(meta["sequence_file"]))
    saved = {s["notebook"]: Step.from_dict(s) for s in run.read_json(run.steps_file, default=[])}
    seq.steps = [saved.get(s.notebook, s) for s in seq.steps]
    secret = set(meta.get("secret_parameters", []))
    raw = _resume_parameters(meta, dict(raw_params or {}), secret)
    typed = params_mod.resolve(seq.notebook_paths(), raw)
    start = next((i for i, s in enumerate(seq.steps) if not s.report and s.status is not Status.PASS),
                 len(seq.steps))
    with _locked(settings, run.run_id, say):
        again = [i for i, step in enumerate(seq.steps[:start])
                 if step.brings_up and not _stack_ready(seq, step, raw, settings, say)]
        todo = [*again, *range(start, len(seq.steps))]
        for i in todo:
            seq.steps[i].reset()
            (run.results / f"{Path(seq.steps[i].notebook).stem}.json").unlink(missing_ok=True)
        first = seq.steps[start].notebook if start < len(seq.steps) else "the report"
        meta.setdefault("resumed", []).append({"at": now_iso(), "from": first,
                                               "again": [seq.steps[i].notebook for i in again]})
        meta.pop("finished_at", None)
        run.write_json(run.meta_file, meta)
        kept = ", ".join(s.notebook for i, s in enumerate(seq.steps) if i not in todo) or "nothing"
        say(f"resuming run {run.run_id} from {first}; keeping {kept}")
        return _drive(seq, run, typed, _redactor(raw, secret), meta, say, todo=todo, keep_up=keep_up,
                      settings=settings)


def _announce_waivers(accepted: list[waivers_mod.Waiver], today: Any, say: Progress) -> None:
    for w in accepted:
        state = (f"EXPIRED on {w.expires.isoformat()}: a failure of this run" if w.expired(today)
                 else f"in force until {w.expires.isoformat()}")
        say(f"{w.label}: {state}")


def _settings(settings: Settings | None) -> Settings:
    try:
        return settings or Settings()
    except ValueError as exc:  # pydantic's ValidationError: refuse before anything starts
        raise RunbookError(f"the suite settings are not valid: {exc}") from None


class _locked:
    """The stack's run lock for the duration of a run; says when it recovered a stale one."""

    def __init__(self, settings: Settings | None, run_id: str, say: Progress) -> None:
        self.lock = RunLock(_settings(settings), run_id)
        self.say = say

    def __enter__(self) -> RunLock:
        self.lock.acquire()
        for stale in self.lock.recovered:
            self.say(f"recovered a stale run lock ({stale})")
        return self.lock

    def __exit__(self, *exc) -> None:
        self.lock.release()


def _resume_parameters(meta: dict, given: dict[str, Any], secret: set[str]) -> dict[str, Any]:
    not_secret = sorted(set(given) - secret)
    if not_secret:
        raise ParameterError(f"a resumed run keeps its parameters; only secret ones may be given again "
                             f"(not {', '.join(not_secret)})", parameter=not_secret[0])
    missing = sorted(n for n in secret if n in meta.get("parameters", {}) and n not in given)
    if missing:
        raise ParameterError(f"parameter(s) {', '.join(missing)} of this run are secret and were not stored: "
                             f"give them again with -p NAME=VALUE", parameter=missing[0])
    stored = {k: v for k, v in meta.get("parameters", {}).items() if k not in secret}
    return {**stored, **given}


def _redactor(raw: dict[str, Any], secret: set[str]) -> Redactor:
    """The run's secret parameters, and the secrets its target's parts are called with."""
    redactor = Redactor(str(v) for k, v in raw.items() if k in secret)
    tgt = _target_of(raw)
    if tgt is not None:
        from harness.target import secrets

        redactor.add(secrets(tgt))
    return redactor


def _stack_ready(seq: Sequence, step: Step, raw: dict[str, Any], settings: Settings | None, say: Progress) -> bool:
    """Are the services the ``brings_up`` step started for this run still all up and ready?"""
    from harness import stack

    phase = params_mod.effective(seq.folder / step.notebook, raw).get("phase") or 1
    wanted = [s.name for s in services.for_phase(int(phase))]
    try:
        up = {name: s for name, s in stack.running(settings).items() if s.get("ready")}
    except (OSError, RuntimeError) as exc:
        say(f"cannot ask `suite status` ({exc}); re-running {step.notebook}")
        return False
    missing = [n for n in wanted if n not in up]
    if missing:
        say(f"services of phase {phase} not up ({', '.join(missing)}): re-running {step.notebook}")
    return not missing


def _drive(seq: Sequence, run: RunDir, typed: dict[str, dict[str, Any]], redactor: Redactor, meta: dict,
           say: Progress, todo: list[int] | None = None, keep_up: bool = False,
           settings: Settings | None = None) -> RunOutcome:
    """Execute the steps numbered ``todo`` (default: all) into ``run``, the others having passed,
    then close the run. ``settings`` (the caller's, else the environment's, read once) reach the
    key minting, the revocation and the teardown."""
    redact_notebook_writes(run.notebooks, redactor)
    resolved = _settings(settings)

    def save_steps() -> None:
        run.write_json(run.steps_file, [asdict(s) for s in seq.steps])

    failed, report_written = False, False
    save_steps()
    if meta.get("target") and not meta["target"].get("ours"):
        key_state: dict[str, str] = {}
        meta["run_keys"] = {"skipped": "a target file: each part is called with the key its auth names"}
    else:
        key_state = _mint_run_keys(resolved, run.run_id, meta, say, redactor)
    tail = _ProgressTail(run.progress_file, say, redactor)
    tail.start()
    try:
        for i, step in enumerate(seq.steps, 1):
            if todo is not None and i - 1 not in todo:
                continue
            if failed and not step.always:
                step.status, step.error = Status.SKIP, "not run: an earlier runbook failed"
                save_steps()
                say(f"[{i}/{len(seq.steps)}] {step.notebook}: skipped (an earlier runbook failed)")
                continue
            say(f"[{i}/{len(seq.steps)}] {step.notebook}: running …")
            _execute(seq, step, run, typed[step.notebook], save_steps, redactor)
            tail.flush()
            say(f"[{i}/{len(seq.steps)}] {step.notebook}: {step.status.label.lower()} in {step.duration_s:.1f}s"
                + (f" — {step.error}" if step.error else ""))
            failed = failed or step.status is Status.FAIL
            report_written = report_written or (step.report and step.status is Status.PASS)
    finally:
        tail.stop()
        redactor.tree(run.path)
        if not report_written:  # the report runbook did not (re)write it: write it here
            from harness import report

            report.write_report(run.path)
        if not keep_up:
            _teardown(run, settings, say)
        _revoke_run_keys(resolved, key_state, meta, say)
        meta["finished_at"] = now_iso()
        run.write_json(run.meta_file, meta)
        from harness import attest, ledger

        ledger.write_ledger(run.path)
        try:
            say(attest.close_run(run.path))
        except Exception as exc:  # the run's files are all written: an unsigned run says why, never hides
            say(f"not signed: {type(exc).__name__}: {exc}")
    return RunOutcome(run, seq.steps, collect_results(run))


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels listen on unix sockets in a private temp folder, not on TCP,
    and are shut down without an interrupt when they are idle.

    jupyter_client's shutdown sends SIGINT to the kernel's whole process group *before* it asks the
    kernel to shut down. A kernel that is still finishing a message then logs ``[IPKernelApp] ERROR |
    KeyboardInterrupt caught in kernel.`` (seen during 02_health and 03_smoke of a GO run), and the
    kernel's children (a Locust or ``suite`` process) get the SIGINT as well. Here the kernel is asked
    first; ipykernel then stops its children and exits. Only a kernel still running code after
    ``shutdown_wait_time`` gets jupyter_client's interrupt, request, SIGTERM and SIGKILL.
    """

    stderr_log: str | None = None  # set per step (``for_step``): the kernel's stderr goes there

    @classmethod
    def for_step(cls, log: Path) -> type[IPCKernelManager]:
        """This manager with the kernel's stderr appended to ``log`` (the run's ``logs/``): warnings and
        what ipykernel prints while it shuts down stay as evidence, off the console of a passing run."""
        return type(f"{cls.__name__}ForStep", (cls,), {"stderr_log": str(log)})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ipc_dir = tempfile.mkdtemp(prefix="harness-kernel-")
        self.transport = "ipc"
        self.ip = os.path.join(self._ipc_dir, "k")

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        if now or restart or not self.owns_kernel or not self.has_kernel:
            await super()._async_shutdown_kernel(now=now, restart=restart)
            return
        self.shutting_down = True
        self.stop_restarter()
        await self._async_request_shutdown()
        try:
            await asyncio.wait_for(self._async_wait(pollinterval=0.05), timeout=self.shutdown_wait_time)
        except TimeoutError:  # still busy: interrupt it, ask again, then terminate and kill
            log.debug("kernel still running %.0f s after the shutdown request; interrupting it",
                      self.shutdown_wait_time)
            await super()._async_shutdown_kernel()
            return
        if self.has_kernel and self.provisioner is not None:
            await self.provisioner.wait()
        await self._async_cleanup_resources()

    shutdown_kernel = _async_shutdown_kernel  # AsyncKernelManager binds the base class's coroutine

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if not self.stderr_log or "stderr" in kw:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        Path(self.stderr_log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_log, "ab") as err:  # the kernel keeps its own copy of the descriptor
            await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": err})

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)


def _execute(seq: Sequence, step: Step, run: RunDir, parameters: dict[str, Any],
             save_steps: Callable[[], None], redactor: Redactor) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = seq.folder / step.notebook
    output = run.notebooks / step.notebook
    step.status, step.started_at, step.error = Status.RUNNING, now_iso(), ""
    step.output = str(output.relative_to(run.path))
    save_steps()
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source), str(output),
            parameters={**parameters, "run_dir": str(run.path), "run_id": run.run_id},
            kernel_name="python3", cwd=str(seq.folder), progress_bar=False, log_output=False,
            report_mode=False,
            kernel_manager_class=IPCKernelManager.for_step(run.path / "logs" / f"kernel-{Path(step.notebook).stem}.log"),
        )
        step.status = Status.PASS
    except PapermillExecutionError as exc:
        step.status = Status.FAIL
        step.error = redactor.text(f"cell {exc.exec_count}: {exc.ename}: {str(exc.evalue)[:500]}")
    except KeyboardInterrupt:
        step.status, step.error = Status.FAIL, "interrupted"
        raise
    except Exception as exc:  # kernel died, notebook unreadable: still a failed step, never a lost run
        step.status = Status.FAIL
        step.error = redactor.text(f"{type(exc).__name__}: {str(exc)[:500]}")
    finally:
        step.duration_s = round(time.perf_counter() - t0, 2)
        if output.exists():
            step.html = str(export_html(output).relative_to(run.path))
        redactor.tree(run.path)
        save_steps()


NO_SCRIPT = "data:text/javascript,"  # instead of require.js and MathJax from a CDN: the HTML stays offline


def export_html(notebook: Path) -> Path:
    """A code-free HTML rendering of an executed notebook, for reviewers; it loads nothing from the
    network (our runbooks use neither widgets nor math)."""
    import nbformat
    from nbconvert import HTMLExporter

    quiet = logging.getLogger("harness.html_export")
    quiet.setLevel(logging.ERROR)  # nbconvert's note that matplotlib's PNGs lack alt text (it adds one)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                            require_js_url=NO_SCRIPT, mathjax_url=NO_SCRIPT, log=quiet)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    return write_atomic(notebook.with_suffix(".html"), body)


class _ProgressTail:
    """Echo the lines runbooks append to ``progress.log`` (``Runbook.say``) while they run."""

    def __init__(self, path: Path, say: Progress, redactor: Redactor) -> None:
        self.path, self.say, self.redactor = path, say, redactor
        self.offset = path.stat().st_size if path.exists() else 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="progress-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self.offset)
                    chunk = fh.read()
            except FileNotFoundError:
                return
            complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits
            self.offset += len(complete)
            for line in complete.decode("utf-8", errors="replace").splitlines():
                self.say("      " + self.redactor.text(line))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


def _teardown(run: RunDir, settings: Settings | None, say: Progress) -> None:
    started = run.read_json(run.started_services_file, default=None)
    if not started:
        return
    from harness.bringup import tear_down

    names = started.get("services", [])
    say(f"tearing down services this run started: {', '.join(names)} (use --keep-up to leave them)")
    started["teardown_exit"] = tear_down(names, settings)
    run.write_json(run.started_services_file, started)


def _mint_run_keys(settings: Settings, run_id: str, meta: dict[str, Any], say: Progress,
                   redactor: Redactor) -> dict[str, str]:
    """Keys of each role owned by this run (harness.keys), given to every kernel through the
    environment (and to the redactor: a runbook that prints one leaves no key under runs/); the
    environment entry to restore when the run ends."""
    try:
        minted = keys.mint_run_keys(settings, run_id)
    except (RuntimeError, OSError, ValueError) as exc:  # the runbooks then fail on their own, visibly
        meta["run_keys"] = {"error": str(exc)[:300]}
        say(f"could not mint this run's API keys: {exc}")
        return {}
    redactor.add(minted.for_role(role) for role in keys.ROLES)
    previous = os.environ.get(keys.ENV)
    os.environ.update(minted.to_env())
    meta["run_keys"] = {"run_id": run_id, "roles": list(keys.ROLES),
                        "ttl_s": settings.auth.run_key_ttl_s}
    say(f"minted this run's API keys ({', '.join(keys.ROLES)}; revoked when the run ends)")
    return {"run_id": run_id, "previous": previous or ""}


def _revoke_run_keys(settings: Settings, state: dict[str, str], meta: dict[str, Any], say: Progress) -> None:
    """Revoke every key the run minted, pass or fail, and restore the environment."""
    if not state:
        return
    if state["previous"]:
        os.environ[keys.ENV] = state["previous"]
    else:
        os.environ.pop(keys.ENV, None)
    try:
        message = keys.revoke_run(settings, state["run_id"])
    except (RuntimeError, OSError) as exc:  # they still expire on their own (auth.run_key_ttl_s)
        message = f"revocation failed: {exc}"
    meta.setdefault("run_keys", {})["revoked"] = message
    say(message)


def collect_results(run: RunDir) -> list[CheckResult]:
    out: list[CheckResult] = []
    for path in sorted(run.results.glob("*.json")):
        out.extend(load_results(path))
    return out
