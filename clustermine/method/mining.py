"""Zero-shot votes, cluster voting, per-cluster statistics and positive-concept mining.

Shapes: ``image_features`` float32 [N, D] and ``text_embeddings`` float32 [M, D], both
L2-normalised, so a dot product is a cosine similarity. ``cluster_ids`` int [N] (−1 = not
clustered, e.g. held-out images, ignored by voting).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from clustermine.core.errors import CancelledError
from clustermine.core.linalg import l2_normalize


def zero_shot_topk(image_features: np.ndarray, text_embeddings: np.ndarray, k: int = 5,
                   chunk_size: int = 16384, image_chunk_size: int = 1024, *, tau: float | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> tuple[np.ndarray, ...]:
    """Top-k corpus concepts of every image by cosine similarity, the same on every CPU.

    Returns ``(top_idx int32 [N, k], top_sim float32 [N, k])`` sorted by decreasing similarity,
    exact ties broken by lower corpus index. The ranking never depends on BLAS summation order
    or on the chunk sizes: a float32 matmul only *selects* candidates (every concept within a
    proven error bound of the k-th best), and the candidates are then ranked by an exact
    fixed-point dot product (:func:`exact_similarity`), identical on any machine.

    ``image_features`` may be float16 or memory-mapped: rows are read and cast ``image_chunk_size``
    at a time, so working memory is bounded by ``image_chunk_size * chunk_size`` similarities
    (~64 MB at the defaults) plus the outputs, whatever N. With ``tau`` the same pass also returns
    the corpus log-sum-exp of cos/τ per image (float64 [N], :func:`corpus_lse_rows`), the score's
    denominator, so paper-scale runs never multiply by the corpus twice. ``progress(done, N)``
    after each image chunk; ``cancel()`` returning True stops with CancelledError.
    """
    import torch


    texts = np.ascontiguousarray(text_embeddings, dtype=np.float32)
    n, d = image_features.shape
    k = max(1, min(k, texts.shape[0]))
    top_idx = np.zeros((n, k), dtype=np.int32)
    top_sim = np.zeros((n, k), dtype=np.float32)
    lse = np.zeros(n, dtype=np.float64) if tau is not None else None
    scale = _fixed_point_scale(d)
    texts_q = _quantize(texts, scale)
    texts_t = torch.from_numpy(texts)
    step = max(1, int(image_chunk_size))
    for lo in range(0, n, step):
        if cancel is not None and cancel():
            raise CancelledError("cancelled during the zero-shot vote")
        rows = np.ascontiguousarray(image_features[lo:lo + step], dtype=np.float32)
        idx, exact, part_lse = _topk_rows(rows, _quantize(rows, scale), texts_t, texts_q, k, chunk_size, scale, tau)
        top_idx[lo:lo + step] = idx
        top_sim[lo:lo + step] = (exact / (scale * scale)).astype(np.float32)
        if lse is not None:
            lse[lo:lo + step] = part_lse
        if progress is not None:
            progress(min(n, lo + step), n)
    return (top_idx, top_sim) if lse is None else (top_idx, top_sim, lse)


def corpus_lse_rows(sims, tau: float) -> np.ndarray:
    """Log-sum-exp over a row of cos/τ (torch float32 [n, m] similarities) → float64 [n].

    ``sims`` is overwritten (scaled, shifted and exponentiated in place: no temporary of its size).
    Shifted by the row maximum, so every exponent is in [-2/τ, 0] and float32 ``exp`` keeps a
    relative error near 1e-7; the sum is taken in float64. Accurate to ~1e-6 (absolute, in log
    space) however the similarities were summed, which is all a continuous score needs."""
    import torch

    logits = sims.mul_(1.0 / tau)
    top = logits.amax(dim=1, keepdim=True)
    total = logits.sub_(top).exp_().sum(dim=1, dtype=torch.float64)
    return (torch.log(total) + top.squeeze(1).double()).numpy()


def _fixed_point_scale(dim: int) -> float:
    """Grid 2^b for features in [-1, 1] such that D products of b-bit integers sum exactly in float64
    (|sum| <= D * 2^(2b) < 2^53), so the sum is the same in any order."""
    bits = min(20, (52 - math.ceil(math.log2(max(dim, 2)))) // 2)
    return float(2 ** bits)


def _quantize(x: np.ndarray, scale: float) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0).astype(np.float64) * scale)


def exact_similarity(image_features_q: np.ndarray, text_embeddings_q: np.ndarray,
                     rows: np.ndarray, cols: np.ndarray, batch: int = 16384) -> np.ndarray:
    """Exact fixed-point dot products of the pairs (rows[i], cols[i]) of quantised features.

    Every product and partial sum is an integer below 2^53, so float64 adds them without
    rounding: the result does not depend on the summation order (BLAS, SIMD width, CPU model).
    Returns float64 [P] in units of ``scale**2``."""
    out = np.empty(len(rows), dtype=np.float64)
    for lo in range(0, len(rows), batch):
        r, c = rows[lo:lo + batch], cols[lo:lo + batch]
        out[lo:lo + batch] = np.einsum("ij,ij->i", image_features_q[r], text_embeddings_q[c])
    return out


def _topk_rows(feats: np.ndarray, feats_q: np.ndarray, texts, texts_q: np.ndarray, k: int,
               chunk_size: int, scale: float, tau: float | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    import torch

    n, d = feats.shape
    m = texts.shape[0]
    # Bound on |float32 BLAS dot - exact fixed-point dot| for unit vectors: rounding of D products
    # and sums in float32 (D * 2^-23) plus the grid's rounding of both operands (2 * sqrt(D) / scale).
    # Twice that, so the true k-th best is never excluded from the candidates.
    tol = 2.0 * (d * 2.0 ** -23 + 2.0 * math.sqrt(d) / scale + 1e-7)
    feats_t = torch.from_numpy(feats)
    best_idx = np.zeros((n, 0), dtype=np.int64)
    best_key = np.zeros((n, 0), dtype=np.float64)
    lse = np.full(n, -np.inf) if tau is not None else None
    for start in range(0, m, chunk_size):
        sims = feats_t @ texts[start:start + chunk_size].T
        width = sims.shape[1]
        kk = min(k, width)
        # Candidates: every concept within tol of the chunk's k-th best. The top k + 16 usually hold
        # them all; rows where the (k + 16)-th still qualifies take the full (rare) scan.
        wide = min(width, kk + 16)
        vals, cols = torch.topk(sims, wide, dim=1)
        vals, cols = vals.numpy(), cols.numpy()
        thresh = vals[:, kk - 1] - tol
        ok = vals >= thresh[:, None]
        spill = np.flatnonzero(ok[:, -1]) if wide < width else np.zeros(0, dtype=np.int64)
        ok[spill] = False
        r, c = np.nonzero(ok)
        c = cols[r, c]
        if len(spill):
            sr, sc = np.nonzero(sims.numpy()[spill] >= thresh[spill, None])
            r, c = np.concatenate([r, spill[sr]]), np.concatenate([c, sc])
        if lse is not None:  # last use of sims: the LSE works in place
            lse = np.logaddexp(lse, corpus_lse_rows(sims, tau))
        key = exact_similarity(feats_q, texts_q[start:start + chunk_size], r, c)
        order = np.lexsort((c, -key, r))  # per row: exact similarity desc, then corpus index asc
        r, c, key = r[order], c[order], key[order]
        first = np.searchsorted(r, np.arange(n))
        pick = (first[:, None] + np.arange(kk)[None, :]).ravel()
        chunk_idx = (c[pick] + start).reshape(n, kk)
        chunk_key = key[pick].reshape(n, kk)
        cand_idx = np.concatenate([best_idx, chunk_idx], axis=1)
        cand_key = np.concatenate([best_key, chunk_key], axis=1)
        order = np.lexsort((cand_idx, -cand_key), axis=1)[:, :k]
        best_key = np.take_along_axis(cand_key, order, axis=1)
        best_idx = np.take_along_axis(cand_idx, order, axis=1)
    return best_idx.astype(np.int32), best_key, lse


@dataclass
class ClusterStats:
    """Audit statistics of one cluster (METHOD.md §3.3).

    ``histogram`` lists (concept index, votes, summed top-1 similarity) by decreasing votes.
    ``purity`` = winner votes / size; ``entropy`` = normalised vote entropy in [0, 1].
    """

    cluster: int
    size: int
    histogram: list[tuple[int, int, float]] = field(default_factory=list)
    winner: int | None = None
    purity: float = 0.0
    entropy: float = 0.0
    runner_up: int | None = None
    margin: float = 1.0  # (winner votes − runner-up votes) / size
    mean_top1_similarity: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["histogram"] = [list(h) for h in self.histogram]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClusterStats":
        d = dict(d)
        d["histogram"] = [tuple(h) for h in d.get("histogram", [])]
        return cls(**d)


def normalized_entropy(counts: np.ndarray, n_vocab: int) -> float:
    """Vote entropy divided by log(min(n, |V|)); 0 = unanimous, 1 = every member voted differently."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    denom = math.log(min(n, n_vocab)) if n > 1 and min(n, n_vocab) > 1 else 0.0
    if denom <= 0:
        return 0.0
    p = counts[counts > 0] / n
    h = float(-(p * np.log(p)).sum() / denom)
    return min(max(h, 0.0), 1.0)


