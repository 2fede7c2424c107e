"""A run's clusters as people see them: the single source that every page, the CLI, search and
the HTML report read for *which images are members of a cluster*, *what a cluster is called*, *how
many clusters there are* and *which images are excluded*.

Rules (one place, so two views never disagree):

- Members of cluster ``c`` are the mining images with ``cluster_ids == c`` that the user has not
  marked "not ID": an excluded image is never shown as a member, typical or atypical, and never
  counted in a size. (After a "reuse" re-mine the stored cluster ids still hold the excluded
  images' old clusters, so that a restore can give them back.)
- A cluster's name is its winning concept; when the user has rejected that concept the name says
  so ("golf ball (rejected)"); an empty cluster has no name.
- The cluster count people read is the number of *occupied* clusters; empty ones (TEMI may leave
  some of C empty) are mentioned, never counted as clusters.
- An image's place is "held out" (calibrates the threshold), "excluded" (marked not ID) or a
  cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np

from clustermine.method.mining import ClusterStats
from clustermine.method.mining import typical_atypical as rank_members

if TYPE_CHECKING:
    from clustermine.store.concepts import Concept
    from clustermine.store.run import Run

HELD_OUT = "held out"
EXCLUDED = "excluded (not ID)"

__all__ = ["HELD_OUT", "EXCLUDED", "ClusterName", "voting_cluster_ids", "cluster_members", "typical_atypical",
           "occupied_stats", "cluster_count", "cluster_count_text", "cluster_names", "place_labels",
           "concept_counts"]


def voting_cluster_ids(run: Run) -> np.ndarray:
    """int64 [N_ok]: the cluster of each image that votes; -1 for held-out and excluded images."""
    return np.where(run.excluded_mask(), -1, run.cluster_ids())


def cluster_members(run: Run, cluster: int) -> np.ndarray:
    """Feature rows (int64, ascending) of the members of ``cluster``, excluded images left out."""
    return np.flatnonzero(voting_cluster_ids(run) == int(cluster))


def typical_atypical(run: Run, cluster: int, n: int = 6) -> tuple[list[int], list[int]]:
    """The ``n`` members of ``cluster`` closest to its centroid and up to ``n`` farthest, farthest
    first (see :func:`clustermine.method.mining.typical_atypical`); excluded images are never members."""

    return rank_members(run.feature_matrix(), voting_cluster_ids(run), cluster, n)


def occupied_stats(stats: Iterable[ClusterStats]) -> list[ClusterStats]:
    """The clusters with at least one member (the ones an audit shows)."""
    return [s for s in stats if s.size > 0]


def cluster_count(summary: dict) -> tuple[int | None, int]:
    """(occupied clusters, empty clusters) of a run summary (``run.json`` ``summary``); occupied is
    None when the summary has no cluster count (a run still running)."""
    total = summary.get("n_clusters")
    if total is None:
        return None, 0
    occupied = summary.get("n_occupied", total)
    return int(occupied), max(int(total) - int(occupied), 0)


def cluster_count_text(summary: dict) -> str:
    """'6 clusters', '6 clusters (2 left empty)', '1 cluster' or '– clusters'."""
    occupied, empty = cluster_count(summary)
    if occupied is None:
        return "– clusters"
    text = f"{occupied:,} cluster{'' if occupied == 1 else 's'}"
    return text + (f" ({empty} left empty)" if empty else "")


@dataclass(frozen=True)
class ClusterName:
    """What a cluster is called: its winning concept and that concept's review status."""

    cluster: int
    concept: str | None  # the winner's text; None for an empty cluster
    status: str  # mined | accepted | rejected | empty

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"

    @property
    def label(self) -> str:
        """'tench', 'tench (rejected)' or '– (empty)'."""
        if self.concept is None:
            return "– (empty)"
        return f"{self.concept} (rejected)" if self.rejected else self.concept


def cluster_names(run: Run, concepts: list[Concept] | None = None) -> dict[int, ClusterName]:
    """cluster id -> :class:`ClusterName` for every cluster of the run (empty ones included)."""
    vocab = run.vocabulary_base()
    concepts = run.concepts() if concepts is None else concepts
    status_of = {c.corpus_index: c.status for c in concepts if c.source == "mined" and c.corpus_index is not None}
    out: dict[int, ClusterName] = {}
    for s in run.cluster_stats():
        if s.winner is None or s.size == 0:
            out[s.cluster] = ClusterName(s.cluster, None, "empty")
        else:
            out[s.cluster] = ClusterName(s.cluster, vocab[s.winner], status_of.get(s.winner, "mined"))
    return out


def place_labels(run: Run, rows: np.ndarray, names: dict[int, ClusterName] | None = None) -> list[str]:
    """Aligned with feature ``rows``: where each image stands, as one label: 'held out',
    'excluded (not ID)' or its cluster's name label."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    names = cluster_names(run) if names is None else names
    cids, excluded = run.cluster_ids()[rows], run.excluded_mask()[rows]
    out = []
    for c, x in zip(cids.tolist(), excluded.tolist()):
        if x:
            out.append(EXCLUDED)
        elif c < 0:
            out.append(HELD_OUT)
        else:
            name = names.get(int(c))
            out.append(name.label if name is not None else "–")
    return out


def concept_counts(concepts: list[Concept]) -> dict[str, int]:
    """The review tallies of a concept table: ``y_pos`` (positive now), ``mined`` (concepts the
    mining elected: fixed by the mining, never falls as the user reviews), ``to_review`` (mined,
    no decision yet), ``accepted``, ``rejected`` (mined or added, then rejected), ``added``
    (user concepts, rejected ones not counted)."""
    return {
        "y_pos": sum(c.is_positive for c in concepts),
        "mined": sum(c.source == "mined" for c in concepts),
        "to_review": sum(c.source == "mined" and c.status == "mined" for c in concepts),
        "accepted": sum(c.status == "accepted" for c in concepts),
        "rejected": sum(c.status == "rejected" for c in concepts),
        "added": sum(c.source == "user" and c.status == "added" for c in concepts),
    }
