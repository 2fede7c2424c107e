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

from clustermine.store import layout
from clustermine.core.hashing import array_hash
from clustermine.core.linalg import l2_normalize
from clustermine.core.storage import atomic_save_npy, atomic_save_npz, atomic_write_json

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
    """16-hex content hash of a feature matrix (shape, dtype and bytes: :func:`array_hash`)."""
    return array_hash(features)[:16]


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



# ------------------------------------------------------------------------------------ large runs
# Above LARGE_MAP rows the map is fitted on a stratified sample of FIT_POINTS rows and extended to
# every row (PCA: the same linear map; UMAP: a similarity-weighted average of the nearest fitted
# rows), so that a run of 1.28M images gets a map of all its images in minutes. The page then
# shows every image as a density raster and draws DRAW_POINTS of them as points.
LARGE_MAP = 50_000
FIT_POINTS = 20_000
DRAW_POINTS = 20_000
CHUNK_ROWS = 32_768
EXTEND_K = 8
EXTEND_TEMPERATURE = 0.05  # cosine units: a fitted neighbour 0.05 less similar weighs e^-1 as much
_PROBE_ROWS = 4096


def _allocate(counts: np.ndarray, size: int) -> np.ndarray:
    """Rows to draw per group: one for every group (when ``size`` allows), the rest proportional
    to the group's size (largest remainders), never more than the group holds. int64 [K]."""
    counts = np.asarray(counts, dtype=np.int64)
    k = len(counts)
    quota = np.zeros(k, dtype=np.int64)
    if k == 0 or size <= 0:
        return quota
    if k >= size:  # too many groups for one row each: the largest groups (ties: first) get one
        quota[np.argsort(-counts, kind="stable")[:size]] = 1
        return quota
    quota = np.minimum(counts, 1)
    rest = min(size, int(counts.sum())) - int(quota.sum())
    spare = counts - quota
    if rest <= 0 or spare.sum() == 0:
        return quota
    share = rest * spare / spare.sum()
    add = np.floor(share).astype(np.int64)
    quota += add
    left = rest - int(add.sum())
    if left > 0:
        frac = np.where(quota < counts, share - add, -1.0)
        quota[np.argsort(-frac, kind="stable")[:left]] += 1
    return np.minimum(quota, counts)


