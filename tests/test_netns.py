"""The stack split over four "hosts" — network namespaces this test creates, joined by a bridge in a
fifth, with addresses it assigns (``tests/netns.py``): inference replicas on two (chat and code on
``a``, a second chat replica on ``b``), the gateway, embedding and RAG on ``c``, the harness on ``d``.

Every service binds its host's address, so ``suite up`` demands TLS and auth; each host runs
``suite up --only ...`` for its own part with the others in ``urls``. Then, from ``d``: ``openssl
s_client`` verifies a certificate, a plain-HTTP request to a TLS port gets no answer, and the
pipeline (bring-up, health, smoke, a quick load, the pool drill, report) says GO across the hosts, with the
gateway's chat pool spreading requests over both replicas; and the pool drill kills chat-b (on its
own host, through ``pool_kill_command``) under load: ejection, client errors and readmission pass.
Locust distributed: the master on ``d``, one worker in ``a`` and one in ``b``, against a small target
on ``c`` that counts requests per client address.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.stack import cli_env
from suite import tls
from suite.settings import Settings
from suite.testing import free_port_offset
from tests import netns

pytestmark = pytest.mark.integration

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net():
    why = netns.unavailable()
    if why:
        pytest.skip(f"network namespaces cannot be made here: {why}")
    with netns.Network(["a", "b", "c", "d"]) as network:
        yield network


def host_settings(base: Settings, net: netns.Network, host: str, root: Path, runs: list[str]) -> Settings:
    """``base`` as ``host`` sees it: its own address and data dir, ``urls`` naming the services of the
    other hosts; the key store and TLS folder shared (on real hosts: copied)."""
    data = json.loads(base.model_dump_json())
    data.update(host=net.addr(host), data_dir=str(root / host),
                urls={k: v for k, v in base.urls.items() if k not in runs})
    return Settings(**data)


@pytest.fixture(scope="module")
def split(net, tmp_path_factory, gemma_path):
    root = tmp_path_factory.mktemp("split")
    offset = free_port_offset()  # any: each namespace has ports of its own
    a, b, c = (net.addr(h) for h in "abc")

    def https(host: str, service: str) -> str:
        return f"https://{host}:{Settings(port_offset=offset, data_dir=root).port(service)}"

    model = {"path": str(gemma_path), "n_ctx": 1024}
    base = Settings(
        data_dir=root, port_offset=offset, ready_deadline_s=300, tls={"enabled": True, "dir": str(root / "tls")},
        auth={"key_store": str(root / "keys.db")},
        inference={"slots": 4, "chat": {"alias": "chat", **model}, "code": {"alias": "code", **model}},
        urls={"inference-chat": https(a, "inference-chat"), "inference-code": https(a, "inference-code"),
              "gateway": https(c, "gateway"), "embedding": https(c, "embedding"), "rag": https(c, "rag")},
        gateway={"pools": {"chat": [{"url": https(a, "inference-chat"), "name": "chat-a"},
                                    {"url": https(b, "inference-chat"), "name": "chat-b"}]}})
    made = tls.init(base, sans=[net.addr(h) for h in "abcd"])
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for i in made for p in (i.cert, i.key))
    parts = {"a": ["inference-chat", "inference-code"], "b": ["inference-chat"], "c": ["gateway", "embedding", "rag"],
             "d": []}
    hosts = {h: host_settings(base, net, h, root, parts[h]) for h in "abcd"}

    def up(h: str) -> subprocess.CompletedProcess:
        only = [arg for name in parts[h] for arg in ("--only", name)]
        return net.run(h, [PY, "-m", "suite.cli", "up", "--phase", "2", *only], env=cli_env(hosts[h]), timeout=400)

    try:
        with ThreadPoolExecutor(2) as pool:  # the two inference hosts at once, then the third
            started = list(pool.map(up, "ab"))
        started.append(up("c"))
        for proc in started:
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        yield hosts
    finally:
        for h in "abc":
            net.run(h, [PY, "-m", "suite.cli", "down"], env=cli_env(hosts[h]), timeout=120)


def test_a_plain_http_request_to_a_tls_port_is_refused_and_the_certificate_verifies(net, split):
    d, c = split["d"], net.addr("c")
    gateway_port = d.port("gateway")
    plain = net.run("d", [PY, "-c", f"import httpx; httpx.get('http://{c}:{gateway_port}/health', timeout=10)"],
                    timeout=60)
    assert plain.returncode != 0 and ("RemoteProtocolError" in plain.stderr or "ReadError" in plain.stderr
                                      or "ConnectError" in plain.stderr), plain.stderr[-500:]
    shown = net.run("d", ["openssl", "s_client", "-connect", f"{c}:{gateway_port}", "-CAfile", str(d.ca_file),
                          "-verify_return_error", "-verify_ip", c], input="", timeout=60)
    assert shown.returncode == 0 and "Verify return code: 0 (ok)" in shown.stdout
    unverified = net.run("d", [PY, "-c", f"import httpx; httpx.get('https://{c}:{gateway_port}/health', timeout=10)"],
                         timeout=60)
    assert unverified.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in unverified.stderr


def test_the_pipeline_says_go_across_the_hosts(net, split, tmp_path):
    d = split["d"]
    books = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", books)
    (books / "split.yaml").write_text(
        "name: split\nrunbooks:\n  - notebook: 01_bring_up.ipynb\n    brings_up: true\n  - 02_health.ipynb\n"
        "  - 03_smoke.ipynb\n  - 05_load.ipynb\n  - 06_pool_drill.ipynb\n  - notebook: 09_report.ipynb\n"
        "    report: true\n")
    kill_b = f"ip netns exec {net.ns('b')} {PY} -m harness.faults.pool kill {{url}}"  # run on b's "host"
    proc = net.run("d", [PY, "-m", "harness.cli", "run", str(books / "split.yaml"), "--runs-dir", str(tmp_path / "runs"),
                         "-p", "phase=2", "-p", "failover=false", "-p", "profile=quick", "-p", "pool_replica=chat-b",
                         # the load judged on failures alone: three models and the pipeline share two
                         # cores here, latencies are not what this test is about; nor the box: the
                         # other "hosts" are this box's namespaces, their services CPU outside d's view
                         "-p", "thresholds=fail_ratio<0.03", "-p", "outside_cpu_limit_pct=1000",
                         "-p", "cpu_benchmark=false",
                         "-p", f"pool_kill_command={kill_b}"],
                   env=cli_env(d), timeout=1200, cwd=ROOT)
    assert proc.returncode == 0 and "verdict: GO" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-3000:]
    run = next((tmp_path / "runs").iterdir())
    smoke = json.loads((run / "results" / "03_smoke.json").read_text())
    assert {"smoke.rag.index", "smoke.gateway.chat"} <= {r["id"] for r in smoke if r["status"] == "pass"}
    drill = {r["id"]: r for r in json.loads((run / "results" / "06_pool_drill.json").read_text())}
    assert {i: r["status"] for i, r in drill.items()} == {"pool.chat.ejection": "pass", "pool.chat.errors": "pass",
                                                          "pool.chat.readmission": "pass"}, drill
    assert "since its restart" in drill["pool.chat.readmission"]["detail"]  # chat-b's own /metrics, anew
    report = (run / "report.html").read_text()
    assert "pool.chat.ejection" in report and "pool drill chat" in report  # the verdicts and the traffic chart
    bring = json.loads((run / "results" / "01_bring_up.json").read_text())
    assert any("already running" in r.get("measured", "") for r in bring)  # started on their own hosts
    status = net.run("d", [PY, "-m", "suite.cli", "status", "--json"], env=cli_env(d), timeout=120)
    rows = {r["name"]: r for r in json.loads(status.stdout)}
    assert status.returncode == 0 and all(rows[n]["state"] == "remote" and rows[n]["ready"] for n in d.urls)
    # the harness reached every part at its host, over TLS; the chat pool spread the load
    metrics = net.run("d", [PY, "-c", "import httpx,ssl,sys; print(httpx.get(sys.argv[1], verify="
                                      "ssl.create_default_context(cafile=sys.argv[2])).text)",
                            d.url("gateway") + "/metrics", str(d.ca_file)], timeout=60).stdout
    served = {name: _sample(metrics, "gateway_upstream_requests_total", upstream=name, outcome="ok")
              for name in ("chat-a", "chat-b")}
    assert all(v > 0 for v in served.values()), served


def _sample(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


TARGET = """
import asyncio, collections
from fastapi import FastAPI, Request
app = FastAPI()
seen = collections.Counter()

