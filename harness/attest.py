"""A signed attestation per run, and ``harness verify``: is this the run the pipeline wrote?

When a run closes (after ``ledger.json``), ``sign_run`` writes ``attestation.intoto.jsonl`` in the run
directory: one DSSE envelope (``harness.signing``) around an in-toto Statement v1
(github.com/in-toto/attestation, spec/v1) whose

- ``subject`` is every file of the run directory (report, executed notebooks and their HTML,
  results, load samples, backup manifests, figures, ``run.json``, ``steps.json``, the ledger, the
  run's waiver file) by path and sha256 — everything but the attestation itself;
- ``predicateType`` is ``https://in-toto.io/attestation/test-result/v0.1`` (spec/predicates/
  test-results.md) and the predicate holds only that type's fields: ``result`` (``PASSED`` for GO with
  nothing to note, ``WARNED`` for GO with warnings or waived checks, ``FAILED`` for NO-GO),
  ``passedTests`` / ``warnedTests`` / ``failedTests`` (check ids; a waived check is warned; a runbook
  that did not pass is ``runbook:<name>``, an expired or refused waiver ``waiver:<pattern>``), and
  ``configuration``, a list of ResourceDescriptors: the sequence file (sha256, its runbooks), the
  parameters (secrets redacted, as in ``run.json``), the settings (sha256 of the effective settings
  JSON, with profile and backend), the git commit, the waivers (the file's sha256 and every waiver
  used, expired or refused with the checks and measured values), the verdict and its reasons.

``verify_run`` checks the signature with a key the verifier trusts (the local key's public half, or
``--key FILE``), that the report names the same signer, and every subject's hash against the files,
naming each file modified (with both hashes and sizes), missing, or added since signing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import signing
from harness.errors import RunbookError
from harness.ledger import git_sha, sha256_file
from harness.result import Status
from harness.rundir import RunDir
from harness.verdict import judge, load_run
from suite.fsio import write_atomic

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://in-toto.io/attestation/test-result/v0.1"
FILE_NAME = RunDir(Path(".")).attestation_file.name  # SLSA's naming (.intoto.jsonl): one DSSE envelope per line
SIGNER_MARK = re.compile(r'id="signer"[^>]*data-keyid="([0-9a-f]*)"')


class NotAttested(RunbookError):
    """A run directory without an attestation."""


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _digest(data: Any) -> dict[str, str]:
    return {"sha256": hashlib.sha256(_canonical(data)).hexdigest()}


def subjects(run_dir: Path) -> list[dict[str, Any]]:
    """Every file of the run directory (but the attestation and files being written) by sha256."""
    root = Path(run_dir)
    out = []
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and name != FILE_NAME and not path.name.endswith(".tmp"):
            out.append({"name": name, "digest": {"sha256": sha256_file(path)}})
    return out


def _settings_descriptor() -> dict[str, Any]:
    from suite.settings import Settings

    try:
        settings = Settings()
    except ValueError as exc:
        return {"name": "settings", "digest": _digest(str(exc)), "annotations": {"error": str(exc)[:300]}}
    return {"name": "settings", "digest": {"sha256": hashlib.sha256(settings.model_dump_json().encode()).hexdigest()},
            "mediaType": "application/json",
            "annotations": {"profile": settings.profile, "backend": settings.backend,
                            "portOffset": settings.port_offset}}


def _waiver_descriptor(run: RunDir, judged) -> dict[str, Any] | None:
    from harness import waivers

    path = run.path / waivers.FILE_NAME
    if not path.is_file():
        return None

    def checks(results) -> list[dict[str, str]]:
        return [{"check": r.id, "status": r.status.value, "target": r.target, "measured": r.measured}
                for r in results]

    return {"name": waivers.FILE_NAME, "digest": {"sha256": sha256_file(path)}, "mediaType": "application/toml",
            "annotations": {
                "asOf": judged.as_of.isoformat(), "error": judged.error,
                "used": [{**a.waiver.to_dict(), "waived": checks(a.waived)} for a in judged.used],
                "expired": [{**a.waiver.to_dict(), "wouldCover": checks(a.covered)} for a in judged.expired],
                "refused": [{**a.waiver.to_dict(), "why": a.refused} for a in judged.refused],
                "unused": [a.waiver.to_dict() for a in judged.unused]}}


def statement(run_dir: Path) -> dict[str, Any]:
    """The in-toto Statement of a run directory as it is now (see the module docstring)."""
    run = RunDir(Path(run_dir))
    record = load_run(run.path)
    verdict = judge(record)
    judged = record.waivers
    meta = record.meta
    passed = [r.id for r in record.results if r.status is Status.PASS]
    waived = [r.id for r in record.results if judged is not None and judged.waived(r)]
    warned = [r.id for r in record.results if r.status is Status.WARN and r.id not in waived] + waived
    failed = [r.id for r in record.results if r.status is Status.FAIL and r.id not in waived]
    failed += [f"runbook:{Path(s['notebook']).stem}" for s in record.steps
               if not s.get("report") and s.get("required", True) and s["status"] is not Status.PASS]
    if judged is not None:
        failed += [f"waiver:{a.waiver.check}" for a in judged.expired]
        failed += [f"waiver:{a.waiver.check}" for a in judged.refused if a not in judged.expired]
    result = "FAILED" if not verdict.go else "WARNED" if warned else "PASSED"
    configuration: list[dict[str, Any]] = []
    sequence_file = Path(meta.get("sequence_file") or "")
    sequence = {"name": sequence_file.name or "sequence", "annotations": {
        "sequence": meta.get("sequence", "?"), "file": str(sequence_file), "runbooks": meta.get("runbooks", [])}}
    if sequence_file.is_file():
        sequence["digest"] = {"sha256": sha256_file(sequence_file)}
    else:
        sequence["digest"] = _digest(meta.get("runbooks", []))
    configuration.append(sequence)
    parameters = {"parameters": meta.get("parameters", {}), "secretParameters": meta.get("secret_parameters", []),
                  "profile": meta.get("profile"), "settingsProfile": meta.get("settings_profile")}
    configuration.append({"name": "parameters", "digest": _digest(parameters), "mediaType": "application/json",
                          "annotations": parameters})
    configuration.append(_settings_descriptor())
    if sha := (meta.get("git_sha") or git_sha()):
        configuration.append({"name": "git", "digest": {"gitCommit": sha}})
    if waiver := _waiver_descriptor(run, judged):
        configuration.append(waiver)
    outcome = {"runId": meta.get("run_id", run.run_id), "verdict": verdict.label, "reasons": list(verdict.reasons),
               "startedAt": meta.get("started_at"), "finishedAt": meta.get("finished_at")}
    configuration.append({"name": "verdict", "digest": _digest(outcome), "mediaType": "application/json",
                          "annotations": outcome})
    return {"_type": STATEMENT_TYPE, "subject": subjects(run.path), "predicateType": PREDICATE_TYPE,
            "predicate": {"result": result, "configuration": configuration, "passedTests": passed,
                          "warnedTests": warned, "failedTests": failed}}


def signing_key_path() -> Path:
    from suite.settings import Settings

    return Settings().signing_key_path


def sign_run(run_dir: Path, key: signing.SigningKey | None = None) -> Path:
    """Write the run's attestation, signed with ``key`` (default: the configured key)."""
    run_dir = Path(run_dir)
    key = key or signing.load_key(signing_key_path(), forbidden=[run_dir.parent])
    signing.check_location(key.path, [run_dir.parent])
    payload = _canonical(statement(run_dir))
    envelope = signing.sign(payload, key)
    return write_atomic(run_dir / FILE_NAME, json.dumps(envelope, separators=(",", ":")) + "\n")


