"""The drill's background load: ``load/fault_drill.py`` under Locust, run by ``harness.load.runner``
in a thread and ended through its stop file; its raw samples are read while it runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from harness.httpclient import verify
from harness.load import runner
from harness.load import samples as samples_mod
from harness.load.samples import Sample
from harness.load.scenarios import Scenario
from suite.settings import Settings

COLLECTION = "fault-drill"


class BackgroundLoad:
    """A light load in a thread for as long as a drill needs it: ``fault_drill.py`` by default, or
    another locustfile (``scenario``, with ``env`` for it) such as the pool drill's."""

    def __init__(self, settings: Settings, phase: int, out_dir: Path, users: int, pace_s: float,
                 max_s: float, scenario: Scenario | None = None, env: dict[str, str] | None = None,
                 target=None) -> None:
        """``scenario`` and ``env``: another scenario and its ``LOAD_*`` values instead of the fault drill's
        (the pool drill's); ``target``: a stack from a target file; its gateway gets the chat and code load
        (phase 1 of the locustfile) with its model names and key."""
        self.out_dir = Path(out_dir)
        scenario = scenario or Scenario("fault-drill", "fault_drill.py", "gateway", 1, users=users, spawn_rate=users,
                                        duration_s=max_s, max_tokens=8,
                                        description="light load while services are killed")
        # the target's gateway for another stack (no settings of ours then), else ours
        foreign = target is not None and not target.ours
        host, remote = (target.gateway.base_url, True) if foreign else (settings.url("gateway"),
                                                                        "gateway" in settings.urls)
        if env is not None:
            env = {"LOAD_PACE_S": str(pace_s), **env}
        else:
            env = {"LOAD_PACE_S": str(pace_s), "LOAD_RAG_COLLECTION": COLLECTION}
            if foreign:
                from harness.load.plan import target_env

                env.update(target_env(target, scenario))
                phase = 1
            else:
                env.update(prepare(settings, phase))
        self.run: runner.LoadRun | None = None
        self.error: BaseException | None = None

        def go() -> None:
            try:
                self.run = runner.run_scenario(scenario, host, self.out_dir, phase=phase, extra_env=env,
                                               allow_remote=remote)
            except BaseException as exc:  # raised again by stop()
                self.error = exc

        self.thread = threading.Thread(target=go, name="fault-drill-load", daemon=True)

    def start(self, within_s: float = 30.0) -> None:
        """Start Locust and wait until its users run (not for answers: on a busy box the first ones
        take a while, and the load only has to be there when the first kill comes)."""
        self.thread.start()
        log_file = self.out_dir / "locust.log"
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and self.thread.is_alive():
            if log_file.exists() and "All users spawned" in log_file.read_text(errors="replace"):
                return
            time.sleep(0.2)

    def samples(self) -> list[Sample]:
        """Every request so far (Locust appends one line per request as it goes)."""
        return samples_mod.merge_samples(samples_mod.sample_files(self.out_dir))

    def stop(self) -> runner.LoadRun | None:
        (self.out_dir / "stop").write_text("fault drill finished")
        self.thread.join(timeout=120)
        if self.error is not None:
            raise self.error
        return self.run


def prepare(settings: Settings, phase: int) -> dict[str, str]:
    """What the load needs first: the run's guest key (``LOAD_API_KEY``: every request of the load is
    a guest's), a RAG document indexed with the developer key (phase 2), a file to read (phase 3)."""
    from harness.keys import headers_for, run_keys

    env = {"LOAD_API_KEY": run_keys(settings).guest}
    if phase >= 2:
        httpx.post(settings.url("rag") + "/index", timeout=120, headers=headers_for(settings, "developer"),
                   verify=verify(settings), json={
            "collection": COLLECTION, "documents": [{"id": "drill", "text": "Backups are kept for seven days."}],
        }).raise_for_status()
    if phase >= 3:
        from harness.load.plan import tools_env

        env.update(tools_env(settings))
    return env
