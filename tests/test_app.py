"""AppTest tests of every page of ClusterMine Studio against a copy of the small prebuilt run, plus
the worker-job lifecycle behind the Data page (uploads, a server folder and a zip mined to the end;
cancel mid-encode, resume). Expected values come from the engine's public API (``score_images``,
``Detector``) or from the run's raw arrays, never from the UI code under test."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import worker_hooks
from conftest import copy_subset, shared
from clustermine.workflows.whatif import run_detector

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


def open_app(run_id: str | None = None, page: str | None = None, *, secrets: dict | None = None,
             user: dict | None = None, reviewer: str | None = None):
    """The app through AppTest on ``?run=run_id`` (then ``page``); ``secrets`` (e.g. an ``[auth]``
    section), ``user`` (``st.user``: a login) and ``?reviewer=`` as a visitor would bring them."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    if secrets:
        at.secrets.update(secrets)
    if user is not None:
        at.user = user
    if run_id:
        at.query_params["run"] = run_id
    if reviewer:
        at.query_params["reviewer"] = reviewer
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def no_exception(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [s.value for s in at.subheader]
    return "\n".join(parts)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def edit_data_editor(at, editor, edited_rows: dict[int, dict]):
    """Send one cell edit of ``st.data_editor`` the way the browser does (a JSON widget state), so the
    editor's deserializer and ``on_change`` callback run for real. AppTest has no API for it."""
    wid = editor.proto.id
    original = at._tree.get_widget_states

    def with_edit():
        ws = original()
        w = ws.widgets.add()
        w.id = wid
        w.string_value = json.dumps({"edited_rows": {str(k): v for k, v in edited_rows.items()},
                                     "added_rows": [], "deleted_rows": []})
        return ws

    at._tree.get_widget_states = with_edit
    return at.run()


def heldout_features(run) -> np.ndarray:
    held = run.holdout_mask()
    return run.features()[held] if held.any() else run.features()


def auroc_by_hand(id_scores, ood_scores) -> float:
    """P(ID score > OOD score) + 0.5 P(tie), over all pairs (ID = positive class)."""
    a, b = np.asarray(id_scores, float)[:, None], np.asarray(ood_scores, float)[None, :]
    return float(((a > b) + 0.5 * (a == b)).mean())


# ------------------------------------------------------------------------------------ config and start-up
def test_streamlit_config_is_a_local_headless_lab_tool():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["headless"] is True
    assert cfg["server"]["address"] == "127.0.0.1"
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
        # the frame ran around the page: the sidebar's run selector and the page drawn once
        assert at.sidebar.selectbox[0].value == app_env.name
        assert len(at.title) == 1


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
    from clustermine.store import Run

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


def unescape(markdown: str) -> str:
    """The text of an escaped Markdown string (``md_escape`` puts a backslash before specials)."""
    return markdown.replace("\\", "")


def _zip_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return buf.getvalue()


def test_launch_waits_for_a_usable_image_and_an_empty_zip_says_why(app_env, small_images, tmp_path, monkeypatch):
    """Launch stays disabled until the chosen source holds at least one image file, and a zip with
    nothing usable names itself and what it holds; a real photo enables Launch."""
    photo = sorted((small_images / "n01440764").iterdir())[0]
    at = open_app(None, "pages/data.py")
    assert at.button(key="launch").disabled
    at.segmented_control(key="src_kind").set_value("zip").run()
    assert at.button(key="launch").disabled
    at.file_uploader(key="up_zip").set_value(("holiday.zip", _zip_bytes([]), "application/zip")).run()
    no_exception(at)
    assert at.button(key="launch").disabled
    assert [unescape(w.value) for w in at.warning] == ["holiday.zip is empty: it holds no files"]
    at.file_uploader(key="up_zip").set_value(("holiday.zip", _zip_bytes([("a/", b""), ("a/b/", b"")]),
                                              "application/zip")).run()
    assert at.button(key="launch").disabled
    assert "holiday.zip holds only folders (2, e.g. a/; a/b/): it holds no files" in unescape(at.warning[0].value)
    at.file_uploader(key="up_zip").set_value(("holiday.zip", _zip_bytes([("a/", b""), ("a/" + photo.name,
                                                                         photo.read_bytes())]),
                                              "application/zip")).run()
    no_exception(at)
    assert not at.button(key="launch").disabled and not at.warning

    at.segmented_control(key="src_kind").set_value("files").run()  # text files only, then a photo
    at.file_uploader(key="up_files").set_value([("notes.txt", b"hello", "text/plain")]).run()
    assert at.button(key="launch").disabled and "notes.txt: not an image file type" in unescape(at.warning[0].value)
    at.file_uploader(key="up_files").set_value([("notes.txt", b"hello", "text/plain"),
                                                (photo.name, photo.read_bytes(), "image/jpeg")]).run()
    assert not at.button(key="launch").disabled

    (tmp_path / "data" / "docs").mkdir(parents=True)  # a server folder without an image, then with one
    (tmp_path / "data" / "docs" / "readme.md").write_text("#")
    shutil.copy2(photo, tmp_path / "data" / photo.name)
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(tmp_path / "data"))
    at.segmented_control(key="src_kind").set_value("folder").run()
    at.text_input(key="src_path").input("docs").run()
    assert at.button(key="launch").disabled and "holds no image file" in at.warning[0].value
    at.text_input(key="src_path").input(str(tmp_path / "data")).run()
    no_exception(at)
    assert not at.button(key="launch").disabled


