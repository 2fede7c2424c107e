"""Threshold calibration (issue 12 §2): the order-statistic rule against a brute-force binomial sum
and by simulation of its coverage; the cross-fitted calibration scores of a real small run against a
re-computation here from the run's raw files (numpy + float64 log-sum-exp, an independent vote);
the warning for a too-small calibration set in the CLI, the export summary and the app; the
threshold slider in score units."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from clustermine.method import calibration as cal
from test_app import app_env, no_exception, open_app  # noqa: F401,E402  (app_env is a fixture)
from clustermine.workflows.whatif import run_detector

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------ the rule
def brute_force_rank(n: int, tpr: float, confidence: float) -> int:
    """Largest k with sum_{j >= k} C(n, j) p^j (1-p)^(n-j) >= confidence, p = 1 - tpr (exact fractions
    would be overkill: float sums of at most n + 1 terms); 0 when no k >= 1 qualifies."""
    p = 1.0 - tpr
    pmf = [math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(n + 1)]
    best = 0
    for k in range(1, n + 1):
        if sum(pmf[k:]) >= confidence - 1e-12:
            best = k
    return best


@pytest.mark.parametrize("tpr,confidence", [(0.95, 0.9), (0.95, 0.95), (0.9, 0.9), (0.8, 0.99), (0.99, 0.5)])
def test_rank_equals_a_brute_force_binomial_sum(tpr, confidence):
    for n in list(range(1, 80)) + [100, 160, 333]:
        assert cal.order_statistic_rank(n, tpr, confidence) == brute_force_rank(n, tpr, confidence), n


def test_minimum_calibration_size_known_answers():
    # 0.95^45 = 0.0994 <= 0.1 < 0.95^44 = 0.1047; 0.95^59 = 0.0485 <= 0.05 < 0.95^58 = 0.0510
    assert cal.min_calibration_size(0.95, 0.9) == 45
    assert cal.min_calibration_size(0.95, 0.95) == 59
    assert cal.min_calibration_size(0.8, 0.9) == 11  # 0.8^11 = 0.086, 0.8^10 = 0.107
    for tpr, conf in ((0.95, 0.9), (0.9, 0.95), (0.99, 0.9)):
        m = cal.min_calibration_size(tpr, conf)
        assert brute_force_rank(m, tpr, conf) >= 1 and brute_force_rank(m - 1, tpr, conf) == 0


def test_threshold_is_the_kth_smallest_and_warns_below_the_minimum():
    scores = np.array([-3.0, -1.0, -7.0, -2.0, -5.0] * 20)  # n = 100
    k = brute_force_rank(100, 0.95, 0.9)
    ch = cal.choose_threshold(scores, 0.95, 0.9)
    assert (ch.k, ch.n, ch.threshold, ch.guaranteed, ch.warning) == (k, 100, np.sort(scores)[k - 1], True, None)
    small = cal.choose_threshold(scores[:16], 0.95, 0.9)
    assert not small.guaranteed and small.k == 1 and small.threshold == -7.0
    assert "at least 45" in small.warning and "16 calibration" in small.warning
    assert small.achieved_confidence == pytest.approx(1 - 0.95 ** 16)


def test_coverage_by_simulation():
    """2,000 exchangeable draws of n = 120 ID scores: the true TPR of the chosen threshold (known
    exactly: scores are N(0, 1)) reaches the target in >= 1 − δ of the draws, and not much more
    often than the rule's own guarantee P(Binomial(n, 1 − t) >= k) says (so k is the largest)."""
    rng = np.random.default_rng(12)
    n, tpr, conf, draws = 120, 0.95, 0.9, 2000
    hits = 0
    for _ in range(draws):
        thr = cal.choose_threshold(rng.standard_normal(n), tpr, conf).threshold
        hits += norm.sf(thr) >= tpr
    k = brute_force_rank(n, tpr, conf)
    exact = cal.tpr_guarantee(n, k, tpr)
    slack = 3 * math.sqrt(conf * (1 - conf) / draws)  # ~0.02
    assert hits / draws >= conf - slack
    assert abs(hits / draws - exact) <= slack
    # the naive rule (keep 95 % of the calibration scores) misses the target about half the time
    naive_hits = sum(norm.sf(np.sort(rng.standard_normal(n))[n - math.ceil(tpr * n)]) >= tpr for _ in range(draws))
    assert naive_hits / draws < conf - 0.2