def close_run(run_dir: Path) -> str:
    """Sign the run if a signing key is configured; one line saying what happened (never raises for a
    missing or unusable key: the run is then unsigned, and says so)."""
    try:
        key = signing.load_key(signing_key_path(), forbidden=[Path(run_dir).parent])
    except signing.SigningError as exc:
        return f"not signed: {exc}"
    path = sign_run(run_dir, key)
    return f"attestation: {path} (signed by key {key.keyid[:16]}…; `harness verify {Path(run_dir).name}` checks it)"


@dataclass
class Change:
    kind: str  # modified | missing | added
    name: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.kind}: {self.name}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Verification:
    run_dir: Path
    signer: str = ""  # key id whose signature verified
    problem: str = ""  # signature, format or signer problem (nothing else was checked past it)
    changes: list[Change] = field(default_factory=list)
    subjects: int = 0
    predicate: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problem and not self.changes

    def lines(self) -> list[str]:
        if self.problem:
            return [f"NOT VERIFIED: {self.problem}"]
        head = (f"signature: good, key {self.signer} (Ed25519)",
                f"attested result: {self.predicate.get('result', '?')}")
        waivers = _used_waivers(self.predicate)
        extra = [f"waivers used: {', '.join(waivers)}"] if waivers else []
        if not self.changes:
            return [*head, *extra, f"files: all {self.subjects} match the attestation", "VERIFIED"]
        return [*head, *extra, f"{len(self.changes)} of the run's files differ from what was signed:",
                *[f"  {c.line()}" for c in self.changes], "NOT VERIFIED: the run changed after signing"]


