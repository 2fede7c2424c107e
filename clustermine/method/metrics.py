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


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tie-grouped ROC curve, ID positive: (FPR, TPR), float64 [K + 1] each, from (0, 0) to (1, 1).

    One point per distinct score value (thresholds descending) after the origin; the trapezoid area
    under these points is :func:`auroc` (same counts, so the same number up to float rounding).
    """
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    tps, fps = _roc_counts(id_scores, ood_scores)
    fpr = np.concatenate([[0.0], fps / ood_scores.size])
    tpr = np.concatenate([[0.0], tps / id_scores.size])
    return fpr, tpr


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


# ----------------------------------------------------------------------------- other conventions, uncertainty
FPR95_OPENOOD_RULE = ("OpenOOD v1.5 auc_and_fpr_recall: OOD positive (score -S), scikit-learn roc_curve points "
                      "(ties grouped, collinear points dropped), FPR of the first point with TPR >= 0.95")


def fpr95_openood(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """FPR@95TPR as OpenOOD v1.5 computes it (``auc_and_fpr_recall``): OOD is the positive class.

    Its code: ``fpr, tpr, _ = roc_curve(ood_indicator, -conf); fpr[argmax(tpr >= 0.95)]``. So: with
    score −S, one ROC point per distinct score (ties grouped), TP = #OOD ≤ t, FP = #ID ≤ t;
    scikit-learn's default ``drop_intermediate=True`` drops every point whose two neighbours lie on
    one line with it at equal steps (both second differences of the counts zero); (0, 0) is
    prepended; the first remaining point with TPR ≥ ``tpr`` (float64) gives FPR = #ID ≤ t / N_ID:
    the fraction of ID images flagged as OOD when 95 % of OOD images are caught. Not the same
    number as :func:`fpr95` (ID positive): the two answer different questions.
    """
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    tps, fps = _roc_counts(-ood_scores, -id_scores)  # OOD positive, score -S
    if tps.size > 2:
        keep = np.concatenate([[True], (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), [True]])
        tps, fps = tps[keep], fps[keep]
    tpr_curve = np.concatenate([[0], tps]) / tps[-1]
    fpr_curve = np.concatenate([[0], fps]) / fps[-1]
    return float(fpr_curve[int(np.argmax(tpr_curve >= tpr))])


def bootstrap_indices(n_id: int, n_ood: int, replicate: int, seed: int = 0,
                      stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (int64 [n_id], [n_ood]) of bootstrap replicate ``replicate``: ID and OOD drawn with
    replacement, independently. Each replicate has its own generator (``seed``, replicate), so a
    replicate does not depend on how many are drawn or in what chunks; the ID draw does not depend
    on ``stream`` (one per OOD set), so OOD sets evaluated against the same ID set share it."""
    ids = np.random.default_rng([seed, 0, replicate]).integers(0, n_id, n_id)
    oods = np.random.default_rng([seed, 1, stream, replicate]).integers(0, n_ood, n_ood)
    return ids, oods


def bootstrap_ood(id_scores: np.ndarray, ood_scores: np.ndarray, n_boot: int, seed: int = 0,
                  stream: int = 0) -> dict[str, np.ndarray]:
    """AUROC and FPR95 (ID positive, :func:`auroc` / :func:`fpr95` rules) of ``n_boot`` bootstrap
    replicates (:func:`bootstrap_indices`) → {"auroc": float64 [n_boot], "fpr95": float64 [n_boot]}.

    Vectorised over replicates: a replicate is a vector of counts per distinct score value, so
    the tie-grouped ROC of many replicates is one ``bincount`` and one ``cumsum`` over a
    [replicates, distinct values] matrix (memory bounded by chunks of replicates).
    """
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    n_id, n_ood = id_scores.size, ood_scores.size
    values, inverse = np.unique(np.concatenate([id_scores, ood_scores]), return_inverse=True)
    n_values = values.size
    desc = n_values - 1 - inverse  # column 0 = highest score, as in _roc_counts
    col_id, col_ood = desc[:n_id], desc[n_id:]
    out = {"auroc": np.empty(n_boot), "fpr95": np.empty(n_boot)}
    step = max(1, min(n_boot, int(4e6 // max(n_values, n_id, n_ood))))
    for lo in range(0, n_boot, step):
        reps = range(lo, min(n_boot, lo + step))
        draws = [bootstrap_indices(n_id, n_ood, b, seed, stream) for b in reps]
        k = len(draws)
        offset = (np.arange(k, dtype=np.int64) * n_values)[:, None]
        pos_at = np.bincount((col_id[np.stack([d[0] for d in draws])] + offset).ravel(),
                             minlength=k * n_values).reshape(k, n_values)
        neg_at = np.bincount((col_ood[np.stack([d[1] for d in draws])] + offset).ravel(),
                             minlength=k * n_values).reshape(k, n_values)
        tps, fps = np.cumsum(pos_at, axis=1), np.cumsum(neg_at, axis=1)
        # AUROC: Σ ΔFP · (TP_before + TP_after), as auroc(); value columns absent from a replicate add 0
        out["auroc"][lo:lo + k] = np.sum(neg_at * (2 * tps - pos_at), axis=1) / (2.0 * n_id * n_ood)
        # FPR95 (fpr_at_recall): among the points up to the first with full recall, the one nearest
        # 0.95, ties to the full-recall end (= the largest column); empty columns repeat a point.
        dist = np.abs(tps / n_id - 0.95)
        first_full = np.argmax(tps == n_id, axis=1)
        dist[np.arange(n_values)[None, :] > first_full[:, None]] = np.inf
        chosen = n_values - 1 - np.argmin(dist[:, ::-1], axis=1)
        out["fpr95"][lo:lo + k] = fps[np.arange(k), chosen] / n_ood
    return out


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    """[low, high]: the (1−level)/2 and (1+level)/2 percentiles of bootstrap replicates (the
    percentile interval; linear interpolation between order statistics, numpy's default)."""
    a = 100 * (1 - level) / 2
    lo, hi = np.percentile(np.asarray(values, dtype=np.float64), [a, 100 - a])
    return [float(lo), float(hi)]