def test_crossval_false_alarms_known_answer():
    scores = np.array([-1.0, -2.0, -3.0, -4.0, -10.0, -5.0])
    folds = np.array([0, 0, 1, 1, 2, 2])
    # tpr 0.5, confidence 0.5 on 4 scores: k = largest with P(Bin(4, .5) >= k) >= .5 -> k = 2
    assert cal.order_statistic_rank(4, 0.5, 0.5) == 2
    # fold 0 judged by 2nd smallest of [-3,-4,-10,-5] = -5: none below; fold 1 by [-1,-2,-10,-5] -> -5: none;
    # fold 2 by [-1,-2,-3,-4] -> -3: both (-10, -5) below
    assert cal.crossval_false_alarms(scores, folds, 0.5, 0.5) == pytest.approx(2 / 6)
    judged = scores + np.array([0, 0, -2.5, 0, 0, 0])  # -5.5 < -5 in fold 1
    assert cal.crossval_false_alarms(scores, folds, 0.5, 0.5, judged=judged) == pytest.approx(3 / 6)


def test_folds_are_balanced_and_seeded():
    f = cal.fold_ids(37, 5, seed=3)
    assert sorted(np.bincount(f).tolist()) == [7, 7, 7, 8, 8]
    np.testing.assert_array_equal(f, cal.fold_ids(37, 5, seed=3))
    assert not np.array_equal(f, cal.fold_ids(37, 5, seed=4))


# ------------------------------------------------------------------------------------ a real run
def raw(run_dir: Path) -> dict:
    """The run's arrays straight from disk."""
    with np.load(run_dir / "votes.npz") as z:
        top1, sim1 = z["top_idx"][:, 0].astype(np.int64), z["top_sim"][:, 0].astype(np.float32)
    meta = json.loads((run_dir / "run.json").read_text())
    return {"feats": np.load(run_dir / "features.npy").astype(np.float64),
            "text": np.load(run_dir / "text_embeddings.npy").astype(np.float64),
            "cids": np.load(run_dir / "clusters.npy").astype(np.int64), "top1": top1, "sim1": sim1,
            "tau": meta["config"]["tau"], "seed": meta["config"]["seed"],
            "n_clusters": len(json.loads((run_dir / "clusters.json").read_text())),
            "mined": sorted({m["index"] for m in json.loads((run_dir / "mined.json").read_text())})}


def vote(cids, top1, sim1, members, n_clusters) -> list[int]:
    """Distinct plurality winners (ties: larger summed similarity, then lower concept index)."""
    won = set()
    for c in range(n_clusters):
        m = members & (cids == c)
        if not m.any():
            continue
        concepts = np.unique(top1[m])
        key = [(-(top1[m] == w).sum(), -float(sim1[m][top1[m] == w].astype(np.float64).sum()), int(w))
               for w in concepts]
        won.add(min(key)[2])
    return sorted(won)


def reference_scores(d: dict, positives_of_row) -> np.ndarray:
    """log S per row = LSE over that row's positives − LSE over the corpus, float64."""
    z = d["feats"] @ d["text"].T / d["tau"]
    all_lse = logsumexp(z, axis=1)
    return np.array([logsumexp(z[i, positives_of_row(i)]) - all_lse[i] for i in range(len(z))])