def cluster_statistics(cluster_ids: np.ndarray, top1_idx: np.ndarray, top1_sim: np.ndarray,
                       n_vocab: int, n_clusters: int | None = None) -> list[ClusterStats]:
    """Vote histogram, winner (plurality; ties: larger summed similarity, then lower index),
    purity and entropy of every cluster. Empty clusters get ``size = 0`` and no winner."""
    cluster_ids = np.asarray(cluster_ids).ravel()
    top1_idx = np.asarray(top1_idx).ravel()
    top1_sim = np.asarray(top1_sim, dtype=np.float64).ravel()
    valid = cluster_ids >= 0
    if n_clusters is None:
        n_clusters = int(cluster_ids[valid].max()) + 1 if valid.any() else 0
    out: list[ClusterStats] = []
    for c in range(n_clusters):
        members = np.flatnonzero(cluster_ids == c)
        stats = ClusterStats(cluster=c, size=int(members.size))
        if members.size:
            votes = Counter(top1_idx[members].tolist())
            sim_sum: dict[int, float] = {}
            for i in members:
                w = int(top1_idx[i])
                sim_sum[w] = sim_sum.get(w, 0.0) + float(top1_sim[i])
            hist = sorted(((w, n, sim_sum[w]) for w, n in votes.items()), key=lambda t: (-t[1], -t[2], t[0]))
            stats.histogram = [(int(w), int(n), round(float(s), 6)) for w, n, s in hist]
            stats.winner = stats.histogram[0][0]
            stats.purity = stats.histogram[0][1] / members.size
            stats.entropy = normalized_entropy(np.array([h[1] for h in hist]), n_vocab)
            if len(hist) > 1:
                stats.runner_up = stats.histogram[1][0]
                stats.margin = (stats.histogram[0][1] - stats.histogram[1][1]) / members.size
            stats.mean_top1_similarity = float(top1_sim[members].mean())
        out.append(stats)
    return out