def _used_waivers(predicate: dict[str, Any]) -> list[str]:
    for item in predicate.get("configuration", []):
        if item.get("name") == "waivers.toml":
            return [f"{w['check']} ({w['owner']}, until {w['expires']})" for w in item["annotations"]["used"]]
    return []


def read_envelope(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        raise NotAttested(f"{run_dir} has no {FILE_NAME}: the run was not signed (no signing key then; "
                          f"`harness keys init` makes one for the next run)")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        return {"error": f"{FILE_NAME} is not a JSON envelope ({exc})"}


def verify_run(run_dir: Path, trusted: list) -> Verification:
    """Check a run directory against its attestation (see the module docstring)."""
    run_dir = Path(run_dir)
    out = Verification(run_dir)
    envelope = read_envelope(run_dir)
    if "error" in envelope:
        out.problem = envelope["error"]
        return out
    try:
        verified = signing.verify(envelope, trusted)
    except signing.SignatureError as exc:
        out.problem = str(exc)
        return out
    out.signer = verified.keyid
    try:
        stmt = json.loads(verified.payload)
    except ValueError:
        out.problem = "the signed payload is not JSON"
        return out
    if verified.payload_type != signing.IN_TOTO_PAYLOAD_TYPE or stmt.get("_type") != STATEMENT_TYPE \
            or stmt.get("predicateType") != PREDICATE_TYPE:
        out.problem = (f"not an in-toto test-result statement (payloadType {verified.payload_type}, _type "
                       f"{stmt.get('_type')}, predicateType {stmt.get('predicateType')})")
        return out
    out.predicate = stmt.get("predicate", {})
    signed = {s["name"]: s["digest"]["sha256"] for s in stmt.get("subject", [])}
    out.subjects = len(signed)
    now = {s["name"]: s["digest"]["sha256"] for s in subjects(run_dir)}
    for name, digest in signed.items():
        if name not in now:
            out.changes.append(Change("missing", name, "deleted since signing"))
        elif now[name] != digest:
            size = (run_dir / name).stat().st_size
            out.changes.append(Change("modified", name, f"sha256 {digest[:16]}… signed, {now[name][:16]}… now; "
                                                        f"{size} bytes now"))
    out.changes += [Change("added", name, "not in the attestation") for name in sorted(set(now) - set(signed))]
    out.changes += [Change("added", p.relative_to(run_dir).as_posix(), "a symbolic link; not attested")
                    for p in sorted(run_dir.rglob("*")) if p.is_symlink()]
    report = run_dir / "report.html"
    if report.is_file() and "report.html" in signed and (m := SIGNER_MARK.search(report.read_text(errors="replace"))):
        if m.group(1) != out.signer:
            out.changes.append(Change("signer", "report.html", f"the report names key {m.group(1) or 'none'}, "
                                                                f"the attestation is signed by {out.signer}"))
    return out


def trusted_local() -> list:
    """The configured key's public half, as the one trusted key (empty when there is no key)."""
    public = signing.local_public(signing_key_path())
    return [public] if public is not None else []


def tampered(run_dir: Path) -> list[str]:
    """What changed in a signed run since it was signed, as lines (empty when unsigned, unchanged, or
    signed by a key this machine does not hold: nothing can be said then). Re-signing over such a
    change (a resumed run, a rebuilt report) would launder it."""
    if not RunDir(Path(run_dir)).attestation_file.is_file():
        return []
    try:
        trusted = trusted_local()
    except signing.SigningError:
        return []
    if not trusted:
        return []
    check = verify_run(run_dir, trusted)
    if check.problem and "not a key you trust" in check.problem:
        return []
    return [check.problem] if check.problem else [c.line() for c in check.changes]


def signer_info() -> dict[str, str]:
    """Who will sign (or signed) the run, for the report: the configured key's id, or why none."""
    try:
        path = signing_key_path()
        public = signing.local_public(path)
    except (signing.SigningError, ValueError) as exc:
        return {"keyid": "", "problem": str(exc)}
    if public is None:
        return {"keyid": "", "problem": f"no signing key ({path}); `harness keys init` makes one"}
    return {"keyid": signing.key_id(public), "problem": ""}
