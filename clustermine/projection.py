"""2-D maps of image features for the cluster view: PCA at once, UMAP on demand, both cached.

``pca_2d`` is exact, deterministic and takes milliseconds; ``umap_2d`` needs umap-learn, whose
import alone costs ~13 s on two cores (numba JIT) and whose first fit in a process pays another
JIT, so it is imported lazily, run on request, and :func:`warm_up_umap` can compile it once in the
background on a tiny array. :func:`projection` caches maps in ``<run>/projections/`` under a key
made of the method, its parameters and a hash of the feature rows, with atomic writes: a crash
leaves either no map or a whole one, and a map never outlives the features it was computed from.
Above ``MAX_POINTS`` images a deterministic random sample of rows is mapped (see
:func:`sample_rows`); the rows are stored next to the coordinates, so callers never rely on order.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np

from .rundir import layout
from .storage import atomic_save_npy, atomic_write_json

MAX_POINTS = 20_000
METHODS = ("pca", "umap")


def pca_2d(features: np.ndarray) -> np.ndarray:
    """First two principal components of ``features`` (float [N, D]) → float32 [N, 2].

    scikit-learn's PCA with ``svd_solver="covariance_eigh"`` (eigen-decomposition of the D x D
    covariance, in float64: for N >> D about 8x faster than the full SVD and the same answer).
    Deterministic: scikit-learn orients each axis so that its largest-magnitude loading is positive
    (``svd_flip``), so neither the run nor the CPU can mirror the map. Maps cached by earlier
    versions (the same rule, computed by hand) stay valid. N < 2 gives zeros; when D or N limits
    the rank to one component, the second coordinate is zero.
    """
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if n < 2 or x.ndim != 2 or x.shape[1] == 0:
        return np.zeros((n, 2), dtype=np.float32)
    from sklearn.decomposition import PCA

    k = min(2, n, x.shape[1])
    coords = PCA(n_components=k, svd_solver="covariance_eigh").fit_transform(x)
    out = np.zeros((n, 2), dtype=np.float32)
    out[:, :k] = coords
    return out


def umap_2d(features: np.ndarray, seed: int = 0, *, n_neighbors: int = 15, min_dist: float = 0.1,
            metric: str = "cosine") -> np.ndarray:
    """UMAP embedding of ``features`` (float [N, D]) → float32 [N, 2] (seeded; umap imported here).

    Small sets are handled: ``n_neighbors`` is capped at N − 1 and fewer than 5 points fall back
    to :func:`pca_2d`. Not bit-reproducible across machines with different core counts (numba).
    """
    x = np.asarray(features, dtype=np.float32)
    n = x.shape[0]
    if n < 5:
        return pca_2d(x)
    import warnings

    import umap  # slow import (numba): keep it out of module level

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, n - 1)), min_dist=min_dist,
                            metric=metric, random_state=seed, init="spectral" if n > 50 else "random")
        out = reducer.fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def sample_rows(n: int, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """All rows when ``n <= max_points``, else a seeded random sample of ``max_points`` rows
    (sorted) — the same sample for the same (n, max_points, seed)."""
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False)).astype(np.int64)


def features_key(features: np.ndarray) -> str:
    """16-hex content hash of a feature matrix (shape, dtype and bytes)."""
    a = np.ascontiguousarray(features)
    h = hashlib.sha1(f"{a.shape}|{a.dtype}".encode())
    h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()[:16]


def _paths(run_dir: str | os.PathLike, method: str, seed: int, key: str) -> tuple[Path, Path]:
    folder = layout.projections_dir(run_dir)
    stem = f"{method}-s{seed}-{key}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def cached_projection(run_dir: str | os.PathLike, method: str, features: np.ndarray, *, seed: int = 0,
                      max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached map ``(rows int64 [n], coords float32 [n, 2])`` or None when not computed yet."""
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; use one of {METHODS}")
    rows = sample_rows(len(features), max_points, seed)
    key = features_key(np.asarray(features)[rows])
    npy, meta = _paths(run_dir, method, seed, key)
    try:
        coords = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if coords.shape != (len(rows), 2):
        return None
    return rows, coords.astype(np.float32)


def projection(run_dir: str | os.PathLike, method: str, features: np.ndarray, *, seed: int = 0,
               max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, coords)``: the 2-D map of the (sampled) feature rows, from cache or computed now
    and cached atomically in ``<run_dir>/projections/``."""
    hit = cached_projection(run_dir, method, features, seed=seed, max_points=max_points)
    if hit is not None:
        return hit
    rows = sample_rows(len(features), max_points, seed)
    sub = np.asarray(features)[rows]
    t0 = time.perf_counter()
    coords = pca_2d(sub) if method == "pca" else umap_2d(sub, seed=seed)
    npy, meta = _paths(run_dir, method, seed, features_key(sub))
    try:
        atomic_save_npy(npy, coords)
        atomic_write_json(meta, {"method": method, "seed": seed, "n_rows": int(len(rows)),
                                 "n_features": int(len(features)), "max_points": max_points,
                                 "seconds": round(time.perf_counter() - t0, 3)})
    except OSError:
        pass  # a read-only run still gets its map, just not cached
    return rows, coords


# ------------------------------------------------------------------------------------ UMAP warm-up
_WARM_LOCK = threading.Lock()
_WARM_THREAD: threading.Thread | None = None
_WARM_STATE = {"status": "cold", "seconds": None}


def warm_up_umap(background: bool = True) -> threading.Thread | None:
    """Import umap and fit it once on a tiny array so numba's JIT cost is paid before a user asks
    for a map. Idempotent per process; with ``background`` it runs in a daemon thread."""
    global _WARM_THREAD
    with _WARM_LOCK:
        if _WARM_THREAD is not None or _WARM_STATE["status"] != "cold":
            return _WARM_THREAD
        _WARM_STATE["status"] = "warming"

        def work() -> None:
            t0 = time.perf_counter()
            try:
                umap_2d(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32))
                _WARM_STATE.update(status="warm", seconds=round(time.perf_counter() - t0, 1))
            except Exception as exc:  # umap missing or broken: the page reports it on use
                _WARM_STATE.update(status=f"failed: {exc}", seconds=None)

        if not background:
            work()
            return None
        _WARM_THREAD = threading.Thread(target=work, name="umap-warm-up", daemon=True)
        _WARM_THREAD.start()
        return _WARM_THREAD


def umap_state() -> dict:
    """``{"status": cold | warming | warm | failed: ..., "seconds": float | None}``."""
    return dict(_WARM_STATE)

