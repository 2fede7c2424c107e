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
from clustermine.compare import diff_runs
from clustermine.runs import Run
from test_app import app_env, no_exception, open_app  # noqa: F401,E402  (app_env is a fixture)

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
    from clustermine.pipeline import MineConfig, mine

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
    sa = a.detector(calibrate=False).log_scores(a.features()[hold])
    sb = b.detector(calibrate=False).log_scores(b.features()[hold])
    assert d["heldout_shift"]["n"] == int(hold.sum()) > 0
    assert abs(float(np.mean(sb - sa))) > 1e-3
    assert d["heldout_shift"]["mean"] == pytest.approx(float(np.mean(sb - sa)), abs=1e-5)
    from clustermine.encoders import load_encoder

    enc = load_encoder("offline")
    feats = enc.encode_images(sorted(str(p) for p in ood.rglob("*.JPEG"))).features
    feats = feats.astype(np.float16).astype(np.float32)  # as every run and sample stores them
    shift = b.detector().log_scores(feats) - a.detector().log_scores(feats)
    assert d["ood_shift"]["n"] == 4
    assert abs(float(shift.mean())) > 1e-3
    assert d["ood_shift"]["mean"] == pytest.approx(float(shift.mean()), abs=1e-5)


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
