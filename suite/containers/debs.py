"""Debian packages fetched with apt and unpacked with ``dpkg -x``, for what has no image here.

``fetch(["docker-compose"], suite="trixie")`` reads the package index of that Debian release from the
mirror apt is configured with (a private apt state folder in the cache: the system's sources and
installed packages are left alone), downloads the ``.deb`` files — apt checks the index's signature
against Debian's archive keyring and each file's hash against the index — and keeps them in the cache.
``unpack`` is ``dpkg -x``: files only, no maintainer scripts, nothing registered with dpkg.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class DebError(RuntimeError):
    pass


def mirror() -> str:
    """The Debian mirror apt is configured with (deb822 ``URIs:`` or a one-line ``deb`` entry)."""
    found: list[str] = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.suffix not in ("", ".list", ".sources") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found += re.findall(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.M)
        found += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)/?\s+\S+", text, re.M)
    if not found:
        raise DebError("no Debian mirror in apt's sources (/etc/apt/sources.list*)")
    return found[0]


def _apt_options(state: Path) -> list[str]:
    return ["-o", f"Dir::Etc::SourceList={state / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "APT::Get::List-Cleanup=0", "-o", "Debug::NoLocking=1", "-qq"]


def fetch(packages: list[str], suite: str, cache: Path) -> list[Path]:
    """The ``.deb`` files of ``packages`` from ``suite`` (``bookworm``, ``trixie``), downloaded once."""
    if shutil.which("apt-get") is None:
        raise DebError("apt-get is needed to fetch Debian packages")
    out_dir = cache / suite
    have = {p: sorted(out_dir.glob(f"{p}_*.deb")) for p in packages}
    if all(have.values()):
        return [files[-1] for files in have.values()]
    state = cache / f"apt-{suite}"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror()} {suite} main\n")
    opts = _apt_options(state)
    update = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True, timeout=600)
    if update.returncode != 0:
        raise DebError(f"apt-get update for {suite} failed: {update.stderr.strip()[-500:]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not have[p]]
    # apt-get download writes into the current folder; as root it drops to _apt, which must be able to write
    proc = subprocess.run(["apt-get", *opts, "-o", "APT::Sandbox::User=root", "download", *missing],
                          cwd=out_dir, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise DebError(f"apt-get download {' '.join(missing)} ({suite}) failed: {proc.stderr.strip()[-500:]}")
    return [sorted(out_dir.glob(f"{p}_*.deb"))[-1] for p in packages]


def version(deb: Path) -> str:
    """The package version a ``.deb`` file name carries (``docker-compose_2.26.1-4_amd64.deb``)."""
    return deb.name.split("_")[1]


def unpack(deb: Path, dest: Path) -> Path:
    """``dpkg -x deb dest``: the package's files under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise DebError(f"dpkg -x {deb.name} failed: {proc.stderr.strip()[-300:]}")
    return dest


def install_compose_plugin(cache: Path, suite: str = "trixie") -> Path:
    """Debian's Compose v2 (``docker-compose`` 2.x of the next release; bookworm's is v1) as a Docker
    CLI plugin: ``/usr/local/lib/docker/cli-plugins`` as root, ``~/.docker/cli-plugins`` otherwise."""
    (deb,) = fetch(["docker-compose"], suite, cache)
    tree = unpack(deb, cache / "unpacked" / deb.stem)
    binary = tree / "usr" / "libexec" / "docker" / "cli-plugins" / "docker-compose"
    if not binary.is_file():
        raise DebError(f"{deb.name} has no usr/libexec/docker/cli-plugins/docker-compose")
    if os.geteuid() == 0:
        plugins = Path("/usr/local/lib/docker/cli-plugins")
    else:
        plugins = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / "docker-compose"
    tmp = target.with_suffix(".tmp")
    shutil.copy2(binary, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, target)
    return target
