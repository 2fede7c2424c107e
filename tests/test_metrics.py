"""OOD and clustering metrics against independent references written here (plain Python loops)
and hand-computed answers. metrics.py computes AUROC / AUPR / FPR95 itself (numpy, no sklearn),
so comparing with scikit-learn in test_properties.py is an independent check too."""

import itertools

import numpy as np
import pytest

from clustermine.method import metrics

# ------------------------------------------------------------------ independent references


def _roc_points(id_scores, ood_scores):
    """[(tp, fp)] for each distinct score t, highest t first: tp = #ID >= t, fp = #OOD >= t."""
    points = []
    for t in sorted(set(id_scores) | set(ood_scores), reverse=True):
        points.append((sum(1 for s in id_scores if s >= t), sum(1 for s in ood_scores if s >= t)))
    return points


def ref_fpr_at_recall(id_scores, ood_scores, level=0.95):
    """Hendrycks' fpr_and_fdr_at_recall, as a loop: ROC points from the first full-recall point
    back to the highest threshold, plus (recall 1, FP 0) at the end; first point nearest ``level``."""
    id_scores, ood_scores = [float(s) for s in id_scores], [float(s) for s in ood_scores]
    n_id, n_ood = len(id_scores), len(ood_scores)
    points = _roc_points(id_scores, ood_scores)
    first_full = next(i for i, (tp, _) in enumerate(points) if tp == n_id)
    candidates = [(tp / n_id, fp) for tp, fp in reversed(points[: first_full + 1])] + [(1.0, 0)]
    best_dist, best_fp = None, None
    for recall, fp in candidates:
        dist = abs(recall - level)
        if best_dist is None or dist < best_dist:  # strict: the first one wins a tie
            best_dist, best_fp = dist, fp
    return best_fp / n_ood


def ref_auroc(id_scores, ood_scores):
    """Pairwise count: P(ID > OOD) + 1/2 P(tie)."""
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in id_scores for b in ood_scores)
    return wins / (len(id_scores) * len(ood_scores))


def ref_average_precision(pos_scores, neg_scores):
    """Mean over positives of the precision at that positive's own score (ties grouped)."""
    total = 0.0
    for s in pos_scores:
        tp = sum(1 for p in pos_scores if p >= s)
        fp = sum(1 for n in neg_scores if n >= s)
        total += tp / (tp + fp)
    return total / len(pos_scores)


def _check_all(id_s, ood_s):
    id_s, ood_s = list(map(float, id_s)), list(map(float, ood_s))
    assert metrics.fpr95(id_s, ood_s) == pytest.approx(ref_fpr_at_recall(id_s, ood_s), abs=1e-12)
    assert metrics.auroc(id_s, ood_s) == pytest.approx(ref_auroc(id_s, ood_s), abs=1e-12)
    assert metrics.aupr_in(id_s, ood_s) == pytest.approx(ref_average_precision(id_s, ood_s), abs=1e-12)
    neg = [-s for s in ood_s], [-s for s in id_s]
    assert metrics.aupr_out(id_s, ood_s) == pytest.approx(ref_average_precision(*neg), abs=1e-12)


# ------------------------------------------------------------------ against the references


@pytest.mark.parametrize("seed", range(8))
def test_random_continuous_scores(seed):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(1, 120, size=2)
    _check_all(rng.normal(1, 1, n_id), rng.normal(0, 1, n_ood))


@pytest.mark.parametrize("seed", range(12))
def test_tie_heavy_scores(seed):
    rng = np.random.default_rng(100 + seed)
    n_id, n_ood = rng.integers(1, 80, size=2)
    levels = int(rng.integers(1, 5))  # scores rounded to a handful of values
    _check_all(np.round(rng.normal(0.5, 1, n_id) * levels) / levels,
               np.round(rng.normal(0, 1, n_ood) * levels) / levels)


