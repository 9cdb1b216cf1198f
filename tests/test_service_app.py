"""``suite.instrument.service_app``, the one shape of a service app, on a real uvicorn server: the service
object opened in the lifespan and kept on ``app.state``, its probes, the context it runs in, and its close
— also when its ready check fails. The five services built with it are tested through their own routes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Annotated

import httpx
from fastapi import APIRouter

from suite.instrument import service_app
from suite.settings import Settings
from suite.testing import ServerThread
from suite.web import from_state


class Thing:
    """A service object as the apps have them: a sync ``ready`` (run off the loop), ``health_info``, a
    ``SpaceGuard``-like ``space`` (none here) and an async ``aclose``."""

    def __init__(self, events: list[str], healthy: bool = True) -> None:
        self.events, self.healthy = events, healthy
        self.ready_threads: set[int] = set()

    def ready(self) -> dict:
        self.ready_threads.add(threading.get_ident())
        if not self.healthy:
            raise RuntimeError("the thing is broken")
        return {"things": 1}

    def health_info(self) -> dict:
        return {"things_held": 3}

    async def aclose(self) -> None:
        self.events.append("closed")


def _app(tmp_path, events: list[str], healthy: bool = True):
    settings = Settings(data_dir=tmp_path, auth={"enabled": False})
    made: list[Thing] = []
    router = APIRouter()

    @router.post("/embed")  # a route the policy lets a keyless stack's caller reach on 'embedding'
    async def which(thing: Annotated[Thing, from_state("embedding")]) -> dict:
        return {"same": thing is made[0]}

    async def open_thing(app):
        events.append("opened")
        made.append(Thing(events, healthy))
        return made[0]

    @contextlib.asynccontextmanager
    async def running(app):
        events.append("running")
        yield
        events.append("stopping")

    return service_app("embedding", settings, open_thing, router=router, ready_timeout_s=5, running=running), made


def test_the_lifespan_opens_runs_and_closes_the_service_and_the_probes_read_it(tmp_path):
    events: list[str] = []
    app, made = _app(tmp_path, events)
    with ServerThread(app) as server:
        assert events == ["opened", "running"]
        ready = httpx.get(server.url + "/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert threading.main_thread().ident not in made[0].ready_threads and made[0].ready_threads
        health = httpx.get(server.url + "/health", timeout=10).json()
        assert health["things_held"] == 3 and health["service"] == "embedding"
        assert httpx.post(server.url + "/embed", json={}, timeout=10).json() == {"same": True}
    assert events == ["opened", "running", "stopping", "closed"]


def test_a_failing_ready_check_answers_503_and_the_service_still_closes(tmp_path):
    events: list[str] = []
    app, _ = _app(tmp_path, events, healthy=False)
    with ServerThread(app) as server:
        ready = httpx.get(server.url + "/ready", timeout=10)
        assert ready.status_code == 503 and "broken" in ready.text
    assert events[-1] == "closed"


def test_a_service_whose_close_is_sync_is_closed_too(tmp_path):
    closed = []

    class Plain:
        async def ready(self) -> dict:
            return {}

        def close(self) -> None:
            closed.append(True)

    app = service_app("memory", Settings(data_dir=tmp_path, auth={"enabled": False}), lambda app: Plain(),
                      router=APIRouter(), ready_timeout_s=5)
    with ServerThread(app) as server:
        assert httpx.get(server.url + "/ready", timeout=10).status_code == 200
    assert closed == [True]
    assert asyncio.iscoroutinefunction(Plain.ready)
