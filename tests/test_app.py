"""AppTest tests of every page of ClusterMine Studio against a copy of the small prebuilt run, plus
the worker-job lifecycle (launch, cancel halfway, resume) behind the Data page."""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.app

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
if str(ROOT) not in sys.path:  # the app's ``ui`` package lives next to app.py
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def app_env(small_run, monkeypatch):
    """Point the app at a runs root holding a private copy of the small run."""
    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(small_run.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    return small_run


def open_app(run_id: str | None = None, page: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.subheader]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ config and start-up
def test_streamlit_config_is_a_local_headless_lab_tool():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["headless"] is True
    assert cfg["server"]["address"] == "localhost"
    assert isinstance(cfg["server"]["maxUploadSize"], int) and cfg["server"]["maxUploadSize"] >= 200
    assert cfg["browser"]["gatherUsageStats"] is False
    assert cfg["client"]["toolbarMode"] == "minimal"
    assert cfg["client"]["showErrorDetails"] == "none"  # no traceback ever reaches the browser


def test_app_frame_imports_stay_light():
    """app.py's imports pull in neither torch, umap nor scikit-learn (start-up time)."""
    import ast
    import subprocess

    tree = ast.parse((ROOT / "app.py").read_text())
    mods = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)] + \
           [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods if m != "__future__") + \
           "print(' '.join(sorted(m for m in ('torch', 'umap', 'sklearn', 'numba') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------------------ frame / runs page
def test_runs_page_lists_the_run_and_sidebar_shows_status(app_env):
    at = open_app(app_env.name)
    no_exception(at)
    assert at.title[0].value == "Runs"
    table = at.dataframe[0].value
    assert app_env.name in set(table["run"])
    assert table.loc[table["run"] == app_env.name, "status"].item() == "done"
    side = "\n".join(m.value for m in at.sidebar.markdown)
    assert "check_circle" in side and "device: cpu" in side  # status and device badges
    assert at.sidebar.selectbox[0].value == app_env.name


def test_query_param_restores_the_run_on_every_page(app_env):
    for page in ("pages/clusters.py", "pages/audit.py", "pages/concepts.py", "pages/export.py"):
        at = open_app(app_env.name, page)
        no_exception(at)
        assert at.session_state["run_id"] == app_env.name
        assert at.query_params.get("run") == app_env.name
        assert "No run selected" not in texts(at)


def test_sidebar_selection_writes_the_query_param(app_env):
    at = open_app(None)
    assert at.sidebar.selectbox[0].value == "__new__"
    at.sidebar.selectbox[0].set_value(app_env.name).run()
    no_exception(at)
    assert at.session_state["run_id"] == app_env.name
    assert at.query_params.get("run") == app_env.name


def test_no_run_gives_a_helpful_empty_state(app_env):
    at = open_app(None, "pages/audit.py")
    no_exception(at)
    assert "No run selected" in texts(at)
    assert not at.error


@pytest.mark.parametrize("rid, needle", [("../etc", "not a valid run id"), ("nope", "not found")])
def test_invalid_run_shows_an_error_not_an_exception(app_env, rid, needle):
    at = open_app(rid, "pages/concepts.py")
    no_exception(at)
    assert any(needle in e.value.replace("\\", "") for e in at.error)


@pytest.mark.parametrize("victim", ["features.npy", "clusters.json", "mined.json"])
def test_run_with_a_missing_file_names_it(app_env, victim):
    (app_env / victim).unlink()
    at = open_app(app_env.name, "pages/audit.py")
    no_exception(at)
    assert any(victim.replace(".", "\\.") in e.value or victim in e.value for e in at.error)


def test_corrupt_run_json_shows_an_error(app_env):
    (app_env / "run.json").write_text("{ not json")
    at = open_app(app_env.name, "pages/clusters.py")
    no_exception(at)
    assert any("corrupt" in e.value for e in at.error)


