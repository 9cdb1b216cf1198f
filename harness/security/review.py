"""Deployment settings review: seed 002's production security checklist, executable.

Each line is one ``CheckResult`` (``security.config.*``) read from the settings the stack runs with,
its files on disk and its key store — no request to a service — and a finding names what to change
and where. The list, line by line, is in ``docs/security.md`` ("The checklist").
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from harness.result import CheckResult, Stage, Status, Timer
from suite import services
from suite.auth.keys import KeyStore
from suite.auth.startup import is_loopback
from suite.settings import Settings
from suite.tools.commands import COMMANDS
from suite.tools.stores import security_db_path

MAX_RATE_PER_MINUTE = 600  # a "limit" above this stops nobody
SHARED_DIRS = ("/", "/tmp", "/var/tmp", "/dev/shm", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var",
               "/opt", "/proc", "/sys", "/dev", "/boot", "/srv", "/run", "/home", "/root", "/mnt", "/media")
WILDCARD_HOSTS = ("*", "0.0.0.0", "::", "")


def _result(check_id: str, title: str, problems: list[str], t: Timer, target: str, ok_detail: str,
            warnings: list[str] | None = None, measured: str | None = None) -> CheckResult:
    if problems:
        status, detail = Status.FAIL, "; ".join(problems)
    elif warnings:
        status, detail = Status.WARN, "; ".join(warnings)
    else:
        status, detail = Status.PASS, ok_detail
    return CheckResult(f"security.config.{check_id}", title, Stage.SECURITY, status, target=target,
                       measured=measured or (f"{len(problems)} finding(s)" if problems else "ok"),
                       detail=detail, **t.fields())


def check_auth(settings: Settings) -> CheckResult:
    t = Timer()
    problems = [] if settings.auth.enabled else [
        "auth is off: every route is open. Set auth.enabled = true (suite.toml [auth] enabled = true, "
        "or SUITE_AUTH__ENABLED=true) and give clients keys from `suite keys create`"]
    return _result("auth", "keys required on every service", problems, t, "auth.enabled = true",
                   "auth.enabled = true")


def check_approvals(settings: Settings) -> CheckResult:
    t = Timer()
    problems = [] if settings.tools.approvals_required else [
        "approvals are off: a developer's write_file/edit_file/delete_file runs at once. Set "
        "tools.approvals_required = true (suite.toml [tools] approvals_required = true, or "
        "SUITE_TOOLS__APPROVALS_REQUIRED=true)"]
    return _result("approvals", "approvals required for destructive tools", problems, t,
                   "tools.approvals_required = true", "destructive tools of developers wait for an admin")


def check_rate_limits(settings: Settings) -> CheckResult:
    t = Timer()
    limits = {"tools.rate_limit_per_minute": settings.tools.rate_limit_per_minute,
              "auth.unauthenticated_per_minute": settings.auth.unauthenticated_per_minute,
              **{f"tools.rate_limit_per_tool.{k}": v for k, v in settings.tools.rate_limit_per_tool.items()}}
    problems = [f"{name} = {value} is no limit: lower it to at most {MAX_RATE_PER_MINUTE} "
                f"(suite.toml [{name.split('.')[0]}])" for name, value in limits.items() if value > MAX_RATE_PER_MINUTE]
    looser = [f"tools.rate_limit_per_tool.{k} = {v} is looser than the key's own budget "
              f"({settings.tools.rate_limit_per_minute}/min) and changes nothing: lower or remove it"
              for k, v in settings.tools.rate_limit_per_tool.items() if v > settings.tools.rate_limit_per_minute]
    return _result("rate_limits", "rate limits set", problems, t, f"every limit <= {MAX_RATE_PER_MINUTE}/min",
                   ", ".join(f"{k} {v}/min" for k, v in limits.items()), looser)


def check_bind(settings: Settings) -> CheckResult:
    """Loopback; or, beyond it, the suite's own TLS with certificates that are valid for weeks still
    (``suite tls``), or a TLS-terminating proxy named in ``auth.allowed_hosts``."""
    t = Timer()
    problems, warnings, measured = [], [], f"host {settings.host}"
    if not is_loopback(settings.host) and settings.tls.enabled:
        problems, warnings, measured = tls_findings(settings)
    elif not is_loopback(settings.host):
        if not settings.auth.allowed_hosts:
            problems.append(f"services bind {settings.host}, beyond loopback, without TLS: run `suite tls init "
                            "--san ADDRESS` and set SUITE_TLS__ENABLED=true, or bind 127.0.0.1 (SUITE_HOST=127.0.0.1) "
                            "and put a TLS-terminating proxy in front, naming it in auth.allowed_hosts")
        else:
            warnings.append(f"services bind {settings.host} behind {', '.join(settings.auth.allowed_hosts)}: "
                            "keys travel in clear text unless that proxy terminates TLS")
    return _result("bind", "bind address", problems, t, "loopback, the suite's TLS, or a TLS proxy in "
                   "auth.allowed_hosts", measured, warnings)


TLS_RENEW_DAYS = 30


def tls_findings(settings: Settings) -> tuple[list[str], list[str], str]:
    """(problems, warnings, measured) of the certificates ``tls.enabled`` serves with: every service's
    present, owner-only, signed by ``tls.ca_file`` and not expiring within ``TLS_RENEW_DAYS``."""
    import datetime as dt

    from suite import services, tls

    problems, warnings, ends = [], [], []
    rows = {r["name"]: r for r in tls.describe(settings)} if settings.tls_dir.is_dir() else {}
    now = dt.datetime.now(dt.UTC)
    for name in services.BY_NAME:
        row = rows.get(name)
        if row is None:
            problems.append(f"no certificate for {name} in {settings.tls_dir}: `suite tls init --san ADDRESS`")
            continue
        left = dt.datetime.fromisoformat(row["not_after"]) - now
        ends.append(left)
        if row["mode"] != "0o600":
            problems.append(f"chmod 600 {settings.tls_dir / (name + '.key')} {settings.tls_dir / (name + '.crt')}")
        if left.total_seconds() <= 0:
            problems.append(f"{name}'s certificate expired {row['not_after']}: `suite tls init --service {name}`")
        elif left.days < TLS_RENEW_DAYS:
            warnings.append(f"{name}'s certificate expires {row['not_after']}: reissue it with `suite tls init`")
    if not settings.ca_file.is_file():
        problems.append(f"no CA at {settings.ca_file} for the clients to verify with (tls.ca_file)")
    measured = f"host {settings.host}, TLS" + (f", first expiry in {min(ends).days} days" if ends else "")
    return problems, warnings, measured


def check_host_checking(settings: Settings) -> CheckResult:
    t = Timer()
    bad_hosts = [h for h in settings.auth.allowed_hosts if h.strip() in WILDCARD_HOSTS]
    bad_origins = [o for o in settings.auth.allowed_origins if o.strip() in ("*", "null", "")]
    problems = []
    if bad_hosts:
        problems.append(f"auth.allowed_hosts holds {bad_hosts}, which turns Host checking (DNS-rebinding "
                        "protection) off: list the real names only")
    if bad_origins:
        problems.append(f"auth.allowed_origins holds {bad_origins}: any web page could call the services "
                        "from a browser; list the real origins only")
    return _result("host_check", "Host and Origin checking on", problems, t, "no wildcard host or origin",
                   f"hosts: loopback + {settings.auth.allowed_hosts or 'nothing'}; origins: loopback + "
                   f"{settings.auth.allowed_origins or 'nothing'}")


def private_paths(settings: Settings) -> tuple[list[Path], list[Path]]:
    """(folders that must be 0700, files that must be 0600) of the stack's secrets and data."""
    memory_db = settings.memory_db_path
    backups = Path(settings.memory.backup_dir or settings.data_dir / "memory" / "backups")
    sets = settings.backup_dir  # `suite backup` sets: copies of the databases
    folders = [settings.data_dir, settings.key_store_path.parent, security_db_path(settings).parent,
               memory_db.parent, backups, sets]
    files = [settings.key_store_path, security_db_path(settings), memory_db,
             *(sorted(backups.glob("memory-*.db")) if backups.is_dir() else []),
             *(sorted(sets.rglob("*.db")) if sets.is_dir() else [])]
    if settings.rag.qdrant_api_key_file:
        files.append(settings.rag.qdrant_api_key_file.expanduser())
    return [f for f in dict.fromkeys(folders) if f.exists()], [f for f in files if f.exists()]


