"""Cosine k nearest neighbours of a feature matrix, self excluded (METHOD 2.1): exact or approximate.

- ``exact``: the N x N cosine similarities in row chunks (torch; CPU, or CUDA where the keys live on
  the GPU as float32, float16 when float32 would not fit), top-k per chunk. O(N^2 D).
- ``approx``: an NN-descent graph (pynndescent) on the L2-normalised rows; Euclidean distance on unit
  vectors ranks exactly as cosine. About O(N log N); recall@k is measured in BENCHMARKS "Paper scale".
- ``auto``: exact on a GPU and for N <= :data:`APPROX_KNN_ABOVE`, approximate above it on a CPU.

Inputs may be float16 / float32 / float64 and memory-mapped (``np.load(mmap_mode="r")``): rows are
read and normalised in chunks into a single float32 copy (CPU) or straight onto the GPU.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from clustermine.method.clustering.base import InvalidClusteringInput
from clustermine.core.errors import CancelledError
from clustermine.core.linalg import l2_normalize

CancelFn = Callable[[], bool]

#: Above this many samples a CPU uses the approximate index when ``method="auto"``. Exact kNN costs
#: ~53 s at N = 100,000 (D = 384, 2 idle cores; BENCHMARKS "Performance and scaling") and grows as
#: N^2 (~3.5 min at 200k, ~2.5 h at 1.28M); NN-descent pays ~40 s of numba compilation per process
#: plus a cost about linear in N. Measured side by side at 100k (BENCHMARKS "Paper scale", "knn")
#: NN-descent already takes ~0.6x the exact time with recall@50 ~1.0, so the two break even a little
#: below 100k: up to 100k exact results (all earlier benchmarks) are kept, above it the N^2 term wins.
APPROX_KNN_ABOVE = 100_000
KNN_METHODS = ("auto", "exact", "approx")
#: Rows normalised per chunk when copying (possibly memory-mapped float16) features to float32.
NORMALIZE_CHUNK_ROWS = 65_536


def resolve_knn_method(method: str, n_samples: int, device: str | torch.device = "cpu") -> str:
    """``"exact"`` or ``"approx"`` for ``method`` in :data:`KNN_METHODS` (``auto``: approximate only
    on a CPU above :data:`APPROX_KNN_ABOVE` samples). Raises InvalidClusteringInput otherwise."""
    if method not in KNN_METHODS:
        raise InvalidClusteringInput(f"knn_method must be one of {', '.join(KNN_METHODS)}, got {method!r}")
    if method != "auto":
        return method
    return "approx" if torch.device(device).type == "cpu" and n_samples > APPROX_KNN_ABOVE else "exact"


def normalized_float32(X: np.ndarray, *, chunk_rows: int = NORMALIZE_CHUNK_ROWS,
                       cancel: CancelFn | None = None) -> np.ndarray:
    """X [N, D] (any float dtype, memory-mapped or not) as L2-normalised C-contiguous float32 [N, D],
    built chunk by chunk: the only full-size copy made. All-zero rows stay zero."""
    n, d = X.shape
    out = np.empty((n, d), dtype=np.float32)
    for i0 in range(0, n, chunk_rows):
        if cancel is not None and cancel():
            raise CancelledError("cancelled while normalising features")
        l2_normalize(X[i0 : i0 + chunk_rows], out=out[i0 : i0 + chunk_rows])
    return out


def _check_k(n: int, k: int) -> None:
    if not 1 <= k < n:
        raise InvalidClusteringInput(f"knn must be in [1, n_samples - 1] = [1, {n - 1}], got {k}")


def _gpu_keys(X: np.ndarray, dev: torch.device, chunk_rows: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """L2-normalised rows of X on ``dev`` as ``dtype``; None: float32 when they take at most half the
    free GPU memory, else float16 (similarities then in float16: near-ties may order differently)."""
    n, d = X.shape
    if dtype is None:
        free, _ = torch.cuda.mem_get_info(dev)
        dtype = torch.float32 if 4 * n * d <= free // 2 else torch.float16
    keys = torch.empty((n, d), dtype=dtype, device=dev)
    for i0 in range(0, n, chunk_rows):
        blk = torch.from_numpy(np.asarray(X[i0 : i0 + chunk_rows], dtype=np.float32)).to(dev)
        keys[i0 : i0 + len(blk)] = torch.nn.functional.normalize(blk, dim=1).to(dtype)
    return keys


def exact_knn(
    X: np.ndarray,
    k: int,
    *,
    device: str | torch.device = "cpu",
    cancel: CancelFn | None = None,
    chunk_bytes: int | None = None,
    gpu_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Exact cosine kNN, self excluded: int32 [N, k], nearest first.

    The similarity matrix is computed in row chunks of about ``chunk_bytes`` (128 MiB on CPU, 1 GiB
    on a GPU by default). On CUDA the normalised keys are uploaded chunk by chunk (no host float32
    copy of X), as ``gpu_dtype`` (None: float32 if it fits in half the free memory, else float16).
    """
    n = X.shape[0]
    _check_k(n, k)
    dev = torch.device(device)
    if chunk_bytes is None:
        chunk_bytes = 1 << (27 if dev.type == "cpu" else 30)
    if dev.type == "cuda":
        keys = _gpu_keys(X, dev, NORMALIZE_CHUNK_ROWS, gpu_dtype)
    else:
        keys = torch.from_numpy(normalized_float32(X, cancel=cancel)).to(dev)
    rows = max(1, min(n, chunk_bytes // (keys.element_size() * n)))
    out = np.empty((n, k), dtype=np.int32)
    with torch.no_grad():
        for i0 in range(0, n, rows):
            if cancel is not None and cancel():
                raise CancelledError("TEMI cancelled while mining nearest neighbours")
            i1 = min(n, i0 + rows)
            sims = keys[i0:i1] @ keys.T
            ar = torch.arange(i1 - i0, device=dev)
            sims[ar, ar + i0] = -torch.inf
            out[i0:i1] = torch.topk(sims, k, dim=1).indices.cpu().numpy()
    return out


def approx_knn(
    X: np.ndarray,
    k: int,
    *,
    random_state: int = 0,
    cancel: CancelFn | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Approximate cosine kNN by NN-descent (pynndescent), self excluded: int32 [N, k], nearest first.

    Deterministic for a given ``random_state`` and thread count (``n_jobs``: numba threads, None =
    numba's default). Rows where the graph found fewer than k others (rare, tiny N) are completed
    exactly. Memory: one float32 normalised copy of X plus the graph (N x (k+1) int32 + float32).
    """
    from pynndescent import NNDescent

    n = X.shape[0]
    _check_k(n, k)
    Xn = normalized_float32(X, cancel=cancel)
    if cancel is not None and cancel():
        raise CancelledError("TEMI cancelled while mining nearest neighbours")
    # Euclidean on unit vectors ranks as cosine and, unlike metric="dot", makes no second copy.
    # numba's OpenMP layer shares the runtime with torch and leaves torch's thread count changed
    # (1 -> 2 measured: a later small-step TEMI / k-means fit ran 25x slower on a loaded 2-core machine).
    torch_threads = torch.get_num_threads()
    try:
        index = NNDescent(Xn, n_neighbors=k + 1, metric="euclidean", random_state=int(random_state) % 2**32,
                          n_jobs=n_jobs, low_memory=True, compressed=False)
        graph = index.neighbor_graph[0]
        del index
    finally:
        torch.set_num_threads(torch_threads)
    out = np.empty((n, k), dtype=np.int32)
    bad: list[int] = []
    for i0 in range(0, n, NORMALIZE_CHUNK_ROWS):
        g = graph[i0 : i0 + NORMALIZE_CHUNK_ROWS]
        rows = np.arange(i0, i0 + len(g))
        keep = (g != rows[:, None]) & (g >= 0)
        # usual row: self first, then k valid others; else its valid non-self entries in order
        usual = (g[:, 0] == rows) & keep[:, 1:].all(1)
        out[rows[usual]] = g[usual, 1:]
        for j in np.flatnonzero(~usual):
            others = g[j][keep[j]]
            if len(others) >= k:
                out[rows[j]] = others[:k]
            else:
                bad.append(int(rows[j]))
    for j0 in range(0, len(bad), 256):  # rows the graph left short: an exact search of those rows only
        q = np.asarray(bad[j0 : j0 + 256])
        sims = Xn[q] @ Xn.T
        sims[np.arange(len(q)), q] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable")
        out[q] = np.take_along_axis(top, order, 1)
    return out


def knn_indices(
    X: np.ndarray,
    k: int,
    *,
    method: str = "auto",
    device: str | torch.device = "cpu",
    random_state: int = 0,
    cancel: CancelFn | None = None,
    chunk_bytes: int | None = None,
) -> np.ndarray:
    """Cosine k nearest neighbours of every row of X [N, D] (raw features; normalised here), self
    excluded: int32 [N, k], nearest first. ``method``: see :func:`resolve_knn_method`;
    ``random_state`` seeds the approximate index; ``chunk_bytes`` sizes the exact search's chunks."""
    if resolve_knn_method(method, X.shape[0], device) == "approx":  # always on the CPU
        return approx_knn(X, k, random_state=random_state, cancel=cancel)
    return exact_knn(X, k, device=device, cancel=cancel, chunk_bytes=chunk_bytes)


#: Reference costs on 2 CPU cores (BENCHMARKS): exact kNN 53 s at N = 100,000, D = 384 (N^2 growth);
#: NN-descent ~40 s of numba compilation per process plus APPROX_S_PER_POINT per row.
EXACT_S_AT_100K = 53.0
APPROX_COMPILE_S = 40.0
APPROX_S_PER_POINT = 3e-4


def estimate_knn_seconds(n_samples: int, method: str) -> float:
    """Rough CPU seconds of :func:`knn_indices` for N samples (D ~ 384-512) by ``"exact"`` / ``"approx"``."""
    n = max(int(n_samples), 0)
    if method == "approx":
        return APPROX_COMPILE_S + APPROX_S_PER_POINT * n
    return EXACT_S_AT_100K * (n / 100_000) ** 2
