"""Container hardening, seed 003's checklist, on the docker backend: one ``CheckResult`` per line, read
from the engine (``docker inspect`` through the SDK), from ``/proc`` of each container's process on the
host (what the kernel enforces, not only what was asked for) and from a throwaway container of the image.

* ``non_root``         the configured user is not root, and the process's real uid is not 0
* ``read_only_rootfs`` ``ReadonlyRootfs``
* ``no_new_privileges`` ``no-new-privileges`` asked for, and ``NoNewPrivs: 1`` in the process's status
* ``caps_dropped``     ``CapDrop: [ALL]``, nothing added, an empty effective capability set
* ``no_docker_socket`` no mount of the Docker socket (or of ``/var/run``, ``/run`` whole)
* ``loopback_only``    no port published beyond 127.0.0.1, every listening socket on loopback
* ``secrets_0600``     the secret files and the containers' settings are 0600 (owner: the containers' user)
* ``image_contents``   no compiler, no private key (a PEM private key or an ssh key, by content: CA
                       certificates are public), no model file, no test extra in the image

On the process backend every line is a skip that says so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import stat
from pathlib import Path

from harness.result import CheckResult, Stage, Status, Timer
from suite.settings import Settings

SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run")
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "cmake", "make", "ld", "as", "nvcc", "rustc", "go")
# run inside a throwaway container of the image: what it holds that a runtime image must not
PROBE = r"""
import importlib.metadata, json, os, shutil
skip = ("/proc", "/sys", "/dev", "/tmp")
code = (".py", ".pyc", ".so", ".pyi", ".c", ".h", ".js", ".html", ".txt", ".md", ".rst")
keys, models = [], []
for root, dirs, files in os.walk("/"):
    if root.startswith(skip):
        dirs[:] = []
        continue
    for f in files:
        path, low = os.path.join(root, f), f.lower()
        if low.endswith((".gguf", ".safetensors", ".ggml")) or (low.endswith(".bin") and "model" in low):
            models.append(path)
        if low.startswith(("id_rsa", "id_ed25519", "id_ecdsa", "id_dsa")) and not low.endswith(".pub"):
            keys.append(path)
        elif not low.endswith(code) and os.path.isfile(path) and not os.path.islink(path):
            try:
                with open(path, "rb") as fh:
                    head = fh.read(65536)
            except OSError:
                continue
            if b"PRIVATE KEY-----" in head:  # PEM: RSA, EC, OpenSSH, PKCS#8 (certificates are public)
                keys.append(path)
print(json.dumps({
    "compilers": {c: shutil.which(c) for c in COMPILER_NAMES if shutil.which(c)},
    "keys": keys[:20], "models": models[:20],
    "test_extras": [d for d in TEST_DISTS if any(True for _ in importlib.metadata.distributions(name=d))],
    "user": os.getuid()}))
""".replace("COMPILER_NAMES", repr(list(COMPILERS)))


def test_only_packages() -> list[str]:
    """The ``test`` extra's distributions that no runtime dependency pulls in (pytest itself is one:
    Locust, a runtime dependency of the harness, requires it)."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from suite.containers.images import runtime_closure
    from suite.settings import project_root

    extra = tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    runtime = set(runtime_closure())
    return sorted(n for n in (canonicalize_name(Requirement(r).name) for r in extra) if n not in runtime)


def _result(check_id: str, title: str, target: str, problems: list[str], ok: str, t: Timer,
            evidence: list[str]) -> CheckResult:
    return CheckResult(f"security.container.{check_id}", title, Stage.SECURITY,
                       Status.FAIL if problems else Status.PASS, target=target,
                       measured=f"{len(problems)} finding(s)" if problems else "ok",
                       detail="; ".join(problems) if problems else ok, evidence=evidence, **t.fields())


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:  # "" (every interface) or a name
        return False