def check_file_modes(settings: Settings) -> CheckResult:
    t = Timer()
    folders, files = private_paths(settings)
    problems = []
    for folder in folders:
        mode = stat.S_IMODE(os.stat(folder).st_mode)
        if mode & 0o077:
            problems.append(f"{folder} is {oct(mode)}: `chmod 700 {folder}`")
    for f in files:
        mode = stat.S_IMODE(os.stat(f).st_mode)
        if mode & 0o077:
            problems.append(f"{f} is {oct(mode)} (readable by others): `chmod 600 {f}`")
    return _result("file_modes", "key store and data files private", problems, t,
                   "folders 0700, key store and data files 0600",
                   f"{len(folders)} folders 0700, {len(files)} files 0600 or stricter")


def _keys(settings: Settings) -> list[dict]:
    if not settings.key_store_path.exists():
        return []
    store = KeyStore.open(settings.key_store_path)
    try:
        return store.list()
    finally:
        store.close()


def check_admin_keys(settings: Settings, now: float | None = None) -> CheckResult:
    t = Timer()
    now = now or time.time()
    limit = settings.auth.max_admin_key_days
    admins = [k for k in _keys(settings) if k["role"] == "admin" and k["state"] == "active"]
    problems = []
    for k in admins:
        age = (now - k["created_at"]) / 86400
        if k["expires_at"] is None:
            problems.append(f"admin key {k['id']} ({k['name'] or 'no name'}) never expires: revoke it "
                            f"(`suite keys revoke {k['id']}`) and create one with `--ttl` (at most {limit}d)")
        elif age > limit:
            problems.append(f"admin key {k['id']} ({k['name'] or 'no name'}) is {age:.0f} days old (limit "
                            f"auth.max_admin_key_days = {limit}): rotate it (`suite keys revoke {k['id']}`, "
                            f"then `suite keys create --role admin --ttl {limit}d`)")
    return _result("admin_keys", f"admin keys expire and are younger than {limit} days", problems, t,
                   f"every active admin key has an expiry and is <= {limit} days old",
                   f"{len(admins)} active admin key(s), all expiring", measured=f"{len(admins)} admin key(s)")


