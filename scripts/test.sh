#!/usr/bin/env bash
# The test command: sets up everything it needs on a fresh machine, then runs the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not browser"`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CLUSTERMINE_CACHE="${CLUSTERMINE_CACHE:-$PWD/.cache/clustermine}"
bash scripts/setup_env.sh --with-browser
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest -q --timeout=1800 "$@"