@pytest.mark.parametrize("n_id,n_ood", [(1, 1), (5, 3), (40, 1), (1, 40)])
def test_all_scores_equal(n_id, n_ood):
    _check_all([0.3] * n_id, [0.3] * n_ood)
    # one ROC point (everything kept): FPR 1, AUROC 1/2, AUPR-In = share of ID
    assert metrics.fpr95([0.3] * n_id, [0.3] * n_ood) == 1.0
    assert metrics.auroc([0.3] * n_id, [0.3] * n_ood) == 0.5
    assert metrics.aupr_in([0.3] * n_id, [0.3] * n_ood) == pytest.approx(n_id / (n_id + n_ood), abs=1e-15)


def test_every_tiny_input():
    # all ID / OOD score assignments over 3 values, 1 to 3 scores per side (order irrelevant)
    for n_id, n_ood in itertools.product((1, 2, 3), repeat=2):
        for id_s in itertools.combinations_with_replacement((0, 1, 2), n_id):
            for ood_s in itertools.combinations_with_replacement((0, 1, 2), n_ood):
                _check_all(id_s, ood_s)


def test_other_recall_levels_and_input_order():
    rng = np.random.default_rng(7)
    id_s, ood_s = np.round(rng.normal(1, 1, 37), 1), np.round(rng.normal(0, 1, 23), 1)
    for level in (0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0):
        assert metrics.fpr_at_recall(id_s, ood_s, level) == pytest.approx(
            ref_fpr_at_recall(id_s, ood_s, level), abs=1e-12)
    shuffled = metrics.ood_metrics(rng.permutation(id_s), rng.permutation(ood_s))
    assert shuffled == metrics.ood_metrics(id_s, ood_s)  # exact: built from integer counts


# ------------------------------------------------------------------ hand-computed answers


def test_hand_worked_perfect_and_inverted():
    assert metrics.auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert metrics.auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert metrics.fpr95([3, 4, 5], [0, 1, 2]) == 0.0
    assert metrics.fpr95([0, 1, 2], [3, 4, 5]) == 1.0
    assert metrics.aupr_in([3, 4, 5], [0, 1, 2]) == 1.0
    assert metrics.aupr_out([3, 4, 5], [0, 1, 2]) == 1.0


def test_hand_worked_fpr95_exact_recall():
    # 20 ID scores 1..20: recall is exactly 0.95 at t = 2 (19 of 20 kept); OOD >= 2: {2, 3}.
    id_scores = np.arange(1, 21, dtype=float)
    assert metrics.fpr95(id_scores, [0.0, 0.5, 2.0, 3.0]) == 0.5
    assert metrics.threshold_at_tpr(id_scores, 0.95) == 2.0
    assert metrics.fpr_at_tpr(id_scores, [0.0, 0.5, 2.0, 3.0]) == 0.5
    # an OOD score at 1.5 adds the point t=1.5 with the same recall 0.95 and FP 3; walking up from
    # full recall it comes before t=2, so the reference takes it: 3/4 (keep-at-least rule: 2/4)
    assert metrics.fpr95(id_scores, [0.0, 1.5, 2.0, 3.0]) == 0.75
    assert metrics.fpr_at_tpr(id_scores, [0.0, 1.5, 2.0, 3.0]) == 0.5


def test_hand_worked_fpr95_lowest_threshold_among_equal_recall():
    # ID 1..20, one OOD at 1.5. Points t=2 (recall .95, FP 0) and t=1.5 (recall .95, FP 1) tie;
    # the reference walks up from full recall, so t=1.5 comes first and wins: FPR95 = 1.
    # The "keep at least 95 %" rule puts the threshold at 2: FPR 0.
    id_scores = np.arange(1, 21, dtype=float)
    assert metrics.fpr95(id_scores, [1.5]) == 1.0
    assert metrics.fpr_at_tpr(id_scores, [1.5]) == 0.0