@app.get("/seen")
async def get_seen():
    return dict(seen)

@app.post("/v1/completions")
async def completions(request: Request):
    seen[request.client.host] += 1
    await asyncio.sleep(0.02)
    return {"choices": [{"text": "x", "index": 0}]}
"""

DISTRIBUTED = """
import json, sys
from dataclasses import replace
from pathlib import Path
from harness.load import SCENARIOS, run_scenario
from harness.load.runner import Workers
host, out, master, launch = sys.argv[1], Path(sys.argv[2]), sys.argv[3], tuple(sys.argv[4:])
sc = replace(SCENARIOS["code"], users=4, spawn_rate=4, requests=60)
run = run_scenario(sc, host, out, allow_remote=True, max_run_s=120, workers=Workers(2, launch, bind=master))
print(json.dumps({"exit": run.exit_code, "measured": len(run.samples), "log": run.log_tail()}))
"""


def test_locust_workers_in_two_namespaces_send_every_sample_to_the_master(net, tmp_path):
    from harness.load.samples import read_samples

    (tmp_path / "target_app.py").write_text(TARGET)
    c, d = net.addr("c"), net.addr("d")
    net.popen("c", [PY, "-m", "uvicorn", "target_app:app", "--host", c, "--port", "18080", "--log-level", "warning"],
              cwd=tmp_path)
    seen_url = f"http://{c}:18080/seen"
    probe = [PY, "-c", "import httpx, sys; print(httpx.get(sys.argv[1], timeout=5).text)", seen_url]
    for _ in range(100):
        if net.run("d", probe, timeout=30).returncode == 0:
            break
    out = tmp_path / "load"
    proc = net.run("d", [PY, "-c", DISTRIBUTED, f"http://{c}:18080", str(out), d,
                         f"ip netns exec {net.ns('a')}", f"ip netns exec {net.ns('b')}"], cwd=ROOT, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0 and result["measured"] >= 60, result
    seen = json.loads(net.run("d", probe, timeout=30).stdout)
    assert set(seen) == {net.addr("a"), net.addr("b")}, seen  # the load came from both namespaces
    every = read_samples(out / "samples.jsonl")
    counted = sum(e["num_requests"] for e in json.loads((out / "locust.json").read_text()) if e["method"] != "METRIC")
    assert sum(seen.values()) == counted == sum(not s.censored for s in every), (seen, counted, len(every))
    assert sorted(f.name for f in out.glob("samples-*.jsonl")) == ["samples-worker-1.jsonl", "samples-worker-2.jsonl"]
