#!/usr/bin/env bash
# The GPU profile proven in one go, on a machine with an NVIDIA GPU (budget: under 12 minutes there):
#   1. llama-cpp-python built with CUDA for this card only (compute capability from nvidia-smi;
#      SUITE_CUDA_ARCH overrides), cached in pip's cache dir like the CPU builds;
#   2. the inference services and the gateway started on the gpu profile with every layer offloaded
#      (n_gpu_layers = -1; the bundled Gemma unless SUITE_INFERENCE__CHAT__PATH / __CODE__PATH say);
#   3. the offload check (llama.cpp's own layer placement, NVML memory of each inference process),
#      the GPU inventory, and 8 concurrent streams through the service and through the gateway,
#      written to docs/benchmarks.md ("GPU profile") and printed; exit 1 when the offload check fails.
#
#   bash scripts/gpu_check.sh                 # on the GPU machine, from the repository
#
# Needs: the NVIDIA driver, the CUDA toolkit (nvcc; CUDACXX or /usr/local/cuda/bin/nvcc), and PyPI
# reachable for the first install — or PIP_FIND_LINKS / PIP_NO_INDEX=1 pointing at a wheelhouse that
# `suite image build` made on a connected box (<pip cache dir>/suite-workbench/docker/wheelhouse-*).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
command -v nvidia-smi >/dev/null || { echo "[gpu] no nvidia-smi here: not a GPU machine" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader >&2
arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '. ')
export SUITE_LLAMA_BUILD=cuda SUITE_CUDA_ARCH=${SUITE_CUDA_ARCH:-$arch}
if [ -z "${CUDACXX:-}" ]; then
  CUDACXX=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  export CUDACXX
fi
[ -x "$CUDACXX" ] || { echo "[gpu] no nvcc ($CUDACXX): install the CUDA toolkit or set CUDACXX" >&2; exit 2; }
echo "[gpu] building llama-cpp-python for sm_$SUITE_CUDA_ARCH with $CUDACXX" >&2
SUITE_EXTRAS=${SUITE_EXTRAS-} bash scripts/install.sh
echo "[gpu] built and installed in $(( $(date +%s) - t0 ))s" >&2
export SUITE_PROFILE=gpu
exec .venv/bin/python benchmarks/gpu_proof.py --write "$@"