def listening_sockets(pid: int) -> list[str]:
    """``ip:port`` of every listening TCP socket that process ``pid`` holds, read from its own network
    namespace (``/proc/<pid>/net/tcp[6]``, host network or not; psutil reads the caller's)."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        return []
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            addr, port = fields[1].split(":")
            raw = bytes.fromhex(addr)
            # the kernel prints each 32-bit word in host (little-endian) order
            ip = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(f"{ipaddress.ip_address(ip)}:{int(port, 16)}")
    return found


def _proc_status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


def describe(container) -> dict:
    """What the checks read of one container: its inspect fields and its process's /proc status."""
    pid = container.attrs["State"].get("Pid") or 0
    status = _proc_status(pid)
    listening = listening_sockets(pid)
    host = container.attrs["HostConfig"]
    return {
        "container": container.name, "image": container.attrs["Config"].get("Image"),
        "user": container.attrs["Config"].get("User", ""), "uid": status.get("Uid", "").split()[:1],
        "read_only": bool(host.get("ReadonlyRootfs")), "security_opt": host.get("SecurityOpt") or [],
        "no_new_privs": status.get("NoNewPrivs"), "cap_drop": host.get("CapDrop") or [],
        "cap_add": host.get("CapAdd") or [], "cap_eff": status.get("CapEff"),
        "mounts": [{"source": m.get("Source"), "destination": m.get("Destination"), "rw": m.get("RW")}
                   for m in container.attrs.get("Mounts", [])],
        "network_mode": host.get("NetworkMode"), "port_bindings": host.get("PortBindings") or {},
        "listening": listening, "restart_policy": host.get("RestartPolicy"),
    }


def inspect_containers(settings: Settings) -> dict[str, dict]:
    """``describe`` of every running container of the project, by compose service."""
    from suite.supervisor.docker import DockerBackend

    return {name: describe(c) for name, c in DockerBackend(settings).containers().items() if c.status == "running"}


def image_contents(image: str) -> dict:
    """Run ``PROBE`` in a throwaway container of ``image``: no network, read-only, as its own user."""
    from suite.containers.engine import require_client

    probe = PROBE.replace("TEST_DISTS", repr(test_only_packages()))
    out = require_client().containers.run(image, ["python", "-c", probe], remove=True, network_mode="none",
                                          read_only=True, tmpfs={"/tmp": ""}, cap_drop=["ALL"],
                                          security_opt=["no-new-privileges:true"], entrypoint=[])
    return json.loads(out.decode().strip().splitlines()[-1])


def review(settings: Settings, evidence_dir: Path) -> list[CheckResult]:
    """Every line of the hardening checklist (skips on the process backend)."""
    if settings.backend != "docker":
        return [CheckResult.skipped("security.container", "container hardening", Stage.SECURITY,
                                    target="docker backend", measured="not run",
                                    detail="process backend: no container runs (SUITE_BACKEND=docker runs these "
                                           "checks)")]
    t = Timer()
    found = inspect_containers(settings)
    evidence_dir.mkdir(parents=True, exist_ok=True)
    path = evidence_dir / "containers.json"
    rel = [f"security/{path.name}"]
    if not found:
        return [CheckResult("security.container", "container hardening", Stage.SECURITY, Status.FAIL,
                            target="the stack's containers inspected", measured="no container running",
                            detail="the docker backend runs no container of the project", **t.fields())]
    from suite.containers.images import IMAGE

    contents = image_contents(IMAGE)
    path.write_text(json.dumps({"containers": found, "image": {IMAGE: contents}}, indent=1))
    checks = judge(found, t, rel)
    checks.insert(6, _check_secret_modes(settings, t, rel))
    checks.append(judge_image(IMAGE, contents, t, rel))
    return checks