def test_launching_a_zip_of_empty_images_names_each_file(app_env):
    from clustermine.store import list_runs

    at = open_app(None, "pages/data.py")
    at.segmented_control(key="src_kind").set_value("zip").run()
    at.file_uploader(key="up_zip").set_value(("blank.zip", _zip_bytes([("a.jpg", b""), ("b.png", b"")]),
                                              "application/zip")).run()
    at.button(key="launch").click().run()  # image names, so Launch is on; the bytes are empty
    no_exception(at)
    assert any("blank.zip: none of its 2 file(s) could be used (a.jpg: empty file (0 bytes); "
               "b.png: empty file (0 bytes))" in unescape(e.value) for e in at.error)
    assert [r["run_id"] for r in list_runs(app_env.parent)] == [app_env.name]


def test_data_page_refuses_a_zip_bomb_without_leaving_a_run(app_env, tmp_path):
    from clustermine.store import list_runs

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
    from clustermine.store import Run

    end = time.monotonic() + timeout
    status = ""
    while time.monotonic() < end:
        status = Run.open(run_dir, require_complete=False).status
        if status in statuses:
            return status
        time.sleep(0.5)
    return status


def _mining_options(at, name: str, n_clusters: int = 2):
    """Fast settings: C fixed, k-means."""
    at.checkbox(key="c_auto").uncheck().run()
    at.number_input(key="c_value").set_value(n_clusters).run()
    at.radio(key="clusterer").set_value("kmeans").run()
    at.text_input(key="run_name").input(name).run()
    return at


def _mine_to_the_end(at, run_dir: Path) -> None:
    from clustermine.workflows import jobs

    status = _wait_status(run_dir, ("done", "failed", "cancelled"), 900)
    assert status == "done", jobs.log_tail(run_dir)
    at.run()
    no_exception(at)
    assert any("Mining finished" in s.value for s in at.success)


@pytest.mark.slow
def test_data_page_mines_a_server_folder(app_env, small_images, tmp_path, monkeypatch):
    from clustermine.store import Run

    data = tmp_path / "data"
    copy_subset(small_images, data / "id", ["n01440764", "n03028079"], 6)  # 12: enough for C = 2
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(data))
    at = open_app(None, "pages/data.py")
    at.segmented_control(key="src_kind").set_value("folder").run()
    at.text_input(key="src_path").input("id").run()
    _mining_options(at, "folder run")
    at.button(key="launch").click().run()
    no_exception(at)
    run_dir = app_env.parent / "folder-run"
    assert at.session_state["run_id"] == "folder-run"
    _mine_to_the_end(at, run_dir)
    run = Run.open(run_dir)
    assert run.config["images_dir"] == str((data / "id").resolve())
    assert sorted(run.image_paths()) == sorted(str(f.resolve()) for f in (data / "id").rglob("*.JPEG"))
    assert run.meta["summary"]["n_clusters"] == 2 and not (run_dir / "uploads").exists()  # read in place
    assert metrics(at)["images used"] == "12"


