"""Concept stability: how many of a run's clusterings elect each concept.

TEMI trains H heads, each a clustering of the same images; the run keeps every head's labels
(``head_labels.npy``, int32 [H, N_ok]). For k-means, :func:`seed_stability` re-clusters with a few
seeds on request (``seed_labels.npy``, int32 [S, N_ok]; the run's own clustering is seed 1 of S).
Each clustering votes exactly as mining does (:func:`clustermine.mining.cluster_statistics`: every
cluster elects the plurality top-1 concept of its members); a concept's ``support`` is the fraction
of clusterings that elect it. A concept elected by one clustering only is flagged: it may be noise.
Excluded images ("not ID") and held-out images do not vote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import ClusterMineError, RunError
from .mining import elected_concepts
from .rundir import layout

if TYPE_CHECKING:
    from .rundir.concepts import Concept
    from .rundir.run import Run

ProgressFn = Callable[[int, int], None]
__all__ = ["clustering_winners", "support_counts", "support_labels", "attach_support", "seed_stability"]


def clustering_winners(labels: np.ndarray, top1_idx: np.ndarray, top1_sim: np.ndarray, n_vocab: int,
                       voters: np.ndarray | None = None) -> list[set[int]]:
    """Concepts elected by each clustering: ``labels`` int [S, N] (-1 = not clustered),
    ``top1_idx`` / ``top1_sim`` [N] the images' zero-shot top-1, ``voters`` bool [N] (default all).
    Returns S sets of corpus indices (the winners of the clustering's non-empty clusters)."""
    labels = np.atleast_2d(np.asarray(labels))
    voters = np.ones(labels.shape[1], dtype=bool) if voters is None else np.asarray(voters, dtype=bool)
    return [elected_concepts(np.where(voters, row, -1), top1_idx, top1_sim, n_vocab) for row in labels]


def support_counts(winners: list[set[int]]) -> dict[int, int]:
    """Corpus index -> number of clusterings electing it."""
    counts: dict[int, int] = {}
    for ws in winners:
        for w in ws:
            counts[w] = counts.get(w, 0) + 1
    return counts


def support_labels(run: Run) -> tuple[np.ndarray | None, str | None]:
    """(int64 [S, N_ok] labels, "heads" | "seeds"), or (None, None) when the run stores neither
    (an older run, or k-means before ``clustermine stability``)."""
    n = run.cluster_ids().shape[0]
    for name, source in ((layout.HEAD_LABELS, "heads"), (layout.SEED_LABELS, "seeds")):
        p = run.file(name)
        if not p.is_file():
            continue
        try:
            arr = np.load(p, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError, EOFError) as exc:
            raise RunError(f"{p}: corrupt ({exc})") from exc
        if arr.ndim != 2 or arr.shape[1] != n:
            raise RunError(f"{p}: shape {arr.shape} does not match the run's {n} images")
        return arr, source
    return None, None


def _support_table(run: Run) -> tuple[dict[int, int], int, str | None]:
    stamp = tuple(layout.file_stamp(run.file(n)) for n in (layout.HEAD_LABELS, layout.SEED_LABELS,
                                                          layout.EXCLUSIONS, layout.VOTES, layout.CLUSTER_IDS))
    cached = run._cache.get("support")
    if cached is not None and cached[0] == stamp:
        return cached[1]
    labels, source = support_labels(run)
    if labels is None:
        table: tuple[dict[int, int], int, str | None] = ({}, 0, None)
    else:
        top_idx, top_sim = run.votes()
        excluded = run.excluded_mask() if hasattr(run, "excluded_mask") else np.zeros(labels.shape[1], bool)
        winners = clustering_winners(labels, top_idx[:, 0], top_sim[:, 0], len(run.vocabulary_base()), ~excluded)
        table = (support_counts(winners), labels.shape[0], source)
    run._cache["support"] = (stamp, table)
    return table


def attach_support(run: Run, concepts: list[Concept]) -> None:
    """Fill ``support`` / ``support_count`` / ``support_total`` of ``concepts`` in place (left None
    when the run stores no head or seed labels, and for user concepts outside the corpus)."""
    try:
        counts, total, _ = _support_table(run)
    except (RunError, OSError):
        return  # an incomplete run: stability unknown, the concept table still opens
    if not total:
        return
    for c in concepts:
        if c.corpus_index is None:
            continue
        c.support_count = counts.get(c.corpus_index, 0)
        c.support_total = total
        c.support = c.support_count / total


def stability_source(run: Run) -> str | None:
    """"heads", "seeds" or None: what the run's concept support is computed from."""
    return _support_table(run)[2]


def seed_stability(run: Run, n_seeds: int = 5, *, progress: ProgressFn | None = None,
                   cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Re-cluster the run's voting images with ``n_seeds - 1`` more seeds (the run's clusterer,
    C and options; seeds ``seed+1 ...``) and store all S = ``n_seeds`` clusterings, the run's own
    first, in ``seed_labels.npy``. ``progress(done, S)`` after each. Returns int32 [S, N_ok]."""
    from .clustering import make_clusterer
    from .errors import CancelledError

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
            est = make_clusterer(cfg.get("clusterer", "kmeans"), n_clusters, seed=base_seed + s,
                                 **(cfg.get("clusterer_params") or {}))
            labels[s, rows] = est.fit_predict(feats)
        else:
            labels[s, rows] = 0
        if progress:
            progress(s + 1, n_seeds)
    run.write_array(layout.SEED_LABELS, labels)
    return labels
