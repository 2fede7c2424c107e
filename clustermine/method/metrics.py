"""OOD-detection and clustering metrics (pure functions over numpy arrays).

Convention used everywhere in ClusterMine: **higher score = more in-distribution**, and the ID
images are the *positive* class. All OOD metrics are computed from integer counts on the ROC
curve with tied scores grouped (one ROC point per distinct score value), so their value does not
depend on the input order or on float summation order.

The definitions follow the code of the CLIP zero-shot OOD papers the benchmarks compare with
(MCM, NegLabel, CSP and ClusterMine all evaluate with Hendrycks et al.'s ``get_measures``):

* ``fpr95`` — Hendrycks' ``fpr_and_fdr_at_recall`` at recall level 0.95: the ROC point whose ID
  recall is *nearest* 0.95 (see :func:`fpr_at_recall` for the exact rule). This is not the same
  as the "keep at least 95 % of ID" rule (:func:`threshold_at_tpr` / :func:`fpr_at_tpr`, which the
  app uses to place its ID/OOD threshold, and which equals taking the first ROC point with
  TPR ≥ 0.95); nor as OpenOOD's older ``fpr_recall``, which keeps ⌊0.95·N_ID⌋ ID scores and
  counts OOD scores strictly above the threshold. The rules pick different ROC points, not only
  when OOD scores tie with the threshold: the chosen recall can differ by 1/N_ID, and at equal
  recall Hendrycks' rule takes the *lowest* threshold (every OOD score above the next lower ID
  score counts), so the FPRs differ by the OOD mass between adjacent ID scores — large at small
  N or with heavy ties (measured on the benchmarks in BENCHMARKS.md).
* ``auroc`` — Mann–Whitney: P(S_ID > S_OOD) + ½·P(S_ID = S_OOD) (= the trapezoid area under the
  tie-grouped ROC curve, as scikit-learn's ``roc_auc_score``, which ``get_measures`` calls).
* ``aupr_in`` / ``aupr_out`` — step-wise *average precision* AP = Σ_k (R_k − R_{k−1})·P_k over
  the distinct thresholds (scikit-learn's ``average_precision_score``, which ``get_measures``
  calls), not OpenOOD's trapezoid ``auc(recall, precision)``: the trapezoid interpolates
  precision linearly between operating points, which is optimistic and not attainable by any
  threshold; AP only uses the precision actually reached at each threshold.
"""

from __future__ import annotations

import math

import numpy as np

from clustermine.core.config import DEFAULT_TPR

# scipy / scikit-learn are imported inside the clustering functions that need them: importing them
# costs seconds, and the run / scoring modules (and so the web app's every page) import this module.

FPR95_RULE = ("Hendrycks fpr_and_fdr_at_recall: ID positive, ties grouped, ROC point whose ID recall "
              "is nearest 0.95 (first on equal float64 distance from the full-recall end)")


