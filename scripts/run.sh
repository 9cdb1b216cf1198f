#!/usr/bin/env bash
# The main job: install if needed, then run the whole runbook pipeline on the configured profile
# (the embedded CPU default unless SUITE_PROFILE / suite.toml say otherwise) and print the report path.
# Arguments go to `harness run`, e.g.:  bash scripts/run.sh -p phase=2 --keep-up
# The run is signed (attestation.intoto.jsonl) with this machine's key, made here once if missing
# (`harness keys init`: private 0600 under data/signing/, outside runs/); `harness verify RUN` checks it.
#
# SUITE_BACKEND=docker runs the services in containers: a Docker engine is reused or started (Debian's
# docker.io installed when root with apt; dockerd stopped again at the end if this script started it),
# the Compose v2 plugin installed from Debian's package, and the images built without a registry
# (`suite image build`: Debian base, suite image, Prometheus and Alertmanager) before the pipeline runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/harness keys init --brief
if [ "${SUITE_BACKEND:-process}" = docker ]; then
  engine=$(.venv/bin/suite engine start --json | tail -n 1)
  echo "[run] docker: $engine" >&2
  case "$engine" in
    *'"started": true'*) trap '.venv/bin/suite engine stop >&2' EXIT ;;
  esac
  .venv/bin/suite image build >&2
fi
.venv/bin/harness run "$@"
