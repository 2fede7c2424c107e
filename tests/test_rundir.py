"""The run directory package (clustermine.store): one home for every run-directory name, the
on-disk format 1 still readable, and the JSON-only run listing the app uses."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from clustermine.core.errors import RunError
from clustermine.store import layout
from clustermine.store import Run, list_runs
from clustermine.workflows.whatif import run_detector

ROOT = Path(__file__).resolve().parents[1]
TAU = 0.05


# ------------------------------------------------------------------------------------ one home for the names
def _layout_names() -> set[str]:
    tree = ast.parse((ROOT / "clustermine" / "store" / "layout.py").read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
                and not node.targets[0].id.endswith("_LOCK")):
            names.add(node.value.value)
    return names


RUN_DIR_NAMES = _layout_names()
# Plain words that are also statuses, page names and labels: a literal only counts when it builds a
# path (``x / "uploads"``) or defines a module constant. Names with a dot or underscore always count.
GENERIC = {n for n in RUN_DIR_NAMES if "." not in n and "_" not in n}
# Other formats that happen to reuse a run file's name (not the run directory).
OTHER_FORMATS = {
    ("clustermine/method/scoring.py", "text_embeddings.npy"): "the detector bundle written by Detector.save",
    ("clustermine/workflows/export.py", "concepts.json"): "the export folder of export_run",
    ("clustermine/workflows/export.py", "detector"): "the export folder of export_run",
    ("ui/exports.py", "detector"): "a temporary folder zipped for download",
    ("pages/export.py", "concepts.json"): "a download button label",
    ("clustermine/workflows/export.py", "images.parquet"): "the export folder of export_run (the image table with scores)",
    ("pages/export.py", "images.parquet"): "a download button label",
    # jobs.py belongs to another change in progress (issue 9, mining settings); its only remaining
    # literal is in an error message of mine_command. Drop this line once that change lands.
}


def _source_files() -> list[Path]:
    out = [ROOT / "app.py"]
    for folder in ("clustermine", "ui", "pages"):
        out += sorted((ROOT / folder).rglob("*.py"))
    return [p for p in out if p != ROOT / "clustermine" / "store" / "layout.py"]


def _run_dir_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    path_ctx: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            path_ctx.add(id(node.right))
    for node in tree.body:  # module constants: NAME = "..."
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if node_value := getattr(node, "value", None):
            if any(isinstance(t, ast.Name) and t.id.lstrip("_").isupper() for t in targets):
                path_ctx.add(id(node_value))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or " " in node.value:
            continue
        for part in node.value.strip("/").split("/"):
            if part in RUN_DIR_NAMES and (part not in GENERIC or id(node) in path_ctx):
                found.append((node.lineno, part))
    return sorted(found)


def test_the_scanner_finds_run_dir_literals(tmp_path):
    """The structural test below can fail: a path join, a module constant and a bare file name are found."""
    sample = tmp_path / "sample.py"
    sample.write_text('P = "projections"\nq = run.path / "uploads"\nr = open("run.json")\n'
                      's = "uploads"  # a word, not a path\n', encoding="utf-8")
    assert _run_dir_literals(sample) == [(1, "projections"), (2, "uploads"), (3, "run.json")]
    assert {"run.json", "job.json", "job.log", "uploads.json", "scoring", "ood_sample", "corpus_lse.npy",
            "projections", "added"} <= RUN_DIR_NAMES


def test_run_directory_names_are_spelled_only_in_layout():
    offenders = []
    for path in _source_files():
        rel = path.relative_to(ROOT).as_posix()
        offenders += [f"{rel}:{line}: {name!r}" for line, name in _run_dir_literals(path)
                      if (rel, name) not in OTHER_FORMATS]
    assert not offenders, ("run-directory names outside clustermine/store/layout.py (use its constants):\n"
                           + "\n".join(offenders))


# ------------------------------------------------------------------------------------ format 1 by hand
CORPUS = ["tench", "church", "dog", "truck", "radio"]
USER_CONCEPT = "purple elephant"


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _cid(text: str) -> str:
    return "c-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def write_format1_run(run_dir: Path, *, status: str = "done") -> dict:
    """A finished format-1 run written file by file, as the current format specifies (names and
    contents spelled here, independently of clustermine.store). Returns the arrays written."""
    rng = np.random.default_rng(7)
    run_dir.mkdir(parents=True)
    feats = _unit(rng.normal(size=(4, 8))).astype(np.float16)
    text = _unit(rng.normal(size=(len(CORPUS), 8))).astype(np.float16)
    added = _unit(rng.normal(size=(1, 8))).astype(np.float16)[0]
    cids = np.array([0, 1, -1, -1], dtype=np.int32)
    meta = {"format": 1, "run_id": run_dir.name, "created": "2026-01-02T03:04:05.000000+00:00",
            "updated": "2026-01-02T03:09:05.000000+00:00", "status": status,
            "config": {"images_dir": "/data/imgs", "encoder": "offline", "tau": TAU, "template": "a photo of a {}."},
            "versions": {"python": "3.12.0"}, "summary": {"n_images": 4, "n_clusters": 2},
            "encoder": {"spec": "offline", "fingerprint": {"kind": "offline"}, "fingerprint_id": "abc123"},
            "error": None, "stages_done": ["scan", "encode", "corpus", "cluster", "vote", "mine"]}
    (run_dir / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    records = [{"path": f"img{i}.jpg", "abs_path": f"/data/imgs/img{i}.jpg", "size": 100, "sha1": "0" * 40,
                "status": "ok", "reason": None, "row": i, "split": "mine" if i < 2 else "holdout"} for i in range(4)]
    records.insert(2, {"path": "broken.jpg", "abs_path": "/data/imgs/broken.jpg", "size": 0, "sha1": None,
                       "status": "skipped", "reason": "empty file (0 bytes)", "row": None, "split": None})
    (run_dir / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    np.save(run_dir / "features.npy", feats)
    np.save(run_dir / "clusters.npy", cids)
    np.savez(run_dir / "votes.npz", top_idx=np.array([[0, 2], [1, 3], [0, 1], [2, 0]], dtype=np.int32),
             top_sim=np.full((4, 2), 0.3, dtype=np.float16))
    (run_dir / "clusters.json").write_text(json.dumps([
        {"cluster": 0, "size": 1, "histogram": [[0, 1, 0.3]], "winner": 0, "purity": 1.0, "entropy": 0.0,
         "runner_up": None, "margin": 1.0, "mean_top1_similarity": 0.3},
        {"cluster": 1, "size": 1, "histogram": [[1, 1, 0.3]], "winner": 1, "purity": 1.0, "entropy": 0.0,
         "runner_up": None, "margin": 1.0, "mean_top1_similarity": 0.3}]), encoding="utf-8")
    (run_dir / "corpus.txt").write_text("".join(c + "\n" for c in CORPUS), encoding="utf-8")
    np.save(run_dir / "text_embeddings.npy", text)
    (run_dir / "mined.json").write_text(json.dumps([
        {"index": 0, "text": "tench", "clusters": [0], "votes": 1, "members": 1, "purity": 1.0, "examples": [0]},
        {"index": 1, "text": "church", "clusters": [1], "votes": 1, "members": 1, "purity": 1.0, "examples": [1]}]),
        encoding="utf-8")
    edits = [("reject", "tench"), ("add", "truck"), ("add", USER_CONCEPT), ("reject", "truck"), ("restore", "truck")]
    (run_dir / "edits.jsonl").write_text("".join(
        json.dumps({"seq": i + 1, "ts": f"2026-01-02T04:00:0{i}+00:00", "user": "ann", "action": a,
                    "concept_id": _cid(t), "text": t}) + "\n" for i, (a, t) in enumerate(edits)), encoding="utf-8")
    (run_dir / "added").mkdir()
    np.save(run_dir / "added" / f"{_cid(USER_CONCEPT)}.npy", added)
    (run_dir / "progress.json").write_text(json.dumps({"stage": "done", "done": 1, "total": 1}), encoding="utf-8")
    (run_dir / "uploads.json").write_text(json.dumps({"saved": [], "skipped": []}), encoding="utf-8")
    return {"features": feats.astype(np.float32), "text": text.astype(np.float32),
            "added": added.astype(np.float32), "cluster_ids": cids}


def test_a_format1_run_written_by_hand_opens_unchanged(tmp_path):
    run_dir = tmp_path / "old-run"
    arrays = write_format1_run(run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    run = Run.open(run_dir)
    assert (run.run_id, run.status, run.tau) == ("old-run", "done", TAU)
    assert run.image_paths() == [f"/data/imgs/img{i}.jpg" for i in range(4)]
    assert len(run.image_records()) == 5
    np.testing.assert_array_equal(run.features(), arrays["features"])
    np.testing.assert_array_equal(run.holdout_mask(), [False, False, True, True])
    assert run.vocabulary_base() == CORPUS
    assert [s.winner for s in run.cluster_stats()] == [0, 1]
    assert run.progress() == {"stage": "done", "done": 1, "total": 1}

    # The edit log replays to: tench rejected, church mined, truck (a corpus concept the user added)
    # added again after a reject and a restore, the user concept outside the corpus added.
    table = {c.text: (c.status, c.source, c.corpus_index) for c in run.concepts()}
    assert table == {"tench": ("rejected", "mined", 0), "church": ("mined", "mined", 1),
                     "truck": ("added", "user", 3), USER_CONCEPT: ("added", "user", None)}
    assert run.positive_concepts() == ["church", "truck", USER_CONCEPT]
    assert [c.id for c in run.concepts()] == [_cid(t) for t in ("tench", "church", "truck", USER_CONCEPT)]
    vocab, extra, pos = run.vocabulary()
    assert vocab == CORPUS + [USER_CONCEPT] and pos.tolist() == [1, 3, 5]
    np.testing.assert_array_equal(extra, arrays["added"][None])

    # Scores: log S = LSE over Y_pos − LSE over V, computed here in float64.
    det = run_detector(run, calibrate=False)
    full = np.concatenate([arrays["text"], arrays["added"][None]]).astype(np.float64)
    z = arrays["features"].astype(np.float64) @ full.T / TAU
    expected = logsumexp(z[:, [1, 3, 5]], axis=1) - logsumexp(z, axis=1)
    np.testing.assert_allclose(det.log_scores(arrays["features"]), expected, rtol=0, atol=1e-4)
    assert det.encoder_fingerprint_id == "abc123" and det.template == "a photo of a {}."

    # Threshold (issue 12, clustermine.method.calibration): lowest of the 4 calibration scores (k = 1 for 50 % TPR
    # at 90 % confidence). Held-out rows 2, 3 use Y_pos; mining rows are cross-fitted, one fold each: row 0's
    # fold still elects church (1), row 1's fold elects only the rejected tench, leaving the user's concepts.
    cal = run_detector(run, tpr=0.5)
    cross = expected.copy()
    cross[1] = logsumexp(z[1, [3, 5]]) - logsumexp(z[1])
    assert cal.threshold_rule.startswith("order statistic k = 1 of 4 calibration ID images (2 mining images "
                                         "cross-fitted over 4 folds + 2 held-out)")
    assert cal.threshold == pytest.approx(cross.min(), abs=1e-4)

    # Reading changed nothing that was there.
    assert {n: b for n, b in ((p.name, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file())
            if n in before} == before


def test_edits_append_to_a_format1_log(tmp_path):
    run_dir = tmp_path / "old-run"
    write_format1_run(run_dir)
    run = Run.open(run_dir)
    run.edit_concept("restore", "tench", user="bob")
    lines = (run_dir / "edits.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["seq"] == 6
    assert json.loads(lines[-1])["action"] == "restore" and json.loads(lines[-1])["concept_id"] == _cid("tench")
    on_disk = json.loads((run_dir / "concepts.json").read_text(encoding="utf-8"))
    assert {c["text"]: c["status"] for c in on_disk}["tench"] == "mined"
    assert Run.open(run_dir).positive_concepts() == ["tench", "church", "truck", USER_CONCEPT]


@pytest.mark.parametrize("name", list(layout.REQUIRED_FILES[1:]))
def test_each_required_file_is_checked_by_name(tmp_path, name):
    run_dir = tmp_path / "r"
    write_format1_run(run_dir)
    # the image table of a run written before images.parquet is images.jsonl
    (layout.images_table_path(run_dir) if name == layout.IMAGES else run_dir / name).unlink()
    with pytest.raises(RunError, match=str(run_dir / name).replace(".", r"\.")):
        Run.open(run_dir)


def test_an_older_runs_jsonl_image_table_reads_and_migrates_to_parquet(tmp_path):
    run_dir = tmp_path / "old"
    write_format1_run(run_dir)
    assert layout.images_table_path(run_dir).name == layout.IMAGES_LEGACY
    run = Run.open(run_dir)
    legacy = [json.loads(ln) for ln in (run_dir / layout.IMAGES_LEGACY).read_text(encoding="utf-8").splitlines()]
    records = run.image_records()
    assert [{k: r.get(k) for k in ("path", "status", "row", "split")} for r in records] == \
        [{k: r.get(k) for k in ("path", "status", "row", "split")} for r in legacy]
    ok = sorted((r for r in legacy if r.get("row") is not None), key=lambda r: r["row"])
    assert run.image_paths() == [r["abs_path"] for r in ok] and run.n_images() == len(ok)
    run.write_images(run.image_table())  # migrate
    assert (run_dir / layout.IMAGES).is_file() and not (run_dir / layout.IMAGES_LEGACY).exists()
    again = Run.open(run_dir)
    assert again.image_records() == records and again.image_paths() == run.image_paths()


def test_features_are_memory_mapped_and_written_block_by_block(tmp_path):
    run_dir = tmp_path / "r"
    write_format1_run(run_dir)
    run = Run.open(run_dir)
    feats = run.features()
    mm = run.feature_matrix()
    assert isinstance(mm, np.memmap) and mm.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(mm, dtype=np.float32), feats)
    with pytest.raises(ValueError):
        with run.feature_writer(*feats.shape) as out:
            out[:1] = feats[:1]
            raise ValueError("crash mid-write")
    np.testing.assert_array_equal(Run.open(run_dir).features(), feats)  # the old file is untouched
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    run.write_features(feats[::-1].copy())
    np.testing.assert_array_equal(Run.open(run_dir).features(), feats[::-1])


def test_optional_files_are_not_required(tmp_path):
    run_dir = tmp_path / "r"
    write_format1_run(run_dir)
    for name in ("edits.jsonl", "progress.json", "uploads.json"):
        (run_dir / name).unlink()
    run = Run.open(run_dir)
    assert run.progress() is None and run.positive_concepts() == ["tench", "church"]


def test_an_unfinished_or_future_format_run_is_refused_with_its_file(tmp_path):
    write_format1_run(tmp_path / "running", status="running")
    with pytest.raises(RunError, match="not finished"):
        Run.open(tmp_path / "running")
    assert Run.open(tmp_path / "running", require_complete=False).status == "running"
    write_format1_run(tmp_path / "future")
    meta = json.loads((tmp_path / "future" / "run.json").read_text())
    (tmp_path / "future" / "run.json").write_text(json.dumps({**meta, "format": 2}))
    with pytest.raises(RunError, match="unsupported run format 2"):
        Run.open(tmp_path / "future")


# ------------------------------------------------------------------------------------ listing
def test_list_runs_reads_run_json_only_newest_first(tmp_path):
    write_format1_run(tmp_path / "old-run")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "run.json").write_text(json.dumps({"format": 1, "status": "running", "created": "2026-05-01T00:00:00"}))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "a-file.txt").write_text("x")
    os.symlink(tmp_path / "old-run", tmp_path / "link-to-run")
    got = list_runs(tmp_path)
    assert [(r["run_id"], r["status"]) for r in got] == [("newer", "running"), ("old-run", "done"), ("bad", "corrupt")]
    assert got[1]["summary"] == {"n_images": 4, "n_clusters": 2} and got[1]["config"]["tau"] == TAU
    assert got[1]["path"] == str(tmp_path / "old-run") and got[2]["config"] == {}
    assert list_runs(tmp_path / "missing") == []


def test_listing_and_layout_import_no_numeric_stack():
    code = ("import sys; from clustermine.store.listing import list_runs; from clustermine.store import layout; "
            "heavy = [m for m in ('numpy', 'scipy', 'sklearn', 'filelock', 'clustermine.store.store', 'clustermine.store.run') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def test_ui_lists_runs_with_the_engine_listing():
    import ui.cache

    assert ui.cache.list_runs_light is list_runs  # one implementation, not a copy
