"""The embedding service's fast-starting path for the common sentence-transformers model: a transformer,
mean pooling, L2 normalisation — run with ``transformers`` and ``torch`` alone.

Why: the service's (re)start was ``import sentence_transformers``. Version 6 imports, at package import,
its trainers, cross-encoders, sparse and multi-vector encoders, ONNX/OpenVINO export helpers, and through
``util`` scikit-learn (measured with ``python -X importtime`` on 2 cores under load: 16 s, of which
scikit-learn 3.4 s, and much of the rest what ``/embed`` never calls). torch and transformers stay:
the model needs them. ``/embed`` needs a tokenizer,
the transformer and two tensor operations. A model folder whose ``modules.json`` is exactly
``Transformer → Pooling(mean) → Normalize`` (MiniLM-L6, the default, and most sentence-transformers
models) is therefore encoded here, the way ``sentence_transformers.models`` does it — texts sorted by
length and batched, tokenized with padding and ``longest_first`` truncation at the folder's
``max_seq_length``, the last hidden state averaged over the attention mask, normalised — and any other
folder goes to sentence-transformers itself (``suite.embedding.model``). ``tests/test_embedding_units.py``
compares both paths vector by vector. ``embedding.loader = "sentence-transformers"`` forces the library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"
OTHER_POOLING = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


@dataclass(frozen=True)
class PlainLayout:
    """What a plain model folder says about itself."""

    max_seq_length: int | None
    do_lower_case: bool
    dimension: int | None


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def plain_layout(path: Path) -> PlainLayout | None:
    """The folder's layout when it is Transformer → mean Pooling → Normalize and nothing else, else None."""
    try:
        modules = sorted(_json(path / "modules.json"), key=lambda m: int(m["idx"]))
        types = [m["type"].replace("sentence_transformers.base.modules.", "sentence_transformers.models.")
                 for m in modules]
        if types != [TRANSFORMER, POOLING, NORMALIZE] or modules[0].get("path", "") != "":
            return None
        pooling = _json(path / modules[1]["path"] / "config.json")
        if not pooling.get("pooling_mode_mean_tokens") or any(pooling.get(k) for k in OTHER_POOLING):
            return None
        st_config = path / "sentence_bert_config.json"
        config = _json(st_config) if st_config.is_file() else {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not set(config) <= {"max_seq_length", "do_lower_case"}:  # anything else: let the library read it
        return None
    return PlainLayout(config.get("max_seq_length"), bool(config.get("do_lower_case", False)),
                       pooling.get("word_embedding_dimension"))


class PlainEncoder:
    """``encode`` / ``tokenizer`` / ``max_seq_length`` / ``dimension``, as ``LoadedModel`` uses them."""

    def __init__(self, path: Path, device: str, layout: PlainLayout) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if layout.do_lower_case:
            self.tokenizer.do_lower_case = True
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_seq_length = min(x for x in (layout.max_seq_length, self.tokenizer.model_max_length, limit)
                                  if x is not None and x > 0)
        self.device = device
        self.dimension = int(layout.dimension or self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in the order given."""
        torch = self._torch
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # as sentence-transformers batches
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = self.tokenizer([texts[i].strip() for i in rows], padding=True, truncation="longest_first",
                                       max_length=self.max_seq_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(mean, p=2, dim=1).float().cpu().numpy()
        return out
