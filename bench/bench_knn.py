"""Approximate (NN-descent) vs exact cosine kNN at N = 100,000 (issue 10, item 4).

    OMP_NUM_THREADS=2 python bench/bench_knn.py [--n 100000] [--dim 384] [--k 50] [--queries 2000]

Data: synthetic 1,000-component mixtures on the unit sphere (``synthetic_scale.py``), float16,
read memory-mapped: noise 0.9 (same-component cosine ~0.55) and a harder noise 1.5 (~0.3, where
neighbour lists are far less clear-cut). Each method runs in a fresh process (peak RSS per method;
the approximate one includes numba's compilation, paid once per process). Recall@k = |approx top-k
& exact top-k| / k, averaged over ``--queries`` random rows (exact truth for those rows by brute
force). The full exact kNN is timed on the first mixture only. Results go to BENCHMARKS.md,
section "Paper scale", block "knn".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, run_fresh, save_json, write_block  # noqa: E402

import numpy as np  # noqa: E402

from synthetic_scale import sphere_mixture  # noqa: E402

SECTION = "## Paper scale"
NOISES = (0.9, 1.5)

CODE = """
import numpy as np
from clustermine.method.clustering.knn import knn_indices
X = np.load({path!r}, mmap_mode="r")
t0 = time.perf_counter()
idx = knn_indices(X, {k}, method={method!r}, random_state=0)
out = {{"seconds": time.perf_counter() - t0, "load_before": os.getloadavg()[0]}}
np.save({dst!r}, idx)
"""

TRUTH = """
import numpy as np
X = np.load({path!r}, mmap_mode="r")
Xn = np.asarray(X, dtype=np.float32)
Xn /= np.linalg.norm(Xn, axis=1, keepdims=True)
q = np.sort(np.random.default_rng(0).choice({n}, {queries}, replace=False))
truth = np.empty((len(q), {k}), dtype=np.int64)
for j in range(0, len(q), 250):
    S = Xn[q[j:j + 250]] @ Xn.T
    S[np.arange(len(S)), q[j:j + 250]] = -np.inf
    top = np.argpartition(-S, {k} - 1, axis=1)[:, :{k}]
    order = np.argsort(-np.take_along_axis(S, top, 1), axis=1, kind="stable")
    truth[j:j + 250] = np.take_along_axis(top, order, 1)
np.savez({dst!r}, q=q, truth=truth)
out = {{}}
"""


def recall(truth: np.ndarray, got: np.ndarray, k: int) -> np.ndarray:
    return np.array([len(np.intersect1d(t[:k], g[:k])) / k for t, g in zip(truth, got)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--skip-exact", action="store_true", help="no full exact run (recall still measured)")
    a = ap.parse_args()
    res: dict = {"n": a.n, "dim": a.dim, "k": a.k, "queries": a.queries, "runs": []}
    for noise in NOISES:
        # data and truth in their own processes: a child inherits its parent's peak RSS (execve keeps it)
        run_fresh(f"from synthetic_scale import sphere_mixture\nsphere_mixture({a.n}, {a.dim}, 1000, noise={noise})\nout = {{}}")
        fx, _ = sphere_mixture(a.n, a.dim, 1000, noise=noise)
        # exact truth for the query rows
        tfile = str(fx.parent / f"truth_{fx.stem}_{a.k}_{a.queries}.npz")
        run_fresh(TRUTH.format(path=str(fx), k=a.k, queries=a.queries, n=a.n, dst=tfile))
        t = np.load(tfile)
        q, truth = t["q"], t["truth"]
        methods = ["approx"] + ([] if a.skip_exact or noise != NOISES[0] else ["exact"])
        for m in methods:
            dst = str(fx.parent / f"knn_{m}_{fx.stem}_{a.k}.npy")
            r = run_fresh(CODE.format(path=str(fx), k=a.k, method=m, dst=dst))
            got = np.load(dst)[q]
            rec = recall(truth, got, a.k)
            row = {"noise": noise, "method": m, "seconds": r["seconds"], "max_rss_mb": r["max_rss_mb"],
                   "load_before": r["load_before"], "recall": float(rec.mean()),
                   "recall_p5": float(np.percentile(rec, 5)), "recall_at_10": float(recall(truth, got, 10).mean())}
            res["runs"].append(row)
            print(row, flush=True)
    save_json("knn.json", res)
    lines = [
        f"### kNN: approximate (NN-descent) vs exact, N = {a.n:,}, D = {a.dim}, k = {a.k}",
        "",
        f"`OMP_NUM_THREADS=2 python bench/bench_knn.py --n {a.n} --dim {a.dim} --k {a.k}`; {machine_line()}.",
        "Synthetic 1,000-component mixtures on the unit sphere (float16, memory-mapped; `bench/synthetic_scale.py`):",
        "noise 0.9 (same-component cosine ~0.55) and 1.5 (~0.3, fuzzier neighbourhoods).",
        f"Recall@k = overlap with the exact top-k, mean (5th percentile) over {a.queries:,} random rows. "
        "The approximate time includes numba's one-off compilation (~40 s per process on an idle machine). "
        "The machine is shared: the 1-minute load average when each run started is given (2 cores; "
        "above 2, times are inflated accordingly).",
        "",
        f"| data | method | time (s) | load avg | peak RSS (MB) | recall@{a.k} | recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        name = "approx (pynndescent)" if r["method"] == "approx" else "exact (chunked torch, CPU)"
        lines.append(f"| noise {r['noise']} | {name} | {r['seconds']:.0f} | {r['load_before']:.1f} | "
                     f"{r['max_rss_mb']:.0f} | {r['recall']:.4f} ({r['recall_p5']:.2f}) | {r['recall_at_10']:.4f} |")
    lines += ["", "`knn_method=\"auto\"` switches to the approximate index on a CPU above "
              "`clustering.knn.APPROX_KNN_ABOVE` samples; exact kNN grows as N^2, NN-descent about as N log N."]
    write_block(SECTION, "knn", "\n".join(lines))


if __name__ == "__main__":
    main()