# ------------------------------------------------------------------------------------ data page
def test_data_page_shows_a_finished_run(app_env):
    from clustermine.runs import Run

    at = open_app(app_env.name, "pages/data.py")
    no_exception(at)
    summary = Run.open(app_env).meta["summary"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["clusters"] == str(summary["n_clusters"])
    assert metrics["images used"] == f"{summary['n_images']:,}"
    assert any("Mining finished" in s.value for s in at.success)


def test_data_page_new_run_form(app_env):
    at = open_app(None, "pages/data.py")
    no_exception(at)
    launch = at.button(key="launch")
    assert launch.disabled  # nothing chosen yet
    assert [s.value for s in at.subheader][:2] == ["1 · ID images", "2 · Model and mining"]
    assert at.radio(key="enc_kind").value == "offline"
    assert "cpu" in texts(at)  # resolved device is shown


def test_data_page_refuses_a_zip_bomb_without_leaving_a_run(app_env, tmp_path):
    from clustermine.runs import list_runs

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\0" * (32 << 20))
    at = open_app(None, "pages/data.py")
    at.segmented_control(key="src_kind").set_value("zip").run()
    at.file_uploader(key="up_zip").set_value(("bomb.zip", buf.getvalue(), "application/zip")).run()
    at.button(key="launch").click().run()
    no_exception(at)
    assert any("zip bomb" in e.value for e in at.error)
    assert [r["run_id"] for r in list_runs(app_env.parent)] == [app_env.name]
    assert not [p for p in app_env.parent.iterdir() if p.name.startswith(".staging")]


def test_data_page_refuses_a_folder_outside_the_roots(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(tmp_path / "allowed"))
    (tmp_path / "allowed").mkdir()
    at = open_app(None, "pages/data.py")
    at.segmented_control(key="src_kind").set_value("folder").run()
    at.text_input(key="src_path").input("/etc").run()
    no_exception(at)
    assert any("outside the allowed" in e.value for e in at.error)
    assert at.button(key="launch").disabled


def _wait_status(run_dir: Path, statuses: tuple[str, ...], timeout: float) -> str:
    from clustermine.runs import Run

    end = time.monotonic() + timeout
    status = ""
    while time.monotonic() < end:
        status = Run.open(run_dir, require_complete=False).status
        if status in statuses:
            return status
        time.sleep(0.5)
    return status


@pytest.mark.slow
def test_launch_from_the_data_page_cancel_halfway_and_resume(app_env, small_images, tmp_path):
    """Upload real images (+ a text file) through the page, launch, cancel while it runs, check the
    run is consistent and says so, resume, and finish; skipped files are listed with reasons."""
    from clustermine import jobs
    from clustermine.runs import Run

    files = sorted(small_images.rglob("*.JPEG"))[:12]
    payload = [(f.name, f.read_bytes(), "image/jpeg") for f in files] + [("notes.md", b"# hi", "text/markdown"),
                                                                         ("../../evil.jpg", b"", "image/jpeg")]
    at = open_app(None, "pages/data.py")
    at.file_uploader(key="up_files").set_value(payload).run()
    at.checkbox(key="c_auto").uncheck().run()
    at.number_input(key="c_value").set_value(2).run()
    at.radio(key="clusterer").set_value("kmeans").run()
    at.text_input(key="run_name").input("ui run").run()
    at.button(key="launch").click().run()
    no_exception(at)
    run_dir = app_env.parent / "ui-run"
    assert at.session_state["run_id"] == "ui-run" and at.query_params.get("run") == "ui-run"
    assert (run_dir / "job.json").is_file() and len(list((run_dir / "uploads").iterdir())) == 13
    manifest = json.loads((run_dir / "uploads.json").read_text())
    assert [s["display_name"] for s in manifest["skipped"]] == ["../../evil.jpg"]
    assert not (app_env.parent.parent / "evil.jpg").exists()

    # cancel halfway: as soon as the worker reports progress
    assert _wait_status(run_dir, ("running",), 120) == "running"
    at.run()
    at.button(key="cancel").click().run()
    no_exception(at)
    status = _wait_status(run_dir, ("cancelled", "done", "failed"), 180)
    print(f"status after cancel: {status}")
    run = Run.open(run_dir, require_complete=False)
    if status == "cancelled":  # (a very fast machine may finish first)
        assert "resume" in (run.meta.get("error") or "")
        from polling import wait_for

        assert wait_for(lambda: not jobs.job_state(run_dir)["alive"], 60)  # the worker exits
        for name in ("run.json", "progress.json"):  # what exists is whole (atomic writes)
            json.loads((run_dir / name).read_text())
        at.run()
        no_exception(at)
        assert any("resume" in w.value.lower() for w in at.warning)
        at.button(key="resume").click().run()
        no_exception(at)
        status = _wait_status(run_dir, ("done", "failed", "cancelled"), 600)
    assert status == "done", jobs.log_tail(run_dir)
    run = Run.open(run_dir)
    assert run.meta["summary"]["n_clusters"] == 2 and len(run.image_paths()) == 12
    from ui.rundata import image_names

    assert sorted(image_names(run)) == sorted(f.name for f in files)  # the user's names, not the stored ones
    at.run()
    no_exception(at)
    skipped = at.dataframe[-1].value
    assert "notes.md" in set(skipped["file"]) and "../../evil.jpg" in set(skipped["file"])


def _has_key(at, key: str) -> bool:
    try:
        at.button(key=key)
        return True
    except KeyError:
        return False


def test_dead_worker_is_reported_as_failed(app_env, tmp_path):
    from clustermine import jobs
    from clustermine.runs import Run
    from clustermine.storage import atomic_write_json

    run_dir = app_env.parent / "dead-run"
    run = Run.create(run_dir, {**Run.open(app_env).config})
    run.set_status("running")
    atomic_write_json(run_dir / "job.json", {"pid": 2**22 + 12345, "start_token": "x"})
    at = open_app("dead-run", "pages/data.py")
    no_exception(at)
    assert Run.open(run_dir, require_complete=False).status == "failed"
    assert any("stopped unexpectedly" in e.value for e in at.error)
    assert _has_key(at, "resume")
    assert not jobs.job_state(run_dir)["alive"]


def test_a_run_never_started_offers_to_start(app_env):
    from clustermine.runs import Run

    Run.create(app_env.parent / "idle-run", {**Run.open(app_env).config})
    at = open_app("idle-run", "pages/data.py")
    no_exception(at)
    assert any("not been started" in i.value for i in at.info)
    assert _has_key(at, "resume")


# ------------------------------------------------------------------------------------ clusters page
def test_clusters_page_map_carries_row_ids(app_env):
    from clustermine.runs import Run

    run = Run.open(app_env)
    at = open_app(app_env.name, "pages/clusters.py")
    no_exception(at)
    charts = at.get("plotly_chart")
    assert charts, "no plotly chart"
    fig = json.loads(charts[0].proto.spec)
    traces = fig["data"]
    assert {t["type"] for t in traces} == {"scattergl"}
    rows = sorted(int(cd[0]) for t in traces for cd in t["customdata"])
    assert rows == list(range(len(run.image_paths())))
    # one trace per cluster, plus held-out images when there are any
    assert len(traces) == len(run.cluster_stats()) + int(run.holdout_mask().any())
    assert (app_env / "projections").is_dir() and list((app_env / "projections").glob("pca-*.npy"))


def test_clusters_page_colour_by_purity(app_env):
    at = open_app(app_env.name, "pages/clusters.py")
    at.selectbox(key="map_color").set_value("purity").run()
    no_exception(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(fig["data"]) == 1 and fig["data"][0]["marker"]["showscale"]


# ------------------------------------------------------------------------------------ audit page
def test_audit_page_has_one_card_per_cluster_lowest_purity_first(app_env):
    from clustermine.runs import Run

    stats = Run.open(app_env).cluster_stats()
    at = open_app(app_env.name, "pages/audit.py")
    no_exception(at)
    cards = [s.value for s in at.subheader if s.value.startswith("Cluster ")]
    assert len(cards) == len(stats)
    order = [int(c.split()[1]) for c in cards]
    expected = [s.cluster for s in sorted(stats, key=lambda s: (s.purity, s.cluster))]
    assert order == expected
    assert len(at.get("plotly_chart")) == sum(1 for s in stats if s.histogram)  # one vote histogram per card
    assert len(at.image) >= sum(min(s.size, 6) for s in stats)  # typical members as thumbnails


def test_audit_page_other_sort_key(app_env):
    at = open_app(app_env.name, "pages/audit.py")
    at.selectbox(key="audit_sort").set_value("cluster id").run()
    no_exception(at)
    cards = [s.value for s in at.subheader if s.value.startswith("Cluster ")]
    assert [int(c.split()[1]) for c in cards] == sorted(int(c.split()[1]) for c in cards)


# ------------------------------------------------------------------------------------ concepts page
def test_concepts_reject_button_changes_positive_concepts(app_env):
    from clustermine.runs import Run

    run = Run.open(app_env)
    before = run.positive_concepts()
    victim = run.concepts()[0]
    at = open_app(app_env.name, "pages/concepts.py")
    no_exception(at)
    table = at.dataframe[0].value
    assert list(table.index) == [c.id for c in run.concepts()]  # keyed by the stable concept id
    at.selectbox(key="concept_pick").set_value(victim.id).run()
    at.button(key="btn_reject").click().run()
    no_exception(at)
    after = Run.open(app_env).positive_concepts()
    assert victim.text in before and victim.text not in after
    assert at.dataframe[0].value.loc[victim.id, "status"] == "rejected"  # table rebuilt from the run
    assert Run.open(app_env).edits()[-1]["action"] == "reject"
    # restore brings it back
    at.selectbox(key="concept_pick").set_value(victim.id).run()
    at.button(key="btn_restore").click().run()
    assert Run.open(app_env).positive_concepts() == before


def test_concepts_what_if_panel_reacts_to_a_rejection(app_env):
    from clustermine.runs import Run

    run = Run.open(app_env)
    at = open_app(app_env.name, "pages/concepts.py")
    no_exception(at)
    m = {x.label: x.value for x in at.metric}
    assert m["Y_pos now"] == str(len(run.positive_concepts()))
    far_before = m["ID false alarms, now"]
    for c in run.concepts()[:-1]:  # reject all but one concept
        run.edit_concept("reject", c.id)
    at.run()
    no_exception(at)
    m2 = {x.label: x.value for x in at.metric}
    assert m2["Y_pos now"] == "1"
    assert m2["ID false alarms, mined"] == m["ID false alarms, mined"]
    assert m2["ID false alarms, now"] != far_before or m2["median score shift"] != m["median score shift"]


def test_concept_table_edit_maps_to_actions():
    from ui.concept_review import action_for

    assert action_for("mined", "rejected") == "reject"
    assert action_for("rejected", "mined") == "restore"
    assert action_for("mined", "accepted") == "accept"
    assert action_for("added", "added") is None
    assert action_for("rejected", "added") == "restore"


def test_concepts_table_edit_callback_applies_status_changes(app_env):
    """The data_editor's on_change callback turns edited status cells into logged edits."""
    from streamlit.testing.v1 import AppTest

    from clustermine.runs import Run

    def script(run_path: str):
        import streamlit as st

        from clustermine.runs import Run
        from ui.concept_review import _on_table_edit, rundata

        df = rundata.concept_table(Run.open(run_path))
        st.session_state["fake_editor"] = {"edited_rows": {0: {"status": "rejected"}, 1: {"status": "accepted"}}}
        _on_table_edit(run_path, "fake_editor", list(df.index), list(df["status"]))
        st.write("applied")

    run = Run.open(app_env)
    first, second = run.concepts()[0], run.concepts()[1]
    at = AppTest.from_function(script, args=(str(app_env),), default_timeout=60).run()
    no_exception(at)
    after = {c.id: c.status for c in Run.open(app_env).concepts()}
    assert after[first.id] == "rejected" and after[second.id] == "accepted"
    assert [e["action"] for e in Run.open(app_env).edits()] == ["reject", "accept"]


def test_concepts_add_a_corpus_concept(app_env):
    from clustermine.runs import Run

    run = Run.open(app_env)
    word = next(w for w in run.vocabulary_base() if w not in run.positive_concepts() and w.isalpha())
    at = open_app(app_env.name, "pages/concepts.py")
    at.text_input(key="add_text").input(word)
    at.get("form_submit_button")[0].click().run() if at.get("form_submit_button") else at.button[-1].click().run()
    no_exception(at)
    assert word in Run.open(app_env).positive_concepts()


# ------------------------------------------------------------------------------------ scoring page
def _score_upload(at, images: list[Path]):
    at.file_uploader(key="score_files").set_value([(p.name, p.read_bytes(), "image/jpeg") for p in images])
    at.button[[b.label for b in at.button].index("Score these images")].click().run()
    return at


def test_scoring_page_scores_uploads_and_follows_edits(app_env, small_images):
    from clustermine.runs import Run

    imgs = sorted(small_images.rglob("*.JPEG"))[:2]
    at = open_app(app_env.name, "pages/scoring.py")
    no_exception(at)
    assert "No test image yet" in texts(at)
    _score_upload(at, imgs)
    no_exception(at)
    df = at.dataframe[0].value
    assert len(df) == 2 and set(df["verdict"]) <= {"ID", "OOD"}
    assert {"log score", "top positive concepts", "top negative concepts"} <= set(df.columns)
    assert any("TPR on" in m.value for m in at.markdown)  # the threshold rule is shown
    assert at.get("download_button")
    before = df["log score"].to_numpy()
    run = Run.open(app_env)
    top = df["top positive concepts"].iloc[0].split(" (")[0]
    run.edit_concept("reject", top)
    at.run()  # the uploaded images are kept in the run: no need to upload again
    no_exception(at)
    after = at.dataframe[0].value["log score"].to_numpy()
    assert not np.allclose(before, after)


def test_scoring_page_slider_moves_the_threshold(app_env):
    at = open_app(app_env.name, "pages/scoring.py")
    md = [m.value for m in at.markdown if "Threshold" in m.value]
    at.slider(key="tpr").set_value(0.8).run()
    no_exception(at)
    md2 = [m.value for m in at.markdown if "Threshold" in m.value]
    assert md and md2 and md != md2 and "80%" in md2[0].replace("\\", "")


# ------------------------------------------------------------------------------------ export page
def test_export_page_downloads(app_env, tmp_path):
    at = open_app(app_env.name, "pages/export.py")
    no_exception(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["concepts.txt", "concepts.csv", "concepts.json", "Detector bundle (.zip)",
                      "Run summary (.json)"]
    assert at.get("json")  # the summary is shown


def test_export_detector_bundle_loads(app_env, tmp_path):
    """The zip offered by the Export page unpacks to a detector that loads and scores like the run."""
    from clustermine.runs import Run
    from clustermine.scoring import Detector
    from ui.exports import bundle_zip

    run = Run.open(app_env)
    run.edit_concept("reject", run.concepts()[0].id)
    with zipfile.ZipFile(io.BytesIO(bundle_zip(run))) as zf:
        assert sorted(zf.namelist()) == ["detector/detector.json", "detector/positive_concepts.txt",
                                         "detector/text_embeddings.npy"]
        zf.extractall(tmp_path)
    det = Detector.load(tmp_path / "detector")
    assert set(det.positive_concepts) == set(run.positive_concepts())
    assert det.threshold is not None and "TPR" in det.threshold_rule
    f = run.features()[:3]
    np.testing.assert_allclose(det.log_scores(f), run.detector().log_scores(f), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------ projection helpers
def test_pca_is_deterministic_and_cached(tmp_path):
    from clustermine import projection

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 16)).astype(np.float32)
    a = projection.pca_2d(feats)
    b = projection.pca_2d(feats[::-1].copy())[::-1]
    assert a.shape == (300, 2) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-4)  # row order does not change the map
    assert a[:, 0].var() >= a[:, 1].var()
    rows, coords = projection.projection(tmp_path, "pca", feats)
    assert (rows == np.arange(300)).all() and np.allclose(coords, a, atol=1e-5)
    files = list((tmp_path / "projections").glob("pca-*.npy"))
    assert len(files) == 1
    hit = projection.cached_projection(tmp_path, "pca", feats)
    assert hit is not None and np.array_equal(hit[1], coords)
    assert projection.cached_projection(tmp_path, "pca", feats + 1) is None  # other features, other key
    assert not list((tmp_path / "projections").glob(".*.tmp"))  # atomic writes leave no temp file


def test_projection_downsamples_big_sets(tmp_path):
    from clustermine import projection

    feats = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
    rows, coords = projection.projection(tmp_path, "pca", feats, max_points=100)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100 and coords.shape == (100, 2)
    assert np.array_equal(rows, projection.sample_rows(500, 100))  # the same sample every time


def test_tiny_inputs_do_not_break_the_map():
    from clustermine import projection

    assert projection.pca_2d(np.zeros((1, 4))).shape == (1, 2)
    assert projection.umap_2d(np.ones((3, 4), dtype=np.float32)).shape == (3, 2)  # falls back to PCA


@pytest.mark.slow
def test_umap_map_is_cached(tmp_path):
    from clustermine import projection

    feats = np.random.default_rng(2).normal(size=(80, 8)).astype(np.float32)
    rows, coords = projection.projection(tmp_path, "umap", feats, seed=0)
    assert coords.shape == (80, 2) and np.isfinite(coords).all()
    assert projection.cached_projection(tmp_path, "umap", feats, seed=0) is not None


# ------------------------------------------------------------------------------------ server folders in pages
def test_scoring_page_scores_a_folder_inside_the_roots(app_env, small_images, monkeypatch):
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(small_images))
    at = open_app(app_env.name, "pages/scoring.py")
    at.radio(key="score_mode").set_value("folder").run()
    at.text_input(key="score_folder").input("n02979186").run()
    at.button[[b.label for b in at.button].index("Add folder")].click().run()
    no_exception(at)
    df = at.dataframe[0].value
    assert len(df) == 10 and set(df["source"]) == {str((small_images / "n02979186").resolve())}
    # a folder outside the roots is refused with a message, nothing added
    at.text_input(key="score_folder").input("/etc").run()
    at.button[[b.label for b in at.button].index("Add folder")].click().run()
    no_exception(at)
    assert any("outside the allowed" in e.value for e in at.error)
    assert len(at.dataframe[0].value) == 10


