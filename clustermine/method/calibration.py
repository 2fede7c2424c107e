"""Threshold calibration: cross-fitted ID scores and a finite-sample order-statistic rule.

Convention everywhere: higher log score = more in-distribution; an image is ID when its log score
is ``>= threshold``; the TPR is the share of ID images kept as ID.

**Cross-fitted calibration scores.** The mining images elected Y_pos, so scoring them with Y_pos
is optimistic (their own votes chose the concepts they are scored against). Instead, the images of
a run are split into ``n_folds`` folds (:func:`fold_ids`: a seeded permutation, position modulo
``n_folds``). For every fold f, the cluster vote is re-run on the *stored* cluster ids and the stored
per-image top-1 votes of the mining images outside f (:func:`clustermine.method.mining.cluster_statistics`,
same tie rules as mining, no re-encoding, no re-clustering), giving Y_pos^(-f) = the distinct
cluster winners; fold f's mining images are scored against Y_pos^(-f) with the same τ and the same
corpus (:func:`crossfit_scores`). Held-out images (never part of any vote) are scored against the
full Y_pos. The pooled calibration set = cross-fitted mining scores ∪ held-out scores.

What cross-fitting does *not* remove: the clustering itself was fitted on all mining images
(unsupervised, features only); only the vote that turns clusters into concepts is cross-fitted.

**User edits** (rule :func:`apply_edits`): decisions that come from the vote are re-decided in each
fold (a ``mined`` or ``accepted`` concept is positive in fold f only if fold f's vote elects it);
decisions the user made against the vote are applied as given in every fold (a ``rejected`` concept
is never positive; a user-``added`` concept is always positive). User concepts outside the corpus
join the vocabulary V of every fold, as they do in the detector.

**Threshold rule** (:func:`order_statistic_rank`): with n calibration scores and target TPR t at
confidence 1 − δ, the threshold is the k-th smallest calibration score s_(k), k the largest integer
with P(Binomial(n, 1 − t) >= k) >= 1 − δ. Reason: for exchangeable continuous ID scores with CDF F,
a new ID image is kept with probability TPR = 1 − F(s_(k)), and F(s_(k)) ~ Beta(k, n + 1 − k), so
P(TPR >= t) = P(Beta(k, n + 1 − k) <= 1 − t) = P(Binomial(n, 1 − t) >= k) >= 1 − δ (ties only make
the kept share larger). No k >= 1 qualifies when n < :func:`min_calibration_size` =
⌈log δ / log t⌉ (e.g. 59 images for t = 95 %, 1 − δ = 95 %; 45 for 1 − δ = 90 %); the threshold is
then the lowest calibration score (k = 1) and the result carries a warning: the TPR is not
guaranteed at that confidence.

**ID false alarms** (:func:`crossval_false_alarms`): every calibration image is judged by a
threshold it did not set: the rule applied to the calibration images of the *other* folds; the
reported rate is the share of calibration images below their fold's threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from clustermine.method.mining import elected_concepts

N_FOLDS = 5
DEFAULT_CONFIDENCE = 0.9

__all__ = ["DEFAULT_CONFIDENCE", "N_FOLDS", "ThresholdChoice", "apply_edits", "choose_threshold",
           "crossfit_positive_rows", "crossfit_scores", "crossval_false_alarms", "fold_ids",
           "min_calibration_size", "order_statistic_rank", "tpr_guarantee"]


# ------------------------------------------------------------------------------------ the rule
def tpr_guarantee(n: int, k: int, tpr: float) -> float:
    """P(TPR >= ``tpr``) when the threshold is the ``k``-th smallest of ``n`` exchangeable ID scores
    = P(Binomial(n, 1 − tpr) >= k); 1.0 for k <= 0."""
    if k <= 0:
        return 1.0
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, 1.0 - tpr))


def order_statistic_rank(n: int, tpr: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The largest k in 1..n with P(Binomial(n, 1 − tpr) >= k) >= ``confidence``; 0 when none."""
    if not 0.0 < tpr < 1.0:
        raise ValueError("tpr must be in (0, 1)")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if n <= 0:
        return 0
    from scipy.stats import binom

    ks = np.arange(1, n + 1)
    ok = binom.sf(ks - 1, n, 1.0 - tpr) >= confidence
    return int(ks[ok].max()) if ok.any() else 0


