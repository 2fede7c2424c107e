"""Compare two runs (issue 13, section 3): engine, CLI and the Compare page.

References are computed here independently: ARI from pair counts, the best cluster matching by
brute force over permutations, scores with the detector's full corpus LSE (no cache)."""

from __future__ import annotations

import itertools
import json
from math import comb
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_subset, shared

from clustermine.cli import main
from clustermine.workflows.compare import diff_runs
from clustermine.store import Run
from test_app import app_env, no_exception, open_app  # noqa: F401,E402  (app_env is a fixture)
from clustermine.workflows.whatif import run_detector

ROOT = Path(__file__).resolve().parents[1]


def ari_reference(a: np.ndarray, b: np.ndarray) -> float:
    n = len(a)
    table: dict[tuple[int, int], int] = {}
    for x, y in zip(a.tolist(), b.tolist()):
        table[(x, y)] = table.get((x, y), 0) + 1
    rows = {x: sum(v for (i, _), v in table.items() if i == x) for x in set(a.tolist())}
    cols = {y: sum(v for (_, j), v in table.items() if j == y) for y in set(b.tolist())}
    s_ij = sum(comb(v, 2) for v in table.values())
    s_a, s_b = sum(comb(v, 2) for v in rows.values()), sum(comb(v, 2) for v in cols.values())
    expected = s_a * s_b / comb(n, 2)
    return (s_ij - expected) / (0.5 * (s_a + s_b) - expected)


def best_matching_overlap(a: np.ndarray, b: np.ndarray) -> int:
    ua, ub = sorted(set(a.tolist())), sorted(set(b.tolist()))
    if len(ua) > len(ub):
        a, b, ua, ub = b, a, ub, ua
    best = 0
    for perm in itertools.permutations(ub, len(ua)):
        best = max(best, sum(int(((a == x) & (b == y)).sum()) for x, y in zip(ua, perm)))
    return best


@pytest.fixture(scope="module")
def other_run(small_images, tmp_path_factory) -> Path:
    """The small run's images mined with another seed and C (and more held out, so that the two
    runs share held-out images: the seed also draws them)."""
    from clustermine.workflows.pipeline import MineConfig, mine

    out = tmp_path_factory.mktemp("runs-b") / "other"
    mine(small_images, out, MineConfig(n_clusters=3, clusterer="kmeans", seed=2, holdout_fraction=0.3))
    return out


def test_diff_of_a_run_with_itself_is_empty(small_run_template):
    run = Run.open(small_run_template)
    d = diff_runs(run, Run.open(small_run_template))
    assert d["y_pos"]["added"] == [] and d["y_pos"]["removed"] == []
    assert d["y_pos"]["kept"] == sorted(run.positive_concepts())
    assert d["clusters"]["ari"] == pytest.approx(1.0) and d["clusters"]["matched_fraction"] == 1.0
    assert d["heldout_shift"]["n"] == int(run.holdout_mask().sum()) > 0
    assert d["heldout_shift"]["max_abs"] == 0.0 and d["heldout_shift"]["verdict_changes"] == 0
    assert d["settings"] == {}


