"""Issue 12, "No dead ends" and "Reading the results": the engine functions behind them (upload
validation, the shared-concept alert rule, the number format, the cost estimate) and every point
through the real app (AppTest pages; a browser for the 1400 px layout). Expected values are derived
in the tests from the run's raw files or by hand, never from the UI code under test."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM, missing_resource
from test_app import app_env, metrics, no_exception, open_app, texts  # noqa: F401  (app_env is a fixture)
from clustermine.workflows.whatif import run_detector

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _jpeg_bytes(seed: int = 0, size: int = 48) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _plain(markdown: str) -> str:
    """Markdown-escaped text (the app escapes file names) back to plain text."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _errors(at) -> str:
    return " ".join(_plain(e.value) for e in at.error)


def _runs(root: Path) -> list[str]:
    from clustermine.store import list_runs

    return sorted(r["run_id"] for r in list_runs(root))


# ====================================================================== engine: upload validation
def test_require_decodable_names_every_bad_file(tmp_path):
    from clustermine.core.errors import NoImagesError
    from clustermine.method.images import require_decodable

    (tmp_path / "notes.jpg").write_text("this is a text file renamed .jpg\n")
    (tmp_path / "half.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(NoImagesError) as err:
        require_decodable(tmp_path)
    msg = str(err.value)
    assert "notes.jpg" in msg and "half.png" in msg and "2 image file(s)" in msg
    assert "not a readable image" in msg
    # one decodable file is enough, and it is the one returned
    (tmp_path / "z_good.jpg").write_bytes(_jpeg_bytes())
    assert require_decodable(tmp_path) == "z_good.jpg"


def test_require_decodable_with_no_image_file_at_all(tmp_path):
    from clustermine.core.errors import NoImagesError
    from clustermine.method.images import require_decodable

    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(NoImagesError, match="no image files found"):
        require_decodable(tmp_path)


# ====================================================================== engine: alert rule
def _stats(assign: dict[int, list[int]], n_vocab: int = 50):
    """ClusterStats from {cluster: [top-1 concept of each member]} (similarities all 0.5)."""
    from clustermine.method.mining import cluster_statistics

    cids = np.concatenate([[c] * len(v) for c, v in assign.items()])
    top1 = np.concatenate([v for v in assign.values()])
    return cluster_statistics(cids, top1, np.full(len(top1), 0.5), n_vocab=n_vocab, n_clusters=len(assign))


def test_over_clustering_alone_raises_no_shared_concept_alert():
    """4 classes in 8 clusters: every class split in two pure clusters (purity 0.9, 0.8)."""
    from clustermine.method.mining import cluster_alerts, shared_winners

    assign = {}
    for k in range(4):
        assign[2 * k] = [k] * 9 + [40]  # 90 % agree
        assign[2 * k + 1] = [k] * 8 + [41, 42]  # 80 % agree
    stats = _stats(assign)
    assert shared_winners(stats) == {k: [2 * k, 2 * k + 1] for k in range(4)}
    assert cluster_alerts(stats) == {}


def test_a_weak_cluster_sharing_a_concept_is_flagged_alone():
    from clustermine.method.mining import AlertRules, cluster_alerts

    # concept 7 wins cluster 0 with 9/10 votes and cluster 1 with 3/10 (plurality: the rest split)
    stats = _stats({0: [7] * 9 + [1], 1: [7, 7, 7, 2, 2, 3, 3, 4, 5, 6], 2: [8] * 10})
    alerts = cluster_alerts(stats)
    assert set(alerts) == {1}
    shared = [a for a in alerts[1] if "describes cluster 0" in a]
    assert shared and "90 %" not in shared[0] and "90%" in shared[0] and "30%" in shared[0]
    # the rule's boundary, derived by hand: 0.3 < r * 0.9 <=> r > 1/3
    assert not any("describes" in a for a in cluster_alerts(stats, AlertRules(shared_purity_ratio=0.33)).get(1, []))
    assert any("describes" in a for a in cluster_alerts(stats, AlertRules(shared_purity_ratio=0.34))[1])


# ====================================================================== engine / UI helpers: numbers
@pytest.mark.parametrize("value,digits,want", [(-0.0001, 2, "0.00"), (-0.004999, 2, "0.00"), (-0.0051, 2, "-0.01"),
                                               (0.0, 3, "0.000"), (-0.0, 1, "0.0"), (-1.25, 1, "-1.2"),
                                               (3.14159, 3, "3.142"), (None, 2, "–"), (float("nan"), 2, "–")])
def test_fmt_num_known_values(value, digits, want):
    from ui.text import fmt_num

    assert fmt_num(value, digits) == want


def test_fmt_num_never_prints_a_negative_zero():
    from ui.text import clean_zero, fmt_num

    rng = np.random.default_rng(0)
    for v in rng.normal(0, 1e-3, 2000):
        out = fmt_num(v, 2)
        assert not re.fullmatch(r"-0\.0+", out), v
        assert abs(float(out) - v) <= 0.005 + 1e-12
        assert math.copysign(1.0, clean_zero(v, 2)) == (1.0 if round(v, 2) >= 0 else -1.0) or round(v, 2) != 0


# ====================================================================== engine: cost estimate
def test_estimate_uses_this_machines_finished_runs():
    from clustermine.workflows.estimate import estimate_run_cost

    runs = [{"status": "done", "config": {"clusterer": "kmeans"},
             "summary": {"n_images": 100, "timings_s": {"scan": 0.1, "encode": 10.0, "corpus": 700.0, "cluster": 0.5,
                                                        "vote": 1.0}}},
            {"status": "done", "config": {"clusterer": "kmeans"},
             "summary": {"n_images": 200, "timings_s": {"scan": 0.2, "encode": 30.0, "corpus": 0.1, "cluster": 1.0,
                                                        "vote": 2.0}}},
            {"status": "failed", "config": {}, "summary": {"n_images": 10, "timings_s": {"encode": 999.0}}}]
    est = estimate_run_cost(400, "kmeans", runs)
    # medians of the per-image rates of the two finished runs, times 400; the corpus stage excluded;
    # plus the reference machine's fixed costs (BENCHMARKS "Estimates", re-fitted on its first cells):
    # start 1.3 + scan 0.1 + encode 3.0 + cluster 0.3 + vote 0.8 = 5.5 s
    by_hand = 400 * (0.001 + 0.125 + 0.005 + 0.01) + 5.5  # = 61.9 s
    assert est.seconds == pytest.approx(by_hand)
    assert "2 finished runs" in est.source
    temi = estimate_run_cost(400, "temi", runs)  # never measured here: the reference TEMI cost
    ref = estimate_run_cost(1000, "temi", [])
    # 360 mining images: 4 heads x batch 16, 1,518 steps; a step costs 1 ms + 36 us per head x sample
    # on the reference machine (BENCHMARKS "Clustering: TEMI vs k-means"), + 0.3 s fixed
    assert (temi.schedule["n_heads"], temi.schedule["batch_size"], temi.schedule["steps"]) == (4, 16, 1518)
    assert temi.stages["cluster"] == pytest.approx(1518 * (0.001 + 36e-6 * 4 * 16) + 0.3)  # = 5.32 s
    assert "BENCHMARKS.md" in ref.source
    # 1,000 images at the reference rates 0.1 + 30 + 1.4 ms (scan, encode, vote) = 31.5 s; 900 mining
    # images: 4 heads x batch 64, 1,904 steps = 19.45 s; fixed costs 5.5 s
    assert (ref.schedule["n_heads"], ref.schedule["batch_size"], ref.schedule["steps"]) == (4, 64, 1904)
    assert ref.seconds == pytest.approx(31.5 + 1904 * (0.001 + 36e-6 * 4 * 64) + 5.5)  # = 56.45 s


# ====================================================================== 3. no dead ends: launch
def _upload_files(at, files: list[tuple[str, bytes]]):
    at.file_uploader(key="up_files").set_value([(n, b, "image/jpeg") for n, b in files]).run()
    at.button(key="launch").click().run()
    return at


def test_data_page_refuses_an_upload_without_a_readable_image(app_env):
    before = _runs(app_env.parent)
    at = open_app(None, "pages/data.py")
    _upload_files(at, [("holiday.jpg", b"just some text, renamed to .jpg\n"), ("scan.png", b"\x89PNG broken")])
    no_exception(at)
    errs = _errors(at)
    assert "holiday.jpg" in errs and "scan.png" in errs and "no run was created" in errs
    assert "not a readable image" in errs
    assert ".staging" not in errs  # the message names the user's files, not server paths
    assert _runs(app_env.parent) == before
    assert not [p for p in app_env.parent.iterdir() if p.name.startswith(".staging")]
    assert at.session_state["run_id"] is None  # still on the form: no Resume that cannot succeed


def test_data_page_refuses_a_zip_of_only_bad_files(app_env):
    before = _runs(app_env.parent)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photos/a.jpg", b"not a jpeg")
        zf.writestr("photos/b.jpeg", b"GIF89a but cut")
        zf.writestr("README.txt", b"hello")
    at = open_app(None, "pages/data.py")
    at.segmented_control(key="src_kind").set_value("zip").run()
    at.file_uploader(key="up_zip").set_value(("bad.zip", buf.getvalue(), "application/zip")).run()
    at.button(key="launch").click().run()
    no_exception(at)
    errs = _errors(at)
    assert "a.jpg" in errs and "b.jpeg" in errs and "no run was created" in errs
    assert _runs(app_env.parent) == before


# ====================================================================== 3. live status badge
def test_data_page_badge_shows_the_live_state(app_env):
    from clustermine.store import Run
    from clustermine.core.storage import atomic_write_json

    run_dir = app_env.parent / "live-run"
    run = Run.create(run_dir, {**Run.open(app_env).config})
    run.set_status("running")
    run.write_progress({"stage": "encode", "stage_index": 1, "stages": ["scan", "encode", "corpus", "cluster", "vote"],
                        "done": 3, "total": 40, "eta_s": 12.0, "status": "running"})
    worker = subprocess.Popen(["sleep", "120"])  # stands in for the worker: alive, with its start token
    try:
        import psutil

        atomic_write_json(run_dir / "job.json", {"pid": worker.pid, "create_time": psutil.Process(worker.pid).create_time()})
        at = open_app("live-run", "pages/data.py")
        no_exception(at)
        main = "\n".join(m.value for m in at.main.markdown)
        assert "running · Encode images" in main
        assert "created" not in main
        side = "\n".join(m.value for m in at.sidebar.markdown)
        assert "running · encode" in side
        # the job ends: the same page shows how it ended
        run.set_status("cancelled", "stopped by the user")
        at.run()
        no_exception(at)
        assert "running ·" not in "\n".join(m.value for m in at.main.markdown)
        assert any("cancelled" in m.value for m in at.main.markdown)
    finally:
        worker.kill()
        worker.wait(10)


# ====================================================================== 3. refresh keeps reviewer and OOD sample
def test_refresh_keeps_the_reviewer_name(app_env):
    from clustermine.store import Run

    at = open_app(app_env.name, "pages/concepts.py")
    at.text_input(key="reviewer").input("Ada Lovelace").run()
    no_exception(at)
    assert at.query_params.get("reviewer") == "Ada Lovelace"
    # a refresh is a new session with the same URL
    from streamlit.testing.v1 import AppTest

    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    again.query_params["run"] = app_env.name
    again.query_params["reviewer"] = "Ada Lovelace"
    again.run()
    again.switch_page("pages/concepts.py").run()
    no_exception(again)
    assert again.text_input(key="reviewer").value == "Ada Lovelace"
    again.button(key="btn_reject").click().run()
    no_exception(again)
    assert Run.open(app_env).edits()[-1]["user"] == "Ada Lovelace"


def test_refresh_keeps_the_ood_sample_and_says_why_images_were_skipped(app_env, tmp_path, monkeypatch):
    """An OOD folder of 503 images (copies of 6 photos: encoded once, cached by content): the panel
    comes back after a refresh and says that 3 images were not drawn into the 500-image sample."""
    from conftest import shared
    from streamlit.testing.v1 import AppTest

    ood = tmp_path / "data" / "ood"
    ood.mkdir(parents=True)
    photos = sorted(shared("imagenette_val100", "n03417042").iterdir())[:6]
    for i in range(503):
        shutil.copy2(photos[i % 6], ood / f"img{i:04d}{photos[i % 6].suffix}")
    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(tmp_path / "data"))
    at = open_app(app_env.name, "pages/concepts.py")
    at.radio(key="ood_mode").set_value("folder").run()
    at.text_input(key="ood_path").input("ood").run()
    at.button[[b.label for b in at.button].index("Use this folder")].click().run()
    no_exception(at)
    first = metrics(at)
    assert at.query_params.get("ood") == str(ood.resolve())
    assert "3 skipped: 3 not drawn into the 500-image sample" in _plain(texts(at))
    assert "500 of the folder's 503 usable images are used: a seeded random sample (seed 0)" in _plain(texts(at))

    again = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    again.query_params["run"] = app_env.name
    again.query_params["ood"] = str(ood.resolve())
    again.run()
    again.switch_page("pages/concepts.py").run()
    no_exception(again)
    assert metrics(again)["AUROC, mined"] == first["AUROC, mined"]
    assert "OOD = 500 images" in texts(again)