def _as_scores(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError("need at least one ID and one OOD score")
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
        raise ValueError("scores must be finite")
    return id_scores, ood_scores


def _roc_counts(pos_scores: np.ndarray, neg_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (TP, FP) counts at each distinct score value, thresholds in descending order.

    Entry k counts the positives / negatives with score ≥ the k-th largest distinct value, so the
    last entry is (N_pos, N_neg). Both arrays are int64 of length = number of distinct scores.
    """
    values, inverse = np.unique(np.concatenate([pos_scores, neg_scores]), return_inverse=True)
    n_values = values.size
    # np.unique sorts ascending: flip so index 0 is the highest score.
    pos_at = np.bincount(inverse[: pos_scores.size], minlength=n_values)[::-1]
    neg_at = np.bincount(inverse[pos_scores.size:], minlength=n_values)[::-1]
    return np.cumsum(pos_at), np.cumsum(neg_at)


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve, ID positive: P(S_ID > S_OOD) + ½ P(S_ID = S_OOD).

    Computed as the trapezoid area under the tie-grouped ROC curve from integer counts
    (each tied group contributes its ID × OOD pairs at ½), divided by N_ID · N_OOD.
    """
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    tps, fps = _roc_counts(id_scores, ood_scores)
    tps_before = np.concatenate([[0], tps[:-1]])
    fps_before = np.concatenate([[0], fps[:-1]])
    # twice the area in count units: Σ (ΔFP) · (TP_before + TP_after); exact in int64 for N ≤ ~2e9
    twice_area = int(np.sum((fps - fps_before) * (tps + tps_before)))
    return twice_area / (2.0 * id_scores.size * ood_scores.size)


def _average_precision(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Step-wise AP = Σ_k (R_k − R_{k−1}) · P_k over distinct thresholds, descending."""
    tps, fps = _roc_counts(pos_scores, neg_scores)
    precision = tps / (tps + fps)
    tp_step = np.diff(np.concatenate([[0], tps]))
    # fsum: correctly rounded, so the value does not depend on summation order / SIMD width
    return math.fsum(tp_step * precision) / pos_scores.size


def fpr_at_recall(id_scores: np.ndarray, ood_scores: np.ndarray, recall_level: float = 0.95) -> float:
    """FPR at the ROC point whose ID recall is nearest ``recall_level`` (Hendrycks' rule).

    Exactly the rule of ``fpr_and_fdr_at_recall`` (Hendrycks et al.; used by MCM, NegLabel, CSP):

    1. ID = positive, higher score = more ID. Sort the scores in descending order and group ties:
       one ROC point per distinct score value t, with TP(t) = #ID ≥ t and FP(t) = #OOD ≥ t.
    2. recall(t) = TP(t) / N_ID in float64.
    3. Keep the points from the first one (highest t) where recall reaches 1 back to the highest
       threshold, in that order (full-recall end first), and append the point (recall 1, FP 0)
       at the end, as the reference does (it is never chosen: the first point already has recall 1).
    4. Choose the first point of that list minimising |recall − recall_level| in float64 (numpy
       argmin). On an exact tie of real distances, float rounding decides; e.g. recall 0.9 beats
       recall 1.0 at level 0.95 because |0.9 − 0.95| < |1.0 − 0.95| in float64.
    5. Return FP / N_OOD at that point.

    Unlike :func:`fpr_at_tpr`, the chosen recall may be below ``recall_level``.
    """
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    if not 0.0 <= recall_level <= 1.0:
        raise ValueError("recall_level must be in [0, 1]")
    tps, fps = _roc_counts(id_scores, ood_scores)
    recall = tps / tps[-1]
    first_full = int(np.searchsorted(tps, tps[-1]))  # tps is non-decreasing
    recall = np.concatenate([recall[first_full::-1], [1.0]])
    fps = np.concatenate([fps[first_full::-1], [0]])
    chosen = int(np.argmin(np.abs(recall - recall_level)))
    return float(fps[chosen] / ood_scores.size)


def fpr95(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """FPR95 as in MCM / NegLabel / CSP: :func:`fpr_at_recall` at recall level 0.95."""
    return fpr_at_recall(id_scores, ood_scores, 0.95)


def threshold_at_tpr(id_scores: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
    """Score λ keeping at least ``tpr`` of the ID scores (the "keep at least tpr of ID" rule).

    λ is the smallest of the ⌈tpr · N_ID⌉ highest ID scores, so #ID ≥ λ is at least tpr · N_ID.
    This is the detector's decision threshold (score ≥ λ → ID); it is not the FPR95 benchmark
    rule (see :func:`fpr95`).
    """
    id_sorted = np.sort(np.asarray(id_scores, dtype=np.float64).ravel())
    if id_sorted.size == 0:
        raise ValueError("need at least one ID score")
    if not 0.0 < tpr <= 1.0:
        raise ValueError("tpr must be in (0, 1]")
    n_keep = int(np.ceil(tpr * id_sorted.size - 1e-9))  # 1e-9: 0.95 * 20 must stay 19, not 20
    return float(id_sorted[id_sorted.size - n_keep])


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = DEFAULT_TPR) -> float:
    """Fraction of OOD scores ≥ :func:`threshold_at_tpr` (the "keep at least tpr of ID" rule).

    Equals the FPR of the first tie-grouped ROC point with TPR ≥ ``tpr``; OOD scores tying with λ
    count as false positives. This is what the app's threshold gives, not the benchmark FPR95.
    """
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    lam = threshold_at_tpr(id_scores, tpr)
    return float(np.mean(ood_scores >= lam))


def aupr_in(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Step-wise average precision with ID as the positive class, score S (see module docstring)."""
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    return _average_precision(id_scores, ood_scores)


def aupr_out(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Step-wise average precision with OOD as the positive class, score −S."""
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    return _average_precision(-ood_scores, -id_scores)


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float | int]:
    """All OOD metrics at once: auroc, fpr95, aupr_in, aupr_out, n_id, n_ood."""
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    return {
        "auroc": auroc(id_scores, ood_scores),
        "fpr95": fpr95(id_scores, ood_scores),
        "aupr_in": aupr_in(id_scores, ood_scores),
        "aupr_out": aupr_out(id_scores, ood_scores),
        "n_id": int(id_scores.size),
        "n_ood": int(ood_scores.size),
    }


def cluster_accuracy(true_labels: np.ndarray, cluster_ids: np.ndarray) -> float:
    """Hungarian-matched clustering accuracy; extra clusters map to their majority class.

    With more clusters than classes the optimal one-to-one matching is computed first and every
    unmatched cluster is then mapped to its majority class (TEMI's over-clustering accuracy).
    """
    from scipy.optimize import linear_sum_assignment

    true_labels = np.asarray(true_labels).ravel()
    cluster_ids = np.asarray(cluster_ids).ravel()
    classes, y = np.unique(true_labels, return_inverse=True)
    clusters, c = np.unique(cluster_ids, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (c, y), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = counts.argmax(axis=1)
    mapping[rows] = cols
    return float(np.mean(mapping[c] == y))


def clustering_scores(true_labels: np.ndarray, cluster_ids: np.ndarray) -> dict[str, float]:
    """Hungarian accuracy, NMI and ARI of a clustering against ground-truth labels."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "acc": cluster_accuracy(true_labels, cluster_ids),
        "nmi": float(normalized_mutual_info_score(true_labels, cluster_ids)),
        "ari": float(adjusted_rand_score(true_labels, cluster_ids)),
    }
