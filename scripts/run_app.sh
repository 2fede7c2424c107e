#!/usr/bin/env bash
# The run command: sets up everything on a fresh machine, then starts the web app on
# http://localhost:8501 (offline default encoder, no network needed).
# Extra arguments go to `streamlit run` (e.g. --server.port 8600).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Fewer malloc arenas: measured to cut the growth with 5 concurrent sessions (BENCHMARKS.md, Load).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec .venv/bin/python -m streamlit run app.py "$@"