def test_an_ood_folder_outside_the_roots_in_the_url_is_ignored(app_env, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CLUSTERMINE_DATA_ROOTS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["run"] = app_env.name
    at.query_params["ood"] = "/etc"
    at.run()
    at.switch_page("pages/concepts.py").run()
    no_exception(at)
    assert "whatif_ood" not in at.session_state
    assert "AUROC, mined" not in metrics(at)


# ====================================================================== 4. first page
def test_first_page_explains_the_app_and_the_cost_of_a_run(app_env):
    from clustermine.store import Run

    at = open_app(None)
    no_exception(at)
    body = texts(at)
    assert "out-of-distribution" in body
    for step in ("1 · Bring your in-distribution images", "2 · Mine and audit the concepts",
                 "3 · Review, score and export"):
        assert step in body
    # drawn last on the page: the estimate at this machine's speed now (the probe the page just made)
    from clustermine.workflows.estimate import cached_speed, estimate_run_cost, fmt_duration
    from clustermine.store import list_runs

    from ui import home

    speed = cached_speed()
    assert speed is not None
    km = estimate_run_cost(200, "kmeans", corpus_cached=home._KNOWN_CORPUS_STATE["default"], speed=speed)
    assert f"**{fmt_duration(km.seconds)}** with k-means" in body
    assert "this machine's speed measured now" in body and "estimate" in body
    # the first paint (before that probe) uses this machine's finished run: the small run's own stage timings
    s = Run.open(app_env).meta["summary"]
    t, n = s["timings_s"], s["n_images"]
    fixed = 1.3 + 0.1 + 3.0 + 0.3 + 0.8  # the reference fixed costs of start, scan, encode, cluster, vote (s)
    # once the page knows the corpus is cached, loading it (0.15 s, reference) is part of the run's time
    corpus = 0.15 if home._KNOWN_CORPUS_STATE.get("default") else 0.0
    km_200 = 200 * (t["scan"] + t["encode"] + t["cluster"] + t["vote"]) / n + fixed + corpus
    first = "\n".join(home.first_paint_lines(list_runs(app_env.parent)))
    assert f"**{fmt_duration(km_200)}** with k-means" in first
    assert "measured on this machine (1 finished run)" in first


# ====================================================================== 4. scoring
def _score(at, files: list[tuple[str, bytes]]):
    at.file_uploader(key="score_files").set_value([(n, b, "image/jpeg") for n, b in files])
    at.button[[b.label for b in at.button].index("Score these images")].click().run()
    return at


def test_scoring_upload_errors_stay_and_a_bad_file_is_removed_alone(app_env, small_images):
    from clustermine.store import layout

    good = sorted((small_images / "n01440764").iterdir())[:2]
    at = open_app(app_env.name, "pages/scoring.py")
    _score(at, [(p.name, p.read_bytes()) for p in good] + [("fake.jpg", b"plain text, not a jpeg"),
                                                           ("empty.jpg", b""), ("notes.exe", b"MZ")])
    no_exception(at)
    # the refused file's message survives the rerun that shows the scored images
    assert "empty.jpg: empty file" in _errors(at)
    assert len(at.dataframe[0].value) == 2
    assert _has_button(at, "rm-upload-fake.jpg") and _has_button(at, "rm-upload-notes.exe")
    at.run()  # any later rerun keeps it too
    assert "empty.jpg" in _errors(at)
    at.button(key="rm-upload-fake.jpg").click().run()
    no_exception(at)
    up = layout.scoring_uploads_dir(app_env)
    assert sorted(p.name.lower() for p in up.iterdir()) == sorted([p.name.lower() for p in good] + ["notes.exe"])
    assert len(at.dataframe[0].value) == 2 and not _has_button(at, "rm-upload-fake.jpg")
    assert _has_button(at, "rm-upload-notes.exe")
    at.button(key="dismiss_upload_errors").click().run()
    assert "empty.jpg" not in _errors(at)


def _has_button(at, key: str) -> bool:
    try:
        at.button(key=key)
        return True
    except KeyError:
        return False


def test_scoring_gallery_order_and_filter(app_env, small_images):
    from clustermine import score_images
    from clustermine.store import Run

    imgs = [sorted((small_images / c).iterdir())[0] for c in ("n01440764", "n02102040", "n02979186", "n03028079")]
    at = open_app(app_env.name, "pages/scoring.py")
    _score(at, [(p.name, p.read_bytes()) for p in imgs] + [("noise.jpg", _jpeg_bytes(3, 96))])
    no_exception(at)
    run = Run.open(app_env)
    thr = run_detector(run).threshold
    by_engine = {Path(e["path"]).name: e["log_score"] for e in score_images(run, imgs)}
    df = at.dataframe[0].value
    shown = list(df["file"])
    scores = dict(zip(df["file"], df["log score"]))
    verdict = {f: ("ID" if scores[f] >= thr else "OOD") for f in shown}
    # OOD first, then by increasing score (derived here from the scores and the threshold)
    want = sorted(shown, key=lambda f: (verdict[f] == "ID", scores[f], f))
    assert shown == want
    for name, s in by_engine.items():
        assert scores[name] == pytest.approx(s, abs=1e-3)
    at.segmented_control(key="score_verdict").set_value("ID").run()
    assert set(at.dataframe[0].value["file"]) == {f for f in shown if verdict[f] == "ID"}
    at.segmented_control(key="score_verdict").set_value("all").run()
    at.segmented_control(key="score_sort").set_value("high").run()
    assert list(at.dataframe[0].value["file"]) == sorted(shown, key=lambda f: (-scores[f], f))
    page_text = texts(at) + " ".join(str(v) for v in at.dataframe[0].value.to_numpy().ravel())
    assert not re.search(r"(?<![\d.])-0\.0+(?![\d])", page_text)
    assert "source" not in at.dataframe[0].value.columns  # uploads only: the column is dropped to fit


# ====================================================================== 4. audit and map
def test_audit_has_no_shared_concept_alert_without_a_problem_and_groups_clusters(app_env):
    from clustermine.method.mining import cluster_alerts
    from clustermine.store import Run

    run = Run.open(app_env)
    stats = run.cluster_stats()
    alerts = cluster_alerts(stats)
    at = open_app(app_env.name, "pages/audit.py")
    no_exception(at)
    assert metrics(at)["with alerts"] == str(len(alerts))
    body = texts(at) + " ".join(w.value for w in at.warning)
    assert "also wins" not in body
    at.selectbox(key="audit_sort").set_value("concept (clusters sharing one together)").run()
    no_exception(at)
    cards = [int(h.value.split()[1]) for h in at.subheader if h.value.startswith("Cluster ")]
    assert sorted(cards) == sorted(s.cluster for s in stats)
    winners = {s.cluster: s.winner for s in stats}
    seen: list = []
    for c in cards:  # clusters of one concept are adjacent
        if seen and seen[-1] != winners[c]:
            assert winners[c] not in seen
        seen.append(winners[c])


def test_typical_and_atypical_never_share_an_image(app_env):
    from clustermine.store import Run
    from ui.rundata import typical_atypical

    run = Run.open(app_env)
    cids = run.cluster_ids()
    feats = run.features()
    for c in range(int(cids.max()) + 1):
        members = np.flatnonzero(cids == c)
        for n in (2, 3, 6, 50):
            typ, atyp = typical_atypical(run, c, n)
            assert not set(typ) & set(atyp)
            assert len(typ) == min(n, len(members)) and len(atyp) == min(n, len(members) - len(typ))
            if atyp:  # every atypical member is farther from the centroid than every typical one
                cen = feats[members].mean(0)
                cen = cen / np.linalg.norm(cen)
                assert max(feats[atyp] @ cen) <= min(feats[typ] @ cen) + 1e-6


def test_cluster_map_legend_carries_each_clusters_concept(app_env):
    from clustermine.store import Run

    run = Run.open(app_env)
    vocab = run.vocabulary_base()
    at = open_app(app_env.name, "pages/clusters.py")
    no_exception(at)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {t["name"] for t in spec["data"]}
    for s in run.cluster_stats():
        if s.size:
            assert f"cluster {s.cluster} · {vocab[s.winner]}" in names
    assert "Compiler" not in texts(at) + " ".join(i.value for i in at.info)


def test_no_compiler_jargon_anywhere_in_the_app():
    hits = [p for p in list((ROOT / "pages").glob("*.py")) + list((ROOT / "ui").glob("*.py")) + [ROOT / "app.py"]
            if "Compiler:" in p.read_text()]
    assert hits == []


def test_file_names_get_break_opportunities_at_separators():
    from ui.text import md_escape, wrap_name

    name = "n01440764_10026_a-very-long-file-name.JPEG"
    wrapped = wrap_name(name)
    assert wrapped.replace("\u200b", "") == name
    for sep in "_-.":
        assert f"{sep}\u200b" in wrapped
    assert "\u200b" in md_escape(wrapped, 80)


# ====================================================================== 4. concepts page at 1400 px
_CLIPPED_JS = """() => {
    const out = [];
    document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller').forEach((el, i) => {
        if (el.scrollWidth > el.clientWidth + 1) out.push(`table ${i}: ${el.scrollWidth} > ${el.clientWidth}`);
    });
    // any text Streamlit shortens with an ellipsis (metric, widget and button labels)
    document.querySelectorAll('[data-testid="stMain"] *').forEach(el => {
        const cs = getComputedStyle(el);
        if (cs.textOverflow === 'ellipsis' && cs.overflow !== 'visible' && el.scrollWidth > el.clientWidth
            && el.textContent.trim())
            out.push(`cut text: ${el.textContent}`);
    });
    return out;
}"""


def _settle(pg) -> None:
    pg.wait_for_timeout(1500)
    pg.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=180_000)
    pg.wait_for_timeout(1000)


