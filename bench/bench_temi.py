"""Benchmark TEMI fit time and accuracy vs k-means on synthetic embedding-like data.

Each configuration runs in a fresh subprocess so that peak RSS is per run. Example:

    python bench/bench_temi.py                          # N = 1000 and 10000, D = 384, C = 10
    python bench/bench_temi.py --n 100000 --clusters 1000 --device cuda
    python bench/bench_temi.py --n 1000 --loop-baseline # + A/B step time vs an official-style loop

The data imitate L2-normalised image embeddings: a strong direction shared by all samples, class
means around it, low-rank within-class variation plus isotropic noise, class sizes differing by up to 3x.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def make_mixture(
    n: int, dim: int, n_classes: int, noise: float = 0.6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like mixture: X float32 [n, dim] (unit rows), y int [n].

    Calibrated to look like the ConSE features of imagenette_train100 at noise 0.6 (mean cosine
    ~0.25, within-class cosine ~0.7); classes come in similar pairs and ~10% of samples are ambiguous, so that
    k-means makes errors.
    """
    rng = np.random.default_rng(seed)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    common = unit(rng.normal(size=dim))
    pair_dirs = unit(rng.normal(size=((n_classes + 1) // 2, dim)))
    dirs = unit(pair_dirs[np.arange(n_classes) // 2] + 1.5 * unit(rng.normal(size=(n_classes, dim))))
    means = math.sqrt(0.2) * common + math.sqrt(0.8) * dirs
    sizes = rng.uniform(0.5, 1.5, size=n_classes)  # class sizes differ by up to 3x
    y = rng.choice(n_classes, size=n, p=sizes / sizes.sum())
    rank = 16
    basis = unit(rng.normal(size=(n_classes, rank, dim)))
    X = means[y].copy()
    # ~10% ambiguous samples (two objects in one image): pulled towards another class's mean
    amb = rng.random(n) < 0.1
    mix = rng.uniform(0.4, 0.7, size=(int(amb.sum()), 1))
    X[amb] = mix * X[amb] + (1 - mix) * means[rng.integers(0, n_classes, size=int(amb.sum()))]
    for c in range(n_classes):  # per class, to keep memory at O(n * dim)
        idx = np.flatnonzero(y == c)
        X[idx] += noise * 0.8 * (rng.normal(size=(len(idx), rank)) @ basis[c]) / math.sqrt(rank)
    X += noise * 0.6 * rng.normal(size=(n, dim)) / math.sqrt(dim)
    return unit(X).astype(np.float32), y


def hungarian_acc(y: np.ndarray, pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one cluster-to-class matching."""
    from scipy.optimize import linear_sum_assignment

    k = int(max(y.max(), pred.max())) + 1
    m = np.zeros((k, k))
    np.add.at(m, (pred, y), 1)
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / len(y))


def step_ab(X: np.ndarray, a: argparse.Namespace, batch: int, rounds: int = 5, steps: int = 4) -> dict:
    """Seconds per epoch of one TEMI training step, batched heads vs an official-style loop.

    The loop variant keeps one nn.Module per head and loops over heads in Python, as the official
    code does. Both run interleaved (``rounds`` x ``steps`` each) so that a busy machine slows them
    alike; returns median wall and CPU seconds per epoch (N // batch steps) of each.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from clustermine.method.clustering import temi as T

    torch.manual_seed(0)
    dev, H, C, d = a.device, a.heads, a.clusters, X.shape[1]
    Z = torch.from_numpy(X).to(dev)

    def batch_x() -> torch.Tensor:
        return Z[torch.randint(0, len(Z), (2 * batch,), device=dev)]

    # batched heads, exactly the step of TEMI.fit
    ps = {k: v.to(dev).requires_grad_(True) for k, v in
          T._init_heads(H, d, a.hidden, a.bottleneck, C, torch.Generator().manual_seed(0)).items()}
    pt = {k: v.detach().clone() for k, v in ps.items()}
    prior_v = torch.full((H, C), 1.0 / C, device=dev)
    opt_v = torch.optim.AdamW(list(ps.values()), lr=1e-5, fused=True)

    def step_vec() -> None:
        x = batch_x()
        with torch.no_grad():
            tl = T._heads_forward(pt, x)
        loss, _ = T._temi_loss(T._heads_forward(ps, x), tl, prior_v, 0.6, 0.1, 0.1)
        opt_v.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt_v.step()
        with torch.no_grad():
            for t_p, s_p in zip(pt.values(), ps.values()):
                t_p.lerp_(s_p, 0.004)

    def head() -> nn.Module:
        last = nn.utils.parametrizations.weight_norm(nn.Linear(a.bottleneck, C, bias=False))
        return nn.Sequential(nn.Linear(d, a.hidden), nn.GELU(), nn.Linear(a.hidden, a.bottleneck), last)

    student = nn.ModuleList(head() for _ in range(H)).to(dev)
    teacher = nn.ModuleList(head() for _ in range(H)).to(dev)
    teacher.load_state_dict(student.state_dict())
    opt_l = torch.optim.AdamW(student.parameters(), lr=1e-5)
    prior_l = [torch.full((C,), 1.0 / C, device=dev) for _ in range(H)]

    def fwd(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m[3](F.normalize(m[2](m[1](m[0](x))), dim=-1))

    def step_loop() -> None:
        x = batch_x()
        with torch.no_grad():
            qt = [F.softmax(fwd(t, x) / 0.1, -1) for t in teacher]
            for h in range(H):
                prior_l[h] = 0.9 * prior_l[h] + 0.1 * qt[h].mean(0)
            w = torch.stack([(q[:batch] * q[batch:]).sum(-1) for q in qt]).mean(0)
        losses = []
        for h, s in enumerate(student):
            qs = F.softmax(fwd(s, x) / 0.1, -1)
            lab = -(((qs[:batch] * qt[h][batch:]) ** 0.6) / prior_l[h]).sum(-1).log()
            lba = -(((qs[batch:] * qt[h][:batch]) ** 0.6) / prior_l[h]).sum(-1).log()
            losses.append(0.5 * ((w * lab).mean() + (w * lba).mean()))
        opt_l.zero_grad()
        torch.stack(losses).mean().backward()
        opt_l.step()
        with torch.no_grad():
            for t_p, s_p in zip(teacher.parameters(), student.parameters()):
                t_p.mul_(0.996).add_(s_p, alpha=0.004)

    def timed(fn: Callable[[], None]) -> tuple[float, float]:
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            fn()
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - w0, time.process_time() - c0

    step_vec(), step_loop()  # warm-up
    res: dict[str, list[tuple[float, float]]] = {"vec": [], "loop": []}
    for _ in range(rounds):
        res["vec"].append(timed(step_vec))
        res["loop"].append(timed(step_loop))
    per_epoch = (len(X) // batch) / steps
    return {
        f"{name}_{kind}_s_per_epoch": float(np.median([r[i] for r in runs])) * per_epoch
        for name, runs in res.items()
        for i, kind in enumerate(("wall", "cpu"))
    }


def run_one(a: argparse.Namespace, n: int) -> dict:
    """Fit TEMI (and k-means) on one synthetic set; returns the table row."""
    import torch

    from clustermine.method.clustering import TEMI, KMeansClusterer

    if a.threads:
        torch.set_num_threads(a.threads)
    X, y = make_mixture(n, a.dim, a.classes or a.clusters, noise=a.noise, seed=a.seed)
    if a.ab_only:
        from clustermine.method.clustering.temi import default_batch_size

        bs = a.batch_size or default_batch_size(n)
        row = {"N": n, "D": a.dim, "C": a.clusters, "heads": a.heads, "batch": bs, "threads": torch.get_num_threads()}
        return {**row, **step_ab(X, a, bs)}
    m = TEMI(
        a.clusters, n_heads=a.heads, batch_size=a.batch_size, epochs=a.epochs, hidden_dim=a.hidden,
        bottleneck_dim=a.bottleneck, random_state=a.seed, device=a.device,
    )
    t = time.perf_counter()
    m.fit(X)
    secs = time.perf_counter() - t
    row = {
        "N": n, "D": a.dim, "C": a.clusters, "heads": a.heads, "batch": m.batch_size_, "epochs": m.epochs_,
        "steps": m.n_iter_, "seconds": secs, "knn_s": m.knn_time_,
        "s_per_epoch": (m.fit_time_ - m.knn_time_) / m.epochs_,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "temi_acc": hungarian_acc(y, m.labels_), "occupied": m.n_occupied_, "threads": torch.get_num_threads(),
    }
    from sklearn.metrics import normalized_mutual_info_score as nmi

    row["temi_nmi"] = float(nmi(y, m.labels_))
    if not a.no_kmeans:
        t = time.perf_counter()
        km = KMeansClusterer(a.clusters, random_state=a.seed).fit(X)
        row["kmeans_s"] = time.perf_counter() - t
        row["kmeans_acc"] = hungarian_acc(y, km.labels_)
        row["kmeans_nmi"] = float(nmi(y, km.labels_))
    if a.loop_baseline:
        row.update(step_ab(X, a, m.batch_size_))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="sample counts")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=10, help="C for TEMI and k-means")
    p.add_argument("--classes", type=int, default=None, help="true classes in the data (default: C)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--bottleneck", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--noise", type=float, default=0.6, help="within-class spread of the synthetic data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-kmeans", action="store_true")
    p.add_argument("--loop-baseline", action="store_true", help="also time one training step, batched heads vs an official-style per-head loop (A/B)")
    p.add_argument("--ab-only", action="store_true", help="only the A/B step timing, no full fit")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.worker is not None:
        print("RESULT " + json.dumps(run_one(a, a.worker)))
        return
    rows = []
    args = [arg for arg in sys.argv[1:]]
    for n in a.n:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *args, "--worker", str(n)], capture_output=True, text=True
        )
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            sys.stderr.write(out.stdout + out.stderr)
            raise SystemExit(f"run with N={n} failed")
        rows.append(json.loads(line[0][7:]))
        print(f"# done N={n}", file=sys.stderr)

    if a.ab_only:
        print(f"\nTEMI step A/B, device={a.device}: seconds per epoch (N // batch steps), median\n")
        print("| N | D | C | heads | batch | threads | batched wall | loop wall | batched CPU | loop CPU |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['N']} | {r['D']} | {r['C']} | {r['heads']} | {r['batch']} | {r['threads']} | "
                  f"{r['vec_wall_s_per_epoch']:.3f} | {r['loop_wall_s_per_epoch']:.3f} | "
                  f"{r['vec_cpu_s_per_epoch']:.3f} | {r['loop_cpu_s_per_epoch']:.3f} |")
        return
    cols = ["N", "D", "C", "heads", "batch", "epochs", "steps", "seconds", "s/epoch", "peak RSS GB", "threads",
            "TEMI ACC", "TEMI NMI", "occupied"]
    if not a.no_kmeans:
        cols += ["k-means ACC", "k-means NMI", "k-means s"]
    if a.loop_baseline:
        cols += ["A/B s/epoch wall: batched / loop", "A/B s/epoch CPU: batched / loop"]
    print(f"\nTEMI bench, device={a.device}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        vals = [r["N"], r["D"], r["C"], r["heads"], r["batch"], r["epochs"], r["steps"], f"{r['seconds']:.1f}",
                f"{r['s_per_epoch']:.3f}", f"{r['peak_rss_gb']:.2f}", r["threads"], f"{r['temi_acc']:.3f}",
                f"{r['temi_nmi']:.3f}", r["occupied"]]
        if not a.no_kmeans:
            vals += [f"{r['kmeans_acc']:.3f}", f"{r['kmeans_nmi']:.3f}", f"{r['kmeans_s']:.1f}"]
        if a.loop_baseline:
            vals += [f"{r['vec_wall_s_per_epoch']:.3f} / {r['loop_wall_s_per_epoch']:.3f}",
                     f"{r['vec_cpu_s_per_epoch']:.3f} / {r['loop_cpu_s_per_epoch']:.3f}"]
        print("| " + " | ".join(str(v) for v in vals) + " |")


if __name__ == "__main__":
    main()
