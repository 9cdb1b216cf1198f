#!/usr/bin/env bash
# The main job: install if needed, then run the whole runbook pipeline on the configured profile
# (the embedded CPU default unless SUITE_PROFILE / suite.toml say otherwise) and print the report path.
# Arguments go to `harness run`, e.g.:  bash scripts/run.sh -p phase=2 --keep-up
# The run is signed (attestation.intoto.jsonl) with this machine's key, made here once if missing
# (`harness keys init`: private 0600 under data/signing/, outside runs/); `harness verify RUN` checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/harness keys init --brief
exec .venv/bin/harness run "$@"
