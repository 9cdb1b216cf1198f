"""Where llama.cpp put the model's layers, as it says while loading, for ``/health``.

``n_gpu_layers`` is a request, not a fact: a llama-cpp-python built without a GPU backend (or a GPU
it cannot use) keeps every layer on the CPU and says nothing unless asked. While a model loads,
``load_log()`` listens to llama.cpp's own log (``layer N assigned to device X`` for every
repeating layer; ``offloaded A/B layers to GPU`` where a GPU backend is present) and ``Placement``
counts the layers on a non-CPU device, so a gate can compare that count with the request.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

LAYER = re.compile(r"layer\s+(\d+) assigned to device ([A-Za-z0-9_]+)")
OFFLOADED = re.compile(r"offloaded \d+/\d+ layers to GPU")


@contextlib.contextmanager
def load_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines (debug level included) while the block runs; llama-cpp-python's
    own logger still receives them, and is put back afterwards."""
    import llama_cpp
    from llama_cpp import _logger

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", errors="replace"))
        _logger.llama_log_callback(level, text, user_data)

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@dataclass
class Placement:
    requested: int  # n_gpu_layers as configured; negative = every layer
    n_layer: int  # repeating layers of the model
    on_gpu: int | None  # layers llama.cpp assigned to a non-CPU device; None when it did not say
    devices: dict[str, int] = field(default_factory=dict)
    offload_supported: bool = False  # llama_supports_gpu_offload() of this build
    summary: str = ""  # llama.cpp's "offloaded A/B layers to GPU", when it printed one

    @property
    def expected(self) -> int:
        return self.n_layer if self.requested < 0 else min(self.requested, self.n_layer)

    @property
    def as_requested(self) -> bool:
        return self.on_gpu == self.expected

    def to_dict(self) -> dict:
        return {**asdict(self), "expected": self.expected, "as_requested": self.as_requested}


def placement(llama, requested: int | None, log_lines: list[str]) -> Placement:
    """The layer placement of a loaded model from the log collected while it loaded."""
    import llama_cpp

    n_layer = int(llama_cpp.llama_model_n_layer(llama.model))
    devices: dict[str, str] = {}
    summary = ""
    for line in log_lines:
        m = LAYER.search(line)
        if m and int(m.group(1)) < n_layer:
            devices[m.group(1)] = m.group(2)
        elif OFFLOADED.search(line):
            summary = line.strip()
    counts: dict[str, int] = {}
    for device in devices.values():
        counts[device] = counts.get(device, 0) + 1
    on_gpu = sum(n for d, n in counts.items() if not d.upper().startswith("CPU")) if devices else None
    return Placement(requested if requested is not None else 0, n_layer, on_gpu, counts,
                     bool(llama_cpp.llama_supports_gpu_offload()), summary)
