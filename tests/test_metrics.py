import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from clustermine import metrics


def test_hand_worked_perfect_and_inverted():
    assert metrics.auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert metrics.auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert metrics.fpr95([3, 4, 5], [0, 1, 2]) == 0.0
    assert metrics.fpr95([0, 1, 2], [3, 4, 5]) == 1.0


def test_hand_worked_fpr95_threshold():
    # 20 ID scores 1..20: keeping 95 % (19 of them) puts the threshold at 2.
    id_scores = np.arange(1, 21, dtype=float)
    assert metrics.threshold_at_tpr(id_scores, 0.95) == 2.0
    # OOD at 1.5 is below, 2 ties (counted), 3 is above -> 2 of 4.
    assert metrics.fpr95(id_scores, [0.0, 1.5, 2.0, 3.0]) == 0.5


def test_ties_give_half_credit():
    assert metrics.auroc([1.0], [1.0]) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    id_s, ood_s = rng.normal(1, 1, 200), rng.normal(0, 1, 150)
    y = np.r_[np.ones(200), np.zeros(150)]
    s = np.r_[id_s, ood_s]
    assert metrics.auroc(id_s, ood_s) == pytest.approx(roc_auc_score(y, s))
    assert metrics.aupr_in(id_s, ood_s) == pytest.approx(average_precision_score(y, s))
    assert metrics.aupr_out(id_s, ood_s) == pytest.approx(average_precision_score(1 - y, -s))
    # FPR95 equals the ROC's FPR at the first point reaching TPR >= 0.95 (continuous scores: no ties).
    fpr, tpr, _ = roc_curve(y, s)
    assert metrics.fpr95(id_s, ood_s) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_ood_metrics_keys_and_validation():
    res = metrics.ood_metrics([1, 2, 3], [0, 1])
    assert set(res) == {"auroc", "fpr95", "aupr_in", "aupr_out", "n_id", "n_ood"}
    assert res["n_id"] == 3 and res["n_ood"] == 2
    with pytest.raises(ValueError):
        metrics.auroc([], [1.0])
    with pytest.raises(ValueError):
        metrics.auroc([np.nan], [1.0])


def test_cluster_accuracy_hungarian_and_overclustering():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert metrics.cluster_accuracy(y, np.array([5, 5, 3, 3, 9, 9])) == 1.0
    # Over-clustering: 4 clusters for 3 classes; the extra cluster maps to its majority class.
    assert metrics.cluster_accuracy(y, np.array([0, 3, 1, 1, 2, 2])) == 1.0
    assert metrics.cluster_accuracy(y, np.array([0, 0, 0, 0, 0, 0])) == pytest.approx(2 / 6)
    s = metrics.clustering_scores(y, y)
    assert s["nmi"] == pytest.approx(1.0) and s["ari"] == pytest.approx(1.0)
