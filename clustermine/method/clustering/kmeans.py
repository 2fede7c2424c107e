"""Spherical k-means baseline (METHOD 2.10): k-means on L2-normalised features.

Up to :data:`MINIBATCH_ABOVE` samples: scikit-learn's KMeans on a normalised float32 copy. Above it:
:class:`SphericalMiniBatchKMeans`, a mini-batch spherical k-means written here that reads random
rows of X per step, so X may be a memory-mapped float16 array of any N (no full-size copy is made;
scikit-learn's MiniBatchKMeans needs all of X as one float32 array, 2.6 GB at 1.28M x 512, plus
its own normalised copy).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import torch

from clustermine.method.clustering.base import ClustererBase, InvalidClusteringInput, NotFittedClusterer, random_state_from
from clustermine.core.errors import CancelledError
from clustermine.core.linalg import l2_normalize

#: Above this many samples the mini-batch path replaces KMeans (METHOD 2.10: N >= ~1e5).
MINIBATCH_ABOVE = 50_000
#: Rows per mini-batch step: ~8 per centre at C = 1000, and one float32 GEMM of 8192 x D x C a step.
MINIBATCH_SIZE = 8192
#: Samples seen while training = MINIBATCH_EPOCHS x N (and at least MINIBATCH_MIN_STEPS steps).
#: With per-centre learning rates 1 / count (Sculley 2010) the centres have settled by then;
#: at N = 1.28M, C = 1000 that is ~3,800 samples per centre.
MINIBATCH_EPOCHS = 3
MINIBATCH_MIN_STEPS = 300
#: The centres start from the best (least inertia) of ``n_init`` runs of spherical k-means++ seeding
#: plus INIT_LLOYD_ITERS spherical Lloyd iterations, all on a random sample of max(10,000, 20 C)
#: rows: a single run left two centres in one component and merged two others on a 12-component
#: test mixture for some seeds. (scikit-learn's kmeans_plusplus on float32 computes its distances
#: upcast to float64 in small blocks: 140 s per seeding at C = 1,000 on 2 cores; this one is GEMMs.)
INIT_SAMPLE_MIN, INIT_SAMPLE_PER_CLUSTER = 10_000, 20
INIT_LLOYD_ITERS = 10
#: Rows assigned per chunk in predict (a [chunk, C] float32 similarity block).
ASSIGN_CHUNK = 32_768


def _spherical_kmeanspp(S: np.ndarray, c: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """k-means++ seeding on unit rows S [s, D] (float32) with the spherical distance 1 - cos (greedy:
    the best of 2 + ln C candidates per centre, as scikit-learn). Returns (centres [c, D], potential)."""
    s = S.shape[0]
    trials = 2 + int(math.log(c))
    idx = [int(rng.integers(s))]
    dist = np.maximum(1.0 - S @ S[idx[0]], 0.0)  # [s]: distance to the nearest chosen centre
    for _ in range(1, c):
        cum = np.cumsum(dist, dtype=np.float64)
        if cum[-1] <= 0:  # every row coincides with a centre (duplicates): any row will do
            cand = rng.integers(s, size=trials)
        else:
            cand = np.minimum(np.searchsorted(cum, rng.random(trials) * cum[-1]), s - 1)
        d_new = np.minimum(dist[None, :], 1.0 - S[cand] @ S.T)  # [trials, s]
        best = int(d_new.sum(1).argmin())
        idx.append(int(cand[best]))
        dist = np.maximum(d_new[best], 0.0)
    return S[idx].copy(), float(dist.sum())


def _spherical_lloyd(S: torch.Tensor, C: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` spherical Lloyd steps on unit rows S: centres <- normalised member sums (empty keep)."""
    for _ in range(iters):
        lab = (S @ C.T).argmax(1)
        sums = torch.zeros_like(C).index_add_(0, lab, S)
        hit = torch.bincount(lab, minlength=C.shape[0]) > 0
        C[hit] = torch.nn.functional.normalize(sums[hit], dim=1)
    return C


def _unit_rows(X: np.ndarray) -> torch.Tensor:
    """Rows of X (any float dtype) as L2-normalised float32 torch tensor; zero rows stay zero."""
    t = torch.from_numpy(np.asarray(X, dtype=np.float32))
    return torch.nn.functional.normalize(t, dim=1)


