"""Purity diagnostics against the class subfolders (issue 21, item 4): the engine function, the CLI verb
and the audit page's section, checked against an independent computation (scikit-learn / scipy on
labels read from the image files' folders, cluster ids read from the run's clusters.npy)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from clustermine.cli import main
from clustermine.core.config import MineConfig
from clustermine.store import Run
from clustermine.workflows.diagnostics import folder_label, purity_diagnostics
from clustermine.workflows.pipeline import mine

ROOT = Path(__file__).resolve().parents[1]


def _by_hand(run_dir: Path) -> tuple[list[str], np.ndarray]:
    """(class of each clustered image from its file's parent folder, its cluster id), excluded images out."""
    run = Run.open(run_dir)
    cids = np.load(run_dir / "clusters.npy").astype(np.int64)
    excluded = run.excluded_mask()
    keep = (cids >= 0) & ~excluded
    labels = [Path(p).parent.name for p in run.image_paths()]
    return [labels[i] for i in np.flatnonzero(keep)], cids[keep]


def test_scores_and_confusion_table_match_an_independent_computation(small_run):
    res = purity_diagnostics(Run.open(small_run))
    y, c = _by_hand(small_run)
    assert res is not None
    assert res["n_images"] == len(y) and res["n_unlabelled"] == 0
    assert res["classes"] == sorted(set(y)) and len(res["classes"]) == 4
    assert res["nmi"] == pytest.approx(normalized_mutual_info_score(y, c), abs=1e-12)
    assert res["ari"] == pytest.approx(adjusted_rand_score(y, c), abs=1e-12)
    table = contingency_matrix(c, y)  # rows: sorted cluster ids, columns: sorted classes
    rows, cols = linear_sum_assignment(-table)
    assert len(rows) == table.shape[0]  # C = 4 = classes: one-to-one matching, no extra clusters
    assert res["acc"] == pytest.approx(table[rows, cols].sum() / len(y), abs=1e-12)
    clusters = sorted(set(c.tolist()))
    assert [r["cluster"] for r in res["clusters"]] == clusters
    for r, counts in zip(res["clusters"], table):
        expected = {res["classes"][j]: int(n) for j, n in enumerate(counts) if n}
        assert r["counts"] == expected
        assert r["size"] == counts.sum() and r["n_classes"] == len(expected)
        assert r["counts"][r["majority"]] == counts.max()
        assert r["share"] == pytest.approx(counts.max() / counts.sum())


def test_excluded_images_are_left_out(small_run):
    run = Run.open(small_run)
    members = np.flatnonzero(run.cluster_ids() >= 0)
    before = purity_diagnostics(run)
    run.set_excluded([int(r) for r in members[:5]])
    after = purity_diagnostics(Run.open(small_run))
    y, c = _by_hand(small_run)
    assert after["n_images"] == before["n_images"] - 5 == len(y)
    assert after["nmi"] == pytest.approx(normalized_mutual_info_score(y, c), abs=1e-12)
    assert sum(r["size"] for r in after["clusters"]) == len(y)


def test_folder_label_rule():
    assert folder_label("tench/a.jpg") == "tench"
    assert folder_label("tench/sub/a.jpg") == "tench"
    assert folder_label("a.jpg") is None and folder_label("./a.jpg") is None and folder_label("") is None
    assert folder_label("/data/set/tench/a.jpg", ("/data/set",)) == "tench"
    assert folder_label("/data/set/a.jpg", ("/data/set",)) is None
    assert folder_label("/elsewhere/tench/a.jpg", ("/data/set",)) is None  # outside the root: no label


@pytest.fixture(scope="module")
def flat_run(small_images, tmp_path_factory) -> Path:
    """A run on the same photos copied into one flat folder (no class subfolders)."""
    flat = tmp_path_factory.mktemp("flat")
    for f in sorted(small_images.rglob("*.*")):
        shutil.copy2(f, flat / f"{f.parent.name}_{f.name}")
    out = tmp_path_factory.mktemp("runs") / "flat-run"
    mine(flat, out, MineConfig(n_clusters=4, clusterer="kmeans", seed=0))
    return out


def test_no_labels_gives_none_flat_folder_and_single_class(flat_run, small_images, tmp_path):
    assert purity_diagnostics(Run.open(flat_run)) is None
    one = tmp_path / "one"
    shutil.copytree(next(p for p in sorted(small_images.iterdir()) if p.is_dir()), one / "only")
    out = tmp_path / "one-run"
    mine(one, out, MineConfig(n_clusters=2, clusterer="kmeans", seed=0, holdout_fraction=0.0))
    assert purity_diagnostics(Run.open(out)) is None


def test_cli_purity_json_and_text(small_run, flat_run, capsys):
    assert main(["purity", str(small_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(purity_diagnostics(Run.open(small_run))))
    assert main(["purity", str(small_run)]) == 0
    out = capsys.readouterr().out
    res = purity_diagnostics(Run.open(small_run))
    assert f"ACC {res['acc']:.4f}  NMI {res['nmi']:.4f}  ARI {res['ari']:.4f}" in out
    assert main(["purity", str(flat_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) is None
    assert main(["purity", str(flat_run)]) == 0
    assert "no folder labels" in capsys.readouterr().out


@pytest.mark.app
def test_audit_page_section_with_labels_and_absent_without(small_run, flat_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    def audit(run_dir: Path):
        monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(run_dir.parent))
        monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
        at.query_params["run"] = run_dir.name
        at.run()
        at.switch_page("pages/audit.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    res = purity_diagnostics(Run.open(small_run))
    at = audit(small_run)
    assert [e.label for e in at.expander].count("Against the folder labels") == 1
    shown = {m.label: m.value for m in at.metric}
    assert shown["clustering ACC"] == f"{res['acc']:.3f}" and shown["NMI"] == f"{res['nmi']:.3f}"
    table = at.dataframe[0].value
    assert sorted(table["cluster"].tolist()) == [r["cluster"] for r in res["clusters"]]
    at = audit(flat_run)
    assert "Against the folder labels" not in [e.label for e in at.expander]
    assert "clustering ACC" not in {m.label for m in at.metric}
