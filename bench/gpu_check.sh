#!/usr/bin/env bash
# GPU check of issue 4 (one command, < 5 minutes): encode throughput, TEMI at N = 100K and scoring
# throughput on a CUDA device. Fails with a clear message when no CUDA device is visible.
#   bash bench/gpu_check.sh            (uses ./.venv/bin/python if present, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export HF_HUB_OFFLINE=1
export CLUSTERMINE_CACHE=${CLUSTERMINE_CACHE:-$PWD/.cache/clustermine}
exec timeout 290 "$PY" bench/gpu_check.py "$@"