def test_hand_worked_fpr95_nearest_recall_below_level():
    # ID 1..10: recall 0.9 (t=2) and 1.0 (t=1) are equally far from 0.95 in real numbers; in
    # float64 |0.9 - 0.95| < |1.0 - 0.95|, so t=2 is chosen: OOD >= 2 is {5.5} -> 1/2.
    # Keeping at least 95 % of ID needs t=1, where the OOD at 1.0 also counts -> 2/2.
    id_scores = np.arange(1, 11, dtype=float)
    assert abs(0.9 - 0.95) < abs(1.0 - 0.95)
    assert metrics.fpr95(id_scores, [1.0, 5.5]) == 0.5
    assert metrics.fpr_at_tpr(id_scores, [1.0, 5.5]) == 1.0


def test_hand_worked_auroc_and_average_precision():
    # ranking 3 (ID), 2 (OOD), 1 (ID): AUROC = 1 winning pair of 2 = 0.5;
    # AP-In = (1/1 + 2/3) / 2 = 5/6 (the trapezoid area under the PR curve would differ);
    # AP-Out (score -S): -1 (ID), -2 (OOD) -> precision 1/2 at the only OOD.
    assert metrics.auroc([3, 1], [2]) == 0.5
    assert metrics.aupr_in([3, 1], [2]) == pytest.approx(5 / 6, abs=1e-15)
    assert metrics.aupr_out([3, 1], [2]) == pytest.approx(1 / 2, abs=1e-15)
    # a tie counts one half
    assert metrics.auroc([1.0], [1.0]) == 0.5
    assert metrics.auroc([1.0, 2.0], [1.0]) == 0.75


def test_ood_metrics_values_and_validation():
    res = metrics.ood_metrics([1, 2, 3], [0, 1])
    # pairs: 1 vs 0 win, 1 vs 1 tie, 2 and 3 win both -> 5.5 / 6; recall 2/3 at t=2 (FP 0) vs 1 at
    # t=1 (FP 1): 1 is nearest 0.95 -> FPR 1/2
    assert res == {"auroc": pytest.approx(5.5 / 6), "fpr95": 0.5,
                   "aupr_in": pytest.approx((1 + 1 + 3 / 4) / 3),
                   "aupr_out": pytest.approx((1 / 1 + 2 / 3) / 2), "n_id": 3, "n_ood": 2}
    for bad in (([], [1.0]), ([1.0], []), ([np.nan], [1.0]), ([1.0], [np.inf])):
        with pytest.raises(ValueError):
            metrics.ood_metrics(*bad)
    with pytest.raises(ValueError):
        metrics.threshold_at_tpr([1.0], 0.0)


def test_threshold_keeps_at_least_tpr_of_id():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 19, 20, 21, 100):
        id_s = np.round(rng.normal(size=n), 1)
        for tpr in (0.5, 0.9, 0.95, 1.0):
            lam = metrics.threshold_at_tpr(id_s, tpr)
            assert np.sum(id_s >= lam) >= tpr * n - 1e-9  # keeps at least tpr of ID ...
            higher = id_s[id_s > lam]
            # ... and no higher ID score would: it keeps fewer than tpr of ID
            assert higher.size == 0 or np.sum(id_s >= higher.min()) < tpr * n - 1e-9


# ------------------------------------------------------------------ clustering metrics


def test_cluster_accuracy_hungarian_and_overclustering():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert metrics.cluster_accuracy(y, np.array([5, 5, 3, 3, 9, 9])) == 1.0
    # Over-clustering: 4 clusters for 3 classes; the extra cluster maps to its majority class.
    assert metrics.cluster_accuracy(y, np.array([0, 3, 1, 1, 2, 2])) == 1.0
    assert metrics.cluster_accuracy(y, np.array([0, 0, 0, 0, 0, 0])) == pytest.approx(2 / 6)
    s = metrics.clustering_scores(y, y)
    assert s["nmi"] == pytest.approx(1.0) and s["ari"] == pytest.approx(1.0)