def test_crossfitted_scores_equal_an_independent_recomputation(small_run):
    from clustermine.workflows import whatif
    from clustermine.store import Run

    d = raw(small_run)
    n = len(d["cids"])
    mining = d["cids"] >= 0
    # the test's vote over all mining images reproduces what the pipeline mined
    assert vote(d["cids"], d["top1"], d["sim1"], mining, d["n_clusters"]) == d["mined"]
    # folds: the documented rule (seeded permutation of the rows, position modulo 5)
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(d["seed"]).permutation(n)] = np.arange(n) % 5
    fold_pos = {f: vote(d["cids"], d["top1"], d["sim1"], mining & (folds != f), d["n_clusters"]) for f in range(5)}
    assert any(fold_pos[f] != d["mined"] for f in range(5)), "the folds should change some vote on this run"

    run = Run.open(small_run)
    # edits: reject one mined concept; add one corpus concept the vote never elected
    victim = d["mined"][0]
    newcomer = next(i for i, w in enumerate(run.vocabulary_base()) if i not in d["mined"] and w.isalpha())
    run.edit_concept("reject", run.vocabulary_base()[victim])
    run.edit_concept("add", run.vocabulary_base()[newcomer])

    expected_mined = reference_scores(d, lambda i: fold_pos[folds[i]] if mining[i] else d["mined"])

    def edited(i):
        base = fold_pos[folds[i]] if mining[i] else d["mined"]
        return sorted((set(base) - {victim}) | {newcomer})
    expected_now = reference_scores(d, edited)

    cs = whatif.calibration_set(run)
    np.testing.assert_array_equal(cs.rows, np.arange(n))
    np.testing.assert_array_equal(cs.folds, folds)
    np.testing.assert_array_equal(cs.is_holdout, ~mining)
    np.testing.assert_allclose(cs.mined, expected_mined, rtol=0, atol=2e-4)
    np.testing.assert_allclose(cs.current, expected_now, rtol=0, atol=2e-4)
    # the held-out rows are the only ones scored with the full concept set
    assert (~mining).sum() == 4

    # stored in the run, and re-read (not recomputed) while nothing changes
    npz, stamp = small_run / "projections" / "calibration.npz", small_run / "projections" / "calibration.json"
    assert npz.is_file() and stamp.is_file()
    mtime = npz.stat().st_mtime_ns
    np.testing.assert_array_equal(whatif.calibration_set(Run.open(small_run)).current, cs.current)
    assert npz.stat().st_mtime_ns == mtime
    run.edit_concept("restore", run.vocabulary_base()[victim])  # an edit invalidates it
    np.testing.assert_allclose(whatif.calibration_set(Run.open(small_run)).current,
                               reference_scores(d, lambda i: sorted(set(fold_pos[folds[i]] if mining[i] else d["mined"])
                                                                    | {newcomer})), rtol=0, atol=2e-4)

    # the detector's threshold: the k-th smallest pooled score, k from the brute-force rank
    det = run_detector(Run.open(small_run), tpr=0.8)
    pooled = np.sort(whatif.calibration_set(Run.open(small_run)).current)
    k = brute_force_rank(n, 0.8, cal.DEFAULT_CONFIDENCE)
    assert k >= 1 and det.threshold == pytest.approx(pooled[k - 1], abs=1e-12)
    assert f"k = {k} of {n}" in det.threshold_rule and "TPR" in det.threshold_rule


# ------------------------------------------------------------------------------------ warnings: CLI, export
def test_cli_score_and_evaluate_warn_when_the_calibration_set_is_too_small(small_run, small_images, capsys):
    from clustermine.cli import main

    img = sorted((small_images / "n01440764").iterdir())[0]
    assert main(["score", str(small_run), str(img)]) == 0
    err = capsys.readouterr().err
    assert "warning: Only 40 calibration ID images: at least 45 are needed to guarantee 95% TPR" in err
    ood = small_images / "n02979186"
    assert main(["evaluate", str(small_run), "--id", str(small_images / "n01440764"), "--ood", str(ood)]) == 0
    assert "at least 45 are needed" in capsys.readouterr().err


def test_export_summary_carries_the_warning(small_run, tmp_path):
    from clustermine.workflows.export import export_run
    from clustermine.store import Run

    out = export_run(Run.open(small_run), tmp_path / "exp")
    s = json.loads((out / "summary.json").read_text())
    assert s["calibration"]["n_calibration"] == 40 and s["calibration"]["tpr_guaranteed"] is False
    assert s["calibration"]["min_n_for_guarantee"] == 45
    assert len(s["warnings"]) == 1 and "at least 45" in s["warnings"][0]
    assert s["threshold"] == pytest.approx(s["calibration"]["threshold"])