def test_concepts_what_if_with_an_ood_sample(app_env, small_images, tmp_path, monkeypatch):
    from conftest import shared

    ood = tmp_path / "data" / "ood"
    ood.mkdir(parents=True)
    for f in sorted(shared("imagenette_val100", "n03417042").iterdir())[:6]:  # garbage trucks: never ID here
        shutil.copy2(f, ood / f.name)
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(tmp_path / "data"))
    at = open_app(app_env.name, "pages/concepts.py")
    at.radio(key="ood_mode").set_value("folder").run()
    at.text_input(key="ood_path").input("ood").run()
    at.button[[b.label for b in at.button].index("Use this folder")].click().run()
    no_exception(at)
    m = {x.label: x.value for x in at.metric}
    assert {"AUROC, mined", "AUROC, now", "FPR95, mined", "FPR95, now"} <= set(m)
    assert 0.0 <= float(m["AUROC, mined"]) <= 1.0
    assert m["AUROC, mined"] == m["AUROC, now"]  # no edit yet: before == after


@pytest.mark.slow
def test_clusters_page_umap_on_demand(app_env):
    at = open_app(app_env.name, "pages/clusters.py")
    at.segmented_control(key="map_method").set_value("umap").run()
    no_exception(at)
    assert any("UMAP is computed on demand" in i.value for i in at.info)
    at.button[[b.label for b in at.button].index("Compute UMAP")].click().run(timeout=600)
    no_exception(at)
    assert list((app_env / "projections").glob("umap-*.npy"))
    assert not any("UMAP is computed on demand" in i.value for i in at.info)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sum(len(t["customdata"]) for t in fig["data"]) == len(np.load(app_env / "clusters.npy"))