def min_calibration_size(tpr: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The smallest n for which the rule can guarantee ``tpr`` at ``confidence``: tpr^n <= 1 − confidence."""
    n = max(1, math.ceil(math.log(1.0 - confidence) / math.log(tpr) - 1e-12))
    while order_statistic_rank(n, tpr, confidence) == 0:  # guard against rounding at the boundary
        n += 1
    while n > 1 and order_statistic_rank(n - 1, tpr, confidence) > 0:
        n -= 1
    return n


@dataclass
class ThresholdChoice:
    """A threshold chosen by the order-statistic rule on ``n`` calibration scores."""

    threshold: float  # log-score units; ID when log score >= threshold
    k: int  # rank of the threshold among the sorted calibration scores (1 = lowest)
    n: int
    tpr: float
    confidence: float
    guaranteed: bool  # False: n < min_n, so the TPR is not guaranteed at this confidence
    min_n: int
    achieved_confidence: float  # P(TPR >= tpr) of the chosen k

    @property
    def warning(self) -> str | None:
        if self.guaranteed:
            return None
        return (f"Only {self.n} calibration ID images: at least {self.min_n} are needed to guarantee "
                f"{self.tpr:.0%} TPR with {self.confidence:.0%} confidence. The threshold is the lowest "
                f"calibration score, and the true TPR is at least {self.tpr:.0%} only with "
                f"{self.achieved_confidence:.0%} confidence. Add ID images (or lower the target TPR).")


def choose_threshold(scores: np.ndarray, tpr: float, confidence: float = DEFAULT_CONFIDENCE) -> ThresholdChoice:
    """Apply the rule to calibration log scores float [n] (n >= 1; -inf allowed, NaN not)."""
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if s.size == 0:
        raise ValueError("need at least one calibration score")
    if np.isnan(s).any():
        raise ValueError("calibration scores must not be NaN")
    k = order_statistic_rank(s.size, tpr, confidence)
    guaranteed = k > 0
    k = max(k, 1)
    return ThresholdChoice(float(s[k - 1]), k, int(s.size), float(tpr), float(confidence), guaranteed,
                           min_calibration_size(tpr, confidence), tpr_guarantee(s.size, k, tpr))


def crossval_false_alarms(scores: np.ndarray, folds: np.ndarray, tpr: float,
                          confidence: float = DEFAULT_CONFIDENCE, judged: np.ndarray | None = None) -> float:
    """Share of calibration images below the threshold set (by :func:`choose_threshold`) on the
    calibration images of the other folds. ``judged`` float [n]: scores to judge instead of
    ``scores`` (e.g. the same images under edited concepts); thresholds always come from ``scores``.
    A fold that is the only one gets the threshold of all images (nothing else to learn from)."""
    scores = np.asarray(scores, dtype=np.float64)
    judged = scores if judged is None else np.asarray(judged, dtype=np.float64)
    folds = np.asarray(folds)
    if scores.size == 0:
        return float("nan")
    alarms = 0
    for f in np.unique(folds):
        inside = folds == f
        rest = scores[~inside] if (~inside).any() else scores
        alarms += int(np.sum(judged[inside] < choose_threshold(rest, tpr, confidence).threshold))
    return alarms / scores.size


# ------------------------------------------------------------------------------------ cross-fitting
def fold_ids(n: int, n_folds: int = N_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold id int64 [n] of every image row: position in a ``seed``-ed permutation, modulo ``n_folds``."""
    n_folds = max(1, min(int(n_folds), max(n, 1)))
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    return out


def crossfit_positive_rows(cluster_ids: np.ndarray, top1_idx: np.ndarray, top1_sim: np.ndarray, folds: np.ndarray,
                           n_vocab: int) -> dict[int, np.ndarray]:
    """Y_pos^(-f) per fold f: corpus rows (int64, ascending) of the distinct cluster winners when the
    vote counts only mining images (cluster id >= 0) outside fold f. Inputs are per image row:
    cluster ids int [N] (-1 = held out), stored top-1 concept int [N] and its similarity float [N]."""
    cluster_ids, folds = np.asarray(cluster_ids).ravel(), np.asarray(folds).ravel()
    top1_idx, top1_sim = np.asarray(top1_idx).ravel(), np.asarray(top1_sim).ravel()
    out = {}
    for f in np.unique(folds[cluster_ids >= 0]):
        voting = np.where(folds != f, cluster_ids, -1)
        out[int(f)] = np.array(sorted(elected_concepts(voting, top1_idx, top1_sim, n_vocab)), dtype=np.int64)
    return out


def apply_edits(voted_rows: np.ndarray, rejected_rows: np.ndarray, user_added_rows: np.ndarray) -> np.ndarray:
    """A fold's positives under the user's edits: (voted − rejected) ∪ user-added (rule: module docstring)."""
    rows = set(np.asarray(voted_rows, dtype=np.int64).tolist()) - set(np.asarray(rejected_rows).tolist())
    return np.array(sorted(rows | set(np.asarray(user_added_rows, dtype=np.int64).tolist())), dtype=np.int64)


@dataclass
class CrossFit:
    """Calibration scores of one concept set: rows, scores, folds and where each score comes from."""

    rows: np.ndarray  # int64 [n] feature rows
    scores: np.ndarray  # float64 [n] log scores
    folds: np.ndarray  # int64 [n]
    is_holdout: np.ndarray  # bool [n]: held-out image (scored with the full Y_pos) vs cross-fitted mining image
    fold_positives: dict[int, np.ndarray] = field(default_factory=dict)


def crossfit_scores(scorer, cluster_ids: np.ndarray, folds: np.ndarray, fold_positives: dict[int, np.ndarray],
                    full_positives: np.ndarray, extra_embeddings: np.ndarray | None = None) -> CrossFit:
    """Score every image row: mining rows of fold f against ``fold_positives[f]``, held-out rows
    (cluster id -1) against ``full_positives``. ``scorer``: a
    :class:`~clustermine.method.scoring.WhatIfScorer` over all N image rows (its corpus LSE is reused)."""
    cluster_ids, folds = np.asarray(cluster_ids).ravel(), np.asarray(folds).ravel()
    n = cluster_ids.size
    scores = np.full(n, np.nan)
    hold = cluster_ids < 0
    groups = [(hold, full_positives)] + [((~hold) & (folds == f), pos) for f, pos in fold_positives.items()]
    for mask, pos in groups:
        if mask.any():
            scores[mask] = _score_rows(scorer, np.flatnonzero(mask), pos, extra_embeddings)
    rows = np.flatnonzero(~np.isnan(scores))
    return CrossFit(rows, scores[rows], folds[rows], hold[rows], dict(fold_positives))


def _score_rows(scorer, rows: np.ndarray, positives: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
    return scorer.log_scores(positives, extra, rows=rows)