def stratified_rows(groups: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Sorted rows (int64 [min(N, size)]) drawn per group of ``groups`` (int [N], e.g. cluster ids,
    -1 = held out is a group too): every group gets at least one row while ``size`` allows, the
    rest is proportional to group size; rows within a group are a seeded random choice. The same
    rows for the same (groups, size, seed)."""
    groups = np.asarray(groups).ravel()
    n = len(groups)
    if n <= size:
        return np.arange(n, dtype=np.int64)
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    quota = _allocate(counts, size)
    # by group, random within: a seeded permutation, then a stable sort by group (radix for <= 16 bits)
    perm = np.random.default_rng(seed).permutation(n)
    inv = inv.ravel()[perm]
    order = perm[np.argsort(inv.astype(np.int16) if len(counts) < 2**15 else inv, kind="stable")]
    starts = np.cumsum(counts) - counts
    rank = np.arange(n) - np.repeat(starts, counts)
    return np.sort(order[rank < np.repeat(quota, counts)]).astype(np.int64)


def _chunk_f32(features, a: int, b: int) -> np.ndarray:
    """Rows a..b of any array-like [N, D] (float16 memmap included) as float32."""
    return np.asarray(features[a:b], dtype=np.float32)


def pca_fit(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA of ``sample`` (float [S, D]) as ``(mean float64 [D], axes float64 [2, D])``, oriented
    as :func:`pca_2d` (largest loading positive; a missing second axis is zero), so that
    ``(x - mean) @ axes.T`` of the sample rows is ``pca_2d(sample)``."""
    x = np.asarray(sample, dtype=np.float64)
    d = x.shape[1]
    mean = x.mean(axis=0) if len(x) else np.zeros(d)
    axes = np.zeros((2, d))
    if len(x) < 2 or d == 0:
        return mean, axes
    from sklearn.decomposition import PCA

    k = min(2, len(x), d)
    axes[:k] = PCA(n_components=k, svd_solver="covariance_eigh").fit(x).components_
    return mean, axes


def pca_extend(features, mean: np.ndarray, axes: np.ndarray, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """``(features - mean) @ axes.T`` for every row of ``features`` (array-like [N, D], read in
    row chunks, never copied whole) → float32 [N, 2]."""
    n = len(features)
    out = np.empty((n, 2), dtype=np.float32)
    shift = mean @ axes.T
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        out[a:b] = _chunk_f32(features, a, b) @ axes.T.astype(np.float32) - shift
    return out


def _weighted_neighbours(x: np.ndarray, cand: np.ndarray, cand_coords: np.ndarray, k: int,
                         temperature: float) -> np.ndarray:
    """Coordinates of unit rows ``x`` [m, D]: softmax(cos / T)-weighted mean of the 2-D
    coordinates of their ``k`` most similar rows among unit ``cand`` [c, D]."""
    sims = x @ cand.T
    if sims.shape[1] > k:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sims = np.take_along_axis(sims, top, axis=1)
    else:
        top = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
    w = np.exp((sims - sims.max(axis=1, keepdims=True)) / temperature)
    return np.einsum("mk,mkj->mj", w / w.sum(axis=1, keepdims=True), cand_coords[top]).astype(np.float32)


def extend_map(features, fit_rows: np.ndarray, fit_coords: np.ndarray, groups: np.ndarray | None = None, *,
               k: int = EXTEND_K, temperature: float = EXTEND_TEMPERATURE, chunk: int = CHUNK_ROWS,
               progress=None) -> np.ndarray:
    """Place every row of ``features`` (array-like [N, D], read in row chunks) on a 2-D map fitted
    on rows ``fit_rows`` [S] (coordinates ``fit_coords`` float [S, 2]) → float32 [N, 2].

    A row goes to the softmax(cosine / ``temperature``)-weighted mean of its ``k`` most similar
    fitted rows; the fitted rows keep their fitted coordinates exactly. With ``groups`` (int [N],
    e.g. cluster ids) the neighbours are searched among the fitted rows of the row's own group
    (all fitted rows when its group has none): ~S/K comparisons a row instead of S, which is what
    makes 1.28M rows take seconds rather than an hour on two cores; a row is then placed among its
    cluster's fitted members, never in another cluster's region. Deterministic: no randomness, and
    each row depends only on its own features.
    """
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    n = len(features)
    fit_rows = np.asarray(fit_rows, dtype=np.int64)
    fit_coords = np.asarray(fit_coords, dtype=np.float32)
    out = np.empty((n, 2), dtype=np.float32)
    if n == 0:
        return out
    fit_x = l2_normalize(features[fit_rows])
    by_group: dict[int, np.ndarray] = {}
    if groups is not None:
        groups = np.asarray(groups).ravel()
        fg = groups[fit_rows]
        order = np.argsort(fg, kind="stable")
        vals, starts = np.unique(fg[order], return_index=True)
        for v, s, e in zip(vals.tolist(), starts, list(starts[1:]) + [len(order)]):
            by_group[v] = order[s:e]
    step = chunk if groups is not None else max(256, min(chunk, (1 << 25) // max(len(fit_rows), 1)))
    for a in range(0, n, step):
        b = min(n, a + step)
        x = l2_normalize(features[a:b])
        if groups is None:
            out[a:b] = _weighted_neighbours(x, fit_x, fit_coords, k, temperature)
        else:
            g = groups[a:b]
            order = np.argsort(g, kind="stable")
            vals, starts = np.unique(g[order], return_index=True)
            # thousands of tiny products: a multi-threaded BLAS spends more on waking its threads
            # than on the work (34x slower measured on 2 busy cores), so one thread here
            with threadpool_limits(1, user_api="blas"):
                for v, s, e in zip(vals.tolist(), starts, list(starts[1:]) + [len(order)]):
                    idx = order[s:e]
                    cand = by_group.get(v)
                    if cand is None:
                        out[a + idx] = _weighted_neighbours(x[idx], fit_x, fit_coords, k, temperature)
                    else:
                        out[a + idx] = _weighted_neighbours(x[idx], fit_x[cand], fit_coords[cand], k, temperature)
        if progress is not None:
            progress(b, n)
    out[fit_rows] = fit_coords
    return out


class FullMap:
    """A 2-D map of every row of a large run: ``coords`` float32 [N, 2], fitted on ``fit_rows``
    int64 [S] (sorted) and extended to the rest (see :func:`full_map`)."""

    def __init__(self, coords: np.ndarray, fit_rows: np.ndarray, method: str, seconds: float | None = None):
        self.coords, self.fit_rows, self.method, self.seconds = coords, fit_rows, method, seconds

    def __len__(self) -> int:
        return len(self.coords)


def drawn_rows(fmap: FullMap, groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rows (int64, sorted) a large map draws as points: a stratified sample of :data:`DRAW_POINTS`
    (read at call time) — the fitted rows themselves when the sizes agree (no second sample)."""
    if DRAW_POINTS == len(fmap.fit_rows) or DRAW_POINTS >= len(fmap):
        return fmap.fit_rows if DRAW_POINTS < len(fmap) else np.arange(len(fmap), dtype=np.int64)
    return stratified_rows(groups, DRAW_POINTS, seed)


def map_key(features, groups: np.ndarray, fit_rows: np.ndarray) -> str:
    """16-hex key of a large map's inputs without reading all N feature rows: shape, dtype, the
    fitted rows, 4,096 evenly spaced probe rows and every group id. (A run's features are written
    once; the probes catch a different feature file of the same shape.)"""
    n = len(features)
    probe = np.unique(np.linspace(0, max(n - 1, 0), min(n, _PROBE_ROWS)).astype(np.int64))
    h = hashlib.sha1(f"{tuple(features.shape)}|{np.dtype(features.dtype)}|{len(fit_rows)}".encode())
    for rows in (fit_rows, probe):
        h.update(np.ascontiguousarray(np.asarray(features[rows])).view(np.uint8).reshape(-1))
    h.update(np.ascontiguousarray(np.asarray(groups, dtype=np.int64)).view(np.uint8).reshape(-1))
    return h.hexdigest()[:16]


def cached_full_map(run_dir: str | os.PathLike, method: str, features, groups: np.ndarray, *, seed: int = 0,
                    fit_points: int | None = None) -> FullMap | None:
    """The cached all-row map of ``features`` (array-like [N, D]) or None when not computed yet.
    ``fit_points``: the fit sample's size, default :data:`FIT_POINTS` (read at call time)."""
    fit_points = FIT_POINTS if fit_points is None else fit_points
    if method not in METHODS:
        raise ValueError(f"unknown projection {method!r}; use one of {METHODS}")
    fit_rows = stratified_rows(groups, fit_points, seed)
    npz, _ = layout.full_map_files(run_dir, method, seed, map_key(features, groups, fit_rows))
    try:
        with np.load(npz, allow_pickle=False) as z:
            coords, rows = z["coords"], z["fit_rows"]
    except (OSError, ValueError, EOFError, KeyError):
        return None
    if coords.shape != (len(features), 2) or not np.array_equal(rows, fit_rows):
        return None
    return FullMap(coords.astype(np.float32, copy=False), fit_rows, method)


def full_map(run_dir: str | os.PathLike, method: str, features, groups: np.ndarray, *, seed: int = 0,
             fit_points: int | None = None, progress=None) -> FullMap:
    """The 2-D map of every row of ``features`` (array-like [N, D], e.g. a float16 memmap; read in
    row chunks): fitted on :func:`stratified_rows` (``groups`` = cluster ids, so every cluster is
    in the fit) and extended to all rows — PCA by the same linear map (:func:`pca_extend`), UMAP by
    :func:`extend_map` within each row's group. From the cache, or computed and cached atomically
    in ``<run_dir>/projections/``. ``progress(done, total)`` is called while extending."""
    fit_points = FIT_POINTS if fit_points is None else fit_points
    hit = cached_full_map(run_dir, method, features, groups, seed=seed, fit_points=fit_points)
    if hit is not None:
        return hit
    t0 = time.perf_counter()
    groups = np.asarray(groups).ravel()
    fit_rows = stratified_rows(groups, fit_points, seed)
    sample = np.asarray(features[fit_rows], dtype=np.float32)
    if method == "pca":
        mean, axes = pca_fit(sample)
        coords = pca_extend(features, mean, axes)
    else:
        coords = extend_map(features, fit_rows, umap_2d(sample, seed=seed), groups, progress=progress)
    return save_full_map(run_dir, method, features, groups, fit_rows, coords, seed=seed,
                         seconds=round(time.perf_counter() - t0, 3))


def save_full_map(run_dir: str | os.PathLike, method: str, features, groups: np.ndarray, fit_rows: np.ndarray,
                  coords: np.ndarray, *, seed: int = 0, seconds: float | None = None) -> FullMap:
    """Cache an all-row map (``coords`` float32 [N, 2] fitted on ``fit_rows``) atomically where
    :func:`cached_full_map` finds it (an unwritable run dir is not an error)."""
    npz, meta = layout.full_map_files(run_dir, method, seed, map_key(features, groups, fit_rows))
    try:
        atomic_save_npz(npz, coords=coords, fit_rows=fit_rows)
        atomic_write_json(meta, {"method": method, "seed": seed, "n_rows": int(len(coords)),
                                 "fit_points": int(len(fit_rows)), "seconds": seconds,
                                 "extension": "linear" if method == "pca" else
                                 f"{EXTEND_K} nearest fitted rows of the same cluster, softmax(cos/{EXTEND_TEMPERATURE})"})
    except OSError:
        pass  # a read-only run still gets its map, just not cached
    return FullMap(coords, fit_rows, method, seconds)


# ------------------------------------------------------------------------------------ density rasters
def map_extent(coords: np.ndarray, pad: float = 0.02) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)`` bounding the finite ``coords`` [N, 2], padded by ``pad`` of the span."""
    c = np.asarray(coords, dtype=np.float64)
    c = c[np.isfinite(c).all(axis=1)] if len(c) else c
    if not len(c):
        return -1.0, 1.0, -1.0, 1.0
    lo, hi = c.min(axis=0), c.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - pad * span, hi + pad * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def pixel_of(coords: np.ndarray, extent: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """Flat pixel index (int64 [N], row-major [H, W], row 0 = lowest y) of each point; -1 outside.

    The binning of :func:`np.histogram2d` over ``extent`` (edges ``np.linspace``, pixels half-open
    except the last, which holds the right / top edge), so that per-pixel tallies made with these
    indices fall in the same pixels as :func:`density_counts`."""
    h, w = shape
    x0, x1, y0, y1 = extent
    c = np.asarray(coords, dtype=np.float64)
    index = []
    for values, lo, hi, n in ((c[:, 0], x0, x1, w), (c[:, 1], y0, y1, h)):
        edges = np.linspace(lo, hi, n + 1)
        i = np.searchsorted(edges, values, side="right") - 1
        i[values == edges[-1]] = n - 1
        index.append(i)
    ix, iy = index
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    return np.where(ok, iy * w + ix, -1)


def _histogram(coords: np.ndarray, extent, shape: tuple[int, int], weights: np.ndarray | None = None) -> np.ndarray:
    """:func:`np.histogram2d` of the points [N, 2] (optionally ``weights`` [N]) in ``shape`` pixels over
    ``extent``: float64 [H, W], row 0 = lowest y; points outside are left out."""
    c = np.asarray(coords)
    x0, x1, y0, y1 = extent
    hist, _, _ = np.histogram2d(c[:, 1], c[:, 0], bins=shape, range=[(y0, y1), (x0, x1)], weights=weights)
    return hist


def density_counts(coords: np.ndarray, extent, shape: tuple[int, int]) -> np.ndarray:
    """Points per pixel, int64 [H, W] (row 0 = lowest y)."""
    return _histogram(coords, extent, shape).astype(np.int64)


def density_mean(coords: np.ndarray, values: np.ndarray, extent, shape: tuple[int, int]) -> np.ndarray:
    """Mean of the finite ``values`` [N] per pixel, float64 [H, W]; NaN where a pixel has none."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    c = np.asarray(coords)[ok]
    s = _histogram(c, extent, shape, weights=v[ok])
    n = _histogram(c, extent, shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def density_majority(coords: np.ndarray, labels: np.ndarray, extent, shape: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent label per pixel (ties: the smaller label) and its share of the pixel's points:
    ``(label int64 [H, W], share float64 [H, W])``; empty pixels get the smallest label − 1 and
    share 0. ``labels``: int [N]."""
    pix = pixel_of(coords, extent, shape)
    lab = np.asarray(labels).astype(np.int64).ravel()
    ok = pix >= 0
    size = shape[0] * shape[1]
    empty = (int(lab.min()) - 1) if len(lab) else -1
    label = np.full(size, empty, dtype=np.int64)
    share = np.zeros(size)
    if ok.any():
        vals, inv = np.unique(lab[ok], return_inverse=True)
        keys, counts = np.unique(pix[ok] * len(vals) + inv.ravel(), return_counts=True)
        p, li = keys // len(vals), keys % len(vals)
        order = np.lexsort((li, -counts, p))  # per pixel: most points first, then smaller label
        first = order[np.r_[True, p[order][1:] != p[order][:-1]]]
        totals = np.bincount(pix[ok], minlength=size)
        label[p[first]] = vals[li[first]]
        share[p[first]] = counts[first] / totals[p[first]]
    return label.reshape(shape), share.reshape(shape)


# ------------------------------------------------------------------------------------ selections
def rows_in_box(coords: np.ndarray, x_range, y_range) -> np.ndarray:
    """Rows (int64, ascending) whose point lies in the closed box ``x_range`` × ``y_range``
    (each a pair in any order)."""
    c = np.asarray(coords)
    xa, xb = sorted(float(v) for v in x_range)
    ya, yb = sorted(float(v) for v in y_range)
    return np.flatnonzero((c[:, 0] >= xa) & (c[:, 0] <= xb) & (c[:, 1] >= ya) & (c[:, 1] <= yb)).astype(np.int64)


def rows_in_polygon(coords: np.ndarray, xs, ys) -> np.ndarray:
    """Rows (int64, ascending) whose point lies inside the closed polygon with vertices
    (``xs``, ``ys``) — even-odd rule, as a lasso is drawn; fewer than 3 vertices select nothing."""
    px_, py_ = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(px_) < 3:
        return np.zeros(0, dtype=np.int64)
    cand = rows_in_box(coords, (px_.min(), px_.max()), (py_.min(), py_.max()))
    x = np.asarray(coords, dtype=np.float64)[cand, 0]
    y = np.asarray(coords, dtype=np.float64)[cand, 1]
    inside = np.zeros(len(cand), dtype=bool)
    for x1, y1, x2, y2 in zip(px_, py_, np.roll(px_, -1), np.roll(py_, -1)):
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        inside ^= crosses & (x < x1 + (y - y1) * (x2 - x1) / (y2 - y1))
    return cand[inside]


def rows_in_selection(coords: np.ndarray, boxes: list[dict] | None = None, lassos: list[dict] | None = None
                      ) -> np.ndarray:
    """Union (int64, ascending) of the rows inside plotly selections as Streamlit reports them:
    ``boxes`` = ``[{"x": [x0, x1], "y": [y0, y1]}, ...]``, ``lassos`` = ``[{"x": [...], "y": [...]}, ...]``."""
    parts = [rows_in_box(coords, b["x"], b["y"]) for b in boxes or [] if len(b.get("x", ())) == 2]
    parts += [rows_in_polygon(coords, s["x"], s["y"]) for s in lassos or [] if s.get("x")]
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
