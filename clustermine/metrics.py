"""OOD-detection and clustering metrics (pure functions over numpy arrays).

Convention used everywhere in ClusterMine: **higher score = more in-distribution**, and the ID
images are the *positive* class.

FPR95 variant: the threshold λ is the smallest of the ⌈0.95·N_ID⌉ highest ID scores (so at least
95 % of ID images are kept), and FPR95 is the fraction of OOD scores ≥ λ. Ties at λ count as false
positives (conservative); OpenOOD counts OOD scores strictly above its threshold, so the two can
differ only when OOD scores tie with λ.
"""

from __future__ import annotations

import numpy as np

# scikit-learn / scipy are imported inside the functions that need them: importing them costs
# seconds, and the run / scoring modules (and so the web app's every page) import this module.


def _as_scores(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    id_scores = np.asarray(id_scores, dtype=np.float64).ravel()
    ood_scores = np.asarray(ood_scores, dtype=np.float64).ravel()
    if id_scores.size == 0 or ood_scores.size == 0:
        raise ValueError("need at least one ID and one OOD score")
    if not (np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()):
        raise ValueError("scores must be finite")
    return id_scores, ood_scores


def _labels_and_scores(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.ones(id_scores.size), np.zeros(ood_scores.size)])
    return labels, np.concatenate([id_scores, ood_scores])


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Area under the ROC curve, ID positive: P(S_ID > S_OOD) + ½ P(tie)."""
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    labels, scores = _labels_and_scores(id_scores, ood_scores)
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def threshold_at_tpr(id_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Score λ such that at least ``tpr`` of the ID scores are ≥ λ (OpenOOD's rule)."""
    id_sorted = np.sort(np.asarray(id_scores, dtype=np.float64).ravel())
    if id_sorted.size == 0:
        raise ValueError("need at least one ID score")
    if not 0.0 < tpr <= 1.0:
        raise ValueError("tpr must be in (0, 1]")
    # Keep the top ceil(tpr * N) ID scores: λ is the smallest of them.
    n_keep = int(np.ceil(tpr * id_sorted.size - 1e-9))
    return float(id_sorted[id_sorted.size - n_keep])


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of OOD scores ≥ the threshold that keeps ``tpr`` of ID scores (FPR95 for 0.95)."""
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    lam = threshold_at_tpr(id_scores, tpr)
    return float(np.mean(ood_scores >= lam))


def fpr95(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """FPR at 95 % TPR (see module docstring for the exact variant)."""
    return fpr_at_tpr(id_scores, ood_scores, 0.95)


def aupr_in(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with ID as the positive class, score S."""
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    labels, scores = _labels_and_scores(id_scores, ood_scores)
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, scores))


def aupr_out(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with OOD as the positive class, score −S."""
    id_scores, ood_scores = _as_scores(id_scores, ood_scores)
    labels, scores = _labels_and_scores(id_scores, ood_scores)
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(1 - labels, -scores))


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
