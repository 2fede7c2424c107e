"""Clustering of feature arrays: TEMI (the method's clusterer) and a spherical k-means baseline.

Both are scikit-learn estimators (``BaseEstimator`` + ``ClusterMixin``: ``get_params`` /
``set_params`` / ``clone``, ``fit(X) -> self``, ``predict``, ``fit_predict``, fitted attributes
ending in ``_``, ``random_state``); build them by name with :func:`make_clusterer`.
"""

from __future__ import annotations

from typing import Any, Callable, Union

from clustermine.method.clustering.base import ClustererBase, InvalidClusteringInput, NotFittedClusterer
from clustermine.method.schedule import MIN_CLUSTER_SIZE, clamp_n_clusters, default_n_clusters  # noqa: F401 (torch-free)
from clustermine.method.clustering.kmeans import KMeansClusterer
from clustermine.method.clustering.temi import TEMI
from clustermine.core.errors import ClusterMineError

__all__ = [
    "CLUSTERERS",
    "ClustererBase",
    "InvalidClusteringInput",
    "NotFittedClusterer",
    "MIN_CLUSTER_SIZE",
    "KMeansClusterer",
    "TEMI",
    "clamp_n_clusters",
    "default_n_clusters",
    "make_clusterer",
]

Clusterer = Union[TEMI, KMeansClusterer]

#: name -> estimator class accepted by :func:`make_clusterer`.
CLUSTERERS: dict[str, type] = {"kmeans": KMeansClusterer, "temi": TEMI}
_ALIASES = {"k-means": "kmeans", "k_means": "kmeans"}

def make_clusterer(
    name: str,
    n_clusters: int,
    *,
    random_state: Any = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    **params: Any,
) -> Clusterer:
    """Build an unfitted clusterer by name ("temi" | "kmeans"); ``params`` are its constructor
    parameters (those of ``get_params()``).

    ``seed`` is the run configuration's name for ``random_state`` (either may be given, not two
    different values); neither means 0. Raises :class:`ClusterMineError` for an unknown name or an
    unknown parameter, naming the valid ones.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in CLUSTERERS:
        raise ClusterMineError(f"unknown clusterer {name!r}; choose one of: {', '.join(sorted(CLUSTERERS))}")
    if seed is not None and random_state is not None and seed != random_state:
        raise ClusterMineError(f"make_clusterer got seed={seed!r} and random_state={random_state!r}; pass one")
    estimator = CLUSTERERS[key](
        n_clusters,
        random_state=next((v for v in (random_state, seed) if v is not None), 0),
        device=device,
        progress=progress,
        cancel=cancel,
    )
    valid = set(estimator.get_params(deep=False))
    unknown = sorted(set(params) - valid)
    if unknown:
        shown = sorted(valid - {"n_clusters", "random_state", "device", "progress", "cancel"})
        raise ClusterMineError(
            f"unknown option(s) for clusterer {key!r}: {', '.join(unknown)}; valid: {', '.join(shown)}"
        )
    return estimator.set_params(**params)
