"""The security review (issue 18): the settings checklist on a default and a deliberately misconfigured
deployment, the RBAC matrix, transport probes and sandbox corpus against real services, and the scans
(an injected high-severity Bandit finding fails; pip-audit never passes silently)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from harness.keys import run_keys
from harness.result import Status
from harness.security import corpus, matrix, review, scans, transport
from suite.auth import layer as auth_layer
from suite.auth.keys import KeyStore
from suite.settings import Settings, project_root
from suite.testing import serve, stack_settings


# -- the settings checklist -----------------------------------------------------------------------
def prepared(settings: Settings) -> Settings:
    """A data dir as a started stack leaves it: private folders, the key store, the tools database."""
    from suite.auth.db import Database, private_dir
    from suite.tools.stores import open_stores

    private_dir(settings.data_dir)
    (settings.data_dir / "sandbox").mkdir(exist_ok=True)
    open_stores(settings).close()
    Database(settings.data_dir / "memory" / "memory.db").close()
    return settings


def by_id(results) -> dict:
    return {r.id.removeprefix("security.config."): r for r in results}


def test_the_default_configuration_passes_the_checklist(tmp_path):
    settings = prepared(Settings(data_dir=tmp_path / "data"))
    store = KeyStore.open(settings.key_store_path)
    store.create("admin", "operator", ttl_s=7 * 86400)
    store.create("guest", "this run", ttl_s=3600, run_id="run-now")
    store.close()
    results = by_id(review.review(settings, current_run="run-now"))
    assert {k: r.status for k, r in results.items() if r.status is not Status.PASS} == {"qdrant_key": Status.SKIP}
    assert set(results) == {"auth", "approvals", "rate_limits", "bind", "host_check", "file_modes", "admin_keys",
                            "run_keys", "sandbox_roots", "commands", "qdrant_key"}


def test_a_misconfigured_deployment_fails_each_line_with_the_fix(tmp_path):
    settings = prepared(Settings(data_dir=tmp_path / "data", tools={"approvals_required": False,
                                                                      "sandbox_roots": ["/tmp"]}))
    store = KeyStore.open(settings.key_store_path)
    forever, _ = store.create("admin", "no expiry")
    store.create("guest", "an earlier run", ttl_s=3600, run_id="run-before")
    store.close()
    os.chmod(settings.key_store_path, 0o644)  # world-readable key store
    results = by_id(review.review(settings, current_run="run-now"))
    expect = {"approvals": "tools.approvals_required = true",
              "file_modes": f"chmod 600 {settings.key_store_path}",
              "admin_keys": f"suite keys revoke {forever.key_id}",
              "run_keys": "suite keys revoke-run run-before",
              "sandbox_roots": "tools.sandbox_roots"}
    for line, fix in expect.items():
        assert results[line].status is Status.FAIL, (line, results[line])
        assert fix in results[line].detail, (line, results[line].detail)
    assert results["auth"].status is Status.PASS


def test_keys_of_a_kernel_still_running_here_are_not_an_earlier_runs_leftovers(tmp_path):
    """By hand, each kernel mints its own keys and revokes them when it exits: 04_security opened while
    02_health's kernel is still open in JupyterLab must not fail on that kernel's keys; a dead one's do."""
    import subprocess as sp

    from harness.keys import held_by_live_process, process_run_id

    settings = prepared(Settings(data_dir=tmp_path / "data"))
    other_kernel = sp.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = process_run_id(other_kernel.pid, at=time.time() + 1)
        gone = process_run_id(2**22 + 17)  # above pid_max: no such process
        recycled = process_run_id(other_kernel.pid, at=time.time() - 3600)  # pid reused since the keys were minted
        store = KeyStore.open(settings.key_store_path)
        for run_id in (alive, gone, recycled):
            store.create("guest", "by hand", ttl_s=3600, run_id=run_id)
        store.close()
        assert held_by_live_process(alive) and not held_by_live_process(gone)
        assert not held_by_live_process(recycled) and not held_by_live_process("20260101-100000-abcd")
        line = by_id(review.review(settings, current_run=process_run_id()))["run_keys"]
        assert line.status is Status.FAIL and line.measured == "2 stale key(s)"
        assert f"revoke-run {gone}" in line.detail and f"revoke-run {recycled}" in line.detail
        assert alive not in line.detail
    finally:
        other_kernel.kill()
        other_kernel.wait()