@pytest.mark.browser
def test_concepts_and_scoring_pages_fit_1400px(small_run, small_images, tmp_path):
    """At a 1400 px wide window no table on the Concepts and Scoring pages scrolls horizontally
    (hidden columns) and no text is cut with an ellipsis (DOM measurement: scrollWidth against
    clientWidth). Screenshots go to test-artifacts/."""
    if not CHROMIUM.exists():
        missing_resource(f"{CHROMIUM} not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_resource(f"playwright not importable: {exc}")
    from streamlit_server import streamlit_server

    images = [sorted((small_images / c).iterdir())[0] for c in ("n01440764", "n03028079")]
    found = {}
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    with streamlit_server(small_run.parent, tmp_path / "streamlit.log", wait_s=90) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(120_000)
        pg.goto(f"{srv['url']}/concepts?run={small_run.name}")
        pg.locator('[data-testid="stDataFrame"]').first.wait_for()
        _settle(pg)
        found["concepts"] = (pg.locator('[data-testid="stDataFrame"] .dvn-scroller').count(), pg.evaluate(_CLIPPED_JS))
        pg.screenshot(path=str(ROOT / "test-artifacts" / "concepts_1400.png"), full_page=True)

        pg.goto(f"{srv['url']}/scoring?run={small_run.name}")
        pg.locator('input[type="file"]').first.wait_for(state="attached")
        pg.locator('input[type="file"]').first.set_input_files([str(i) for i in images])
        _settle(pg)
        pg.get_by_role("button", name="Score these images").click()
        pg.locator('[data-testid="stDataFrame"]').first.wait_for()
        _settle(pg)
        found["scoring"] = (pg.locator('[data-testid="stDataFrame"] .dvn-scroller').count(), pg.evaluate(_CLIPPED_JS))
        pg.screenshot(path=str(ROOT / "test-artifacts" / "scoring_1400.png"), full_page=True)
        browser.close()
    for page, (n_tables, clipped) in found.items():
        assert n_tables >= 1, page
        assert clipped == [], page
