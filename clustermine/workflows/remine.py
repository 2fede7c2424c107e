"""Exclude contaminants and re-mine without re-encoding.

The user marks images "not ID" (``Run.set_excluded``, logged in ``exclusions.jsonl``); :func:`remine`
then mines again from what the run already stores: the features and the per-image zero-shot top-k
votes (no image and no corpus pass). Either the clusters are reused minus the excluded images
(default) or the remaining images are re-clustered with the run's stored clusterer settings. The
concept decisions of the edit log are replayed on the new mined set (a decision about a concept
that is no longer mined is reported, and applies again if it is ever mined again); the held-out
threshold follows because excluded images never calibrate. The mining before is kept in
``previous/`` and :func:`remine` returns (and stores in ``run.json`` as ``last_remine``) what changed.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Callable

import numpy as np
from filelock import Timeout

from clustermine.core.errors import RunError
from clustermine.method.mining import cluster_statistics, mine_positive_concepts, summary
from clustermine.store import layout
from clustermine.store.store import now_iso
from clustermine.core.config import user_identity
from clustermine.core.identity import Actor
from clustermine.core.roles import require
from clustermine.workflows.pipeline import write_head_labels

if TYPE_CHECKING:
    from clustermine.store.run import Run

ProgressFn = Callable[[int, int], None]
__all__ = ["remine", "last_changes"]

_SNAPSHOT = (layout.CLUSTER_IDS, layout.CLUSTER_STATS, layout.MINED, layout.CONCEPTS, layout.HEAD_LABELS)


def _snapshot(run: Run) -> None:
    """Copy the current mining into ``previous/`` (replacing an older copy)."""
    prev = layout.previous_dir(run.path)
    tmp = prev.with_name(prev.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name in _SNAPSHOT:
        if run.file(name).is_file():
            shutil.copy2(run.file(name), tmp / name)
    shutil.rmtree(prev, ignore_errors=True)
    os.replace(tmp, prev)


def _recluster(run: Run, voters: np.ndarray, n_clusters: int,
               progress: ProgressFn | None) -> tuple[np.ndarray, int]:
    """(new cluster ids int64 [N_ok], C used): fit the run's clusterer on the ``voters`` rows, then assign the
    other mining rows (excluded ones) with ``predict``; held-out rows stay -1."""
    from clustermine.method.clustering import clamp_n_clusters  # imports pandas (seconds): only when this runs
    from clustermine.workflows.recluster import fit_rows, run_clusterer  # imports pandas (seconds): only when this runs

    cfg = run.config
    old = run.cluster_ids()
    rows = np.flatnonzero(voters)
    c, _ = clamp_n_clusters(n_clusters, len(rows))
    new = np.full(len(old), -1, dtype=np.int64)
    if c <= 1:
        new[old >= 0] = 0
        run.write_cluster_ids(new)
        return new, 1
    est = run_clusterer(cfg, c, progress=progress)
    feats = run.features()
    new[rows] = fit_rows(est, feats, rows)
    others = np.flatnonzero((old >= 0) & ~voters)
    if len(others):
        new[others] = est.predict(feats[others])
    run.write_cluster_ids(new)
    if getattr(est, "head_labels_", None) is not None:
        write_head_labels(run, est.head_labels_, rows)
    return new, c


def remine(run: Run, *, recluster: bool = False, user: str | None = None,
           progress: ProgressFn | None = None, actor: Actor | None = None) -> dict:
    """Mine the run again without its excluded images; returns the changes (also stored in
    ``run.json`` as ``last_remine``):

    ``mode`` ("reuse" | "recluster"), ``n_excluded``, ``y_pos_added`` / ``y_pos_removed`` (concept
    texts of the current Y_pos, edits applied), ``mined_added`` / ``mined_removed``,
    ``clusters_affected`` (ids whose members or winner changed), ``decisions_not_applying``
    ([{concept, action, user, ts}]: the last decision about a concept no longer mined), ``ts``, ``user``.
    ``actor``: who acts; PermissionDenied before anything is written when its role may not re-mine.
    """
    require(actor, "remine")
    user = user or (actor.name if actor else None)
    if run.status != "done":
        raise RunError(f"{run.path}: the run is not finished (status {run.status!r})")
    try:  # one re-mine at a time, and no exclusion changes while it runs
        with run.lock(layout.EXCLUSIONS_LOCK, timeout=5):
            return _remine(run, recluster, user, progress)
    except Timeout as exc:
        raise RunError(f"{run.path}: another session is re-mining or excluding images; try again") from exc


def _remine(run: Run, recluster: bool, user: str | None, progress: ProgressFn | None) -> dict:
    before_pos = set(run.positive_concepts())
    before_mined = {m.text for m in run.mined_concepts()}
    before_stats = {s.cluster: s for s in run.cluster_stats()}
    before_ids = run.cluster_ids().copy()
    excluded = run.excluded_mask()
    voters = (before_ids >= 0) & ~excluded
    if not voters.any():
        raise RunError(f"{run.path}: every mining image is excluded; restore some before re-mining")
    _snapshot(run)

    n_clusters = max(len(before_stats), 1)
    if recluster:
        cids, n_clusters = _recluster(run, voters, n_clusters, progress)
    else:
        cids = before_ids
    top_idx, top_sim = run.votes()
    vocab = run.vocabulary_base()
    vote_ids = np.where(voters, cids, -1)
    stats = cluster_statistics(vote_ids[voters], top_idx[voters, 0], top_sim[voters, 0], len(vocab), n_clusters)
    mined = mine_positive_concepts(stats, vocab, top_idx[:, 0], top_sim[:, 0], vote_ids)
    run.write_mining(stats, mined)

    after_pos = set(run.positive_concepts())
    after_mined = {m.text for m in mined}
    affected = sorted(s.cluster for s in stats
                      if s.cluster not in before_stats or s.size != before_stats[s.cluster].size
                      or s.winner != before_stats[s.cluster].winner
                      or not np.array_equal(np.flatnonzero(vote_ids == s.cluster),
                                            np.flatnonzero((before_ids == s.cluster) & (before_ids >= 0))))
    last: dict[str, dict] = {}
    for e in run.edits():
        last[e["concept_id"]] = e
    mined_ids = {c.id for c in run.concepts() if c.source == "mined"}
    dropped = [{"concept": e["text"], "action": e["action"], "user": e.get("user"), "ts": e.get("ts")}
               for cid, e in last.items() if e["action"] in ("accept", "reject", "restore") and cid not in mined_ids]
    changes = {
        "ts": now_iso(), "user": user_identity(user),
        "mode": "recluster" if recluster else "reuse", "n_excluded": int(excluded.sum()),
        "n_voters": int(voters.sum()),
        "y_pos_added": sorted(after_pos - before_pos), "y_pos_removed": sorted(before_pos - after_pos),
        "mined_added": sorted(after_mined - before_mined), "mined_removed": sorted(before_mined - after_mined),
        "clusters_affected": [int(c) for c in affected], "decisions_not_applying": dropped,
    }
    summ = dict(run.meta.get("summary") or {})
    summ.update(summary(stats, mined))
    run.update_meta(summary=summ, last_remine=changes)
    return changes


def last_changes(run: Run) -> dict | None:
    """What the last :func:`remine` changed (see there), or None if the run was never re-mined."""
    return run.meta.get("last_remine")