@pytest.mark.parametrize(("overrides", "line", "fix"), [
    ({"auth": {"enabled": False}}, "auth", "auth.enabled = true"),
    ({"host": "0.0.0.0"}, "bind", "SUITE_HOST=127.0.0.1"),
    ({"tools": {"rate_limit_per_minute": 100000}}, "rate_limits", "lower it"),
    ({"auth": {"allowed_hosts": ["*"]}}, "host_check", "list the real names"),
    ({"tools": {"allow_hardlinked_reads": True}}, "commands", "allow_hardlinked_reads"),
    ({"rag": {"qdrant_url": "http://127.0.0.1:6333"}}, "qdrant_key", "rag.qdrant_api_key_file"),
    ({"rag": {"allowed_dirs": ["/"]}}, "sandbox_roots", "rag.allowed_dirs"),
])
def test_more_findings_name_their_fix(tmp_path, overrides, line, fix):
    settings = prepared(Settings(data_dir=tmp_path / "data", **overrides))
    result = by_id(review.review(settings))[line]
    assert result.status is Status.FAIL and fix in result.detail, result


def test_a_bind_beyond_loopback_passes_with_the_suites_tls_and_fails_on_an_expired_certificate(tmp_path):
    import datetime as dt

    from suite import tls

    settings = prepared(Settings(data_dir=tmp_path / "data", host="10.77.0.1", tls={"enabled": True}))
    assert "suite tls init" in review.check_bind(settings).detail  # no certificates yet
    tls.init(settings)
    result = review.check_bind(settings)
    assert result.status is Status.PASS and "TLS, first expiry in 39" in result.detail, result
    ca_cert, ca_key = tls.ensure_ca(settings.tls_dir, 30)
    tls.issue(settings.tls_dir, "rag", ["10.77.0.1"], ca_cert, ca_key, days=1,
              not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    result = review.check_bind(settings)
    assert result.status is Status.FAIL and "rag's certificate expired" in result.detail


def test_admin_key_older_than_the_limit_fails(tmp_path):
    settings = prepared(Settings(data_dir=tmp_path / "data", auth={"max_admin_key_days": 30}))
    store = KeyStore.open(settings.key_store_path)
    old, _ = store.create("admin", "old", ttl_s=365 * 86400)
    store.close()
    later = time.time() + 40 * 86400
    result = review.check_admin_keys(settings, now=later)
    assert result.status is Status.FAIL and "40 days old" in result.detail and old.key_id in result.detail


def test_sandbox_root_holding_the_key_store_fails(tmp_path):
    settings = prepared(Settings(data_dir=tmp_path / "data", tools={"sandbox_roots": [str(tmp_path / "data")]}))
    result = review.check_sandbox_roots(settings)
    assert result.status is Status.FAIL and "key store" in result.detail


def test_sandbox_roots_are_not_judged_where_the_tools_service_is_not_deployed(tmp_path):
    """A phase-1 stack has no tools service, so no data/sandbox: not applicable, not a failure."""
    settings = Settings(data_dir=tmp_path / "data")  # nothing made: data/sandbox absent
    result = review.check_sandbox_roots(settings, phase=1)
    assert result.status is Status.SKIP and "not applicable" in result.detail
    assert review.check_sandbox_roots(settings, phase=2).status is Status.PASS  # RAG only: no sandbox needed
    assert "sandbox" in review.check_sandbox_roots(settings, phase=3).detail  # the tools' folder is judged


# -- scans ----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_an_injected_high_severity_bandit_finding_fails_the_scan(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ok.py").write_text("def add(a, b):\n    return a + b\n")
    (pkg / "bad.py").write_text("import subprocess\n\n\ndef run(cmd):\n    return subprocess.Popen(cmd, shell=True)\n")
    result = scans.bandit_scan(["pkg"], root=tmp_path)
    assert result.status == "fail" and any(f["severity"] == "HIGH" and f["where"].startswith("pkg/bad.py")
                                           for f in result.findings), result
    (pkg / "bad.py").unlink()
    assert scans.bandit_scan(["pkg"], root=tmp_path).status == "pass"
    proc = subprocess.run([sys.executable, "-m", "harness.security.scans", "--paths", str(tmp_path / "missing")],
                          capture_output=True, text=True, cwd=project_root(), timeout=600)
    assert "bandit:" in proc.stdout and "pip-audit:" in proc.stdout


@pytest.mark.integration
def test_the_project_itself_passes_bandit_with_its_reviewed_baseline():
    result = scans.bandit_scan()
    assert result.status == "pass", result.summary + json.dumps(result.findings)
    assert all(e["why"].strip() for e in scans.load_accepted())


def test_accepted_findings_need_a_reason(tmp_path):
    path = tmp_path / "accepted.toml"
    path.write_text('[[accepted]]\ntest = "B602"\nfile = "x.py"\nwhy = ""\n')
    with pytest.raises(ValueError, match="reason"):
        scans.load_accepted(path)


def test_pip_audit_never_passes_silently():
    vulnerable = {"dependencies": [{"name": "jinja2", "version": "2.10", "vulns": [
        {"id": "GHSA-xxxx", "fix_versions": ["2.11.3"]}]}, {"name": "ok", "version": "1", "vulns": []}]}
    result = scans.judge_pip_audit(vulnerable, 1, "")
    assert result.status == "fail" and result.findings[0]["package"] == "jinja2"
    # what these machines get: PyPI's JSON API says "not found" for everything, pip-audit says no vulns
    unreachable = {"dependencies": [{"name": n, "skip_reason": f"Dependency not found on PyPI: {n}"}
                                    for n in ("a", "b")]}
    result = scans.judge_pip_audit(unreachable, 0, "No known vulnerabilities found")
    assert result.status == "skip" and "could not be reached" in result.summary
    result = scans.judge_pip_audit(None, 1, "requests.exceptions.ConnectionError: Max retries exceeded")
    assert result.status == "skip" and "could not be reached" in result.summary
    assert scans.judge_pip_audit(None, 2, "usage: pip-audit: error: bad flag").status == "fail"
    audited = {"dependencies": [{"name": "a", "version": "1", "vulns": []},
                                {"name": "mine", "skip_reason": "not found on PyPI"}]}
    result = scans.judge_pip_audit(audited, 0, "")
    assert result.status == "pass" and "1 not on the index" in result.summary


# -- against real services ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = stack_settings(tmp_path_factory.mktemp("secreview"), memory={"maintainer_enabled": False},
                              tools={"approval_poll_s": 0.2})
    with serve(settings, "memory", "tools"):
        yield settings


