"""Vote throughput (images/s): top-5 over a corpus, with and without the fused corpus LSE.

    .venv/bin/python bench/bench_vote_rate.py FEATURES.npy TEXT_EMBEDDINGS.npy [--n 16384] [--code DIR]

FEATURES.npy: float16 [N, D] (e.g. the synthetic set of bench_paper_scale.py, kept with --keep);
TEXT_EMBEDDINGS.npy: a run's corpus embeddings. ``--code`` runs another checkout's engine (to compare
two versions on the same machine, one after the other)."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features")
    ap.add_argument("text")
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--code", default=None)
    a = ap.parse_args()
    if a.code:
        sys.path.insert(0, a.code)
    from clustermine.method.mining import zero_shot_topk

    feats = np.load(a.features, mmap_mode="r")[: a.n]
    text = np.load(a.text).astype(np.float32)
    zero_shot_topk(feats[:256], text, k=5, tau=0.05)  # warm-up
    for tau in (None, 0.05):
        t = time.perf_counter()
        zero_shot_topk(feats, text, k=5, tau=tau)
        print(f"{'top-5 + corpus LSE' if tau else 'top-5 only'}: {len(feats) / (time.perf_counter() - t):,.0f} images/s")


if __name__ == "__main__":
    main()
