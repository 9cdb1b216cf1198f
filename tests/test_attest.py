"""A run a release manager can sign: `harness keys`, the in-toto test-result statement in a DSSE envelope
over every file of a real run (real kernels, no stack), `harness verify` naming exactly what changed,
and the envelope and statement read by securesystemslib and in-toto-attestation, the reference
libraries of both formats."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from harness import attest, signing
from harness.result import CheckResult, Stage, Status, save_results
from harness.rundir import RunDir
from harness.sequence import default_sequence, run_meta
from tests import test_sequence as tiny
from tests.test_sequence import _env, harness, run, runs

sequence = tiny.sequence  # the fixture: a tiny sequence of real notebooks (two checks each), no stack


def _keyid(out: str) -> str:
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("key id"))


@pytest.mark.integration
def test_keys_init_makes_an_owner_only_key_outside_runs_and_never_replaces_it(tmp_path):
    env = _env(tmp_path)
    made = harness(tmp_path, "keys", "init", env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    key = tmp_path / "data" / "signing" / "harness-ed25519.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    keyid = _keyid(made.stdout)
    assert keyid == signing.key_id(signing.load_public(Path(f"{key}.pub"))) and "BEGIN PUBLIC KEY" in made.stdout
    before = key.read_bytes()
    again = harness(tmp_path, "keys", "init", env=env)
    assert again.returncode == 0 and "kept the existing" in again.stdout and _keyid(again.stdout) == keyid
    assert key.read_bytes() == before

    inside = harness(tmp_path, "keys", "init", "--key", str(tmp_path / "runs" / "k.pem"),
                     "--runs-dir", str(tmp_path / "runs"), env=env)
    assert inside.returncode == 2 and "outside runs/" in inside.stderr
    assert not (tmp_path / "runs" / "k.pem").exists()
    key.chmod(0o644)
    loose = harness(tmp_path, "keys", "show", env=env)
    assert loose.returncode == 2 and "readable by others" in loose.stderr and "chmod 600" in loose.stderr


@pytest.mark.integration
def test_a_signed_run_verifies_and_verify_names_exactly_what_changed(tmp_path, sequence):
    env = _env(tmp_path)
    keyid = _keyid(harness(tmp_path, "keys", "init", env=env).stdout)
    done = run(tmp_path, sequence, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "attestation: " in done.stdout and f"signed by key {keyid[:16]}" in done.stdout
    [run_dir] = runs(tmp_path)
    assert f'data-keyid="{keyid}"' in (run_dir / "report.html").read_text()  # the report names its signer

    def verify(*extra: str):
        return harness(tmp_path, "verify", run_dir.name, "--runs-dir", str(tmp_path / "runs"), *extra, env=env)

    good = verify()
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"key {keyid}" in good.stdout and "VERIFIED" in good.stdout and "attested result: WARNED" not in good.stdout
    envelope = json.loads((run_dir / attest.FILE_NAME).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    names = {s["name"] for s in statement["subject"]}
    for expected in ("report.html", "run.json", "steps.json", "ledger.json", "results/a.json", "results/b.json",
                     "notebooks/a.ipynb", "notebooks/a.html", "notebooks/z_report.ipynb"):
        assert expected in names, expected
    assert statement["predicate"]["result"] == "PASSED"
    assert {"a.check", "b.check"} <= set(statement["predicate"]["passedTests"])
    params = next(c for c in statement["predicate"]["configuration"] if c["name"] == "parameters")
    assert "db_password" in params["annotations"]["secretParameters"]  # named as secret, its value never stored

    # one byte of a results file: verify names that file, and nothing else
    results = run_dir / "results" / "b.json"
    original = results.read_bytes()
    changed = bytearray(original)
    changed[changed.index(b"10.0")] = ord("9")
    results.write_bytes(bytes(changed))
    tampered = verify()
    assert tampered.returncode == 1
    lines = [ln.strip() for ln in tampered.stdout.splitlines()]
    assert [ln for ln in lines if ln.startswith(("modified:", "missing:", "added:"))] == [
        next(ln for ln in lines if ln.startswith("modified: results/b.json"))]
    assert "NOT VERIFIED" in tampered.stdout
    results.write_bytes(original)

    (run_dir / "notebooks" / "a.html").rename(tmp_path / "a.html")
    (run_dir / "notes.txt").write_text("added later")
    moved = verify()
    assert moved.returncode == 1
    assert "missing: notebooks/a.html" in moved.stdout and "added: notes.txt" in moved.stdout
    (tmp_path / "a.html").rename(run_dir / "notebooks" / "a.html")
    (run_dir / "notes.txt").unlink()
    assert verify().returncode == 0

    # a resumed run would sign someone's edits: refused while the evidence differs from what was signed
    results.write_bytes(bytes(changed))
    resumed = harness(tmp_path, "resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"), env=env)
    assert resumed.returncode == 2 and "results/b.json" in resumed.stderr
    results.write_bytes(original)

    # the statement itself edited: the signature no longer verifies
    forged = dict(statement, predicate={**statement["predicate"], "result": "PASSED", "failedTests": []})
    (run_dir / attest.FILE_NAME).write_text(json.dumps(
        {**envelope, "payload": base64.b64encode(json.dumps(forged).encode() + b" ").decode()}) + "\n")
    broken = verify()
    assert broken.returncode == 1 and "does not verify" in broken.stdout
    (run_dir / attest.FILE_NAME).write_text(json.dumps(envelope) + "\n")

    # someone else's key is not this signer's
    other, _ = signing.init_key(tmp_path / "other" / "k.pem")
    stranger = verify("--key", str(other.public_path))
    assert stranger.returncode == 1 and "not a key you trust" in stranger.stdout
    assert verify("--key", str(tmp_path / "data" / "signing" / "harness-ed25519.pem.pub")).returncode == 0


@pytest.mark.integration
def test_a_run_without_a_key_says_it_is_unsigned_and_verify_refuses(tmp_path, sequence):
    env = _env(tmp_path)
    done = run(tmp_path, sequence, env=env)
    assert done.returncode == 0 and "not signed: no signing key" in done.stdout and "harness keys init" in done.stdout
    [run_dir] = runs(tmp_path)
    assert "Not signed" in (run_dir / "report.html").read_text()
    harness(tmp_path, "keys", "init", env=env)
    refused = harness(tmp_path, "verify", run_dir.name, "--runs-dir", str(tmp_path / "runs"), env=env)
    assert refused.returncode == 2 and "was not signed" in refused.stderr


@pytest.fixture
def signed_run(tmp_path, monkeypatch) -> tuple[Path, signing.SigningKey]:
    """A small run directory (a waived and a failed check among its results), signed."""
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path / "data"))
    key, _ = signing.init_key(tmp_path / "data" / "signing" / "harness-ed25519.pem")
    run = RunDir.create(tmp_path / "runs", "20260101-100000-abcd")
    run.write_json(run.meta_file, {**run_meta(run, default_sequence(), {"api_key": "[redacted]", "profile": "seed"},
                                              secret={"api_key"}, profile="seed"),
                                   "runbooks": [{"notebook": "00_validate_env.ipynb", "required": True, "report": False}],
                                   "finished_at": "2026-01-01T10:10:00+00:00"})
    run.write_json(run.steps_file, [{"notebook": "00_validate_env.ipynb", "status": "pass"}])
    save_results([CheckResult("env.gpu", "GPU", Stage.ENVIRONMENT, Status.FAIL, target="NVML sees a GPU",
                              measured="no GPU"),
                  CheckResult("env.disk", "Disk", Stage.ENVIRONMENT, Status.PASS, target=">= 5 GB", value=40.0,
                              unit="GB")], run.results / "00_validate_env.json")
    (run.path / "waivers.toml").write_text('[[waiver]]\ncheck = "env.gpu"\njustification = "no GPU on staging"\n'
                                           'owner = "rm@example.org"\nexpires = 2099-12-31\n')
    attest.sign_run(run.path, key)
    return run.path, key


def test_securesystemslib_verifies_our_envelope_and_we_verify_its(signed_run):
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner, SSlibKey

    run_dir, key = signed_run
    data = json.loads((run_dir / attest.FILE_NAME).read_text())
    theirs = Envelope.from_dict(json.loads(json.dumps(data)))
    their_key = SSlibKey.from_crypto(key.public)
    assert their_key.keyid == key.keyid  # the fingerprint the report shows is securesystemslib's key id
    assert theirs.pae() == signing.pae(data["payloadType"], base64.b64decode(data["payload"]))
    assert list(theirs.verify([their_key], 1)) == [key.keyid]

    signed_by_them = Envelope(b'{"hello": "world"}', signing.IN_TOTO_PAYLOAD_TYPE, {})
    signed_by_them.sign(CryptoSigner(key.private, their_key))
    assert signing.verify(signed_by_them.to_dict(), [key.public]).payload == b'{"hello": "world"}'
    other, _ = signing.init_key(run_dir.parent.parent / "other.pem")
    with pytest.raises(signing.SignatureError):
        signing.verify(signed_by_them.to_dict(), [other.public])


def test_in_toto_attestation_parses_the_statement_and_the_test_result_predicate(signed_run):
    from google.protobuf import json_format
    from in_toto_attestation.predicates.test_result.v0 import test_result_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    run_dir, _ = signed_run
    envelope = json.loads((run_dir / attest.FILE_NAME).read_text())
    stmt = json.loads(base64.b64decode(envelope["payload"]))
    Statement.copy_from_pb(json_format.ParseDict(stmt, statement_pb2.Statement())).validate()
    predicate = json_format.ParseDict(stmt["predicate"], test_result_pb2.TestResult())  # unknown fields refused
    assert predicate.result == "WARNED"  # GO, with a waived failure
    assert list(predicate.warned_tests) == ["env.gpu"] and list(predicate.failed_tests) == []
    for item in stmt["predicate"]["configuration"]:  # the spec: a descriptor MUST carry uri, digest or content
        assert item.get("digest") or item.get("uri") or item.get("content"), item
    waivers = next(c for c in stmt["predicate"]["configuration"] if c["name"] == "waivers.toml")
    [used] = waivers["annotations"]["used"]
    assert used["owner"] == "rm@example.org" and used["waived"][0]["measured"] == "no GPU"
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()} - {attest.FILE_NAME}
    assert {s["name"] for s in stmt["subject"]} == files


def test_a_rebuilt_report_is_signed_again_only_over_unchanged_evidence(signed_run, tmp_path):
    from harness.cli import main

    run_dir, _ = signed_run
    assert main(["report", str(run_dir)]) == 0
    assert attest.verify_run(run_dir, attest.trusted_local()).ok  # the new report.html is signed
    (run_dir / "results" / "00_validate_env.json").write_text("[]")
    assert main(["report", str(run_dir)]) == 0
    check = attest.verify_run(run_dir, attest.trusted_local())
    assert not check.ok and {c.name for c in check.changes} >= {"results/00_validate_env.json", "report.html"}