def check_run_keys(settings: Settings, current_run: str | None) -> CheckResult:
    """Keys of earlier runs must be revoked or expired. Keys of a kernel that still runs on this host
    (another runbook of the session open in JupyterLab) are not earlier runs' leftovers: that kernel
    revokes them when it exits."""
    from harness.keys import held_by_live_process

    t = Timer()
    active = [k for k in _keys(settings) if k["run_id"] and k["run_id"] != current_run and k["state"] == "active"]
    live = {k["run_id"] for k in active if held_by_live_process(k["run_id"])}
    stale = [k for k in active if k["run_id"] not in live]
    runs = sorted({k["run_id"] for k in stale})
    problems = [f"{len([k for k in stale if k['run_id'] == r])} key(s) minted by run {r} are still active: "
                f"`suite keys revoke-run {r}`" for r in runs]
    ok = "every earlier run's keys are revoked or expired" + (
        f"; {len(live)} kernel(s) still running here hold keys they revoke when they exit" if live else "")
    return _result("run_keys", "no key of an earlier run left active", problems, t,
                   "keys minted by earlier runs revoked", ok, measured=f"{len(stale)} stale key(s)")


def _sandbox_roots(settings: Settings) -> list[Path]:
    return [Path(r).expanduser() for r in settings.tools.sandbox_roots] or [settings.data_dir / "sandbox"]


def _folder_problems(root: Path, where: str, homes: set[Path], secrets: list[Path]) -> list[str]:
    real = Path(os.path.realpath(root))
    if not real.is_dir():
        return [f"{where} does not exist: create it or fix the entry"]
    if str(real) in SHARED_DIRS or real in homes:
        return [f"{where} is {real}, a system, shared or home folder: point it at a folder made for the purpose"]
    holds = [s for s in secrets if str(Path(os.path.realpath(s))).startswith(str(real) + os.sep)]
    if holds:
        return [f"{where} contains {', '.join(map(str, holds))}: the key store or the audit could be read; "
                "move it out of the data folders"]
    return []


def not_deployed(check_id: str, title: str, service: str, phase: int) -> CheckResult:
    """A line about a service the run's phase does not start: it does not apply (a check must not
    judge a part that is not deployed; e.g. the sandbox folder is made by the tools service)."""
    return CheckResult.skipped(f"security.config.{check_id}", title, Stage.SECURITY, measured="not applicable",
                               detail=f"not applicable: the {service} service is not deployed in a phase-{phase} run")


