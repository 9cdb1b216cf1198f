"""``pytest --nbmake runbooks notebooks``: the notebooks tested the way a team that adopts them tests its own.

nbmake runs each notebook top to bottom in a fresh kernel, as a person does in JupyterLab: no papermill,
no injected parameters, ``run_dir`` empty. What the notebooks need reaches the kernels through their
environment, set here before the first notebook runs (``NotebookSession``):

- one real stack of all three phases on free ports, in a temporary data dir, for every notebook (brought
  up once, stopped after the last notebook), and its ``SUITE_*`` environment;
- ``HARNESS_RUN_DIR``: one manual run for the whole session, ``runs/nbmake-<time>/`` (kept: 00 → 09 write
  into it, ``09_report`` judges it, CI keeps it as an artifact; closed at the end, so the next session's
  report compares itself with it);
- the session's API keys in ``SUITE_RUN_KEYS``, minted once and revoked at the end, as ``harness run``
  does (kernels then mint none of their own);
- ``HARNESS_PARAM_PROFILE=quick``: the development profile of the load, security, fault-drill and
  monitoring runbooks, to keep CI short, and ``HARNESS_PARAM_SCENARIOS=code,chat,embedding`` (RAG and
  tools under load are ``tests/test_pipeline.py``'s); a ``HARNESS_PARAM_*`` already in the environment wins.

Runbooks run first, in file order, then the exploration notebooks (the latency explorer reads the load
runbook's samples). Nothing here acts on a test that is not a notebook; without ``--nbmake`` there is none.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
# quick profile; of its load scenarios the hand run keeps code, chat (the latency explorer's streamed rows)
# and embedding: RAG and tools under load (about 4.5 of the 6.7 minutes) are tests/test_pipeline.py's, whose
# `harness run` judges every scenario the same way
PARAMETERS = {"HARNESS_PARAM_PROFILE": "quick", "HARNESS_PARAM_SCENARIOS": "code,chat,embedding"}
SESSION = pytest.StashKey["NotebookSession"]()
RUN = pytest.StashKey[Path]()


def _is_notebook(item: pytest.Item) -> bool:
    return bool(getattr(item, "nbmake", False))


class NotebookSession:
    """The stack, the manual run and the environment every notebook of this pytest session shares."""

    def __init__(self) -> None:
        self._exit = ExitStack()
        self.run_dir: Path | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        from harness import keys
        from harness.manual import RUN_DIR_ENV
        from suite.models import install_gemma
        from suite.settings import default_data_dir
        from suite.testing import running_stack, stack_env, stack_settings

        data = Path(tempfile.mkdtemp(prefix="nbmake-stack-"))
        self._exit.callback(shutil.rmtree, data, True)
        settings = stack_settings(data, install_gemma(default_data_dir() / "models"))
        self._exit.enter_context(running_stack(settings, 3))
        self.run_dir = ROOT / "runs" / time.strftime("nbmake-%Y%m%d-%H%M%S")
        self._exit.callback(_close_run, self.run_dir)
        minted = keys.mint_run_keys(settings, self.run_dir.name)
        self._exit.callback(keys.revoke_run, settings, self.run_dir.name)
        env = {**stack_env(settings), **minted.to_env(), RUN_DIR_ENV: str(self.run_dir),
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               **{k: v for k, v in PARAMETERS.items() if k not in os.environ}}
        before = {k: os.environ.get(k) for k in env}
        self._exit.callback(_restore, before)
        os.environ.update(env)

    def close(self) -> None:
        self._exit.close()


def _close_run(run_dir: Path) -> None:
    from harness.manual import close

    if (run_dir / "run.json").is_file():
        close(run_dir)


def _restore(before: dict[str, str | None]) -> None:
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    notebooks = [i for i in items if _is_notebook(i)]
    if notebooks:
        ordered = sorted(notebooks, key=lambda i: (Path(str(i.fspath)).parent.name != "runbooks", str(i.fspath)))
        items[:] = [i for i in items if not _is_notebook(i)] + ordered


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not _is_notebook(item):
        return
    session = item.config.stash.get(SESSION, None)
    if session is None:
        session = item.config.stash[SESSION] = NotebookSession()
        try:
            session.start()
        except BaseException as exc:
            session.error = exc
            session.close()
            raise
    elif session.error is not None:
        raise RuntimeError(f"the notebooks' stack did not come up: {session.error}")


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _is_notebook(item) and (nextitem is None or not _is_notebook(nextitem)):
        _close(item.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _close(session.config)


def _close(config: pytest.Config) -> None:
    session = config.stash.get(SESSION, None)
    if session is not None:
        del config.stash[SESSION]
        if session.run_dir is not None:
            config.stash[RUN] = session.run_dir
        session.close()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN, None)
    if run is None or not (run / "run.json").is_file():
        return
    from harness.verdict import verdict_of

    verdict = verdict_of(run)
    terminalreporter.write_line(f"notebooks' manual run {run}: {verdict.label}"
                                + (f" (report: {run / 'report.html'})" if (run / "report.html").is_file() else ""))
    for reason in verdict.reasons[:5]:
        terminalreporter.write_line(f"  - {reason}")


def pytest_report_header(config: pytest.Config) -> str | None:
    if getattr(config.option, "nbmake", False):
        return ("notebooks: one phase-3 stack and one manual run (runs/nbmake-<time>/) for all of them; "
                f"{', '.join(f'{k}={v}' for k, v in PARAMETERS.items())} unless set")
    return None