@pytest.fixture(scope="module")
def subjects(stack) -> matrix.MatrixKeys:
    """The run's keys plus a revoked and an expired one (minted through the CLI once for the module)."""
    return matrix.MatrixKeys.make(stack, run_keys(stack))


@pytest.mark.integration
def test_rbac_matrix_covers_every_schema_route_and_finds_no_leak(stack, subjects):
    keys = subjects
    results, cells = matrix.run_matrix(stack, 3, keys, names=["memory", "tools"])
    assert [r.status for r in results] == [Status.PASS] * 4, [str(r) for r in results]
    for service in ("memory", "tools"):
        schema = matrix.schema_routes(stack.url(service), keys.by_subject["admin"])
        probed = {(c["method"], c["route"]) for c in cells if c["service"] == service}
        assert schema <= probed and len(schema) >= 5
        assert {c["subject"] for c in cells if c["service"] == service} == set(matrix.SUBJECTS)
    maintain = {c["subject"]: c for c in cells if c["route"] == "/v1/memory/admin/maintain"}
    assert maintain["guest"]["status"] == 403 and maintain["expired key"]["status"] == 401
    assert maintain["revoked key"]["status"] == 401 and maintain["admin"]["status"] is None  # not sent


def test_rbac_matrix_names_route_and_role_of_a_leak(stack, subjects, monkeypatch):
    """A layer that lets every role through (a broken policy) is caught, naming route and role."""
    class EveryoneMayDoAnything:
        ROLES = auth_layer.roles.ROLES

        @staticmethod
        def has(role, permission):
            return True

    monkeypatch.setattr(auth_layer, "roles", EveryoneMayDoAnything)
    results, _ = matrix.run_matrix(stack, 3, subjects, names=["memory"])
    leak = next(r for r in results if r.id == "security.rbac.memory")
    assert leak.status is Status.FAIL and "UNEXPECTED 2xx" in leak.detail
    assert "as guest" in leak.detail and "/v1/memory/admin/backups" in leak.detail


def test_transport_probes_pass(stack):
    results = transport.run_transport(stack, 3, names=["memory", "tools"])
    assert all(r.status is Status.PASS for r in results), [str(r) for r in results]


@pytest.mark.integration
def test_sandbox_corpus_escapes_zero_times(stack, tmp_path):
    results, attempts = corpus.run_corpus(stack, tmp_path, run_keys(stack))
    assert {r.id.rsplit(".", 1)[1] for r in results} >= {"read_file", "file_info", "list_directory", "search_files",
                                                         "write_file", "edit_file", "delete_file", "run_command",
                                                         "git_status", "git_log"}
    assert all(r.status is Status.PASS for r in results), [str(r) for r in results]
    assert not any(a["escaped"] for a in attempts) and len(attempts) > 100
    assert not list((stack.data_dir / "sandbox").glob("security-scratch-*"))  # cleaned up
