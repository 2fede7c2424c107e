"""Speed of the evaluation protocol's uncertainty (issue 21): ``clustermine evaluate --bootstrap N``.

Times :func:`clustermine.method.metrics.bootstrap_ood` (AUROC + FPR95 of N replicates, vectorised
over replicates) and the OpenOOD FPR column at a small and an ImageNet-like size. Scores are
synthetic (normal ID / OOD, rounded to 4 decimals to create the ties real scores have); the cost
depends only on the sizes and the number of distinct values.

    python bench/bench_evaluation.py            # writes the block in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, write_block  # noqa: E402

import numpy as np  # noqa: E402

from clustermine.method import metrics  # noqa: E402

SECTION = "## Evaluation protocol (issue 21)"
SIZES = [(1000, 1000, 1000), (10000, 10000, 1000), (50000, 10000, 1000)]


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lines = ["Command: `python bench/bench_evaluation.py` · best of 3 · " + machine_line() + ".", "",
             "| N_ID | N_OOD | bootstrap replicates | bootstrap AUROC + FPR95 (s) | point metrics + OpenOOD FPR (s) |",
             "|---|---|---|---|---|"]
    for n_id, n_ood, reps in SIZES:
        s_id = np.round(rng.normal(1.0, 1.0, n_id), 4)
        s_ood = np.round(rng.normal(0.0, 1.0, n_ood), 4)
        t_boot = _time(lambda: metrics.bootstrap_ood(s_id, s_ood, reps, seed=0))
        t_point = _time(lambda: (metrics.ood_metrics(s_id, s_ood), metrics.fpr95_openood(s_id, s_ood)))
        lines.append(f"| {n_id:,} | {n_ood:,} | {reps} | {t_boot:.2f} | {t_point:.3f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    if not a.no_write:
        write_block(SECTION, "evaluation-bootstrap", text)


if __name__ == "__main__":
    main()
