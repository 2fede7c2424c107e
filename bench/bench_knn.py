"""Approximate (NN-descent) vs exact cosine kNN at N = 100,000 (issue 10, item 4).

    OMP_NUM_THREADS=2 python bench/bench_knn.py [--n 100000] [--dim 384] [--k 50] [--queries 2000]

Data: synthetic 1,000-component mixture on the unit sphere (``synthetic_scale.py``), float16,
read memory-mapped. Each method runs in a fresh process (peak RSS per method; the approximate one
includes numba's compilation, paid once per process). Recall@k = |approx top-k & exact top-k| / k,
averaged over ``--queries`` random rows (exact truth for those rows by brute force). Results go to
BENCHMARKS.md, section "Paper scale", block "knn".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, run_fresh, save_json, write_block  # noqa: E402

import numpy as np  # noqa: E402

from synthetic_scale import sphere_mixture  # noqa: E402

SECTION = "## Paper scale"

CODE = """
import numpy as np
from clustermine.clustering.knn import knn_indices
X = np.load({path!r}, mmap_mode="r")
t0 = time.perf_counter()
idx = knn_indices(X, {k}, method={method!r}, random_state=0)
out = {{"seconds": time.perf_counter() - t0}}
np.save({dst!r}, idx)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--skip-exact", action="store_true", help="no full exact run (recall still measured)")
    a = ap.parse_args()
    fx, _ = sphere_mixture(a.n, a.dim, 1000)
    res: dict = {"n": a.n, "dim": a.dim, "k": a.k, "queries": a.queries}
    methods = ["approx"] + ([] if a.skip_exact else ["exact"])
    for m in methods:
        dst = str(fx.parent / f"knn_{m}_{a.n}_{a.k}.npy")
        r = run_fresh(CODE.format(path=str(fx), k=a.k, method=m, dst=dst))
        res[m] = {"seconds": r["seconds"], "max_rss_mb": r["max_rss_mb"], "process_wall_s": r["process_wall_s"]}
        print(m, res[m], flush=True)
    # exact truth for a random subset of rows
    X = np.load(fx, mmap_mode="r")
    Xn = np.asarray(X, dtype=np.float32)
    Xn /= np.linalg.norm(Xn, axis=1, keepdims=True)
    q = np.sort(np.random.default_rng(0).choice(a.n, a.queries, replace=False))
    S = Xn[q] @ Xn.T
    S[np.arange(len(q)), q] = -np.inf
    truth = np.argsort(-S, axis=1, kind="stable")[:, : a.k]
    approx = np.load(fx.parent / f"knn_approx_{a.n}_{a.k}.npy")[q]
    rec = np.array([len(np.intersect1d(t, g)) / a.k for t, g in zip(truth, approx)])
    res["recall_at_k"] = float(rec.mean())
    res["recall_p5"] = float(np.percentile(rec, 5))
    res["recall_at_10_of_top10"] = float(np.mean([len(np.intersect1d(t[:10], g[:10])) / 10 for t, g in zip(truth, approx)]))
    if not a.skip_exact:
        ex = np.load(fx.parent / f"knn_exact_{a.n}_{a.k}.npy")[q]
        res["exact_matches_truth"] = float(np.mean([len(np.intersect1d(t, g)) / a.k for t, g in zip(truth, ex)]))
    save_json("knn.json", res)
    print(res)
    lines = [
        f"### kNN: approximate (NN-descent) vs exact, N = {a.n:,}, D = {a.dim}, k = {a.k}",
        "",
        f"`OMP_NUM_THREADS=2 python bench/bench_knn.py --n {a.n} --dim {a.dim} --k {a.k}`; {machine_line()}.",
        "Synthetic 1,000-component mixture on the unit sphere (float16, memory-mapped; `bench/synthetic_scale.py`).",
        f"Recall@{a.k} = overlap of the approximate and the exact top-{a.k}, mean over {a.queries:,} random rows.",
        "",
        "| method | time (s) | peak RSS (MB) | recall@k (mean / 5th pct) |",
        "|---|---|---|---|",
        f"| approx (pynndescent, incl. ~40 s numba compile) | {res['approx']['seconds']:.1f} | "
        f"{res['approx']['max_rss_mb']:.0f} | {res['recall_at_k']:.3f} / {res['recall_p5']:.3f} |",
    ]
    if "exact" in res:
        lines.append(f"| exact (chunked torch, CPU) | {res['exact']['seconds']:.1f} | {res['exact']['max_rss_mb']:.0f} | "
                     f"{res['exact_matches_truth']:.3f} (vs brute force) |")
    lines += ["", f"Top-10 of the approximate lists: recall {res['recall_at_10_of_top10']:.3f}. "
              "`auto` switches to the approximate index on a CPU above "
              "`clustering.knn.APPROX_KNN_ABOVE` samples; exact kNN grows as N^2."]
    write_block(SECTION, "knn", "\n".join(lines))


if __name__ == "__main__":
    main()