def test_diff_of_two_seeds_and_c_matches_independent_values(small_run_template, other_run, tmp_path):
    import shutil

    shutil.copytree(other_run, tmp_path / "b")
    a, b = Run.open(small_run_template), Run.open(tmp_path / "b")
    hold = (a.cluster_ids() < 0) & (b.cluster_ids() < 0)
    # reject B's positive concept nearest the shared held-out images: their scores really shift
    _, _, pos = b.vocabulary()
    sims = b.text_embeddings()[pos] @ b.features()[hold].mean(0)
    b.edit_concept("reject", b.vocabulary_base()[int(pos[int(np.argmax(sims))])], user="t")
    ood = copy_subset(shared("imagenette_train100"), tmp_path / "ood", ["n03417042"], 4)
    d = diff_runs(a, b, ood_folder=ood)
    assert set(d["y_pos"]["added"]) == set(b.positive_concepts()) - set(a.positive_concepts())
    assert set(d["y_pos"]["removed"]) == set(a.positive_concepts()) - set(b.positive_concepts())
    assert d["settings"] == {"n_clusters": [4, 3], "seed": [0, 2], "holdout_fraction": [0.1, 0.3]}
    # same folder, same scan order: rows align; shared mined images are those mined in both runs
    ca, cb = a.cluster_ids(), b.cluster_ids()
    both = (ca >= 0) & (cb >= 0)
    assert d["clusters"]["n_shared"] == int(both.sum())
    assert d["clusters"]["ari"] == pytest.approx(ari_reference(ca[both], cb[both]), abs=1e-12)
    overlap = sum(m[2] for m in d["clusters"]["matched"])
    assert overlap == best_matching_overlap(ca[both], cb[both])
    assert len({m[0] for m in d["clusters"]["matched"]}) == len(d["clusters"]["matched"]) == 3
    sa = run_detector(a, calibrate=False).log_scores(a.features()[hold])
    sb = run_detector(b, calibrate=False).log_scores(b.features()[hold])
    assert d["heldout_shift"]["n"] == int(hold.sum()) > 0
    assert abs(float(np.mean(sb - sa))) > 1e-3
    assert d["heldout_shift"]["mean"] == pytest.approx(float(np.mean(sb - sa)), abs=1e-5)
    from clustermine.method.encoders import load_encoder

    enc = load_encoder("offline")
    feats = enc.encode_images(sorted(str(p) for p in ood.rglob("*.JPEG"))).features
    feats = feats.astype(np.float16).astype(np.float32)  # as every run and sample stores them
    shift = run_detector(b).log_scores(feats) - run_detector(a).log_scores(feats)
    assert d["ood_shift"]["n"] == 4
    assert abs(float(shift.mean())) > 1e-3
    assert d["ood_shift"]["mean"] == pytest.approx(float(shift.mean()), abs=1e-5)

    # issue 18 (6): AUROC / FPR95 of each run = clustermine.method.metrics on its held-out ID images and the
    # OOD images, scored here by each run's detector; the same numbers as each run's what-if panel
    from clustermine.method import metrics
    from clustermine.workflows.compare import better_run
    from clustermine.workflows.whatif import ood_comparison, sample_scorer

    det_a, det_b = run_detector(a), run_detector(b)
    oa, ob = det_a.log_scores(feats), det_b.log_scores(feats)
    om = d["ood_metrics"]
    for m, run, det, ood_s in ((om["a"], a, det_a, oa), (om["b"], b, det_b, ob)):
        id_s = det.log_scores(run.features()[run.holdout_mask()])
        assert m["n_id"] == int(run.holdout_mask().sum()) > 1 and m["n_ood"] == 4
        assert m["auroc"] == pytest.approx(metrics.auroc(id_s, ood_s), abs=1e-12)
        assert m["fpr95"] == pytest.approx(metrics.fpr95(id_s, ood_s), abs=1e-12)
        panel = ood_comparison(run, sample_scorer(run, feats))["after"]
        assert (m["auroc"], m["fpr95"]) == pytest.approx((panel["auroc"], panel["fpr95"]), abs=1e-12)
    assert om["a"]["n_id"] != om["b"]["n_id"]  # 10 % vs 30 % held out
    assert om["better"] == better_run(om["a"], om["b"])
    assert f"AUROC {om['a']['auroc']:.3f} (A) vs {om['b']['auroc']:.3f} (B)" in d["verdict"]

    def directions(s_a, s_b):
        ia, ib = s_a >= det_a.threshold, s_b >= det_b.threshold
        return int((ia & ~ib).sum()), int((~ia & ib).sum())

    for key, (s_a, s_b) in (("heldout_shift", (sa, sb)), ("ood_shift", (oa, ob))):
        to_ood, to_id = directions(s_a, s_b)
        assert (d[key]["id_to_ood"], d[key]["ood_to_id"]) == (to_ood, to_id), key
        assert d[key]["verdict_changes"] == to_ood + to_id
    assert d["ood_shift"]["verdict_changes"] > 0  # B lost the concept: its verdicts on the trucks move
    assert d["images"] == {"n_a": 40, "n_b": 40, "only_a": 0, "only_b": 0, "same": True, "text": "same 40 images"}


def test_verdict_changes_and_better_run_rules():
    from clustermine.workflows.compare import better_run, verdict_changes

    a = np.array([0.0, -1.0, -2.0, -3.0, -0.5])
    b = np.array([-2.5, -0.5, -2.0, -1.0, -0.5])
    # A: ID when >= -1.5 -> [T, T, F, F, T]; B: ID when >= -1.0 -> [F, T, F, T, T]
    assert verdict_changes(a, b, -1.5, -1.0) == {"total": 2, "id_to_ood": 1, "ood_to_id": 1}
    assert verdict_changes(a, b, None, -1.0) is None
    m = lambda auroc, fpr: {"auroc": auroc, "fpr95": fpr}  # noqa: E731
    assert better_run(m(0.8, 0.5), m(0.9, 0.4)) == "B"
    assert better_run(m(0.9, 0.4), m(0.9, 0.5)) == "A"
    assert better_run(m(0.8, 0.4), m(0.9, 0.5)) == "mixed"
    assert better_run(m(0.8, 0.4), m(0.8, 0.4)) == "tie"
    assert better_run(None, m(0.8, 0.4)) is None


