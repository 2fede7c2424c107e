"""Synthetic ImageNet-shaped features for the "Paper scale" benchmarks (issue 10).

A mixture of C components on the unit sphere, written once as a float16 ``.npy`` (read memory-mapped):
rows u = normalise(mu_c + noise), mu_c = normalise(sqrt(0.3) common + sqrt(0.7) dir_c), noise
isotropic with norm ~0.9 (same-component cosine ~0.55, as CLIP features of one class; all rows
share a common direction as real embeddings do), component sizes differing by up to 3x.
Generated in chunks of 65,536 rows (memory independent of N), each from its own seeded generator.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench_paper_scale"
CHUNK = 65_536
IMAGENET_N = 1_281_167


def sphere_mixture(n: int, d: int, c: int = 1000, seed: int = 0, noise: float = 0.9) -> tuple[Path, Path]:
    """(features .npy float16 [n, d], labels .npy int32 [n]) under ``.cache/bench_paper_scale`` (cached)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / (f"mix_n{n}_d{d}_c{c}_s{seed}" + ("" if noise == 0.9 else f"_noise{noise:g}".replace(".", "p")))
    fx, fy = stem.with_suffix(".npy"), Path(f"{stem}_labels.npy")
    if fx.is_file() and fy.is_file():
        return fx, fy
    rng = np.random.default_rng(seed)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    common = unit(rng.normal(size=d))
    means = unit(math.sqrt(0.3) * common + math.sqrt(0.7) * unit(rng.normal(size=(c, d))))
    sizes = rng.uniform(0.5, 1.5, size=c)
    p = sizes / sizes.sum()
    tmp_x, tmp_y = fx.with_suffix(".tmp.npy"), fy.with_suffix(".tmp.npy")
    X = np.lib.format.open_memmap(tmp_x, mode="w+", dtype=np.float16, shape=(n, d))
    Y = np.lib.format.open_memmap(tmp_y, mode="w+", dtype=np.int32, shape=(n,))
    for i, i0 in enumerate(range(0, n, CHUNK)):
        r = np.random.default_rng([seed, i])
        m = min(CHUNK, n - i0)
        y = r.choice(c, size=m, p=p)
        x = means[y] + noise * r.normal(size=(m, d)) / math.sqrt(d)
        X[i0 : i0 + m] = unit(x).astype(np.float16)
        Y[i0 : i0 + m] = y
    X.flush()
    Y.flush()
    del X, Y
    os.replace(tmp_x, fx)
    os.replace(tmp_y, fy)
    return fx, fy