def check_sandbox_roots(settings: Settings, phase: int = 3) -> CheckResult:
    """The folders keys can make the suite read: the tools' sandbox roots (phase 3) and RAG's
    ``allowed_dirs`` (phase 2), each only where its service is deployed."""
    t = Timer()
    if phase < services.get("rag").phase:
        return not_deployed("sandbox_roots", "sandbox roots and RAG folders are their own", "tools or rag", phase)
    tools = phase >= services.get("tools").phase
    homes = {Path.home().resolve(), Path("/root")}
    if Path("/home").is_dir():
        homes |= {p.resolve() for p in Path("/home").iterdir() if p.is_dir()}
    secrets = [settings.key_store_path, security_db_path(settings)]
    problems = []
    roots = _sandbox_roots(settings) if tools else []
    for root in roots:
        problems += _folder_problems(root, f"tools.sandbox_roots entry {root} (suite.toml [tools] sandbox_roots)",
                                     homes, secrets)
    for folder in settings.rag.allowed_dirs:
        problems += _folder_problems(Path(folder).expanduser(), f"rag.allowed_dirs entry {folder} (suite.toml "
                                     "[rag] allowed_dirs: a developer key indexes what is there)", homes, secrets)
    return _result("sandbox_roots", "sandbox roots and RAG folders are their own", problems, t,
                   "each exists; not /, a system, shared or home folder; holds no secrets",
                   ", ".join(str(r) for r in [*roots, *settings.rag.allowed_dirs]) or "no folders configured")


def check_commands(settings: Settings) -> CheckResult:
    t = Timer()
    bare = [c for c in settings.tools.command_allowlist if c not in COMMANDS]
    warnings = [f"tools.command_allowlist names {', '.join(bare)} without an argument table in "
                "suite/tools/commands.py: they get no options, only sandbox paths, and whatever else they do "
                "with a path (interpreters run it) is not checked; remove them or add a table"] if bare else []
    problems = [] if not settings.tools.allow_hardlinked_reads else [
        "tools.allow_hardlinked_reads = true: a hard link planted in the sandbox reads a file outside it; "
        "set it to false"]
    return _result("commands", "command allow-list and sandbox reads", problems, t,
                   "every allowed program has an argument table; hard-linked reads off",
                   ", ".join(settings.tools.command_allowlist), warnings)


def check_qdrant_key(settings: Settings) -> CheckResult:
    t = Timer()
    server = settings.rag.qdrant_url
    if not server:
        return CheckResult.skipped("security.config.qdrant_key", "Qdrant server API key", Stage.SECURITY,
                                   target="a server needs an API key", measured="no server",
                                   detail=f"profile {settings.profile}: the embedded store, no Qdrant server",
                                   **t.fields())
    path = settings.rag.qdrant_api_key_file
    problems = []
    if path is None:
        problems.append(f"Qdrant server {server} with no API key: anyone on the machine can read or delete every "
                        "collection. Start Qdrant with QDRANT__SERVICE__API_KEY and set rag.qdrant_api_key_file "
                        "(suite.toml [rag]) to a 0600 file holding the key")
    elif not path.expanduser().is_file() or not path.expanduser().read_text(encoding="utf-8").strip():
        problems.append(f"rag.qdrant_api_key_file {path} is missing or empty: write the key there (chmod 600)")
    return _result("qdrant_key", "Qdrant server API key", problems, t, "rag.qdrant_api_key_file set with a server",
                   f"server {server}, key file {path}")


def review(settings: Settings, current_run: str | None = None, phase: int = 3) -> list[CheckResult]:
    """Every line of the checklist, in order; the tools' lines only where the run's phase deploys the
    tools service."""
    tools = phase >= services.get("tools").phase
    checks: list[Callable[[], CheckResult]] = [
        lambda: check_auth(settings),
        lambda: check_approvals(settings) if tools else not_deployed(
            "approvals", "approvals required for destructive tools", "tools", phase),
        lambda: check_rate_limits(settings),
        lambda: check_bind(settings), lambda: check_host_checking(settings), lambda: check_file_modes(settings),
        lambda: check_admin_keys(settings), lambda: check_run_keys(settings, current_run),
        lambda: check_sandbox_roots(settings, phase),
        lambda: check_commands(settings) if tools else not_deployed(
            "commands", "command allow-list and sandbox reads", "tools", phase),
        lambda: check_qdrant_key(settings)]
    return [check() for check in checks]