def elected_concepts(cluster_ids: np.ndarray, top1_idx: np.ndarray, top1_sim: np.ndarray,
                     n_vocab: int) -> set[int]:
    """Corpus indices elected by one clustering: the winners of its non-empty clusters under the
    vote of :func:`cluster_statistics`. Inputs per image: cluster id int [N] (-1 = does not vote),
    zero-shot top-1 concept int [N] and its similarity float [N]."""
    cluster_ids = np.asarray(cluster_ids).ravel()
    sel = cluster_ids >= 0
    stats = cluster_statistics(cluster_ids[sel], np.asarray(top1_idx).ravel()[sel],
                               np.asarray(top1_sim).ravel()[sel], n_vocab)
    return {s.winner for s in stats if s.winner is not None}


@dataclass
class MinedConcept:
    """A concept elected by at least one cluster, with its provenance."""

    index: int  # row in the corpus
    text: str
    clusters: list[int]
    votes: int  # summed winning votes over the electing clusters
    members: int  # summed sizes of the electing clusters
    purity: float  # votes / members
    examples: list[int]  # image rows (most similar voters first), at most 8

    def to_dict(self) -> dict:
        return asdict(self)


def mine_positive_concepts(stats: list[ClusterStats], concepts: list[str] | tuple[str, ...],
                           top1_idx: np.ndarray | None = None, top1_sim: np.ndarray | None = None,
                           cluster_ids: np.ndarray | None = None, n_examples: int = 8) -> list[MinedConcept]:
    """Y_pos = distinct cluster winners, ordered by votes; several clusters may elect one concept."""
    by_concept: dict[int, MinedConcept] = {}
    for s in stats:
        if s.winner is None:
            continue
        mc = by_concept.setdefault(s.winner, MinedConcept(s.winner, concepts[s.winner], [], 0, 0, 0.0, []))
        mc.clusters.append(s.cluster)
        mc.votes += s.histogram[0][1]
        mc.members += s.size
    for mc in by_concept.values():
        mc.purity = mc.votes / mc.members if mc.members else 0.0
        if top1_idx is not None and top1_sim is not None and cluster_ids is not None:
            voters = np.flatnonzero(np.isin(cluster_ids, mc.clusters) & (np.asarray(top1_idx).ravel() == mc.index))
            order = np.argsort(-np.asarray(top1_sim).ravel()[voters], kind="stable")
            mc.examples = [int(v) for v in voters[order][:n_examples]]
    return sorted(by_concept.values(), key=lambda m: (-m.votes, m.index))


def posmine(top1_idx: np.ndarray, k: int | None = None, min_count: int = 1) -> np.ndarray:
    """PosMine-A baseline (no clustering): the per-image top-1 concepts seen ≥ ``min_count`` times,
    or the ``k`` most frequent ones (size-matched comparison). Returns corpus indices."""
    counts = Counter(np.asarray(top1_idx).ravel().tolist())
    ranked = sorted(counts.items(), key=lambda t: (-t[1], t[0]))
    chosen = [w for w, n in ranked if n >= min_count]
    if k is not None:
        chosen = chosen[:k]
    return np.array(chosen, dtype=np.int64)


