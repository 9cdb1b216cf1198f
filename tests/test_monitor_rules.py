"""Alert rules and Prometheus/Alertmanager configuration: generated from the settings, the shipped
files equal to that rendering, and promtool's checks and unit tests on exactly what ships."""

import json
import shutil

import pytest
import yaml

from harness.monitor import config, dashboard, promtool, rules
from harness.result import Status
from suite.settings import Settings

needs_promtool = pytest.mark.skipif(promtool.binary("promtool") is None,
                                    reason=f"promtool not installed: {promtool.INSTALL_HINT}")
SEED_ALERTS = {"ServiceDown": "1m", "APIGatewayHighErrorRate": "2m", "APIGatewayHighLatency": "5m"}


def all_rules(settings, for_override=None):
    return {r["alert"]: r for g in rules.alert_rules(settings, for_override)["groups"] for r in g["rules"]}


def test_shipped_files_are_the_rendering_of_the_default_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("SUITE_PORT_OFFSET", raising=False)
    monkeypatch.setenv("SUITE_CONFIG", str(tmp_path / "empty.toml"))
    (tmp_path / "empty.toml").write_text("")
    written = config.write_compose_configs(Settings(), tmp_path / "out")
    shipped = rules.SHIPPED.parents[1]
    for kind, path in written.items():
        assert path.read_text() == (shipped / path.relative_to(tmp_path / "out")).read_text(), (
            f"deploy/monitoring is stale for {kind}: run python -m harness.monitor render")


def test_seed_alerts_and_the_added_ones_with_their_durations():
    by_name = all_rules(Settings())
    for name, duration in SEED_ALERTS.items():
        assert by_name[name]["for"] == duration
    assert {"ServiceNotReady", "InferenceQueueSaturated", "InferenceRejectingRequests", "RAGDependencyDown",
            "RAGDependencyErrors"} <= set(by_name)
    assert "> 0.10" in by_name["APIGatewayHighErrorRate"]["expr"]
    assert "histogram_quantile(0.95" in by_name["APIGatewayHighLatency"]["expr"]
    assert "> 2" in by_name["APIGatewayHighLatency"]["expr"]


def test_rules_follow_the_settings():
    assert "inference_queue_depth >= 4" in all_rules(Settings(inference={"queue_limit": 5}))[
        "InferenceQueueSaturated"]["expr"]
    # no waiting line: every request past the slots is a 429, so only the rejection alert remains
    no_queue = all_rules(Settings(inference={"queue_limit": 0}))
    assert "InferenceQueueSaturated" not in no_queue and "InferenceRejectingRequests" in no_queue
    drill = all_rules(Settings(), for_override="4s")
    assert {r.get("for") for r in drill.values()} == {"4s"}
    assert drill["ServiceDown"]["expr"] == all_rules(Settings())["ServiceDown"]["expr"]


def test_every_running_service_is_a_target_with_service_and_phase_labels(settings):
    cfg = config.prometheus_config(settings, ["gateway", "inference-chat", "rag"],
                                   timing=config.Timing.drill(2), alertmanager="127.0.0.1:1")
    suite_job = cfg["scrape_configs"][0]
    assert suite_job["job_name"] == "suite" and len(cfg["scrape_configs"]) == 1  # no Qdrant server here
    got = {c["labels"]["service"]: (c["targets"][0], c["labels"]["phase"]) for c in suite_job["static_configs"]}
    assert got == {"inference-chat": (f"127.0.0.1:{settings.port('inference-chat')}", "1"),
                   "gateway": (f"127.0.0.1:{settings.port('gateway')}", "1"),
                   "rag": (f"127.0.0.1:{settings.port('rag')}", "2")}
    assert cfg["global"]["scrape_interval"] == "2s" and cfg["global"]["scrape_timeout"] == "2s"
    server = Settings(rag={"qdrant_url": "http://127.0.0.1:7333"})
    cfg = config.prometheus_config(server, [], qdrant=config.qdrant_address(server), qdrant_key_file="/k")
    qdrant = cfg["scrape_configs"][1]
    assert qdrant["static_configs"][0]["targets"] == ["127.0.0.1:7333"]
    assert qdrant["authorization"] == {"type": "Bearer", "credentials_file": "/k"}  # the key is not in the file


@needs_promtool
def test_shipped_rules_pass_promtool_check_and_unit_tests():
    check = promtool.check_rules(rules.SHIPPED)
    assert check.status is Status.PASS, check.detail
    assert "9 rules found" in check.measured
    unit = promtool.rule_unit_tests(rules.UNIT_TESTS)
    assert unit.status is Status.PASS, unit.detail


@needs_promtool
def test_every_dashboard_panel_is_valid_promql(tmp_path):
    exprs = dashboard.promql_exprs()
    assert len(exprs) >= 12 and any("inference_time_to_first_token_seconds" in e for e in exprs)
    recording = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:panel{i}", "expr": e}
                                                             for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(recording))
    check = promtool.check_rules(tmp_path / "dashboard.rules.yml")
    assert check.status is Status.PASS, check.detail
    shipped = json.loads(dashboard.SHIPPED.read_text())
    assert shipped["uid"] == "suite-workbench" and shipped["templating"]["list"][0]["name"] == "service"


@needs_promtool
def test_the_unit_tests_catch_a_rule_that_fires_too_early(tmp_path):
    """The unit tests are not vacuous: the same tests over rules without their `for:` fail."""
    shutil.copy(rules.UNIT_TESTS, tmp_path / rules.UNIT_TESTS.name)
    rules.write_rules(Settings(), tmp_path / "suite.rules.yml", for_override="0s")
    result = promtool.rule_unit_tests(tmp_path / rules.UNIT_TESTS.name)
    assert result.status is Status.FAIL
    assert "ServiceDown" in result.detail or "APIGateway" in result.detail


@needs_promtool
def test_rendered_runbook_config_passes_promtool_check_config(tmp_path, settings):
    files = config.write_configs(settings, tmp_path, ["gateway", "memory"], timing=config.Timing.drill(2),
                                 alertmanager="127.0.0.1:9", webhook_url="http://127.0.0.1:9/alerts",
                                 for_override="4s")
    proc = promtool.run_promtool("check", "config", str(files["prometheus"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load(files["alertmanager"].read_text())["receivers"][0]["webhook_configs"][0]["send_resolved"]
    amtool = promtool.binary("amtool")
    if amtool:
        import subprocess

        out = subprocess.run([amtool, "check-config", str(files["alertmanager"])], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_absent_promtool_is_a_skip_with_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(promtool, "binary", lambda tool: None)
    for result in (promtool.check_rules(tmp_path / "x.yml"), promtool.rule_unit_tests(tmp_path / "y.yml")):
        assert result.status is Status.SKIP and "apt-get install" in result.detail
