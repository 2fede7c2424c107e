"""Concept stability: how many of a run's clusterings elect each concept.

TEMI trains H heads, each a clustering of the same images; the run keeps every head's labels
(``head_labels.npy``, int32 [H, N_ok]). For k-means, :func:`seed_stability` re-clusters with a few
seeds on request (``seed_labels.npy``, int32 [S, N_ok]; the run's own clustering is seed 1 of S).
Each clustering votes exactly as mining does (:func:`clustermine.method.mining.cluster_statistics`: every
cluster elects the plurality top-1 concept of its members); a concept's ``support`` is the fraction
of clusterings that elect it. A concept elected by one clustering only is flagged: it may be noise.
Excluded images ("not ID") and held-out images do not vote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from clustermine.core.errors import ClusterMineError, RunError
from clustermine.method.mining import clustering_winners, support_counts  # noqa: F401  (re-exported)
from clustermine.store.concepts import _support_table, attach_support, support_labels  # noqa: F401
from clustermine.store import layout
from clustermine.core.errors import CancelledError
from clustermine.core.identity import Actor
from clustermine.core.roles import require

if TYPE_CHECKING:
    from clustermine.store.concepts import Concept
    from clustermine.store.run import Run

ProgressFn = Callable[[int, int], None]
__all__ = ["clustering_winners", "support_counts", "support_labels", "attach_support", "seed_stability"]


def stability_source(run: Run) -> str | None:
    """"heads", "seeds" or None: what the run's concept support is computed from."""
    return _support_table(run)[2]


def seed_stability(run: Run, n_seeds: int = 5, *, progress: ProgressFn | None = None,
                   cancel: Callable[[], bool] | None = None, actor: Actor | None = None) -> np.ndarray:
    """Re-cluster the run's voting images with ``n_seeds - 1`` more seeds (the run's clusterer,
    C and options; seeds ``seed+1 ...``) and store all S = ``n_seeds`` clusterings, the run's own
    first, in ``seed_labels.npy``. ``progress(done, S)`` after each. Returns int32 [S, N_ok].
    ``actor``: who acts; PermissionDenied before anything is written when its role may not."""
    require(actor, "stability")
    from clustermine.workflows.recluster import run_clusterer  # imports pandas (seconds): only when this runs

    if n_seeds < 2:
        raise ClusterMineError(f"stability needs at least 2 seeds, got {n_seeds}")
    if run.status != "done":
        raise RunError(f"{run.path}: the run is not finished (status {run.status!r})")
    cfg = run.config
    cids = run.cluster_ids()
    excluded = run.excluded_mask() if hasattr(run, "excluded_mask") else np.zeros(len(cids), bool)
    rows = np.flatnonzero((cids >= 0) & ~excluded)
    n_clusters = max(len(run.cluster_stats()), 1)
    labels = np.full((n_seeds, len(cids)), -1, dtype=np.int32)
    labels[0, rows] = cids[rows]
    feats = run.features()[rows]
    base_seed = int(cfg.get("seed") or 0)
    if progress:
        progress(1, n_seeds)
    for s in range(1, n_seeds):
        if cancel and cancel():
            raise CancelledError("stability cancelled; nothing was stored")
        if n_clusters > 1 and len(rows) >= n_clusters:
            est = run_clusterer(cfg, n_clusters, seed=base_seed + s)
            labels[s, rows] = est.fit_predict(feats)
        else:
            labels[s, rows] = 0
        if progress:
            progress(s + 1, n_seeds)
    run.write_array(layout.SEED_LABELS, labels)
    return labels
