"""End-to-end tests of the engine on real images (offline encoder): mine, score, evaluate, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import logsumexp

from clustermine.method.encoders import load_encoder
from clustermine.core.errors import ClusterMineError, RunError
from clustermine.workflows.pipeline import MineConfig, evaluate, load_folder, mine, score_images
from clustermine.store import Run
from conftest import IMAGENETTE_ID, IMAGENETTE_OOD, ROOT, copy_subset, shared
from test_metrics import ref_fpr_at_recall
from clustermine.workflows.whatif import run_detector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imagenette_run(tmp_path_factory):
    """TEMI run on the 6 ID Imagenette classes of imagenette_train100 (600 images)."""
    base = tmp_path_factory.mktemp("imagenette")
    train = copy_subset(shared("imagenette_train100"), base / "train", IMAGENETTE_ID)
    run = mine(train, base / "run", MineConfig(clusterer="temi", seed=0))
    return run, base


def test_mine_imagenette_run_contents(imagenette_run):
    run, _ = imagenette_run
    run = Run.open(run.path)  # reloads from disk
    s = run.meta["summary"]
    assert s["n_images"] == 600 and s["n_skipped"] == 0
    assert s["n_holdout"] == 60 and s["n_mining"] == 540
    assert run.features().shape[0] == 600 and run.cluster_ids().shape == (600,)
    assert s["mean_purity"] > 0.6
    positives = set(run.positive_concepts())
    # The method must rediscover (most of) the true class names without being told them.
    expected = {"tench", "english springer", "english springer spaniel", "springer spaniel", "cassette player", "chain saw", "chainsaw", "church", "french horn"}
    assert len(positives & expected) >= 4, positives
    cfg = json.loads((run.path / "run.json").read_text())
    assert cfg["config"]["clusterer"] == "temi" and cfg["encoder"]["fingerprint_id"]
    import torch

    assert torch.__version__.startswith(cfg["versions"]["torch"])  # the installed version is recorded


def test_imagenette_near_and_far_ood(imagenette_run):
    run, base = imagenette_run
    val_id = copy_subset(shared("imagenette_val100"), base / "val_id", IMAGENETTE_ID)
    val_ood = copy_subset(shared("imagenette_val100"), base / "val_ood", IMAGENETTE_OOD)
    near = evaluate(run, val_id, val_ood)
    far = evaluate(run, val_id, shared("dtd10"))
    print("near", near, "far", far)
    assert near["n_id"] == 600 and near["n_ood"] == 400
    assert near["auroc"] >= 0.95
    assert far["auroc"] >= 0.90


def test_concept_edits_change_scores_at_once(imagenette_run, tmp_path):
    import shutil

    run, base = imagenette_run
    path = tmp_path / "edit-run"
    shutil.copytree(run.path, path)
    run = Run.open(path)
    img = sorted((base / "train" / IMAGENETTE_ID[0]).iterdir())[0]
    before = score_images(run, [img])[0]
    top = before["top_positive"][0][0]
    run.edit_concept("reject", top)
    assert top not in run.positive_concepts()
    after = score_images(run, [img])[0]
    assert after["log_score"] < before["log_score"]
    run.edit_concept("restore", top)
    np.testing.assert_allclose(score_images(run, [img])[0]["log_score"], before["log_score"], rtol=1e-9)
    assert [e["action"] for e in run.edits()] == ["reject", "restore"]


def _cli(*args, check=False):
    return subprocess.run([sys.executable, "-m", "clustermine", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)


def test_cli_score_evaluate_concepts_export(imagenette_run, tmp_path):
    import shutil

    run, base = imagenette_run
    path = tmp_path / "cli-run"
    shutil.copytree(run.path, path)
    img = sorted((base / "train" / IMAGENETTE_ID[1]).iterdir())[0]
    r = _cli("score", path, img, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # reference: log S by its definition in float64, on the image encoded here (float16 like the run)
    det = run_detector(Run.open(path))
    enc = load_encoder(det.encoder_spec)
    feat = enc.encode_images([str(img)]).features.astype(np.float16).astype(np.float64)
    logits = feat @ det.text_embeddings.astype(np.float64).T / det.tau
    want = float(logsumexp(logits[0, det.positive_idx]) - logsumexp(logits[0]))
    assert res[0]["path"] == str(img)
    assert res[0]["log_score"] == pytest.approx(want, abs=1e-4)  # float32 cosines / tau = 0.01
    assert res[0]["threshold"] == det.threshold
    assert res[0]["is_id"] is (res[0]["log_score"] >= det.threshold)
    r = _cli("concepts", path, "--json")
    concepts = json.loads(r.stdout)
    first = concepts[0]["text"]
    r = _cli("concepts", path, "--reject", first, "--add", "zebra", "--json")
    assert r.returncode == 0, r.stderr
    state = {c["text"]: c["status"] for c in json.loads(r.stdout)}
    assert state[first] == "rejected" and state["zebra"] == "added"
    copy_subset(shared("imagenette_val100"), base / "val_id", IMAGENETTE_ID)  # also when this test runs alone
    r = _cli("evaluate", path, "--id", base / "val_id", "--ood", shared("dtd10"), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    # reference: the edited run's detector on the same features (feature cache), metrics recomputed
    # by the pairwise AUROC count and the plain-Python FPR95 of test_metrics
    det = run_detector(Run.open(path))
    assert first not in det.positive_concepts and "zebra" in det.positive_concepts
    s_id = det.log_scores(load_folder(base / "val_id", enc)[1])
    s_ood = det.log_scores(load_folder(shared("dtd10"), enc)[1])
    assert (got["n_id"], got["n_ood"], got["n_positive"]) == (600, 600, len(det.positive_idx))
    pairs = s_id[:, None] - s_ood[None, :]
    assert got["auroc"] == pytest.approx(((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size, abs=1e-12)
    assert got["fpr95"] == pytest.approx(ref_fpr_at_recall(s_id, s_ood), abs=1e-12)
    r = _cli("export", path, "--out", tmp_path / "export")
    assert r.returncode == 0, r.stderr
    assert "zebra" in (tmp_path / "export" / "positive_concepts.txt").read_text().split("\n")


def test_cli_user_errors_are_one_line(tmp_path, small_images):
    cases = [("mine", tmp_path / "missing", "--out", tmp_path / "o"),
             ("mine", ROOT / "tests", "--out", tmp_path / "o1"),  # no images in there
             ("score", tmp_path / "not-a-run", __file__),
             ("mine", small_images, "--out", tmp_path / "o2", "--encoder", "bogus"),
             ("mine", small_images, "--out", tmp_path / "o3", "--corpus", tmp_path / "missing.txt")]
    for args in cases:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_import_and_cli_never_import_streamlit():
    code = ("import sys, clustermine, clustermine.workflows.pipeline, clustermine.store, clustermine.cli;"
            "from clustermine.cli import main;"
            "import contextlib, io;"
            "buf = io.StringIO();\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try: main(['--help'])\n"
            "    except SystemExit: pass\n"
            "print('streamlit' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_open_partial_or_corrupt_run_names_the_file(small_run):
    (small_run / "clusters.npy").unlink()
    with pytest.raises(RunError, match="clusters.npy"):
        Run.open(small_run)
    (small_run / "run.json").write_text("{not json")
    with pytest.raises(RunError, match="run.json"):
        Run.open(small_run)


def test_existing_finished_run_is_not_overwritten(small_run, small_images):
    with pytest.raises(ClusterMineError, match="already holds a finished run"):
        mine(small_images, small_run, MineConfig(n_clusters=4, clusterer="kmeans"))
