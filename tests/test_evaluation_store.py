"""Stored evaluations of a run (ID folder vs named OOD sets) and the data of their figures, on the
small real run and real images: the saved record reads back identical, the latest pointer follows
the last save, a concept edit makes it stale, the ROC points' area is the AUROC, the threshold keeps
at least the target share of ID, and each set's numbers equal a single-set ``evaluate``."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_subset, shared

from clustermine.core.config import DEFAULT_TPR
from clustermine.core.errors import ClusterMineError
from clustermine.core.identity import Actor
from clustermine.core.roles import PermissionDenied
from clustermine.method import metrics
from clustermine.store import Run, layout
from clustermine.workflows import evaluation_store as es
from clustermine.workflows.encoding import load_folder
from clustermine.workflows.pipeline import evaluate
from clustermine.workflows.whatif import run_detector

ID_CLASSES = ["n01440764", "n02102040", "n02979186", "n03028079"]  # the small run's 4 classes
NEAR_CLASSES = ["n01443537", "n02100735", "n02101388", "n02102177", "n02102318", "n02514041", "n02536864",
                "n02641379", "n02825657", "n02988304", "n03781244", "n04392985"]


def eval_folders(root: Path) -> tuple[Path, dict[str, Path]]:
    """ID: 3 validation images of each of the run's classes; OOD: "near", 12 ImageNet classes close to
    them (other spaniels, tape / CD player, other fish, monastery, bell cote: a ROC that is not
    trivial), and "textures", 5 DTD images (far)."""
    val = shared("imagenette_val100")
    id_dir = copy_subset(val, root / "id", ID_CLASSES, 3)
    near = copy_subset(shared("imagenet_sample"), root / "near", NEAR_CLASSES, 1)
    textures = copy_subset(shared("dtd10"), root / "textures", ["banded"], 5)
    return id_dir, {"near": near, "textures": textures}


@pytest.fixture(scope="module")
def encoder(small_run_template):
    from clustermine.method.encoders import load_encoder

    return load_encoder(Run.open(small_run_template).encoder_spec, "cpu")


@pytest.fixture(scope="module")
def evaluated(small_run_template, encoder, tmp_path_factory):
    """A private copy of the small run with one evaluation of two OOD sets; (run dir, folders, Evaluation)."""
    root = tmp_path_factory.mktemp("evaluated")
    run_dir = root / "run"
    shutil.copytree(small_run_template, run_dir)
    id_dir, sets = eval_folders(root / "data")
    ev = es.evaluate_folders(Run.open(run_dir), id_dir, sets, encoder, cache_dir=root / "cache")
    return run_dir, id_dir, sets, ev


def test_each_set_equals_a_single_evaluate_and_the_mean_row_is_their_mean(evaluated, encoder):
    run_dir, id_dir, sets, ev = evaluated
    run = Run.open(run_dir)
    by_name = {r["name"]: r for r in ev.rows}
    assert list(by_name) == ["near", "textures", "mean"]
    det = run_detector(run)  # and by hand: the run's detector on the folders' features, metrics recomputed
    id_scores = det.log_scores(load_folder(id_dir, encoder)[1])
    for name, folder in sets.items():
        by_hand = metrics.ood_metrics(id_scores, det.log_scores(load_folder(folder, encoder)[1]))
        assert {k: by_name[name][k] for k in by_hand} == pytest.approx(by_hand, abs=1e-9)
        single = evaluate(run, id_dir, folder, encoder=encoder)
        for key in ("auroc", "fpr95", "aupr_in", "aupr_out", "n_id", "n_ood"):
            assert by_name[name][key] == pytest.approx(single[key], abs=1e-9), (name, key)
    for key in ("auroc", "fpr95", "aupr_in", "aupr_out"):
        assert by_name["mean"][key] == pytest.approx((by_name["near"][key] + by_name["textures"][key]) / 2)
    assert by_name["mean"]["n_ood"] == 17 and by_name["mean"]["n_id"] == 12
    assert ev.scores["id"].shape == (12,) and ev.ood_names == ["near", "textures"]
    assert 0.6 < by_name["near"]["auroc"] < 1.0  # near OOD: some OOD images score above some ID ones
    assert not ev.stale


def test_saved_evaluation_reads_back_identical_and_latest_follows_the_last_save(evaluated):
    run_dir, _, _, ev = evaluated
    run = Run.open(run_dir)
    back = es.latest_evaluation(run)
    assert back is not None and back.path == ev.path and back.result == ev.result
    assert back.scores.keys() == ev.scores.keys()
    for k in ev.scores:
        np.testing.assert_array_equal(back.scores[k], ev.scores[k])
    # a second save (another result) becomes the latest; the first stays on disk
    rng = np.random.default_rng(0)
    scores = {"id": rng.normal(size=7), "ood/noise": rng.normal(size=5) - 1.0}
    row = {"name": "noise", "method": "test", **metrics.ood_metrics(scores["id"], scores["ood/noise"])}
    path = es.save_evaluation(run, {"rows": [row]}, scores)
    try:
        second = es.latest_evaluation(run)
        assert second.path == path != ev.path and second.result["rows"] == [row]
        np.testing.assert_array_equal(second.scores["ood/noise"], scores["ood/noise"])
        assert ev.path.is_file() and ev.path.with_suffix(".npz").is_file()
        assert json.loads(layout.evaluation_latest(run_dir).read_text())["name"] == path.stem
    finally:  # the module's run keeps its first evaluation as the latest
        layout.evaluation_latest(run_dir).write_text(json.dumps({"name": ev.path.stem}))


def test_a_concept_edit_makes_the_evaluation_stale_a_copy_does_not(evaluated, tmp_path):
    run_dir = evaluated[0]
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    assert not es.latest_evaluation(Run.open(copy)).stale  # same detector, other files
    run = Run.open(copy)
    run.edit_concept("reject", run.positive_concepts()[0], user="tester")
    assert es.latest_evaluation(Run.open(copy)).stale


def test_roc_points_area_equals_auroc(evaluated):
    ev = evaluated[3]
    ties = (np.array([3.0, 2.0, 2.0, 1.0, 1.0]), np.array([2.0, 1.0, 1.0, 0.0]))  # tied ID / OOD scores
    cases = [(ev.scores["id"], ev.scores["ood/" + n]) for n in ev.ood_names] + [ties]
    for id_s, ood_s in cases:
        fpr, tpr = metrics.roc_points(id_s, ood_s)
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        assert area == pytest.approx(metrics.auroc(id_s, ood_s), abs=1e-12)
    assert metrics.auroc(*ties) == 15 / 20  # by hand: 4 + 2 × 3.5 + 2 × 2 of the 20 pairs
    # thinned for drawing: ends kept, at most the cap
    big = np.random.default_rng(1)
    fpr, tpr = es.roc_curve(big.normal(size=3000), big.normal(size=2000), max_points=100)
    assert len(fpr) <= 100 and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


def test_threshold_keeps_at_least_the_target_share_of_id(evaluated):
    ev = evaluated[3]
    id_s = ev.scores["id"]
    for tpr in (DEFAULT_TPR, 0.8, 0.5):
        figs = es.figure_data(ev, tpr)
        assert [f.name for f in figs] == ev.ood_names
        for f in figs:
            assert f.threshold == metrics.threshold_at_tpr(id_s, tpr)
            assert f.id_kept >= tpr and f.id_kept == np.mean(id_s >= f.threshold)
            # the highest such threshold: the next ID score above keeps less than the target
            above = id_s[id_s > f.threshold]
            if above.size:
                assert np.mean(id_s >= above.min()) < tpr
            ood = ev.scores["ood/" + f.name]
            assert f.ood_passed == pytest.approx(metrics.fpr_at_tpr(id_s, ood, tpr))
            assert f.auroc == metrics.auroc(id_s, ood)
            # histograms: shared bins spanning the threshold, each set's shares summing to 1
            assert f.edges[0] <= min(id_s.min(), ood.min(), f.threshold)
            assert f.edges[-1] >= max(id_s.max(), ood.max(), f.threshold)
            assert f.id_share.sum() == pytest.approx(1) and f.ood_share.sum() == pytest.approx(1)
            counts = np.histogram(ood, bins=f.edges)[0]
            np.testing.assert_allclose(f.ood_share, counts / ood.size)


def test_table_rows_show_intervals_and_mark_label_based_baselines():
    rows = [{"name": "inat", "method": LABEL_FREE_METHOD, "auroc": 0.91234, "fpr95": 0.3, "aupr_in": 0.9,
             "aupr_out": 0.8, "n_id": 10, "n_ood": 20, "auroc_ci": [0.9, 0.93], "fpr95_ci": [0.25, 0.35]},
            {"name": "inat", "method": "MCM", "auroc": 0.8, "fpr95": 0.5, "aupr_in": 0.7, "aupr_out": 0.6,
             "n_id": 10, "n_ood": 20}]
    table = es.table_rows({"rows": rows})
    assert table[0]["AUROC %"] == "91.23 [90.00, 93.00]" and table[0]["FPR95 %"] == "30.00 [25.00, 35.00]"
    assert "label-based" not in table[0]["method"] and table[1]["method"] == "MCM (label-based)"
    assert table[1]["AUROC %"] == "80.00" and table[1]["n OOD"] == "20"
    # rows of several runs: a run column and mean ± sd; the OpenOOD column when measured
    many = es.table_rows({"rows": [dict(rows[0], run="a", fpr95_openood=0.31), dict(rows[0], run="b"),
                                   dict(rows[0], run="mean ± sd of 2 runs", auroc_sd=0.01)],
                          "runs": ["a", "b"], "fpr95_openood_variant": "OpenOOD"})
    assert [r["run"] for r in many] == ["a", "b", "mean ± sd of 2 runs"]
    assert many[0]["FPR95 (OpenOOD) %"] == "31.00" and many[2]["AUROC %"].startswith("91.23 ± 1.00")


LABEL_FREE_METHOD = es.LABEL_FREE


def test_bad_inputs_say_which_file_or_name(evaluated, tmp_path, encoder):
    run_dir, id_dir, sets, _ = evaluated
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    run = Run.open(copy)
    with pytest.raises(ClusterMineError, match="'id'"):
        es.save_evaluation(run, {"rows": []}, {"ood/x": np.ones(3)})
    with pytest.raises(ClusterMineError, match="finite"):
        es.save_evaluation(run, {"rows": []}, {"id": np.ones(3), "ood/x": np.array([np.nan])})
    with pytest.raises(PermissionDenied, match="may not score images"):  # a role without rights: nothing written
        es.evaluate_folders(run, id_dir, sets, encoder, actor=Actor("nobody", auth="proxy", role="none"))
    assert es.latest_evaluation(run).path.name == evaluated[3].path.name
    with pytest.raises(ClusterMineError, match="mean row"):
        es.evaluate_folders(run, id_dir, {"mean": sets["near"]}, encoder)
    with pytest.raises(ClusterMineError, match="nowhere: folder not found"):
        es.evaluate_folders(run, id_dir, {"x": tmp_path / "nowhere"}, encoder)
    pointer = layout.evaluation_latest(copy)
    pointer.write_text("{not json", encoding="utf-8")
    with pytest.raises(ClusterMineError, match="unreadable pointer"):
        es.latest_evaluation(run)
    pointer.write_text(json.dumps({"name": "../../etc"}), encoding="utf-8")
    with pytest.raises(ClusterMineError, match="names no evaluation"):
        es.latest_evaluation(run)
    shutil.rmtree(layout.evaluations_dir(copy))
    assert es.latest_evaluation(run) is None


# ------------------------------------------------------------------------------------ the HTML report
def test_report_has_the_evaluation_section_only_when_the_run_has_one(evaluated, small_run):
    from clustermine.workflows.report import build_report

    assert 'id="evaluation"' not in build_report(Run.open(small_run))  # the bare run has none
    run_dir = evaluated[0]
    run = Run.open(run_dir)
    ev = es.latest_evaluation(run)
    page = build_report(run)
    section = page[page.index('<section id="evaluation">'):]
    section = section[:section.index("</section>")]
    for row in es.table_rows(ev):  # the table: the same cells as the page's
        assert "<tr>" + "".join(f"<td>{v}</td>" for v in row.values()) + "</tr>" in section
    lines = re.findall(r'<polyline class="roc-curve" data-set="([^"]*)"[^>]*points="([^"]*)"', section)
    assert [name for name, _ in lines] == ev.ood_names
    for name, points in lines:
        fpr, tpr = es.roc_curve(ev.scores["id"], ev.scores["ood/" + name])
        xy = np.array([p.split(",") for p in points.split()], dtype=float)
        assert len(xy) == len(fpr)
        # drawn in a 282 x 266 px plot from (46, 10): the polyline is the ROC points, y pointing down
        np.testing.assert_allclose(xy[:, 0], 46 + fpr * 282, atol=0.06)
        np.testing.assert_allclose(xy[:, 1], 10 + (1 - tpr) * 266, atol=0.06)
    lam = metrics.threshold_at_tpr(ev.scores["id"], DEFAULT_TPR)
    thresholds = re.findall(r'<line class="threshold"[^>]*data-value="([^"]*)"', section)
    assert [float(t) for t in thresholds] == [pytest.approx(lam, abs=1e-6)] * len(ev.ood_names)
    assert section.count('<svg class="scores"') == len(ev.ood_names)
    assert "threshold (keeps ≥ 95% of ID)" in section


def test_report_escapes_set_names_and_names_an_unreadable_evaluation(evaluated, tmp_path):
    from clustermine.workflows.report import build_report

    copy = tmp_path / "copy"
    shutil.copytree(evaluated[0], copy)
    run = Run.open(copy)
    ev = es.latest_evaluation(run)
    evil = '<script>alert("x")</script>'
    rows = [dict(ev.rows[0], name=evil)]
    es.save_evaluation(run, {"rows": rows}, {"id": ev.scores["id"], "ood/" + evil: ev.scores["ood/near"]})
    page = build_report(run)
    assert "<script>" not in page and html.escape(evil, quote=True) in page
    pointer = layout.evaluation_latest(copy)
    pointer.write_text("{broken", encoding="utf-8")
    page = build_report(run)
    assert "the run's latest evaluation could not be read" in page and html.escape(str(pointer)) in page


def test_named_folders_typed_one_per_line():
    assert es.parse_named_folders("textures=dtd10\n\n  near = a/b=c \n/data/cifar10_test/\n") == {
        "textures": "dtd10", "near": "a/b=c", "cifar10_test": "/data/cifar10_test/"}
    with pytest.raises(ClusterMineError, match="two OOD sets are named 'x'"):
        es.parse_named_folders("x=a\nx=b")
    with pytest.raises(ClusterMineError, match="expected NAME=DIR"):
        es.parse_named_folders("x=")