def test_images_dir_is_listed_only_when_the_images_differ(small_images, small_run_template, tmp_path):
    """Two runs of one upload hold copies of the same files in their own folders: same images, no
    ``images_dir`` row; a run with 3 more photos says so."""
    import shutil

    from clustermine.workflows.pipeline import MineConfig, mine

    cfg = Run.open(small_run_template).config
    same = shutil.copytree(small_images, tmp_path / "upload-copy")
    more = shutil.copytree(small_images, tmp_path / "more")
    copy_subset(shared("imagenette_val100"), more / "extra", ["n03417042"], 3)
    conf = MineConfig(n_clusters=4, clusterer="kmeans", seed=0)
    run_same = mine(same, tmp_path / "runs" / "same", conf)
    run_more = mine(more, tmp_path / "runs" / "more", conf)
    a = Run.open(small_run_template)
    assert Run.open(run_same.path).config["images_dir"] != cfg["images_dir"]
    d = diff_runs(a, Run.open(run_same.path))
    assert d["images"]["same"] and d["settings"] == {}
    d = diff_runs(a, Run.open(run_more.path))
    assert d["images"]["text"] == "B has 3 images A lacks"
    assert d["settings"]["images"] == ["40 images", "43 images, 3 that A lacks"]
    assert d["settings"]["images_dir"] == [cfg["images_dir"], str(more.resolve())]
    d = diff_runs(Run.open(run_more.path), a)
    assert d["images"]["text"] == "A has 3 images B lacks"


def test_cli_compare_says_which_run_is_better(small_run_template, other_run, tmp_path, capsys):
    ood = copy_subset(shared("imagenette_train100"), tmp_path / "ood", ["n03417042"], 4)
    assert main(["compare", str(small_run_template), str(other_run), "--ood", str(ood), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["ood_metrics"]) >= {"a", "b", "better"}
    assert main(["compare", str(small_run_template), str(other_run), "--ood", str(ood)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == d["verdict"]
    for name in ("a", "b"):
        m = d["ood_metrics"][name]
        assert f"  {name.upper()}: AUROC {m['auroc']:.4f}  FPR95 {m['fpr95']:.4f}" in out
    o = d["ood_shift"]
    assert f"{o['verdict_changes']} ({o['id_to_ood']} ID->OOD, {o['ood_to_id']} OOD->ID)" in out
    assert "images: same 40 images" in out


def test_cli_diff(small_run_template, other_run, capsys):
    assert main(["diff", str(small_run_template), str(other_run), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["settings"] == {"n_clusters": [4, 3], "seed": [0, 2], "holdout_fraction": [0.1, 0.3]}
    assert main(["diff", str(small_run_template), str(small_run_template)]) == 0
    out = capsys.readouterr().out
    assert "Y_pos: +0 -0" in out and "ARI 1.000" in out and "settings that differ: none" in out
    assert main(["diff", str(small_run_template), str(other_run), "--ood", "/no/such/folder"]) == 2
    assert "/no/such/folder" in capsys.readouterr().err


@pytest.mark.app
def test_compare_page(app_env, small_run, other_run):
    import shutil

    shutil.copytree(other_run, small_run.parent / "other")
    at = open_app(small_run.name, "pages/compare.py")
    no_exception(at)
    at.selectbox(key="compare_b").set_value("other").run()
    at.button(key="compare_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    d = diff_runs(Run.open(small_run), Run.open(small_run.parent / "other"))
    m = {x.label: x.value for x in at.metric}
    assert m["ARI"] == f"{d['clusters']['ari']:.3f}"
    assert m["Y_pos added"] == str(len(d["y_pos"]["added"]))
    assert m["Y_pos removed"] == str(len(d["y_pos"]["removed"]))
    shown = "\n".join(str(df.value) for df in at.dataframe)
    assert "n_clusters" in shown and "holdout_fraction" in shown
    assert "images_dir" not in shown  # same images, compared by content


@pytest.mark.app
def test_compare_page_says_which_run_is_better(app_env, small_run, other_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(other_run, small_run.parent / "other")
    ood = copy_subset(shared("imagenette_train100"), tmp_path / "ood", ["n03417042"], 4)
    at = open_app(small_run.name, "pages/compare.py")
    at.selectbox(key="compare_b").set_value("other").run()
    at.text_input(key="compare_ood").input(str(ood)).run()
    at.button(key="compare_go").click().run()
    no_exception(at)
    d = diff_runs(Run.open(small_run), Run.open(small_run.parent / "other"), ood_folder=ood)
    table = next(df.value for df in at.dataframe if "AUROC (higher is better)" in df.value.columns)
    from ui.widgets import fmt_float, fmt_pct

    assert list(table["run"]) == ["A", "B"]
    assert list(table["AUROC (higher is better)"]) == [fmt_float(d["ood_metrics"][k]["auroc"]) for k in "ab"]
    assert list(table["FPR95 (lower is better)"]) == [fmt_pct(d["ood_metrics"][k]["fpr95"]) for k in "ab"]
    o = d["ood_shift"]
    assert any(f"{o['id_to_ood']} ID → OOD (B catches them), {o['ood_to_id']} OOD → ID" in c.value for c in at.caption)
    shown_alerts = [x.value for x in [*at.success, *at.info]]
    assert any(v.replace("\\", "").startswith(d["verdict"].split(":")[0]) for v in shown_alerts), shown_alerts
