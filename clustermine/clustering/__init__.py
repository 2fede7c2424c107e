"""Clustering of feature arrays: TEMI (the method's clusterer) and a spherical k-means baseline.

Both are scikit-learn estimators (``BaseEstimator`` + ``ClusterMixin``: ``get_params`` /
``set_params`` / ``clone``, ``fit(X) -> self``, ``predict``, ``fit_predict``, fitted attributes
ending in ``_``, ``random_state``); build them by name with :func:`make_clusterer`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Union

from clustermine.clustering.base import ClustererBase, InvalidClusteringInput, NotFittedClusterer
from clustermine.clustering.feasibility import TEMI_CPU_MAX_S, SlowClusteringWarning, check_clusterer_feasible
from clustermine.clustering.kmeans import KMeansClusterer
from clustermine.clustering.temi import TEMI
from clustermine.errors import ClusterMineError

__all__ = [
    "CLUSTERERS",
    "ClustererBase",
    "InvalidClusteringInput",
    "NotFittedClusterer",
    "MIN_CLUSTER_SIZE",
    "KMeansClusterer",
    "TEMI",
    "TEMI_CPU_MAX_S",
    "SlowClusteringWarning",
    "check_clusterer_feasible",
    "clamp_n_clusters",
    "default_n_clusters",
    "make_clusterer",
]

Clusterer = Union[TEMI, KMeansClusterer]

#: name -> estimator class accepted by :func:`make_clusterer`.
CLUSTERERS: dict[str, type] = {"kmeans": KMeansClusterer, "temi": TEMI}
_ALIASES = {"k-means": "kmeans", "k_means": "kmeans"}

#: Fewest members a cluster should have on average. A cluster names itself by a plurality vote of
#: its members, and TEMI's default k = round(0.5 N / C) >= 5 neighbours should stay within one
#: cluster; both need about 5+ members (METHOD 2.9 recommends 10+ where N allows).
MIN_CLUSTER_SIZE = 5


def clamp_n_clusters(n_clusters: int, n_samples: int) -> tuple[int, str | None]:
    """Clamp C to [1, max(1, N // MIN_CLUSTER_SIZE)].

    Returns (C used, None) or (clamped C, a one-line message for the user saying why).
    """
    hi = max(1, n_samples // MIN_CLUSTER_SIZE)
    c = int(n_clusters)
    if c < 1:
        return 1, f"{n_clusters} clusters requested; using 1 (the number of clusters must be at least 1)"
    if c > hi:
        return hi, (
            f"{c} clusters requested for {n_samples} images; using {hi} so that each cluster has "
            f"about {MIN_CLUSTER_SIZE}+ members to vote on its concept"
        )
    return c, None


def default_n_clusters(n_samples: int) -> int:
    """Data-independent default C = round(sqrt(N / 2)), clipped to [2, 200], then clamped.

    sqrt(N/2) is the classical rule of thumb for the number of clusters (Mardia et al., 1979): the
    count and the mean size (sqrt(2N)) both grow with N, so small folders get few clusters with
    enough voters each, and larger ones get the mild over-clustering ClusterMine relies on (several
    clusters may vote for the same concept; an unsplit class loses concepts). The cap of 200 keeps
    CPU training cheap; pass C explicitly for ImageNet-scale sets (the paper uses 4000).
    """
    c = int(min(200, max(2, round(math.sqrt(max(n_samples, 0) / 2)))))
    return clamp_n_clusters(c, n_samples)[0]


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
