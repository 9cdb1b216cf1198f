#!/usr/bin/env bash
# The test job: install if needed (test extras included), ruff, the security scans (Bandit over suite/
# and harness/ against its reviewed baseline, pip-audit of the environment: skipped, saying so, when the
# advisory source is out of reach), then pytest over tests/ — unit tests, integration tests against real
# services and models, the runbooks executed through papermill — then, in the same pytest session,
# every notebook of runbooks/ and notebooks/ run top to bottom by nbmake as a person would run it
# (conftest.py: one phase-3 stack, one manual run runs/nbmake-<time>/, the quick profile).
# Arguments go to pytest, e.g.:  bash scripts/test.sh -k gateway -x   (tests/test_x.py: only that file)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "[test] ruff check" >&2
.venv/bin/ruff check suite harness tests load benchmarks runbooks notebooks
echo "[test] security scans (bandit, pip-audit)" >&2
.venv/bin/python -m harness.security.scans
set +e
.venv/bin/python -m pytest --nbmake --nbmake-timeout=900 --durations=30 "$@"  # the 30 slowest: where CI time goes
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): treated as a failure — the suite must not be empty" >&2
  exit 1
fi
exit "$rc"
