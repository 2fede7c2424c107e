#!/usr/bin/env bash
# GPU check of issue 4 (one command, < 5 minutes): offline-encoder and open_clip encode throughput
# (with a CUDA-vs-CPU feature comparison), TEMI at N = 100K, and scoring throughput on a CUDA device;
# issue 10: the encoding pipeline's end-to-end / bare-forward ratio for ViT-B-32 (decode threads vs
# spawn decode processes vs processes + nvJPEG GPU decoding). That part alone (~1 minute):
#   bash bench/gpu_check.sh --steps encode_pipeline
# issue 11: one GPU encoder actor through the Ray Data pipeline vs bare forward (needs Ray installed):
#   bash bench/gpu_check.sh --steps ray_encode
# CPU dry run of the script: .venv/bin/python bench/gpu_check.py --quick --device cpu --steps encode_pipeline
# Fails with a clear message when no CUDA device is visible.
#   bash bench/gpu_check.sh            (uses ./.venv/bin/python if present, else python3)
#
# On a machine without this project's venv or ../shared (the lent device machine), prepare the
# folder .gpu_carry/ on the host first (bash bench/gpu_check.sh --prepare) and carry it: it holds the
# packages the device image lacks (efficientnet-lite0 weights, open_clip, ftfy, wcwidth), the 1000
# class-name embeddings of the offline encoder, one real image set and CPU reference features.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export CLUSTERMINE_CACHE=${CLUSTERMINE_CACHE:-$PWD/.cache/clustermine}
if [ "${1:-}" = "--prepare" ]; then
  exec "$PY" bench/gpu_prepare.py
fi
if [ -d .gpu_carry ] && [ ! -d .venv ]; then
  export PYTHONPATH="$PWD:$PWD/.gpu_carry/site${PYTHONPATH:+:$PYTHONPATH}"
  set -- --data .gpu_carry/data --class-embeddings .gpu_carry/class_embeddings.npy \
    --reference-features .gpu_carry/imagenette_val100_cpu_features.npz \
    --real-features .gpu_carry/imagenette_train100_features.npz "$@"
else
  set -- --real-corpus "$@"
fi
exec timeout 295 "$PY" bench/gpu_check.py "$@"