# ------------------------------------------------------------------------------------ the app
def open_page(run_id: str, page: str):
    at = open_app(run_id, page)
    no_exception(at)
    return at


def warnings_text(at) -> str:
    return "\n".join(w.value for w in at.warning)


@pytest.mark.app
def test_scoring_page_warns_and_the_threshold_slider_moves_the_verdicts(app_env, small_images):
    from clustermine.workflows import whatif
    from clustermine.store import Run

    at = open_page(app_env.name, "pages/scoring.py")
    assert "at least 45 are needed to guarantee 95% TPR" in warnings_text(at)
    at.slider(key="tpr").set_value(0.8).run()  # 40 images suffice for 80 % (11 needed)
    assert not at.exception and "needed to guarantee" not in warnings_text(at)
    thr80 = run_detector(Run.open(app_env), tpr=0.8).threshold
    assert at.slider(key="score_threshold").value == pytest.approx(round(thr80, 3))

    imgs = [sorted((small_images / c).iterdir())[0] for c in ("n01440764", "n02102040", "n02979186", "n03028079")]
    at.file_uploader(key="score_files").set_value([(p.name, p.read_bytes(), "image/jpeg") for p in imgs])
    at.button[[b.label for b in at.button].index("Score these images")].click().run()
    assert not at.exception
    df = at.dataframe[0].value.set_index("file")
    ls = df["log score"].to_numpy()
    assert ((df["verdict"] == "ID").to_numpy() == (ls >= thr80)).all()

    # a hand-set threshold between the scores: the verdicts follow it
    mid = float(np.round(np.median(ls), 3))
    at.slider(key="score_threshold").set_value(mid).run()
    assert not at.exception
    df2 = at.dataframe[0].value.set_index("file")
    np.testing.assert_array_equal((df2["verdict"] == "ID").to_numpy(), df2["log score"].to_numpy() >= mid)
    assert (df2["verdict"] == "ID").sum() != (df["verdict"] == "ID").sum() or mid == pytest.approx(thr80, abs=1e-3)
    shown = next(m.value for m in at.markdown if m.value.startswith("**Threshold**"))
    assert shown.split()[1] == f"{mid:.3f}" and "set by hand" in shown
    kept = np.mean(whatif.calibration(Run.open(app_env), 0.8).scores >= mid)
    assert f"keeps {kept:.1%}" in shown.replace("\\", "")
    # moving the TPR slider brings the calibrated threshold back
    at.slider(key="tpr").set_value(0.85).run()
    thr85 = run_detector(Run.open(app_env), tpr=0.85).threshold
    assert at.slider(key="score_threshold").value == pytest.approx(round(thr85, 3))
    shown = next(m.value for m in at.markdown if m.value.startswith("**Threshold**"))
    assert shown.split()[1] == f"{thr85:.3f}"


@pytest.mark.app
def test_concepts_what_if_warns_and_shows_crossvalidated_false_alarms(app_env):
    from clustermine.workflows import whatif
    from clustermine.store import Run

    at = open_page(app_env.name, "pages/concepts.py")
    assert "at least 45 are needed to guarantee 95% TPR" in warnings_text(at)
    cs = whatif.calibration_set(Run.open(app_env))
    # expected: each pooled image judged by the rule on the other folds, recomputed here
    alarms = 0
    for f in np.unique(cs.folds):
        rest = np.sort(cs.mined[cs.folds != f])
        k = max(1, brute_force_rank(rest.size, 0.95, cal.DEFAULT_CONFIDENCE))
        alarms += int(np.sum(cs.mined[cs.folds == f] < rest[k - 1]))
    shown = {m.label: m.value for m in at.metric}["ID false alarms, mined"]
    assert shown == f"{100 * alarms / cs.mined.size:.1f} %"
