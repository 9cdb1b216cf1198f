"""Model files present and checksummed."""

from harness.result import CheckResult, Stage, Status, timed
from suite.models import bundled_models, sha256_file
from suite.settings import Settings


def _one(cid: str, title: str, path, expected: str | None) -> CheckResult:
    with timed() as t:
        if not path.is_file():
            return CheckResult(cid, title, Stage.ENVIRONMENT, Status.FAIL, target="file present",
                               measured="missing", detail=f"{path} (run `suite models install`)", **t.fields())
        size_mb = path.stat().st_size / 1e6
        digest = sha256_file(path)
    if expected and digest != expected:
        return CheckResult(cid, title, Stage.ENVIRONMENT, Status.FAIL, target=f"sha256 {expected[:12]}…",
                           measured=f"sha256 {digest[:12]}…", detail=str(path), **t.fields())
    return CheckResult(cid, title, Stage.ENVIRONMENT, Status.PASS,
                       target=f"sha256 {expected[:12]}…" if expected else "file present",
                       measured=f"{size_mb:.1f} MB, sha256 {digest[:12]}…", detail=str(path), **t.fields())


def check_models(settings: Settings) -> list[CheckResult]:
    """The chat and code GGUFs (bundled Gemma or the profile's paths) and the embedding model."""
    results = []
    bundled = {m.path: m.sha256 for m in bundled_models(settings.models_dir)}
    seen = set()
    for role in ("chat", "code"):
        path = settings.model_path(role)
        if path in seen:
            continue
        seen.add(path)
        results.append(_one(f"env.model.{role}", f"{role} model file", path, bundled.get(path)))
    emb = settings.embedding.model_path
    if emb is None:
        from suite.models import minilm_path

        emb = minilm_path() / "model.safetensors"
    elif emb.is_dir():
        emb = next((p for p in (emb / "model.safetensors", emb / "pytorch_model.bin") if p.exists()), emb)
    results.append(_one("env.model.embedding", "embedding model file", emb, None))
    return results
