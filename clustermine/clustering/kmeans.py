"""Spherical k-means baseline (METHOD 2.10): scikit-learn k-means on L2-normalised features."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from clustermine.clustering.base import ClustererBase, random_state_from
from clustermine.errors import CancelledError
from clustermine.linalg import l2_normalize

#: Above this many samples MiniBatchKMeans replaces KMeans (METHOD 2.10: N >= ~1e5).
MINIBATCH_ABOVE = 50_000


class KMeansClusterer(ClustererBase):
    """k-means on L2-normalised feature vectors (a scikit-learn estimator).

    ``fit(X [N, D])`` sets ``labels_`` (int64 [N]), ``cluster_centers_`` ([C, D], in the
    normalised space, not re-normalised), ``inertia_``, ``n_iter_``, ``cluster_sizes_``,
    ``n_occupied_``. ``predict`` assigns the nearest centre after L2 normalisation.
    MiniBatchKMeans is used when N > 50,000. ``random_state`` (int, None or a RandomState) goes to
    scikit-learn unchanged. ``device`` is accepted for API symmetry and ignored. The keyword
    ``seed`` is a deprecated alias of ``random_state``.
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

    def fit(self, X: np.ndarray, y: object = None) -> "KMeansClusterer":
        """Cluster X [N, D]; see the class docstring for the fitted attributes. Returns self."""
        from sklearn.cluster import KMeans, MiniBatchKMeans

        X = self._features(X, fit=True)
        n = X.shape[0]
        c = self._check_n_clusters(n)
        if self.cancel is not None and self.cancel():
            raise CancelledError("k-means cancelled before start")
        if self.progress is not None:
            self.progress(0, 1)
        Xn = l2_normalize(X)
        if n > MINIBATCH_ABOVE:
            km = MiniBatchKMeans(
                n_clusters=c,
                n_init=min(self.n_init, 3),
                max_iter=self.max_iter,
                batch_size=4096,
                random_state=self.random_state,
                verbose=int(self.verbose),
            )
        else:
            km = KMeans(
                n_clusters=c, n_init=self.n_init, max_iter=self.max_iter, random_state=self.random_state,
                verbose=int(self.verbose),
            )
        with warnings.catch_warnings():
            # duplicate points -> "fewer distinct clusters than n_clusters": labels are still valid
            warnings.simplefilter("ignore", category=UserWarning)
            km.fit(Xn)
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
        X = self._features(X, fit=False)
        return self._km.predict(l2_normalize(X)).astype(np.int64)