class SphericalMiniBatchKMeans:
    """Mini-batch spherical k-means (Sculley 2010 with unit-norm centres) over X [N, D], read row
    batches at a time (X may be a float16 memmap).

    Each step draws ``batch_size`` rows uniformly (with replacement; sorted for sequential reads),
    assigns each to the centre of highest cosine, moves every hit centre to
    ``c + (sum of its rows - n_hit c) / count`` (count: rows it has absorbed so far) and projects it
    back onto the unit sphere. Centres start from the best of ``n_init`` runs of spherical k-means++
    and a few Lloyd iterations on a random sample. Deterministic for a given seed on one machine. Fitted: ``cluster_centers_`` (float32
    [C, D], unit rows), ``labels_`` (int64 [N]), ``inertia_`` (sum of squared distances of unit rows to their centre = sum 2 - 2 cos),
    ``n_iter_`` (steps), ``counts_`` (rows absorbed per centre during training).
    """

    def __init__(self, n_clusters: int, *, seed: int = 0, batch_size: int = MINIBATCH_SIZE,
                 n_steps: int | None = None, n_init: int = 3, progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> None:
        self.n_clusters, self.seed, self.batch_size, self.n_steps = n_clusters, seed, batch_size, n_steps
        self.n_init = n_init
        self.progress, self.cancel = progress, cancel

    def _steps(self, n: int) -> int:
        if self.n_steps is not None:
            return int(self.n_steps)
        return max(MINIBATCH_MIN_STEPS, math.ceil(MINIBATCH_EPOCHS * n / self.batch_size))

    def fit(self, X: np.ndarray) -> "SphericalMiniBatchKMeans":
        n, _ = X.shape
        c = int(self.n_clusters)
        rng = np.random.default_rng(self.seed)
        s = min(n, max(INIT_SAMPLE_MIN, INIT_SAMPLE_PER_CLUSTER * c))
        sample = _unit_rows(X[np.sort(rng.choice(n, s, replace=False))])
        best = None
        with torch.no_grad():
            for _ in range(max(1, int(self.n_init))):  # keep the run of least sample inertia, as n_init does
                C = _spherical_lloyd(sample, torch.from_numpy(_spherical_kmeanspp(sample.numpy(), c, rng)[0]),
                                     INIT_LLOYD_ITERS)
                inertia = float((1.0 - (sample @ C.T).max(1).values).double().sum())
                if best is None or inertia < best[0]:
                    best = (inertia, C)
        C = best[1]
        del sample, best
        counts = torch.zeros(c, dtype=torch.float64)
        steps = self._steps(n)
        # fit + final assignment pass, counted in batches of ``batch_size`` rows for progress
        total = steps + math.ceil(n / self.batch_size)
        with torch.no_grad():
            for step in range(steps):
                if step % 20 == 0:
                    if self.cancel is not None and self.cancel():
                        raise CancelledError(f"k-means cancelled at step {step}")
                    if self.progress is not None:
                        self.progress(step, total)
                xb = _unit_rows(X[np.sort(rng.integers(0, n, size=min(self.batch_size, n)))])
                lab = (xb @ C.T).argmax(1)
                hit = torch.bincount(lab, minlength=c).to(torch.float64)
                sums = torch.zeros_like(C).index_add_(0, lab, xb)
                counts += hit
                rows = hit > 0
                eta = (1.0 / counts[rows]).to(torch.float32)[:, None]
                C[rows] += eta * (sums[rows] - hit[rows].to(torch.float32)[:, None] * C[rows])
                C[rows] = torch.nn.functional.normalize(C[rows], dim=1)
        self.cluster_centers_ = C.numpy()
        self.counts_ = counts.numpy()
        self.n_iter_ = steps
        done = [steps]

        def tick(_: int) -> None:
            done[0] += 1
            if self.progress is not None and done[0] % 20 == 0:
                self.progress(done[0], total)

        self.labels_, self.inertia_ = self._assign(X, on_batch=tick, chunk=self.batch_size)
        if self.progress is not None:
            self.progress(total, total)
        return self

    def _assign(self, X: np.ndarray, on_batch: Callable[[int], None] | None = None,
                chunk: int = ASSIGN_CHUNK) -> tuple[np.ndarray, float]:
        C = torch.from_numpy(self.cluster_centers_)
        labels = np.empty(X.shape[0], dtype=np.int64)
        inertia = 0.0
        with torch.no_grad():
            for i0 in range(0, X.shape[0], chunk):
                if self.cancel is not None and self.cancel():
                    raise CancelledError("k-means cancelled while assigning")
                xb = _unit_rows(X[i0 : i0 + chunk])
                best, lab = (xb @ C.T).max(1)
                labels[i0 : i0 + len(xb)] = lab.numpy()
                # a zero row (norm 0) has cos 0 to every centre: distance^2 = 1, as for sklearn
                sq = (xb * xb).sum(1) + 1.0 - 2.0 * best
                inertia += float(sq.double().sum())
                if on_batch is not None:
                    on_batch(i0)
        return labels, inertia

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Nearest centre by cosine (int64 [M]), in chunks."""
        return self._assign(X)[0]


class KMeansClusterer(ClustererBase):
    """k-means on L2-normalised feature vectors (a scikit-learn estimator).

    ``fit(X [N, D])`` sets ``labels_`` (int64 [N]), ``cluster_centers_`` ([C, D], in the
    normalised space), ``inertia_``, ``n_iter_``, ``cluster_sizes_``, ``n_occupied_``. ``predict``
    assigns the nearest centre after L2 normalisation. Up to N = 50,000 scikit-learn's KMeans runs
    (centres are means of unit vectors, not re-normalised); above it :class:`SphericalMiniBatchKMeans`
    (unit-norm centres; initialised by the best of min(``n_init``, 3) runs of k-means++ and a few
    Lloyd iterations on a sample), which streams row batches from X, so a float16 memmap of any N is never copied whole.
    ``max_iter``: KMeans's iteration cap (the mini-batch path runs a fixed MINIBATCH_EPOCHS passes'
    worth of steps). ``random_state`` (int,
    None or a RandomState) goes to scikit-learn unchanged / seeds the mini-batch path.
    ``device`` is accepted for API symmetry and ignored. The keyword ``seed`` is a deprecated
    alias of ``random_state``.
    """

    _model_attribute = "_km"

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_init: int = 10,
        max_iter: int = 300,
        random_state: Any = 0,
        device: str = "cpu",
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        verbose: bool = False,
        **deprecated: Any,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state_from(type(self).__name__, random_state, deprecated)
        self.device = device
        self.progress = progress
        self.cancel = cancel
        self.verbose = verbose

    def _streamable(self, X: Any, *, fit: bool) -> bool:
        """Whether X is a large 2-D float ndarray/memmap that the mini-batch path reads as it is;
        checks its shape and finiteness chunk by chunk (no copy) and records ``n_features_in_``."""
        if not (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind == "f" and X.shape[0] > MINIBATCH_ABOVE):
            return False
        if not fit:
            if not self.__sklearn_is_fitted__():
                raise NotFittedClusterer(f"this {type(self).__name__} is not fitted yet: call fit(X) first")
            if X.shape[1] != self.n_features_in_:
                raise InvalidClusteringInput(
                    f"{type(self).__name__}: X has {X.shape[1]} features, but is expecting {self.n_features_in_} features as input")
            return isinstance(self._km, SphericalMiniBatchKMeans)
        if X.shape[1] < 1:
            raise InvalidClusteringInput(f"{type(self).__name__}: X has 0 features")
        for i0 in range(0, X.shape[0], ASSIGN_CHUNK):
            if not np.isfinite(X[i0 : i0 + ASSIGN_CHUNK]).all():
                raise InvalidClusteringInput(f"{type(self).__name__}: Input X contains NaN or infinity.")
        self.n_features_in_ = X.shape[1]
        return True

    def fit(self, X: np.ndarray, y: object = None) -> "KMeansClusterer":
        """Cluster X [N, D]; see the class docstring for the fitted attributes. Returns self."""
        from sklearn.cluster import KMeans

        stream = self._streamable(X, fit=True)
        if not stream:
            X = self._features(X, fit=True)
        n = X.shape[0]
        c = self._check_n_clusters(n)
        if self.cancel is not None and self.cancel():
            raise CancelledError("k-means cancelled before start")
        if self.progress is not None:
            self.progress(0, 1)
        if n > MINIBATCH_ABOVE:
            km = SphericalMiniBatchKMeans(c, seed=self._seed(), batch_size=MINIBATCH_SIZE,
                                          n_init=min(self.n_init, 3), progress=self.progress, cancel=self.cancel).fit(X)
            self._km = km
            self.cluster_centers_ = km.cluster_centers_
            self.labels_ = km.labels_
            self.inertia_ = float(km.inertia_)
            self.n_iter_ = int(km.n_iter_)
        else:
            km = KMeans(
                n_clusters=c, n_init=self.n_init, max_iter=self.max_iter, random_state=self.random_state,
                verbose=int(self.verbose),
            )
            with warnings.catch_warnings():
                # duplicate points -> "fewer distinct clusters than n_clusters": labels are still valid
                warnings.simplefilter("ignore", category=UserWarning)
                km.fit(l2_normalize(X))
            self._km = km
            self.cluster_centers_ = km.cluster_centers_.astype(np.float32)
            self.labels_ = km.labels_.astype(np.int64)
            self.inertia_ = float(km.inertia_)
            self.n_iter_ = int(km.n_iter_)
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=c)
        self.n_occupied_ = int((self.cluster_sizes_ > 0).sum())
        if self.progress is not None:
            self.progress(1, 1)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Index of the nearest centre (int64 [M]) for X [M, D] after L2 normalisation."""
        if self._streamable(X, fit=False):
            return self._km.predict(X)
        X = self._features(X, fit=False)
        if isinstance(self._km, SphericalMiniBatchKMeans):
            return self._km.predict(X)
        return self._km.predict(l2_normalize(X)).astype(np.int64)
