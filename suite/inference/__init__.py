"""Inference services: a continuous-batching engine (default) or llama_cpp.server's serial app over a GGUF.

``app`` picks the engine; ``model`` loads the GGUF; ``batched_app`` + ``engine`` (+ ``sampling``,
``textstream``, ``openai_surface``) are the batched path; ``serial_app`` is the ``llama_cpp.server`` path.

Importing the package (before ``llama_cpp``) bounds how long llama.cpp's OpenMP threads spin at a
barrier before they sleep: ``GOMP_SPINCOUNT`` 3000 instead of libgomp's 300,000, for code that drives
the engine in process without its thread governor (tests, notebooks); a value in the environment
wins, and libgomp reads it once, when it is loaded. The services get theirs from ``python -m
suite.serve`` (``InferenceSettings.spincount``): 300,000 where the batched engine adapts its threads
to the box (``threads.py``: half the threads while other processes keep it waiting for a core), else
3000. Long spinning is fastest while the threads have the cores (+11 % at 8 streams for a service
alone on a quiet box) and ruinous when they do not (a 2-core box at a load average of ~18: 1.6
against 8.0 tok/s at 8 streams with two threads, 13.4 with one; docs/benchmarks.md).
"""

import os

from suite.settings import FIXED_SPINCOUNT

os.environ.setdefault("GOMP_SPINCOUNT", str(FIXED_SPINCOUNT))