def typical_atypical(features: np.ndarray, cluster_ids: np.ndarray, cluster: int,
                     n: int = 6) -> tuple[list[int], list[int]]:
    """Feature rows of the ``n`` members of ``cluster`` closest to its centroid (cosine; ties by row)
    and of up to ``n`` farthest (likely contaminants), farthest first. The two lists never share an
    image: in a cluster of fewer than ``2 n`` members the atypical list holds only the members not
    shown as typical. ``features`` float [N, D], ``cluster_ids`` int [N]."""
    members = np.flatnonzero(np.asarray(cluster_ids) == cluster)
    if not len(members):
        return [], []
    f = np.asarray(features[members], dtype=np.float64)
    sims = l2_normalize(f, dtype=np.float64) @ l2_normalize(f.mean(axis=0), dtype=np.float64)
    order = np.lexsort((members, -sims))  # closest first
    typical = members[order[:n]].tolist()
    atypical = members[order[n:][::-1][:n]].tolist()
    return typical, atypical


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the cluster audit alerts (documented defaults, not tuned to any data set)."""

    low_purity: float = 0.5  # the winner has under half of the votes
    high_entropy: float = 0.6
    tiny_size: int = 5  # fewer members than this cannot elect a concept reliably
    near_tie_margin: float = 0.1  # runner-up within 10 % of the cluster size
    # A concept that wins several clusters is normal when a class is split in several clusters
    # (C above the number of classes). It signals a problem only where the concept is weak: this
    # cluster's purity is under this fraction of the best purity the concept has in another cluster.
    shared_purity_ratio: float = 0.5


def shared_winners(stats: list[ClusterStats]) -> dict[int, list[int]]:
    """Concept index -> the cluster ids it wins, for concepts that win two clusters or more."""
    by_concept: dict[int, list[int]] = {}
    for s in stats:
        if s.winner is not None and s.size > 0:
            by_concept.setdefault(s.winner, []).append(s.cluster)
    return {w: cs for w, cs in by_concept.items() if len(cs) > 1}


def cluster_alerts(stats: list[ClusterStats], rules: AlertRules = AlertRules()) -> dict[int, list[str]]:
    """Human-readable alerts per cluster id: low purity, high entropy, tiny, near tie, and a shared
    winner that is weak here. Empty clusters get none: they are not clusters anyone audits (pages
    say how many clustering left empty, :func:`clustermine.workflows.clusterview.cluster_count_text`).

    Shared-winner rule: cluster ``c`` whose winner ``w`` also wins other clusters is flagged only
    when ``purity(c) < rules.shared_purity_ratio * max(purity of the other clusters won by w)``,
    i.e. its members' votes disagree with the clusters the concept describes well. Sharing alone
    (one class split in several pure clusters) raises no alert.
    """
    shared = shared_winners(stats)
    purity = {s.cluster: s.purity for s in stats}
    alerts: dict[int, list[str]] = {}
    for s in stats:
        msgs: list[str] = []
        if s.size > 0:
            if s.purity < rules.low_purity:
                msgs.append(f"low purity ({s.purity:.0%} of members agree)")
            if s.entropy > rules.high_entropy:
                msgs.append(f"high vote entropy ({s.entropy:.2f})")
            if s.size < rules.tiny_size:
                msgs.append(f"tiny cluster ({s.size} member{'' if s.size == 1 else 's'})")
            others = [c for c in shared.get(s.winner, []) if c != s.cluster]
            if others:
                best = max(others, key=lambda c: (purity[c], -c))
                if s.purity < rules.shared_purity_ratio * purity[best]:
                    msgs.append(f"its concept describes cluster {best} far better ({purity[best]:.0%} agree "
                                f"there, {s.purity:.0%} here): these members may be something else")
            if s.runner_up is not None and s.margin < rules.near_tie_margin:
                msgs.append("runner-up concept nearly tied with the winner")
        if msgs:
            alerts[s.cluster] = msgs
    return alerts


def summary(stats: list[ClusterStats], mined: list[MinedConcept]) -> dict:
    """Dataset-level audit summary: size-weighted purity, mean entropy, |Y_pos|, duplicate rate."""
    non_empty = [s for s in stats if s.size > 0]
    n = sum(s.size for s in non_empty)
    return {
        "n_clusters": len(stats),
        "n_occupied": len(non_empty),
        "n_positive": len(mined),
        "mean_purity": (sum(s.size * s.purity for s in non_empty) / n) if n else 0.0,
        "mean_entropy": (sum(s.entropy for s in non_empty) / len(non_empty)) if non_empty else 0.0,
        "duplicate_rate": (1 - len(mined) / len(non_empty)) if non_empty else 0.0,
    }


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
