"""Real Prometheus and Alertmanager (Debian's packages) against real instrumented apps on free
ports: targets with service/phase labels, rules loaded, PromQL over the apps' own metrics, and the
alert drill from a stopped app to the webhook and back. The runbook itself runs in test_pipeline."""

import socket
import time

import httpx
import pytest
from fastapi import FastAPI

from harness.monitor import api, checks, drill, promtool
from harness.monitor.config import Timing
from harness.monitor.prometheus import MonitorStack, MonitorStackError
from harness.result import Status
from suite.instrument import instrument
from suite.net import port_free
from suite.testing import ServerThread

pytestmark = pytest.mark.skipif(bool(promtool.missing("prometheus", "alertmanager")),
                                reason=f"Prometheus/Alertmanager not installed: {promtool.INSTALL_HINT}")


def serve(settings, name):
    app = FastAPI()
    instrument(app, name, settings=settings)
    server = ServerThread(app, port=settings.port(name))
    server.start()
    return server


@pytest.mark.integration
def test_targets_rules_promql_and_the_alert_drill(tmp_path, settings):
    servers = {name: serve(settings, name) for name in ("gateway", "memory")}
    stack = MonitorStack(settings, ["gateway", "memory"], tmp_path / "monitoring", timing=Timing.drill(1),
                         for_override="2s")
    try:
        with stack:
            targets = checks.check_targets_up(stack, deadline_s=20)
            assert targets.status is Status.PASS, targets.detail
            labels = {t["labels"]["service"]: t["labels"]["phase"] for t in api.targets(stack.prometheus)}
            assert labels == {"gateway": "1", "memory": "3"}
            loaded = checks.check_rules_loaded(stack)
            assert loaded.status is Status.PASS and "ServiceDown" in loaded.detail, loaded.detail

            checks.probe_traffic(settings, stack.services, 1)  # creates the series (see traffic_and_promql)
            checks.settle(stack, 1)
            since = time.time()
            assert checks.probe_traffic(settings, stack.services, 4) == 8
            checks.settle(stack)
            per_service = {r.id: r for r in checks.check_promql_per_service(stack, since)}
            assert per_service["monitor.promql.gateway"].status is Status.PASS, per_service
            assert "req/s, p95" in per_service["monitor.promql.memory"].measured

            def restart():
                servers["memory"] = serve(settings, "memory")
                return True, ""

            fires, resolves = drill.alert_drill(stack, "memory", 3, timeout_s=30,
                                                stop=lambda: servers["memory"].stop(), start=restart)
            assert fires.status is Status.PASS, fires.measured
            assert resolves.status is Status.PASS, resolves.measured
            # what reached the webhook names the service and its phase
            firing = stack.sink.received("ServiceDown", "firing", service="memory")
            assert firing[0]["labels"]["phase"] == "3" and firing[0]["labels"]["severity"] == "critical"
        assert port_free("127.0.0.1", settings.port("prometheus"))
        assert port_free("127.0.0.1", settings.port("alertmanager"))
        assert (tmp_path / "monitoring" / "prometheus.log").is_file()
    finally:
        stack.stop()
        for server in servers.values():
            server.stop()


@pytest.mark.integration
def test_a_target_that_does_not_answer_fails_with_its_scrape_error(tmp_path, settings):
    server = serve(settings, "gateway")
    try:
        with MonitorStack(settings, ["gateway", "rag"], tmp_path / "m", timing=Timing.drill(1)) as stack:
            def both_scraped():
                return len([t for t in api.targets(stack.prometheus) if t["health"] != "unknown"]) == 2

            assert api.wait_for(both_scraped, 30)[0], "Prometheus never scraped both targets"
            result = checks.check_targets_up(stack, deadline_s=2)
    finally:
        server.stop()
    assert result.status is Status.FAIL
    assert result.measured.startswith("1/2 UP") and "rag: down" in result.detail


def test_a_taken_port_is_refused_with_its_holder(tmp_path, settings):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.port("prometheus")))
        blocker.listen()
        with pytest.raises(MonitorStackError, match=f"port {settings.port('prometheus')} for prometheus"):
            MonitorStack(settings, ["gateway"], tmp_path / "m").start()
        result = checks.start(MonitorStack(settings, ["gateway"], tmp_path / "m"))
    assert result.status is Status.FAIL and "held by" in result.detail


def test_absent_binaries_skip_every_stack_step_with_the_hint(tmp_path, settings, monkeypatch):
    monkeypatch.setattr(promtool, "binary", lambda tool: None)
    started = checks.start(MonitorStack(settings, ["gateway"], tmp_path / "m"))
    assert started.status is Status.SKIP and "apt-get install" in started.detail
    assert checks.check_binaries().status is Status.SKIP
    rest = checks.not_run(started.detail, "gateway")
    assert {r.status for r in rest} == {Status.SKIP} and "monitor.alert.fires" in {r.id for r in rest}
    with pytest.raises(httpx.HTTPError):  # and nothing was started
        httpx.get(f"http://127.0.0.1:{settings.port('prometheus')}/-/ready", timeout=1)
