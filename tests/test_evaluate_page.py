"""AppTest of the Evaluate page on a copy of the small real run: without an evaluation it says how to
make one and its form evaluates server folders; then it shows the table (the engine's stored numbers),
one ROC curve per OOD set and one ID-vs-OOD histogram per set with the threshold at the target TPR;
intervals and label-based baselines show when the rows carry them; a concept edit flags it stale."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from test_app import app_env, no_exception, open_app, texts  # noqa: F401  (app_env is a fixture)
from test_evaluation_store import eval_folders

from clustermine.core.config import DEFAULT_TPR
from clustermine.method import metrics
from clustermine.store import Run
from clustermine.workflows import evaluation_store as es
from clustermine.workflows.whatif import run_detector

pytestmark = pytest.mark.app
PAGE = "pages/evaluate.py"


def _arr(value) -> np.ndarray:
    """A plotly JSON array: a list, or numpy's typed base64 form {"dtype", "bdata"}."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=float)


def _specs(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_no_evaluation_says_how_then_the_form_evaluates_and_the_page_shows_it(app_env, tmp_path, monkeypatch):
    id_dir, sets = eval_folders(tmp_path / "data")
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(tmp_path / "data"))
    at = open_app(app_env.name, PAGE)
    no_exception(at)
    assert "no evaluation yet" in texts(at)
    assert any(f"clustermine evaluate {app_env}" in c.value and "--ood NAME=" in c.value for c in at.code)
    assert not at.get("plotly_chart") and not at.dataframe

    at.text_input(key="eval_id").input("id")  # inside a form: sent with the submit
    at.text_area(key="eval_ood").input("near=near\ntextures=textures")
    at.get("form_submit_button")[0].click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]

    ev = es.latest_evaluation(Run.open(app_env))
    assert ev is not None and ev.ood_names == ["near", "textures"] and not ev.stale
    df = at.dataframe[0].value
    assert list(df["OOD set"]) == ["near", "textures", "mean"]
    for row, (_, shown) in zip(ev.rows, df.iterrows()):
        assert shown["AUROC %"] == f"{100 * row['auroc']:.2f}" and shown["FPR95 %"] == f"{100 * row['fpr95']:.2f}"
        assert shown["n OOD"] == str(row["n_ood"])
    assert not at.warning  # just measured: current

    specs = _specs(at)
    assert len(specs) == 3  # the ROC figure and one histogram per set
    roc = [t for t in specs[0]["data"] if t["name"] != "chance"]
    assert [t["name"].split(" (")[0] for t in roc] == ["near", "textures"]
    for t, name in zip(roc, ev.ood_names):
        fpr, tpr = metrics.roc_points(ev.scores["id"], ev.scores["ood/" + name])
        np.testing.assert_allclose(_arr(t["x"]), fpr)
        np.testing.assert_allclose(_arr(t["y"]), tpr)
        assert f"AUROC {metrics.auroc(ev.scores['id'], ev.scores['ood/' + name]):.3f}" in t["name"]
    lam = metrics.threshold_at_tpr(ev.scores["id"], DEFAULT_TPR)
    for spec, name in zip(specs[1:], ev.ood_names):
        assert [t["name"] for t in spec["data"]] == ["ID", f"OOD: {name}"]
        (line,) = spec["layout"]["shapes"]
        assert line["x0"] == pytest.approx(lam) and line["x1"] == pytest.approx(lam)
        assert "keeps ≥ 95% of ID" in spec["layout"]["annotations"][0]["text"]
        assert _arr(spec["data"][0]["y"]).sum() == pytest.approx(100)
        assert _arr(spec["data"][1]["y"]).sum() == pytest.approx(100)


def test_intervals_baselines_and_the_stale_warning(app_env, tmp_path):
    run = Run.open(app_env)
    rng = np.random.default_rng(0)
    feats = run.features()
    det = run_detector(run)
    scores = {"id": det.log_scores(feats[:20]), "ood/noise": rng.normal(size=15) + det.log_scores(feats[20:35]).min()}
    m = metrics.ood_metrics(scores["id"], scores["ood/noise"])
    rows = [{"name": "noise", "method": es.LABEL_FREE, **m, "auroc_ci": [m["auroc"] - 0.05, min(m["auroc"] + 0.05, 1)]},
            {"name": "noise", "method": "NegLabel", **m}]
    es.save_evaluation(run, {"rows": rows}, scores)
    at = open_app(app_env.name, PAGE)
    no_exception(at)
    df = at.dataframe[0].value
    lo, hi = m["auroc"] - 0.05, min(m["auroc"] + 0.05, 1)
    assert df["AUROC %"][0] == f"{100 * m['auroc']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"
    assert df["method"][1] == "NegLabel (label-based)" and df["method"][0] == es.LABEL_FREE
    assert not at.warning

    run.edit_concept("reject", run.positive_concepts()[0], user="tester")
    at = open_app(app_env.name, PAGE)
    no_exception(at)
    assert any("concepts changed after this evaluation" in w.value for w in at.warning)


def test_the_form_refuses_a_folder_outside_the_roots_and_an_empty_one(app_env, tmp_path, monkeypatch):
    (tmp_path / "data" / "id").mkdir(parents=True)
    (tmp_path / "data" / "id" / "notes.txt").write_text("not an image", encoding="utf-8")
    (tmp_path / "data" / "ood").mkdir()
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(tmp_path / "data"))
    at = open_app(app_env.name, PAGE)
    for id_dir, needle in (("/etc", "outside the allowed"), ("id", "no image files found")):
        at.text_input(key="eval_id").input(id_dir)
        at.text_area(key="eval_ood").input("x=ood")
        at.get("form_submit_button")[0].click().run()
        no_exception(at)
        assert any(needle in e.value for e in at.error), [e.value for e in at.error]
        assert es.latest_evaluation(Run.open(app_env)) is None and not at.get("plotly_chart")
