"""Spherical k-means baseline (METHOD 2.10): scikit-learn k-means on L2-normalised features."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from clustermine.clustering.temi import _as_features, l2_normalize
from clustermine.errors import CancelledError, ClusterMineError

#: Above this many samples MiniBatchKMeans replaces KMeans (METHOD 2.10: N >= ~1e5).
MINIBATCH_ABOVE = 50_000


class KMeansClusterer:
    """k-means on L2-normalised feature vectors (scikit-learn style estimator).

    ``fit(X [N, D])`` sets ``labels_`` (int64 [N]), ``cluster_centers_`` ([C, D], in the
    normalised space, not re-normalised), ``inertia_``, ``n_iter_``, ``cluster_sizes_``,
    ``n_occupied_``. ``predict`` assigns the nearest centre after L2 normalisation.
    MiniBatchKMeans is used when N > 50,000. ``device`` is accepted for API symmetry and ignored.
    """

    def __init__(
        self,
        n_clusters: int,
        *,
        n_init: int = 10,
        max_iter: int = 300,
        seed: int = 0,
        device: str = "cpu",
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        verbose: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.seed = seed
        self.device = device
        self.progress = progress
        self.cancel = cancel
        self.verbose = verbose

    def fit(self, X: np.ndarray, y: object = None) -> "KMeansClusterer":
        """Cluster X [N, D]; see the class docstring for the fitted attributes."""
        from sklearn.cluster import KMeans, MiniBatchKMeans

        X = _as_features(X)
        n = X.shape[0]
        c = self.n_clusters
        if not isinstance(c, (int, np.integer)) or c < 1:
            raise ClusterMineError(f"n_clusters must be a positive integer, got {c!r}")
        if c > n:
            raise ClusterMineError(f"n_clusters={c} exceeds the number of samples ({n})")
        if self.cancel is not None and self.cancel():
            raise CancelledError("k-means cancelled before start")
        if self.progress is not None:
            self.progress(0, 1)
        Xn = l2_normalize(X)
        if n > MINIBATCH_ABOVE:
            km = MiniBatchKMeans(
                n_clusters=int(c),
                n_init=min(self.n_init, 3),
                max_iter=self.max_iter,
                batch_size=4096,
                random_state=self.seed,
                verbose=int(self.verbose),
            )
        else:
            km = KMeans(
                n_clusters=int(c), n_init=self.n_init, max_iter=self.max_iter, random_state=self.seed,
                verbose=int(self.verbose),
            )
        with warnings.catch_warnings():
            # duplicate points -> "fewer distinct clusters than n_clusters": labels are still valid
            warnings.simplefilter("ignore", category=UserWarning)
            km.fit(Xn)
        self._km = km
        self.n_features_in_ = X.shape[1]
        self.cluster_centers_ = km.cluster_centers_.astype(np.float32)
        self.labels_ = km.labels_.astype(np.int64)
        self.inertia_ = float(km.inertia_)
        self.n_iter_ = int(km.n_iter_)
        self.cluster_sizes_ = np.bincount(self.labels_, minlength=int(c))
        self.n_occupied_ = int((self.cluster_sizes_ > 0).sum())
        if self.progress is not None:
            self.progress(1, 1)
        return self

    def fit_predict(self, X: np.ndarray, y: object = None) -> np.ndarray:
        """``fit(X)`` and return ``labels_`` (int64 [N])."""
        return self.fit(X).labels_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Index of the nearest centre (int64 [M]) for X [M, D] after L2 normalisation."""
        if not hasattr(self, "_km"):
            raise ClusterMineError("this KMeansClusterer is not fitted yet: call fit(X) first")
        X = _as_features(X)
        if X.shape[1] != self.n_features_in_:
            raise ClusterMineError(f"X has {X.shape[1]} features, the model was fitted on {self.n_features_in_}")
        return self._km.predict(l2_normalize(X)).astype(np.int64)
