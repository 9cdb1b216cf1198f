"""TLS on loopback: ``suite tls init`` (private CA, per-service certificates, 0600), services serving
HTTPS, every client verifying them (httpx with the stack's CA, the gateway's upstream client, the tool
server's calls to memory, ``openssl s_client``), a plain-HTTP request and an expired or foreign
certificate refused, and no bind beyond loopback without TLS and auth. The same across network
namespaces: ``tests/test_netns.py``."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import stat
import subprocess
import sys

import httpx
import pytest

from suite import tls
from suite.gateway.app import create_app
from suite.testing import ServerThread, auth, run_cli, serve, stack_env, stack_settings
from tests.replicas import Control, replica


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """Settings with TLS on and certificates made by the CLI, as an operator would."""
    settings = stack_settings(tmp_path_factory.mktemp("tls"), tls={"enabled": True},
                              memory={"maintainer_enabled": False})
    proc = run_cli(settings, "tls", "init", "--san", "10.77.0.1", "--san", "suite.internal")
    assert proc.returncode == 0, proc.stderr
    return settings


def s_client(port: int, ca, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca),
                           "-verify_return_error", "-verify_ip", "127.0.0.1", *extra],
                          input="", capture_output=True, text=True, timeout=30)


@pytest.mark.integration
def test_tls_init_makes_a_private_ca_and_per_service_certificates_owner_only(secured):
    folder = secured.tls_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    names = {p.name for p in folder.iterdir()}
    for service in ("ca", "gateway", "inference-chat", "rag", "embedding", "memory", "tools"):
        assert {f"{service}.crt", f"{service}.key"} <= names
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in names)
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(folder / "ca.crt"), str(folder / "gateway.crt")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ": OK" in ok.stdout
    text = subprocess.run(["openssl", "x509", "-in", str(folder / "gateway.crt"), "-noout", "-text"],
                          capture_output=True, text=True).stdout
    assert "IP Address:10.77.0.1" in text and "DNS:suite.internal" in text and "IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    shown = run_cli(secured, "tls", "show")
    assert shown.returncode == 0 and "gateway" in shown.stdout and "0o600" in shown.stdout
    again = run_cli(secured, "tls", "init", "--service", "gateway")  # reissued: the CA is kept
    assert again.returncode == 0
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(folder / "ca.crt"), str(folder / "rag.crt")],
                        capture_output=True, text=True)
    assert ok.returncode == 0


def test_a_service_serves_https_verified_and_refuses_plain_http(secured):
    with serve(secured, "memory"):
        url = secured.url("memory")
        assert url.startswith("https://127.0.0.1:")
        r = httpx.get(url + "/v1/memory/health", verify=tls.client_context(secured), timeout=10,
                      headers=auth(secured, "guest"))
        assert r.status_code == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/health", timeout=10)  # the system's trust store does not know our CA
        with pytest.raises(httpx.TransportError):  # a plain-HTTP request to the TLS port gets no HTTP answer
            httpx.get(url.replace("https://", "http://") + "/health", timeout=10)
        settings_file = secured.dump_file(secured.data_dir / "healthcheck.json")  # the container healthcheck
        check = subprocess.run([sys.executable, "-m", "suite.healthcheck", "memory", "--live", "--settings-file",
                                str(settings_file)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        port = secured.port("memory")
        shown = s_client(port, secured.ca_file)
        assert shown.returncode == 0 and "Verify return code: 0 (ok)" in shown.stdout, shown.stdout[-800:]
        wrong_name = s_client(port, secured.ca_file, ("-verify_hostname", "evil.example"))
        assert wrong_name.returncode != 0 and "hostname mismatch" in (wrong_name.stdout + wrong_name.stderr)


def test_an_expired_certificate_is_refused_by_every_client(tmp_path):
    settings = stack_settings(tmp_path, tls={"enabled": True}, auth={"enabled": False},
                              memory={"maintainer_enabled": False})
    tls.init(settings, names=["memory"])
    ca_cert, ca_key = tls.ensure_ca(settings.tls_dir, 30)
    tls.issue(settings.tls_dir, "memory", list(tls.LOOPBACK_SANS), ca_cert, ca_key, days=1,
              not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    with serve(settings, "memory"):
        with pytest.raises(httpx.ConnectError, match="certificate has expired"):
            httpx.get(settings.url("memory") + "/health", verify=tls.client_context(settings), timeout=10)
        shown = s_client(settings.port("memory"), settings.ca_file)
        assert shown.returncode != 0 and "certificate has expired" in (shown.stdout + shown.stderr)


def test_the_tool_server_reaches_memory_over_verified_tls(secured):
    with serve(secured, "memory", "tools"):
        headers = auth(secured, "developer")
        verify = tls.client_context(secured)
        saved = httpx.post(secured.url("tools") + "/tools/memory_save", json={"text": "over tls", "project": "t"},
                           headers=headers, verify=verify, timeout=30)
        assert saved.status_code == 200, saved.text
        found = httpx.post(secured.url("tools") + "/tools/memory_search", json={"query": "tls", "project": "t"},
                           headers=headers, verify=verify, timeout=30)
        assert found.json()["result"]["results"][0]["id"] == saved.json()["result"]["id"]


def test_the_gateway_verifies_its_replicas_and_ejects_one_it_cannot_trust(tmp_path):
    settings = stack_settings(tmp_path, tls={"enabled": True}, auth={"enabled": False},
                              gateway={"load_probe_s": 0, "recovery_probe_s": 60, "cooldown_s": 60})
    tls.init(settings, names=["gateway", "inference-chat", "inference-code"])
    stranger = stack_settings(tmp_path / "other", tls={"enabled": True})  # another CA
    tls.init(stranger, names=["inference-chat"])
    ctls = {n: Control() for n in ("good", "foreign", "code")}
    with ServerThread(replica("good", ctls["good"]), **tls.uvicorn_options(settings, "inference-chat")) as good, \
            ServerThread(replica("foreign", ctls["foreign"]), **tls.uvicorn_options(stranger, "inference-chat")) \
            as foreign, \
            ServerThread(replica("code", ctls["code"]), **tls.uvicorn_options(settings, "inference-code")) as code:
        pools = {"chat": [{"url": good.url, "name": "good"}, {"url": foreign.url, "name": "foreign"}],
                 "code": [{"url": code.url, "name": "code"}]}
        settings = settings.model_copy(update={"gateway": settings.gateway.model_copy(update={
            "pools": settings.gateway.model_validate({"pools": pools}).pools})})
        with ServerThread(create_app(settings), **tls.uvicorn_options(settings, "gateway")) as gateway:
            verify = tls.client_context(settings)
            answers = [httpx.post(gateway.url + "/v1/chat/completions", verify=verify, timeout=30,
                                  json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
                       for _ in range(4)]
            assert [r.status_code for r in answers] == [200] * 4
            assert {r.headers["x-suite-replica"] for r in answers} == {"good"}
            assert ctls["foreign"].calls == {}  # the handshake failed: nothing was sent to it
            health = httpx.get(gateway.url + "/health", verify=verify).json()
            assert health["upstreams"]["foreign"] == "cooling"
            text = httpx.get(gateway.url + "/metrics", verify=verify).text
            assert 'gateway_upstream_requests_total{outcome="connect_error",upstream="foreign"} 1.0' in text


@pytest.mark.integration
def test_no_bind_beyond_loopback_without_tls_and_auth(tmp_path):
    settings = stack_settings(tmp_path)
    for extra, word in (({"SUITE_AUTH__ENABLED": "false"}, "SUITE_AUTH__ENABLED"), ({}, "SUITE_TLS__ENABLED")):
        env = {**os.environ, **stack_env(settings), "SUITE_HOST": "10.77.0.1", **extra}
        proc = subprocess.run([sys.executable, "-m", "suite.cli", "up", "--phase", "1"], capture_output=True,
                              text=True, timeout=60, env=env)
        assert proc.returncode == 2 and word in proc.stderr, proc.stderr
        served = subprocess.run([sys.executable, "-m", "suite.serve", "gateway"], capture_output=True, text=True,
                                timeout=60, env=env)  # however a service is started
        assert served.returncode != 0 and word in served.stderr


def test_tls_on_without_certificates_says_how_to_make_them(tmp_path):
    settings = stack_settings(tmp_path, tls={"enabled": True})
    with pytest.raises(tls.TlsMissing, match="suite tls init"):
        tls.uvicorn_options(settings, "gateway")


def test_the_container_healthcheck_reads_the_settings_dump_as_settings_do(tmp_path):
    """``suite.healthcheck`` reads the settings file as JSON (no pydantic import every few seconds):
    the same URL and CA as ``Settings.url`` and ``Settings.ca_file``."""
    from suite import healthcheck
    from suite.settings import WILDCARDS, Settings

    assert healthcheck.WILDCARDS == WILDCARDS
    for extra in ({}, {"host": "0.0.0.0", "tls": {"enabled": True}}, {"host": "::1", "port_offset": 40},
                  {"host": "10.1.2.3", "tls": {"enabled": True, "dir": str(tmp_path / "t")},
                   "urls": {"rag": "https://rag.internal:8002/"}}):
        settings = Settings(data_dir=tmp_path, **extra)
        dumped = str(settings.dump_file(tmp_path / "settings.json"))
        for name in ("gateway", "rag", "inference-chat"):
            assert healthcheck.target(name, dumped) == (settings.url(name), str(settings.ca_file)), extra


def test_client_context_verifies_hostnames_and_follows_a_new_ca(tmp_path):
    settings = stack_settings(tmp_path, tls={"enabled": True})
    assert tls.client_context(settings).verify_mode == ssl.CERT_REQUIRED
    assert tls.client_context(settings).check_hostname
    tls.init(settings, names=["gateway"])
    first = tls.client_context(settings)
    assert first is tls.client_context(settings)  # cached
    os.utime(settings.ca_file, ns=(1, 1))
    assert tls.client_context(settings) is not first  # a CA file made anew is loaded anew
    assert json.loads(settings.model_dump_json())["tls"]["enabled"] is True
