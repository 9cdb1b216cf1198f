"""Inference services: a continuous-batching engine (default) or llama_cpp.server's serial app over a GGUF.

``app`` picks the engine; ``model`` loads the GGUF; ``batched_app`` + ``engine`` (+ ``sampling``,
``textstream``, ``openai_surface``) are the batched path; ``serial_app`` is the ``llama_cpp.server`` path.

Importing the package (before ``llama_cpp``, as ``python -m suite.serve inference-*`` does) bounds how
long llama.cpp's OpenMP threads spin at a barrier before they sleep: ``GOMP_SPINCOUNT`` 3000 instead
of libgomp's 300,000. Between and inside decodes a waiting thread otherwise keeps its core busy for
milliseconds, which a 2-core box needs for the event loop, the clients and every other process: at a
load average of 2–8 the service served 1.4–3x the tokens per second at 8 streams and used a third
less CPU per token, while llama-cpp-python alone on a quiet box (measured with real-time priority)
was unchanged (52–55 vs 54–56 tok/s at 1 stream; fully passive waiting cost 40 % there); with the
service alone on a quiet box libgomp's own 300,000 decoded up to 11 % faster at 8 streams. A value set in
the environment wins; ``python -m suite.serve`` sets it from ``inference.omp_spincount`` first;
libgomp reads it once, when it is loaded (docs/benchmarks.md).
"""

import os

from suite.settings import InferenceSettings

os.environ.setdefault("GOMP_SPINCOUNT", str(InferenceSettings.model_fields["omp_spincount"].default))
