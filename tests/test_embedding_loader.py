"""The embedding service's start without sentence-transformers: a Transformer → mean Pooling → Normalize
folder (MiniLM-L6) is encoded by ``suite.embedding.plain`` exactly as the library encodes it, without
importing the library (its trainers, cross-encoders, scikit-learn); any other folder still loads through it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from suite.embedding.model import load_model
from suite.embedding.plain import plain_layout
from suite.models import minilm_path

TEXTS = ["hello world", "  leading and trailing spaces  ", "", "Ünïcödé テキスト 한국어 질문 🙂", "word " * 600,
         "a", "The quick brown fox jumps over the lazy dog. " * 30] + [f"note {i} on health checks" for i in range(70)]


@pytest.fixture(scope="module")
def models():
    return load_model(minilm_path(), "cpu"), load_model(minilm_path(), "cpu", loader="sentence-transformers")


@pytest.mark.integration
def test_the_plain_path_gives_the_librarys_vectors_and_token_counts(models):
    plain, library = models
    assert (plain.loader, library.loader) == ("plain", "sentence-transformers")
    assert plain.dimension == library.dimension == 384
    a, b = plain.encode(TEXTS, batch_size=16), library.encode(TEXTS, batch_size=16)
    assert a.dtype == np.float32 and a.shape == b.shape == (len(TEXTS), 384)
    assert np.abs(a - b).max() < 1e-5  # measured 3e-8: the same computation
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert plain.count_tokens(TEXTS) == library.count_tokens(TEXTS)  # 600 words are cut at 256 tokens


@pytest.mark.integration
def test_loading_minilm_does_not_import_sentence_transformers_or_sklearn():
    code = ("import sys; from suite.embedding.model import load_model; from suite.models import minilm_path; "
            "m = load_model(minilm_path(), 'cpu'); m.encode(['x']); "
            "print(m.loader, sorted(n for n in ('sentence_transformers', 'sklearn') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "plain []"


def test_any_other_folder_goes_through_sentence_transformers(tmp_path):
    folder = tmp_path / "cls-pooled"
    shutil.copytree(minilm_path(), folder)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert plain_layout(minilm_path()) is not None and plain_layout(folder) is None
    model = load_model(folder, "cpu")
    assert model.loader == "sentence-transformers" and model.encode(["x"]).shape == (1, 384)