@pytest.mark.slow
def test_data_page_mines_a_zip(app_env, small_images):
    from clustermine.store import Run

    members = {f"{cls}/{f.name}": f for cls in ("n01440764", "n02979186")
               for f in sorted((small_images / cls).iterdir())[:6]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, f in members.items():
            zf.write(f, name)
        zf.writestr("README.txt", "not an image")
    at = open_app(None, "pages/data.py")
    at.segmented_control(key="src_kind").set_value("zip").run()
    at.file_uploader(key="up_zip").set_value(("my images.zip", buf.getvalue(), "application/zip")).run()
    _mining_options(at, "zip run")
    at.button(key="launch").click().run()
    no_exception(at)
    run_dir = app_env.parent / "zip-run"
    _mine_to_the_end(at, run_dir)
    run = Run.open(run_dir)
    uploads = (run_dir / "uploads").resolve()
    saved = {f["path"]: f["display_name"] for f in json.loads((run_dir / "uploads.json").read_text())["saved"]}
    assert sorted(saved.values()) == sorted([*members, "README.txt"])  # the user's names, kept for display
    mined = {Path(p).resolve().relative_to(uploads).as_posix() for p in run.image_paths()}
    assert mined == {k for k, v in saved.items() if v != "README.txt"}  # stored names are sanitised
    for stored in mined:  # the bytes mined are the zip's
        assert (uploads / stored).read_bytes() == members[saved[stored]].read_bytes()
    assert run.meta["summary"]["n_clusters"] == 2 and metrics(at)["images used"] == "12"
    skipped = at.dataframe[-1].value
    assert skipped.loc[skipped["file"] == "README.txt", "reason"].tolist() == ["not an image file type"]


@pytest.mark.slow
def test_launch_from_the_data_page_cancel_mid_encode_and_resume(app_env, small_images, tmp_path, monkeypatch):
    """Upload real images (+ a text file) through the page, launch, cancel while the encode stage is
    half done, check the run says so and kept the finished chunk, resume: only the rest is encoded,
    and the run finishes. Skipped files are listed with reasons."""
    import uuid

    from clustermine.workflows import jobs
    from clustermine.store import Run

    # the first worker holds after its first chunk of 8 until the cancel: it always lands mid-encode
    worker_hooks.install(tmp_path / "hook", monkeypatch, "hold_after_first_chunk")
    run_dir = app_env.parent / "ui-run"
    log, held = tmp_path / "encoded.jsonl", tmp_path / "held"
    monkeypatch.setenv("CM_TEST_ENCODE_LOG", str(log))
    monkeypatch.setenv("CM_TEST_HELD_MARK", str(held))
    monkeypatch.setenv("CM_TEST_RUN_DIR", str(run_dir))
    monkeypatch.setenv("CM_TEST_CHUNK", "8")

    # 16 images never seen by the shared feature cache (a unique tail after the JPEG data)
    tag = uuid.uuid4().hex.encode()
    files = sorted(small_images.rglob("*.JPEG"))[:16]
    payload = [(f.name, f.read_bytes() + b"\0" + tag, "image/jpeg") for f in files] + [
        ("notes.md", b"# hi", "text/markdown"), ("../../evil.jpg", b"", "image/jpeg")]
    at = open_app(None, "pages/data.py")
    at.file_uploader(key="up_files").set_value(payload).run()
    _mining_options(at, "ui run")
    at.button(key="launch").click().run()
    no_exception(at)
    assert at.session_state["run_id"] == "ui-run" and at.query_params.get("run") == "ui-run"
    assert (run_dir / "job.json").is_file() and len(list((run_dir / "uploads").iterdir())) == 17
    manifest = json.loads((run_dir / "uploads.json").read_text())
    assert [s["display_name"] for s in manifest["skipped"]] == ["../../evil.jpg"]
    assert not (app_env.parent.parent / "evil.jpg").exists()

    # the worker holds after its first chunk of 8: cancel now, mid-encode
    end = time.monotonic() + 600
    while not held.exists() and time.monotonic() < end and jobs.job_state(run_dir)["alive"]:
        time.sleep(0.2)
    assert held.exists(), jobs.log_tail(run_dir)
    at.run()
    no_exception(at)
    at.button(key="cancel").click().run()
    no_exception(at)
    assert _wait_status(run_dir, ("cancelled", "done", "failed"), 180) == "cancelled", jobs.log_tail(run_dir)
    run = Run.open(run_dir, require_complete=False)
    assert "resume" in (run.meta.get("error") or "")
    assert wait_until(lambda: not jobs.job_state(run_dir)["alive"], 60)  # the worker exits
    prog = json.loads((run_dir / "progress.json").read_text())  # whole files (atomic writes)
    json.loads((run_dir / "run.json").read_text())
    assert (prog["stage"], prog["done"], prog["total"], prog["status"]) == ("encode", 8, 16, "cancelled")
    assert not (run_dir / "features.npy").exists() and not (run_dir / "clusters.npy").exists()
    at.run()
    no_exception(at)
    assert any("resume" in w.value.lower() for w in at.warning)
    bars = [b.proto.text for b in at.get("progress")]
    assert any("8 / 16" in t and "stopped here (cancelled)" in t for t in bars), bars  # encode shown unfinished

    at.button(key="resume").click().run()
    no_exception(at)
    status = _wait_status(run_dir, ("done", "failed", "cancelled"), 900)
    assert status == "done", jobs.log_tail(run_dir)
    chunks = [json.loads(line) for line in log.read_text().splitlines()]
    first, resumed = chunks[0], chunks[1:]
    assert len(first["keys"]) == 8 and resumed and all(c["pid"] != first["pid"] for c in resumed)
    again = [k for c in resumed for k in c["keys"]]
    assert len(again) == 8 and not set(again) & set(first["keys"])  # the cached chunk was not re-encoded

    run = Run.open(run_dir)
    assert run.meta["summary"]["n_clusters"] == 2 and len(run.image_paths()) == 16
    from ui.rundata import image_names

    assert sorted(image_names(run)) == sorted(f.name for f in files)  # the user's names, not the stored ones
    at.run()
    no_exception(at)
    skipped = at.dataframe[-1].value
    assert "notes.md" in set(skipped["file"]) and "../../evil.jpg" in set(skipped["file"])


def wait_until(predicate, timeout: float, every: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def _has_key(at, key: str) -> bool:
    try:
        at.button(key=key)
        return True
    except KeyError:
        return False


def test_dead_worker_is_reported_as_failed(app_env, tmp_path):
    from clustermine.workflows import jobs
    from clustermine.store import Run
    from clustermine.core.storage import atomic_write_json

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
    from clustermine.store import Run

    Run.create(app_env.parent / "idle-run", {**Run.open(app_env).config})
    at = open_app("idle-run", "pages/data.py")
    no_exception(at)
    assert any("not been started" in i.value for i in at.info)
    assert _has_key(at, "resume")


# ------------------------------------------------------------------------------------ clusters page
def test_clusters_page_map_carries_row_ids(app_env):
    from clustermine.store import Run

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
def _purity_by_hand(run_dir: Path) -> dict[int, float]:
    """cluster -> share of its members whose top-1 vote is the cluster's most frequent vote, read
    straight from clusters.npy and votes.npz (not from clusters.json, which the page displays)."""
    cids = np.load(run_dir / "clusters.npy")
    with np.load(run_dir / "votes.npz") as z:
        top1 = np.asarray(z["top_idx"]).reshape(len(cids), -1)[:, 0]
    out = {}
    for c in sorted(set(cids[cids >= 0].tolist())):
        votes = top1[cids == c]
        out[c] = np.bincount(votes).max() / len(votes)
    return out


def _cards(at) -> list[int]:
    return [int(s.value.split()[1]) for s in at.subheader if s.value.startswith("Cluster ")]


def test_audit_page_has_one_card_per_cluster_lowest_purity_first(app_env):
    purity = _purity_by_hand(app_env)
    at = open_app(app_env.name, "pages/audit.py")
    no_exception(at)
    order = _cards(at)
    assert sorted(order) == sorted(purity)  # one card per cluster
    shown = [float(m.value.rstrip(" %")) / 100 for m in at.metric if m.label == "purity"]
    assert shown == pytest.approx([purity[c] for c in order], abs=0.006)  # "75 %": 0 decimals
    # lowest purity first; equal purities by cluster id
    assert all((purity[a], a) < (purity[b], b) for a, b in zip(order, order[1:])), (order, purity)
    assert len(set(purity.values())) > 1, "the small run should have clusters of different purity"
    from clustermine.store import Run

    stats = {s.cluster: s for s in Run.open(app_env).cluster_stats()}
    assert len(at.get("plotly_chart")) == sum(1 for s in stats.values() if s.histogram)  # one histogram per card
    assert len(at.image) >= sum(min(s.size, 6) for s in stats.values())  # typical members as thumbnails


def test_audit_page_other_sort_key(app_env):
    sizes = {int(c): n for c, n in zip(*np.unique(np.load(app_env / "clusters.npy"), return_counts=True)) if c >= 0}
    at = open_app(app_env.name, "pages/audit.py")
    at.selectbox(key="audit_sort").set_value("cluster id").run()
    no_exception(at)
    assert _cards(at) == sorted(sizes)
    at.selectbox(key="audit_sort").set_value("size (largest first)").run()
    no_exception(at)
    order = _cards(at)
    assert [sizes[c] for c in order] == sorted(sizes.values(), reverse=True)
    assert [m.value for m in at.metric if m.label == "size"] == [str(sizes[c]) for c in order]


# ------------------------------------------------------------------------------------ concepts page
def test_concepts_reject_button_changes_positive_concepts(app_env):
    from clustermine.store import Run

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
    from clustermine.store import Run

    run = Run.open(app_env)
    held = heldout_features(run)
    before = run_detector(run, calibrate=False).log_scores(held)
    at = open_app(app_env.name, "pages/concepts.py")
    no_exception(at)
    m = metrics(at)
    assert m["Y_pos now"] == str(len(run.positive_concepts()))
    for c in run.concepts()[:-1]:  # reject all but one concept (outside the page: it must notice)
        run.edit_concept("reject", c.id)
    at.run()
    no_exception(at)
    m2 = metrics(at)
    assert m2["Y_pos now"] == "1"
    assert m2["ID false alarms, mined"] == m["ID false alarms, mined"]
    after = run_detector(Run.open(app_env), calibrate=False).log_scores(held)
    assert float(m2["median score shift"]) == pytest.approx(float(np.median(after - before)), abs=0.0015)
    assert float(m2["ID false alarms, now"].rstrip(" %")) >= float(m["ID false alarms, now"].rstrip(" %"))


def test_concept_table_edit_maps_to_actions():
    from ui.concept_review import action_for

    assert action_for("mined", "rejected") == "reject"
    assert action_for("rejected", "mined") == "restore"
    assert action_for("mined", "accepted") == "accept"
    assert action_for("added", "added") is None
    assert action_for("rejected", "added") == "restore"


def test_concepts_table_edit_through_the_data_editor(app_env):
    """A status edited in the table (the editor's JSON widget state, as the browser sends it) becomes
    a logged edit, and the table is rebuilt from the run."""
    from clustermine.store import Run

    run = Run.open(app_env)
    first, second = run.concepts()[0], run.concepts()[1]
    assert first.status == second.status == "mined"
    at = open_app(app_env.name, "pages/concepts.py")
    no_exception(at)
    assert list(at.data_editor[0].value.index[:2]) == [first.id, second.id]
    edit_data_editor(at, at.data_editor[0], {0: {"status": "rejected"}, 1: {"status": "accepted"}})
    no_exception(at)
    run = Run.open(app_env)
    after = {c.id: c.status for c in run.concepts()}
    assert after[first.id] == "rejected" and after[second.id] == "accepted"
    assert [(e["action"], e["concept_id"]) for e in run.edits()] == [("reject", first.id), ("accept", second.id)]
    assert first.text not in run.positive_concepts() and second.text in run.positive_concepts()
    table = at.data_editor[0].value
    assert table.loc[first.id, "status"] == "rejected" and table.loc[second.id, "status"] == "accepted"
    assert metrics(at)["rejected"] == "1" and metrics(at)["accepted"] == "1"


def test_concepts_accept_button_and_the_what_if_result(app_env):
    """Reject a concept, then click Accept: the status, the log and the what-if panel follow; the
    panel's median score shift equals the engine's Detector scores of the held-out images."""
    from clustermine.store import Run
    from clustermine.method.scoring import Detector

    run = Run.open(app_env)
    held = heldout_features(run)
    det = run_detector(run, calibrate=False)
    before = det.log_scores(held)

    def median_shift_without(concept) -> float:  # the engine's Detector, that concept no longer positive
        pos = [i for i in det.positive_idx if det.concepts[i] != concept.text]
        det_without = Detector(det.concepts, det.text_embeddings, pos, tau=det.tau)
        return float(np.median(det_without.log_scores(held) - before))

    # the concept whose rejection moves the median held-out score most (with few held-out images,
    # most concepts move none of them)
    victim = min(run.concepts(), key=median_shift_without)
    n_pos = len(run.positive_concepts())

    at = open_app(app_env.name, "pages/concepts.py")
    no_exception(at)
    m0 = metrics(at)
    assert m0["Y_pos now"] == str(n_pos) and m0["median score shift"] == "0.000"
    assert m0["ID false alarms, now"] == m0["ID false alarms, mined"]

    at.selectbox(key="concept_pick").set_value(victim.id).run()
    at.button(key="btn_reject").click().run()
    no_exception(at)
    after = run_detector(Run.open(app_env), calibrate=False).log_scores(held)
    shift = float(np.median(after - before))
    assert shift == pytest.approx(median_shift_without(victim), abs=1e-9)
    assert shift < -0.002, shift  # a positive concept turned negative lowers the scores
    m1 = metrics(at)
    assert m1["Y_pos now"] == str(n_pos - 1)
    assert float(m1["median score shift"]) == pytest.approx(shift, abs=0.0015)
    far = lambda v: float(v.rstrip(" %"))  # noqa: E731
    assert far(m1["ID false alarms, now"]) >= far(m1["ID false alarms, mined"])  # same threshold, lower scores

    at.selectbox(key="concept_pick").set_value(victim.id).run()
    at.button(key="btn_accept").click().run()
    no_exception(at)
    run = Run.open(app_env)
    assert {c.id: c.status for c in run.concepts()}[victim.id] == "accepted"
    assert [e["action"] for e in run.edits()] == ["reject", "accept"]
    assert at.data_editor[0].value.loc[victim.id, "status"] == "accepted"
    m2 = metrics(at)
    assert m2["Y_pos now"] == str(n_pos) and m2["accepted"] == "1"
    np.testing.assert_allclose(run_detector(run, calibrate=False).log_scores(held), before, atol=1e-6)
    assert m2["median score shift"] in ("0.000", "-0.000")
    assert m2["ID false alarms, now"] == m2["ID false alarms, mined"]


def test_concepts_add_a_corpus_concept(app_env):
    from clustermine.store import Run

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


def _check_against_engine(at, run_dir: Path, images: list[Path]) -> None:
    """Every row of the Scoring page equals ``clustermine.score_images`` (the engine's public API:
    encoder, Detector with the current edits, threshold calibrated on held-out ID images)."""
    from clustermine import score_images
    from clustermine.store import Run

    run = Run.open(run_dir)
    expected = {Path(e["path"]).name: e for e in score_images(run, images)}
    df = at.dataframe[0].value.set_index("file")
    assert sorted(df.index) == sorted(expected)
    thr = run_detector(run).threshold
    for name, e in expected.items():
        # float32 sums at 1/tau = 100: ~1e-6 relative; the page shows 3 decimals
        assert df.loc[name, "log score"] == pytest.approx(e["log_score"], abs=1e-3), name
        assert df.loc[name, "score"] == pytest.approx(e["score"], rel=1e-3, abs=1e-12), name
        assert df.loc[name, "verdict"] == ("ID" if e["log_score"] >= thr else "OOD"), name
        assert df.loc[name, "top positive concepts"].split(" (")[0] == e["top_positive"][0][0], name
    shown = next(m.value for m in at.markdown if m.value.startswith("**Threshold**"))
    assert shown.split()[1] == f"{thr:.3f}"


def test_scoring_page_scores_uploads_and_follows_edits(app_env, small_images):
    from clustermine.store import Run

    # one image of a class the run mined, one of a class it never saw
    imgs = [sorted((small_images / "n01440764").iterdir())[0],
            sorted(shared("imagenette_val100", "n03417042").iterdir())[0]]
    at = open_app(app_env.name, "pages/scoring.py")
    no_exception(at)
    assert "No test image yet" in texts(at)
    _score_upload(at, imgs)
    no_exception(at)
    _check_against_engine(at, app_env, imgs)
    assert metrics(at)["images scored"] == "2"
    df = at.dataframe[0].value
    before = df["log score"].to_numpy()
    top = df["top positive concepts"].iloc[0].split(" (")[0]
    Run.open(app_env).edit_concept("reject", top)
    at.run()  # the uploaded images are kept in the run: no need to upload again
    no_exception(at)
    _check_against_engine(at, app_env, imgs)
    after = at.dataframe[0].value
    assert after["log score"].iloc[0] < before[0]  # its best concept is now a negative
    assert top not in after["top positive concepts"].iloc[0]


def test_scoring_page_csv_guards_formulas_in_file_names(app_env, small_images, downloads):
    """The Scoring page's CSV download goes through the engine's formula guard: an image uploaded as
    ``=cmd.jpg`` (or ``@x.jpg``) stays text in a spreadsheet; the numbers stay numbers."""
    import csv

    img = sorted((small_images / "n01440764").iterdir())[0]
    at = open_app(app_env.name, "pages/scoring.py")
    at.file_uploader(key="score_files").set_value([("=cmd.jpg", img.read_bytes(), "image/jpeg"),
                                                   ("@x.jpg", img.read_bytes(), "image/jpeg")])
    at.button[[b.label for b in at.button].index("Score these images")].click().run()
    no_exception(at)
    shown = at.dataframe[0].value
    assert sorted(shown["file"]) == ["=cmd.jpg", "@x.jpg"]  # the page shows the user's names as they are
    rows = list(csv.DictReader(io.StringIO(downloads[f"{app_env.name}-scores.csv"].decode())))
    assert sorted(r["file"] for r in rows) == ["'=cmd.jpg", "'@x.jpg"]
    by_file = dict(zip(shown["file"], shown["log score"]))
    for r in rows:
        assert float(r["log score"]) == pytest.approx(by_file[r["file"][1:]], abs=1e-3)
        assert r["verdict"] in ("ID", "OOD") and float(r["threshold"]) <= 0


def test_scoring_page_slider_moves_the_threshold(app_env):
    at = open_app(app_env.name, "pages/scoring.py")
    md = [m.value for m in at.markdown if "Threshold" in m.value]
    at.slider(key="tpr").set_value(0.8).run()
    no_exception(at)
    md2 = [m.value for m in at.markdown if "Threshold" in m.value]
    assert md and md2 and md != md2 and "80%" in md2[0].replace("\\", "")


# ------------------------------------------------------------------------------------ export page
@pytest.fixture
def downloads(monkeypatch):
    """The bytes the page hands to its download buttons, by file name (Streamlit's media store)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    got: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if filename:
            got[filename] = path_or_data.encode() if isinstance(path_or_data, str) else bytes(path_or_data)
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return got


def test_export_files_hold_the_concept_table(app_env, downloads):
    """txt / CSV / JSON from the Export page after edits made on the Concepts page: their rows are the
    concept table the user reviewed; a concept starting with = (a spreadsheet formula) is neutralised
    in the CSV only."""
    import csv

    from clustermine.store import Run

    rid = app_env.name
    at = open_app(rid, "pages/concepts.py")
    victim = Run.open(app_env).concepts()[0]
    at.selectbox(key="concept_pick").set_value(victim.id).run()
    at.button(key="btn_reject").click().run()
    for text in ("=cmd|' /c calc'!a0", "-2+3", "@sum(a1)", "+cmd"):
        at.text_input(key="add_text").input(text)
        at.get("form_submit_button")[0].click().run()
        no_exception(at)
    table = at.data_editor[0].value  # what the reviewer sees
    assert {"=cmd|' /c calc'!a0", "-2+3", "@sum(a1)", "+cmd"} <= set(table["concept"])
    assert table.loc[victim.id, "status"] == "rejected"

    at = open_app(rid, "pages/export.py")
    no_exception(at)
    txt = downloads[f"{rid}-positive_concepts.txt"].decode()
    assert txt.splitlines() == [t for t, st in zip(table["concept"], table["status"]) if st != "rejected"]
    assert victim.text not in txt.splitlines() and "=cmd|' /c calc'!a0" in txt.splitlines()  # txt: raw lines

    rows = list(csv.DictReader(io.StringIO(downloads[f"{rid}-concepts.csv"].decode())))
    assert [r["id"] for r in rows] == list(table.index)
    guarded = {"=cmd|' /c calc'!a0": "'=cmd|' /c calc'!a0", "-2+3": "'-2+3", "@sum(a1)": "'@sum(a1)",
               "+cmd": "'+cmd"}
    for r, (cid, t) in zip(rows, table.iterrows()):
        assert r["text"] == guarded.get(t["concept"], t["concept"]) and r["status"] == t["status"], cid
        assert int(r["votes"]) == t["votes"] and r["source"] == t["source"], cid
        assert float(r["purity"] or "nan") == pytest.approx(float(t["purity"]), nan_ok=True), cid
    assert not [r["text"] for r in rows if r["text"][:1] in "=+-@"]

    items = json.loads(downloads[f"{rid}-concepts.json"])
    assert [(c["id"], c["text"], c["status"]) for c in items] == \
        [(cid, t["concept"], t["status"]) for cid, t in table.iterrows()]  # raw text: JSON is not a spreadsheet
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["concepts.txt", "concepts.csv", "concepts.json", "Detector bundle (.zip)",
                      "Run summary (.json)", "images.csv", "images.parquet", "Report (.html)"]


def test_export_detector_bundle_loads(app_env, tmp_path):
    """The zip offered by the Export page unpacks to a detector that loads and scores like the run."""
    from clustermine.store import Run
    from clustermine.method.scoring import Detector
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
    np.testing.assert_allclose(det.log_scores(f), run_detector(run).log_scores(f), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------ projection helpers
def test_pca_is_deterministic_and_cached(tmp_path):
    from clustermine.workflows import projection

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
    from clustermine.workflows import projection

    feats = np.random.default_rng(1).normal(size=(500, 8)).astype(np.float32)
    rows, coords = projection.projection(tmp_path, "pca", feats, max_points=100)
    assert len(rows) == 100 and len(set(rows.tolist())) == 100 and coords.shape == (100, 2)
    assert np.array_equal(rows, projection.sample_rows(500, 100))  # the same sample every time


def test_tiny_inputs_do_not_break_the_map():
    from clustermine.workflows import projection

    assert projection.pca_2d(np.zeros((1, 4))).shape == (1, 2)
    assert projection.umap_2d(np.ones((3, 4), dtype=np.float32)).shape == (3, 2)  # falls back to PCA


@pytest.mark.slow
def test_umap_map_is_cached(tmp_path):
    from clustermine.workflows import projection

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
    m = metrics(at)
    # the same AUROC by hand from the engine's scores: held-out ID images vs the OOD files
    from clustermine import score_images
    from clustermine.store import Run

    run = Run.open(app_env)
    id_scores = run_detector(run, calibrate=False).log_scores(heldout_features(run))
    ood_scores = [e["log_score"] for e in score_images(run, sorted(ood.iterdir()))]
    assert float(m["AUROC, mined"]) == pytest.approx(auroc_by_hand(id_scores, ood_scores), abs=0.0006)
    assert m["AUROC, mined"] == m["AUROC, now"]  # no edit yet: before == after
    assert f"ID = {len(id_scores)} held-out images, OOD = 6 images" in texts(at)
    # issue 18 (5): the report (Export page) carries this folder's metrics, the panel's numbers
    from clustermine.workflows import ood_eval, report

    rec = ood_eval.latest(run)
    assert rec is not None and rec["current"] and Path(rec["folder"]).resolve() == ood.resolve()
    from ui.widgets import fmt_float

    assert fmt_float(rec["after"]["auroc"]) == m["AUROC, now"]
    page = report.report_html(run)
    assert f"<td>{rec['after']['auroc']:.4f}</td><td>{rec['after']['fpr95']:.4f}</td>" in page
    assert "vs 6 images of the OOD sample ood" in page


def test_concepts_what_if_with_uploaded_ood_images(app_env):
    """OOD images uploaded in the what-if panel are kept by the engine (ood_eval.save_uploaded_sample,
    a second upload replaces the first) and give the same AUROC as the same files given as a folder."""
    from conftest import shared
    from clustermine import score_images
    from clustermine.store import Run
    from clustermine.store import layout
    from clustermine.workflows import ood_eval

    files = sorted(shared("imagenette_val100", "n03417042").iterdir())[:5]
    at = open_app(app_env.name, "pages/concepts.py")
    at.radio(key="ood_mode").set_value("upload").run()
    at.file_uploader(key="ood_files").set_value([(f.name, f.read_bytes(), "image/jpeg") for f in files[:2]]
                                                + [("empty.jpg", b"", "image/jpeg")]).run()
    at.button(key="ood_use_upload").click().run()
    no_exception(at)
    run = Run.open(app_env)
    sample = layout.ood_sample_dir(app_env)
    assert ood_eval.uploaded_sample(run) == sample and sorted(p.name for p in sample.iterdir()) == \
        sorted(f.name for f in files[:2])
    assert "1 file(s) skipped" in texts(at)
    at.file_uploader(key="ood_files").set_value([(f.name, f.read_bytes(), "image/jpeg") for f in files]).run()
    at.button(key="ood_use_upload").click().run()
    no_exception(at)
    assert sorted(p.name for p in sample.iterdir()) == sorted(f.name for f in files)  # replaced, not appended
    m = metrics(at)
    id_scores = run_detector(run, calibrate=False).log_scores(heldout_features(run))
    ood_scores = [e["log_score"] for e in score_images(run, files)]
    assert float(m["AUROC, mined"]) == pytest.approx(auroc_by_hand(id_scores, ood_scores), abs=0.0006)


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