def judge(found: dict[str, dict], t: Timer, rel: list[str]) -> list[CheckResult]:
    """The per-container lines over ``describe``'s records."""
    n = f"{len(found)} containers"
    checks = []

    def each(pred, why) -> list[str]:
        return [f"{name}: {why(info)}" for name, info in found.items() if not pred(info)]

    checks.append(_result("non_root", "containers run as a non-root user", "user set, process uid != 0",
                          each(lambda i: i["user"] and not i["user"].startswith(("0", "root")) and i["uid"] != ["0"],
                               lambda i: f"user {i['user']!r}, process uid {i['uid']}"),
                          f"{n}: " + ", ".join(sorted({f"user {i['user']}" for i in found.values()})), t, rel))
    checks.append(_result("read_only_rootfs", "read-only root filesystem", "ReadonlyRootfs", each(
        lambda i: i["read_only"], lambda i: "root filesystem writable"), f"{n} read-only", t, rel))
    checks.append(_result("no_new_privileges", "no new privileges", "no-new-privileges, NoNewPrivs 1", each(
        lambda i: any(o.startswith("no-new-privileges") for o in i["security_opt"]) and i["no_new_privs"] == "1",
        lambda i: f"security_opt {i['security_opt']}, NoNewPrivs {i['no_new_privs']}"),
        f"{n}: NoNewPrivs 1 in every process", t, rel))
    checks.append(_result("caps_dropped", "capabilities dropped", "CapDrop ALL, none added, CapEff 0", each(
        lambda i: "ALL" in i["cap_drop"] and not i["cap_add"] and int(i["cap_eff"] or "1", 16) == 0,
        lambda i: f"cap_drop {i['cap_drop']}, cap_add {i['cap_add']}, CapEff {i['cap_eff']}"),
        f"{n}: effective capabilities 0", t, rel))
    checks.append(_result("no_docker_socket", "no Docker socket mounted", "no mount of the socket or /run", each(
        lambda i: not any(m["source"] in SOCKETS or (m["source"] or "").endswith("docker.sock") for m in i["mounts"]),
        lambda i: "mounts " + ", ".join(m["source"] for m in i["mounts"])),
        f"{n}: mounts " + ", ".join(sorted({m['source'] for i in found.values() for m in i['mounts']})), t, rel))
    checks.append(_result("loopback_only", "nothing published beyond loopback", "no port bound beyond 127.0.0.1",
                          each(lambda i: all(_loopback(b.get("HostIp", ""))
                                             for bs in i["port_bindings"].values() for b in bs or [])
                               and all(_loopback(a.rsplit(":", 1)[0]) for a in i["listening"]),
                               lambda i: f"published {i['port_bindings']}, listening {i['listening']}"),
                          f"{n}: listening " + ", ".join(a for i in found.values() for a in i["listening"]), t, rel))
    return checks


def judge_image(image: str, contents: dict, t: Timer, rel: list[str]) -> CheckResult:
    problems = []
    if contents["compilers"]:
        problems.append("compilers: " + ", ".join(f"{k} ({v})" for k, v in contents["compilers"].items()))
    for what in ("keys", "models", "test_extras"):
        if contents[what]:
            problems.append(f"{what.replace('_', ' ')}: " + ", ".join(contents[what][:5]))
    if contents["user"] == 0:
        problems.append("the image's default user is root")
    return _result("image_contents", "image holds no compiler, key, model or test extra",
                   f"{image}: none of {', '.join(COMPILERS)}; no key, model or test package", problems,
                   f"{image}: no compiler, no key, no model, no test package; default uid {contents['user']}",
                   t, rel)


def _check_secret_modes(settings: Settings, t: Timer, rel: list[str]) -> CheckResult:
    from suite.supervisor.docker import container_user

    uid, _ = container_user(settings)
    files = sorted((settings.data_dir / "secrets").glob("*")) + [settings.pid_dir / "containers.json"]
    problems, seen = [], []
    for f in files:
        if not f.is_file():
            continue
        st = os.stat(f)
        mode = stat.S_IMODE(st.st_mode)
        seen.append(f"{f.name} {oct(mode)}")
        if mode & 0o077:
            problems.append(f"{f} is {oct(mode)}: `chmod 600 {f}`")
        if st.st_uid != uid:
            problems.append(f"{f} belongs to uid {st.st_uid}, not the containers' user {uid}")
    if not seen:
        problems.append(f"no secret file in {settings.data_dir / 'secrets'}")
    return _result("secrets_0600", "secrets as files with mode 0600", "0600, owned by the containers' user",
                   problems, ", ".join(seen), t, rel)
