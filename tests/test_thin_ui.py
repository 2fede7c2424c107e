"""A thin UI (issue 19, point 5): run creation from uploads, the scoring-uploads store and the concept
status rules live in the engine, the web app and the CLI both go through them, and the Scoring
page's CSV goes through the engine's formula guard."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest

from clustermine.cli import main
from clustermine.core.config import MineConfig
from clustermine.core.errors import ClusterMineError, NoImagesError, RunError, SafetyError
from clustermine.store import Run, layout
from clustermine.store.concepts import CONCEPT_STATUSES, action_for
from clustermine.workflows.concept_edits import set_concept_status
from clustermine.workflows import scoring_uploads
from clustermine.workflows.new_run import RunSource, create_run_from_uploads, unique_run_dir
from clustermine.workflows.pipeline import resume, score_images


class Upload(io.BytesIO):
    """A browser upload as the engine sees it (Streamlit's UploadedFile: ``name``, ``size``, ``read``)."""

    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(data)
        self.name, self.size = name, len(data)


def _zip_of(members: dict[str, Path], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, f in members.items():
            zf.write(f, name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def _members(small_images: Path, per_class: int = 4) -> dict[str, Path]:
    return {f"{cls}/{f.name}": f for cls in ("n01440764", "n02979186")
            for f in sorted((small_images / cls).iterdir())[:per_class]}


CONFIG = MineConfig(n_clusters=2, clusterer="kmeans", seed=0)


# ------------------------------------------------------------------------------------ run creation from uploads
def test_create_run_from_uploaded_files_keeps_names_and_is_ready_for_the_worker(small_images, tmp_path):
    files = [Upload(f"my {f.name}", f.read_bytes()) for f in sorted((small_images / "n01440764").iterdir())[:3]]
    files.append(Upload("notes.txt", b"not an image"))
    run_dir = unique_run_dir(tmp_path / "runs", "my run")
    run = create_run_from_uploads(run_dir, CONFIG, RunSource("files", files=files))
    assert run.status == "created" and run_dir.name == "my-run"
    uploads = layout.uploads_dir(run_dir)
    # the config the worker's pipeline.mine resolves (resolved images_dir, τ concrete)
    assert run.config["images_dir"] == str(uploads.resolve()) and run.config["tau"] is not None
    manifest = json.loads(layout.uploads_manifest(run_dir).read_text())
    assert sorted(f["display_name"] for f in manifest["saved"]) == sorted(f.name for f in files)
    for f in manifest["saved"]:  # paths relative to uploads/, bytes as uploaded
        assert (uploads / f["path"]).is_file()
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".staging-")]
    # the next name is free again and distinct
    assert unique_run_dir(tmp_path / "runs", "my run").name == "my-run-2"


def test_create_run_refuses_bad_uploads_and_leaves_nothing(tmp_path):
    root = tmp_path / "runs"
    empty_zip = _zip_of({}, {"README.txt": b"hello"})
    with pytest.raises(NoImagesError, match="no image files found in your upload"):
        create_run_from_uploads(root / "a", CONFIG, RunSource("zip", zip_file=Upload("docs.zip", empty_zip)))
    fake = [Upload("fake.jpg", b"plain text, not a jpeg")]
    with pytest.raises(NoImagesError, match="fake.jpg") as err:
        create_run_from_uploads(root / "b", CONFIG, RunSource("files", files=fake))
    assert ".staging" not in str(err.value)  # 'your upload', never the hidden staging folder
    with pytest.raises(SafetyError, match="not-there.zip"):
        create_run_from_uploads(root / "c", CONFIG, RunSource("zip", zip_file=tmp_path / "not-there.zip"))
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(SafetyError, match="bad.zip"):
        create_run_from_uploads(root / "d", CONFIG, RunSource("zip", zip_file=tmp_path / "bad.zip"))
    with pytest.raises(SafetyError, match="outside"):
        create_run_from_uploads(root / "e", CONFIG, RunSource("folder", folder="/etc", roots=[tmp_path / "data"]))
    assert sorted(p.name for p in root.iterdir()) == []  # no run, no staging folder


def test_create_run_from_a_folder_reads_it_in_place_and_refuses_a_used_run_dir(small_images, tmp_path):
    run = create_run_from_uploads(tmp_path / "r", CONFIG, RunSource("folder", folder="n01440764",
                                                                   roots=[small_images]))
    assert run.config["images_dir"] == str((small_images / "n01440764").resolve())
    assert not layout.uploads_dir(run.path).exists() and not layout.uploads_manifest(run.path).exists()
    with pytest.raises(RunError, match="already exists"):
        create_run_from_uploads(tmp_path / "r", CONFIG, RunSource("folder", folder=small_images / "n01440764"))


def test_custom_corpus_upload_becomes_the_runs_corpus(small_images, tmp_path):
    files = [Upload(f.name, f.read_bytes()) for f in sorted((small_images / "n01440764").iterdir())[:2]]
    run = create_run_from_uploads(tmp_path / "r", CONFIG, RunSource("files", files=files),
                                  corpus_file=Upload("mine.txt", b"tench\ncassette player\n"))
    assert run.config["corpus"] == str((tmp_path / "r").resolve() / layout.USER_CORPUS)
    assert Path(run.config["corpus"]).read_text() == "tench\ncassette player\n"


@pytest.mark.slow
def test_cli_mine_zip_goes_through_the_same_engine_call_and_mines(small_images, tmp_path, capsys):
    members = _members(small_images)
    archive = tmp_path / "my images.zip"
    archive.write_bytes(_zip_of(members, {"README.txt": b"not an image"}))
    out = tmp_path / "zip-run"
    assert main(["mine", "--zip", str(archive), "--out", str(out), "--clusterer", "kmeans", "--clusters", "2",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    run = Run.open(out)
    assert run.status == "done" and f"images used: {len(members)}" in text
    saved = {f["path"]: f["display_name"] for f in json.loads(layout.uploads_manifest(out).read_text())["saved"]}
    assert sorted(saved.values()) == sorted([*members, "README.txt"])
    uploads = layout.uploads_dir(out).resolve()
    mined = {Path(p).resolve().relative_to(uploads).as_posix() for p in run.image_paths()}
    assert {saved[m] for m in mined} == set(members)
    # the same zip through the web app's door (an upload object) gives the same stored config
    other = create_run_from_uploads(tmp_path / "web-run", MineConfig(n_clusters=2, clusterer="kmeans"),
                                    RunSource("zip", zip_file=Upload("my images.zip", archive.read_bytes())))
    strip = {"images_dir"}
    assert {k: v for k, v in other.config.items() if k not in strip} == \
        {k: v for k, v in run.config.items() if k not in strip}
    assert resume(other.path).meta["summary"]["n_images"] == len(members)
    # bad input: one line naming the file
    assert main(["mine", "--zip", str(tmp_path / "none.zip"), "--out", str(tmp_path / "x")]) == 2
    assert "none.zip" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["mine", str(small_images), "--zip", str(archive), "--out", str(tmp_path / "y")]) == 2


# ------------------------------------------------------------------------------------ the scoring-uploads store
def test_scoring_store_add_list_names_remove_clear(small_run, small_images, tmp_path):
    run = Run.open(small_run)
    imgs = sorted((small_images / "n01440764").iterdir())[:2]
    rep = scoring_uploads.add_uploads(run, [Upload("../evil name.jpg", imgs[0].read_bytes()),
                                            Upload("empty.jpg", b"")])
    assert rep.n_saved == 1 and [f.display_name for f in rep.skipped] == ["empty.jpg"]
    stored = rep.saved[0].stored_name
    assert "/" not in stored and ".." not in stored
    assert scoring_uploads.display_names(run) == {stored: "../evil name.jpg"}
    assert scoring_uploads.uploads_dir(run) == layout.scoring_uploads_dir(small_run)
    rep2 = scoring_uploads.add_files(small_run, [imgs[1], tmp_path / "missing.jpg"])  # a path works as well as a Run
    assert rep2.n_saved == 1 and rep2.skipped[0].reason == "file not found"
    assert len(scoring_uploads.display_names(run)) == 2
    with pytest.raises(SafetyError, match="outside"):
        scoring_uploads.add_folder(run, "/etc", roots=[small_images])
    kept = scoring_uploads.add_folder(run, "n02979186", roots=[small_images])
    assert scoring_uploads.add_folder(run, small_images / "n02979186") == kept  # kept once
    assert scoring_uploads.folders(run) == [kept]
    assert scoring_uploads.sources(run) == [str(scoring_uploads.uploads_dir(run)), kept]
    # only a direct child of the uploads folder can be removed
    assert not scoring_uploads.remove_upload(run, "../../run.json") and layout.meta_path(small_run).is_file()
    assert scoring_uploads.remove_upload(run, stored)
    assert stored not in scoring_uploads.display_names(run) and not (scoring_uploads.uploads_dir(run) / stored).exists()
    assert not scoring_uploads.remove_upload(run, stored)
    assert scoring_uploads.remove_folder(run, kept) and scoring_uploads.folders(run) == []
    scoring_uploads.clear(run)
    assert scoring_uploads.sources(run) == [] and not layout.scoring_dir(small_run).exists()


def test_score_kept_equals_score_images_and_names_bad_uploads(small_run, small_images):
    from clustermine.method.encoders import load_encoder

    run = Run.open(small_run)
    imgs = [sorted((small_images / c).iterdir())[0] for c in ("n01440764", "n02102040")]
    scoring_uploads.add_uploads(run, [Upload(f"user {p.name}", p.read_bytes()) for p in imgs]
                                + [Upload("broken.jpg", b"plain text, not a jpeg")])
    rows, thr, rule, skipped = scoring_uploads.score_kept(run, 0.95, load_encoder(run.config["encoder"]))
    expected = {Path(e["path"]).name: e for e in score_images(run, imgs)}
    assert sorted(r["file"] for r in rows) == sorted(f"user {p.name}" for p in imgs)  # the user's names
    for r in rows:
        e = expected[r["file"].removeprefix("user ")]
        assert r["source"] == "upload" and r["log_score"] == pytest.approx(e["log_score"], abs=1e-3)
        assert r["is_id"] == (r["log_score"] >= thr) and r["top_positive"][0][0] == e["top_positive"][0][0]
    assert thr is not None and "TPR" in rule
    bad = scoring_uploads.bad_uploads(run, skipped, [r["path"] for r in rows])
    assert [b[0] for b in bad] == ["broken.jpg"]


def test_results_csv_guards_formulas_and_keeps_numbers():
    rows = [{"file": "=cmd|' /c calc'!a0.jpg", "source": "upload", "verdict": "OOD", "log score": -3.25,
             "top positive concepts": "-2+3 (0.31), tench (0.30)", "path": "/x/_cmd.jpg"},
            {"file": "@sum.jpg", "source": "+folder", "verdict": "ID", "log score": float("nan"),
             "top positive concepts": "", "path": "/x/sum.jpg"}]
    text = scoring_uploads.results_csv(rows, -1.5, "=rule")
    got = list(csv.DictReader(io.StringIO(text)))
    assert got[0]["file"] == "'=cmd|' /c calc'!a0.jpg" and got[1]["file"] == "'@sum.jpg"
    assert got[0]["top positive concepts"].startswith("'-2+3") and got[1]["source"] == "'+folder"
    assert float(got[0]["log score"]) == -3.25 and got[1]["log score"] == ""
    assert got[0]["threshold"] == "-1.5" and got[0]["threshold_rule"] == "'=rule"
    text_cols = ("file", "source", "verdict", "top positive concepts", "path", "threshold_rule")
    assert not [r[c] for r in got for c in text_cols if r[c][:1] in ("=", "+", "-", "@")]


def test_cli_score_keeps_in_the_same_store_and_scores_it_back(small_run, small_images, capsys):
    imgs = [sorted((small_images / "n01440764").iterdir())[0]]
    folder = small_images / "n02979186"
    assert main(["score", str(small_run), str(imgs[0]), str(folder), "--keep", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    run = Run.open(small_run)
    assert scoring_uploads.display_names(run) == {imgs[0].name: imgs[0].name}
    assert scoring_uploads.folders(run) == [str(folder.resolve())]
    assert main(["score", str(small_run), "--json"]) == 0  # no paths: what the run keeps (the Scoring page's set)
    kept = json.loads(capsys.readouterr().out)
    assert sorted(Path(r["path"]).name for r in kept) == sorted(Path(r["path"]).name for r in given)
    by_name = {Path(r["path"]).name: r["log_score"] for r in given}
    for r in kept:
        assert r["log_score"] == pytest.approx(by_name[Path(r["path"]).name], abs=1e-6)
    assert main(["score", str(small_run), "--clear-kept"]) == 0
    assert scoring_uploads.sources(run) == []
    assert main(["score", str(small_run)]) == 2
    assert "keeps none" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ concept status rules
def test_action_for_is_the_one_rule():
    assert CONCEPT_STATUSES == ("mined", "accepted", "rejected", "added")
    assert action_for("mined", "rejected") == "reject" and action_for("added", "accepted") == "accept"
    assert action_for("rejected", "mined") == "restore" and action_for("rejected", "added") == "restore"
    assert action_for("accepted", "accepted") is None
    with pytest.raises(ClusterMineError, match="unknown concept status 'maybe'"):
        action_for("mined", "maybe")
    from ui import concept_review

    assert concept_review.action_for is action_for and concept_review.STATUSES == list(CONCEPT_STATUSES)


def test_set_concept_status_through_the_engine_and_the_cli(small_run, capsys):
    run = Run.open(small_run)
    c = run.concepts()[0]
    now, action = set_concept_status(run, c.id, "rejected", user="t")
    assert action == "reject" and now.status == "rejected" and c.text not in run.positive_concepts()
    assert set_concept_status(run, c.text, "rejected")[1] is None  # nothing to do, nothing logged
    assert len(run.edits()) == 1
    assert main(["concepts", str(small_run), "--set", f"{c.text}=mined"]) == 0
    assert f"restore: {c.text} -> mined" in capsys.readouterr().out
    assert c.text in Run.open(small_run).positive_concepts()
    assert main(["concepts", str(small_run), "--set", f"{c.text}=maybe"]) == 2
    assert "unknown concept status" in capsys.readouterr().err
    assert main(["concepts", str(small_run), "--set", "no such concept=rejected"]) == 2
    assert "no such concept" in capsys.readouterr().err
