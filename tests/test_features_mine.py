"""Bring your own embeddings (issue 10 item 1): ``clustermine mine --features FILE --paths PATHS``
mines the same concepts as encoding the folder, opens in the app, scores like the folder's run, and
refuses bad files with a message naming them (leaving no run folder behind)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clustermine.cli import main
from clustermine.store import layout
from clustermine.store import Run


@pytest.fixture
def exported(small_run_template, tmp_path) -> tuple[Path, Path, Run]:
    """The small run's features as a float16 .npy and its images' paths, relative to their folder."""
    run = Run.open(small_run_template)
    paths = [Path(p) for p in run.image_paths()]
    root = Path(os.path.commonpath([str(p) for p in paths]))
    feats = tmp_path / "emb.npy"
    np.save(feats, np.asarray(run.feature_matrix(), dtype=np.float16))
    listing = tmp_path / "list" / "paths.txt"
    listing.parent.mkdir()
    listing.write_text("".join(f"{p.relative_to(root).as_posix()}\n" for p in paths), encoding="utf-8")
    return feats, listing, run, root


def test_mine_features_gives_the_folder_runs_concepts_and_opens_in_the_app(exported, tmp_path, capsys, monkeypatch):
    feats, listing, folder_run, root = exported
    out = tmp_path / "runs" / "byo"
    cfg = folder_run.config
    rc = main(["mine", "--features", str(feats), "--paths", str(listing), "--image-root", str(root), "--out", str(out),
               "--clusterer", "kmeans", "--clusters", str(cfg["n_clusters"]), "--seed", str(cfg["seed"]),
               "--quiet"])
    report = capsys.readouterr()
    assert rc == 0, report.err
    run = Run.open(out)
    assert run.config["features_file"] == str(feats.resolve()) and "images_dir" not in run.config
    a = np.asarray(run.feature_matrix(), dtype=np.float32)
    b = np.asarray(folder_run.feature_matrix(), dtype=np.float32)
    assert (np.sum(a * b, axis=1) >= 0.999).all()
    assert run.image_paths() == folder_run.image_paths()  # relative paths resolved against --image-root
    np.testing.assert_array_equal(run.cluster_ids(), folder_run.cluster_ids())
    np.testing.assert_array_equal(run.votes()[0], folder_run.votes()[0])
    assert run.positive_concepts() == folder_run.positive_concepts()
    assert run.meta["summary"]["features_import"]["n"] == a.shape[0]

    # the vote's pass cached every image's corpus LSE, equal to computing it afresh
    from clustermine.method.scoring import corpus_logsumexp
    from clustermine.workflows.whatif import corpus_lse, lse_ready

    rows = np.arange(run.n_images())
    assert lse_ready(run, rows)
    np.testing.assert_allclose(corpus_lse(run, rows), corpus_logsumexp(a, run.text_embeddings(), run.tau), atol=1e-4)

    # scoring a file gives the folder run's score
    image = folder_run.image_paths()[3]
    assert main(["score", str(out), image, "--json"]) == 0
    mine_score = json.loads(capsys.readouterr().out)
    assert main(["score", str(folder_run.path), image, "--json"]) == 0
    folder_score = json.loads(capsys.readouterr().out)
    assert mine_score[0]["log_score"] == pytest.approx(folder_score[0]["log_score"], abs=1e-4)

    # the app opens the imported run: audit and scoring pages
    from tests.test_app import no_exception, open_app

    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(out.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    for page in ("pages/audit.py", "pages/scoring.py", "pages/clusters.py"):
        no_exception(open_app(run.run_id, page))



def test_a_features_run_takes_stability_remine_and_resume_like_a_folder_run(exported, tmp_path, capsys):
    """The run.json of a features run holds features_file / paths_file / image_root: the verbs that rebuild the
    run's clusterer from it (stability, re-mine with re-clustering, resume) read them as run facts, not as
    unknown settings."""
    feats, listing, folder_run, root = exported
    out = tmp_path / "byo"
    assert main([*_mine_args(feats, listing, out), "--image-root", str(root), "--clusterer", "kmeans",
                 "--clusters", "4"]) == 0
    capsys.readouterr()
    assert main(["stability", str(out), "--seeds", "3", "--json"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert np.load(out / layout.SEED_LABELS).shape == (3, Run.open(out).n_images())
    first = Run.open(out).image_paths()[0]
    assert main(["exclude", str(out), first]) == 0
    capsys.readouterr()
    assert main(["remine", str(out), "--recluster", "--json"]) == 0, capsys.readouterr().err
    changes = json.loads(capsys.readouterr().out)
    assert changes["mode"] == "recluster" and changes["n_excluded"] == 1

    # an interrupted features run resumes from its run.json (the stored settings, the stored files)
    unfinished = tmp_path / "byo-unfinished"
    assert main([*_mine_args(feats, listing, unfinished), "--clusterer", "kmeans", "--clusters", "4"]) == 0
    before = Run.open(unfinished).positive_concepts()
    Run.open(unfinished).update_meta(status="running")
    assert main(["resume", str(unfinished), "--quiet"]) == 0, capsys.readouterr().err
    assert Run.open(unfinished).status == "done" and Run.open(unfinished).positive_concepts() == before

def _mine_args(feats, listing, out):
    return ["mine", "--features", str(feats), "--paths", str(listing), "--out", str(out), "--quiet"]


@pytest.mark.parametrize("problem, needle", [
    ("dim", "384-d text tower"), ("nan", "NaN or infinite"), ("count", "paths"), ("zero", "zero"),
])
def test_bad_feature_files_are_refused_by_name_before_a_run_exists(tmp_path, capsys, problem, needle):
    rng = np.random.default_rng(0)
    n, d = 50, 512 if problem == "dim" else 384
    x = rng.normal(size=(n, d)).astype(np.float32)
    if problem == "nan":
        x[7, 3] = np.nan
    if problem == "zero":
        x[9] = 0
    feats = tmp_path / "bad.npy"
    np.save(feats, x)
    listing = tmp_path / "paths.txt"
    listing.write_text("".join(f"img{i}.jpg\n" for i in range(n - (problem == "count"))), encoding="utf-8")
    out = tmp_path / "never"
    assert main(_mine_args(feats, listing, out)) == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and needle in err, err
    assert not out.exists()


def test_mine_needs_a_folder_or_features_not_both(tmp_path, capsys):
    assert main(["mine", "--out", str(tmp_path / "r")]) == 2
    assert "give one of an images folder, --zip FILE or --features FILE" in capsys.readouterr().err
    assert main(["mine", str(tmp_path), "--paths", "p.txt", "--out", str(tmp_path / "r")]) == 2
    assert "--paths and --image-root go with --features" in capsys.readouterr().err
