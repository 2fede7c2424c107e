"""The analyst's journey, end to end in Chromium (issue 18's safety net): upload real photos with a
bad file, mine, select on the map, exclude, re-mine, audit, reject / add a concept, a what-if on a
server folder, score uploads, a second run, compare, search, the HTML report and the CLI's exclude
of a folder. Each step asserts what issue 18 found broken where the features meet (its points are
named ``[pN]`` in the comments), and every page agrees with the engine on the same thing. Screenshots
at 1400 px and at a laptop's 1280 px go to ``test-artifacts/journey/``.

Runs in the README's test command (browser marker); uses Debian's /usr/bin/chromium, never
``playwright install``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import browser_page, idle, kmeans_run_options, nav, require_browser, shot
from conftest import copy_subset, shared
from streamlit_server import streamlit_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "journey"
ID_CLASSES = ["n01440764", "n02102040", "n02979186", "n03028079"]  # tench, springer, cassette player, church
PER_CLASS = 12
MINE_TIMEOUT_MS = 900_000
ZWSP = "\u200b"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """The user's files: ID photos named as ImageNet ships them (``.JPEG``), a bad file, an empty
    zip, a server folder of OOD textures (3 subfolders), and probe images to score."""
    root = tmp_path_factory.mktemp("journey_data")
    src = shared("imagenette_val100")
    allowed = root / "server"  # the server's allowed data folder
    ids = copy_subset(src, allowed / "id", ID_CLASSES, PER_CLASS)
    uploads = sorted(p for p in ids.rglob("*.JPEG"))
    bad = root / "broken.jpg"
    bad.write_bytes(b"this is not a JPEG, only its name says so")
    empty_zip = root / "holiday.zip"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    ood = copy_subset(shared("dtd10"), allowed / "textures", ["banded", "bubbly", "chequered"], 8)
    probes = [sorted((src / "n03417042").iterdir())[0], sorted((src / "n03888257").iterdir())[0]]
    return {"root": root, "uploads": uploads, "bad": bad, "empty_zip": empty_zip, "allowed": allowed, "ids": ids,
            "ood": ood, "probes": probes}


@pytest.fixture(scope="module")
def server(tmp_path_factory, data):
    require_browser()
    runs_root = tmp_path_factory.mktemp("journey_runs")
    with streamlit_server(runs_root, runs_root.parent / "journey-streamlit.log", wait_s=90,
                          env={"CLUSTERMINE_DATA_ROOTS": str(data["allowed"])}) as srv:
        yield {"url": srv["url"], "runs_root": runs_root}


@pytest.fixture(scope="module")
def page(server):
    with browser_page(1400, timeout_ms=90_000) as pg:
        yield pg


# ------------------------------------------------------------------------------------------ helpers
_idle, _nav = idle, nav


def _shot(pg, name: str) -> None:
    shot(pg, ARTIFACTS, name)


def _text(pg) -> str:
    """The main area's visible text (zero-width break hints removed)."""
    return pg.locator('[data-testid="stMain"]').inner_text().replace(ZWSP, "")


def _metrics(pg) -> dict[str, str]:
    """label -> value of every st.metric tile on the page."""
    out = {}
    for tile in pg.locator('[data-testid="stMetric"]').all():
        label = tile.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        out[label] = tile.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return out


def _sidebar(pg) -> str:
    return pg.locator('[data-testid="stSidebar"]').inner_text()


def _toasts(pg) -> list[str]:
    return [t.inner_text() for t in pg.locator('[data-testid="stToast"]').all()]


def _box_select(pg, fx0: float, fy0: float, fx1: float, fy1: float) -> None:
    """Draw a box selection over the fraction (fx0, fy0)-(fx1, fy1) of the first chart's plot area."""
    plot = pg.locator(".js-plotly-plot").first
    plot.wait_for()
    plot.hover()
    pg.locator('[data-title="Box Select"]').first.click()
    box = pg.locator(".nsewdrag").first.bounding_box()
    x = lambda f: box["x"] + 3 + f * (box["width"] - 6)  # noqa: E731
    y = lambda f: box["y"] + 3 + f * (box["height"] - 6)  # noqa: E731
    pg.mouse.move(x(fx0), y(fy0))
    pg.mouse.down()
    pg.mouse.move((x(fx0) + x(fx1)) / 2, (y(fy0) + y(fy1)) / 2, steps=5)
    pg.mouse.move(x(fx1), y(fy1), steps=5)
    pg.mouse.up()


def _legend(pg) -> list[str]:
    return [t.text_content() for t in pg.locator(".js-plotly-plot .legendtext").all()]


def _card_captions(pg) -> dict[int, list[str]]:
    """cluster id -> the captions of the thumbnails on its audit card."""
    out = {}
    for card in pg.locator('[class*="st-key-card-"]').all():
        cid = int(re.search(r"st-key-card-(\d+)", card.get_attribute("class")).group(1))
        out[cid] = [c.inner_text().replace(ZWSP, "") for c in card.locator('[data-testid="stImageCaption"]').all()]
    return out


def _run(runs_root: Path, run_id: str):
    from clustermine.store import Run

    return Run.open(runs_root / run_id)


def _seconds(text: str) -> float:
    """'40 s', '3 min', '1 h 05 min', '1 min 05 s' -> seconds."""
    units = {"h": 3600, "min": 60, "s": 1}
    return float(sum(int(n) * units[u] for n, u in re.findall(r"(\d+)\s*(h|min|s)\b", text)))


def _cluster_count(sidebar: str) -> int:
    return int(re.search(r"([\d,]+) clusters?", sidebar).group(1).replace(",", ""))


# ------------------------------------------------------------------------------------------ the journey
def test_analyst_journey(server, page, data, tmp_path):
    from playwright.sync_api import expect

    from clustermine.workflows import clusterview
    from clustermine.method.mining import cluster_alerts

    pg, runs_root = page, server["runs_root"]
    t0 = time.monotonic()

    # --- Data: an empty zip is refused by name; Launch waits for a usable image [p9]
    pg.goto(server["url"] + "/data")
    pg.get_by_text("1 · ID images").wait_for()
    _idle(pg)
    launch = pg.get_by_role("button", name="Launch mining")
    expect(launch).to_be_disabled()
    pg.get_by_text("Upload a zip", exact=True).click()
    _idle(pg)
    pg.locator('input[type="file"]').first.set_input_files(str(data["empty_zip"]))
    _idle(pg, 1500)
    expect(pg.get_by_text("holiday.zip is empty", exact=False).first).to_be_visible()
    expect(launch).to_be_disabled()
    _shot(pg, "01-empty-zip-1400")
    pg.get_by_text("Upload images", exact=True).click()
    _idle(pg)
    expect(launch).to_be_disabled()

    # --- upload the photos and a bad file, defaults, launch
    pg.locator('input[type="file"]').first.set_input_files([str(p) for p in data["uploads"]] + [str(data["bad"])])
    pg.get_by_text(f"{len(data['uploads']) + 1} file(s) selected").wait_for()
    _idle(pg, 1000)
    expect(launch).to_be_enabled()
    cost = pg.get_by_text(re.compile("on this machine")).first
    expect(cost).to_be_visible()
    pg.get_by_label("Run name (optional)").fill("journey-a")
    pg.get_by_label("Run name (optional)").press("Enter")
    _idle(pg)
    _shot(pg, "02-new-run-1400")
    estimate_s = _seconds(re.search(r"~([^:]+?) on this machine", cost.inner_text()).group(1))
    launch.click()
    t_launch = time.monotonic()
    etas = []
    deadline = time.monotonic() + MINE_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if pg.get_by_text("Mining finished").count():
            break
        etas += [m.group(0) for m in re.finditer(r"Whole job:[^\n]*", _text(pg))]
        pg.wait_for_timeout(1500)
    pg.get_by_text("Mining finished").wait_for(timeout=60_000)
    _idle(pg)
    _shot(pg, "03-mined-1400")
    t_mined = time.monotonic() - t0
    actual_s = time.monotonic() - t_launch
    # the estimate and the job's ETA can be trusted [p7, p8]: the bench measures the 2x target over
    # N and load (BENCHMARKS "Estimates"); here a 3x bound keeps a loaded CI box from flaking
    assert actual_s / 3 <= estimate_s <= actual_s * 3, (estimate_s, actual_s)
    assert etas, "no whole-job ETA was shown while the job ran"
    assert not any(re.search(r"Whole job: (about )?0 s", e) for e in etas), etas
    run = _run(runs_root, "journey-a")
    assert run.status == "done"

    # the bad file is named with its reason; the .JPEG names are the user's own [p10]
    expect(pg.get_by_text("Skipped files (1)")).to_be_visible()
    skipped = [r for r in run.image_records() if r.get("row") is None]
    assert [Path(r["path"]).name for r in skipped] == ["broken.jpg"] and skipped[0].get("reason")
    names = run.image_names()
    assert all(n.endswith(".JPEG") for n in names), names[:3]

    # --- the cluster count: sidebar = engine's occupied count [p4]
    summary = run.meta["summary"]
    occupied, empty = clusterview.cluster_count(summary)
    assert _cluster_count(_sidebar(pg)) == occupied

    # --- Cluster map: select part of the map, mark it not ID: the page answers at once [p2]
    _nav(pg, "Cluster map")
    _box_select(pg, 0.0, 0.0, 0.45, 0.55)
    pg.get_by_text(re.compile(r"\d+ selected image\(s\)")).first.wait_for()
    _idle(pg)
    n_sel = int(re.search(r"(\d+) selected image\(s\)", _text(pg)).group(1))
    assert n_sel > 0
    mark = pg.get_by_role("button", name=f"Mark {n_sel} selected as not ID")
    _shot(pg, "04-map-selection-1400")
    mark.click()
    pg.get_by_text(f"{n_sel} image(s) marked not ID").first.wait_for(timeout=30_000)
    _idle(pg)
    excluded_rows = np.flatnonzero(_run(runs_root, "journey-a").excluded_mask())
    assert len(excluded_rows) == n_sel
    assert f"excluded (not ID): {n_sel}" in _legend(pg)  # the map shows them [p1]
    _shot(pg, "05-map-after-exclude-1400")
    pg.wait_for_timeout(2500)
    _box_select(pg, 0.0, 0.0, 0.45, 0.55)  # the same area again: already excluded, nothing to save twice
    pg.get_by_text(re.compile(r"\d+ selected image\(s\)")).first.wait_for()
    _idle(pg)
    expect(pg.get_by_text(re.compile(rf"{n_sel} of the \d+ selected image\(s\) are marked not ID"))).to_be_visible()
    assert len(np.flatnonzero(_run(runs_root, "journey-a").excluded_mask())) == n_sel

    # --- Audit: re-mine without them; no card shows an excluded image [p1], counts agree [p4]
    _nav(pg, "Cluster audit")
    pg.get_by_role("button", name="Re-mine now").click()
    pg.get_by_text("Changes since last mining").wait_for(timeout=300_000)
    _idle(pg)
    run = _run(runs_root, "journey-a")
    excluded_names = set(run.image_names(np.flatnonzero(run.excluded_mask())))
    for cid, captions in _card_captions(pg).items():
        assert not set(captions) & excluded_names, (cid, set(captions) & excluded_names)
    stats = clusterview.occupied_stats(run.cluster_stats())
    metrics = _metrics(pg)
    assert metrics["clusters"] == str(len(stats))
    assert metrics["with alerts"] == str(len(cluster_alerts(stats)))
    assert pg.locator('[class*="st-key-card-"]').count() == min(len(stats), 12)
    assert _cluster_count(_sidebar(pg)) == len(stats)
    assert not re.search(r"\b1 members\b", _text(pg))  # [p12]
    _shot(pg, "06-audit-after-remine-1400")

    # --- Concepts: reject the winner of the largest cluster and add a concept [p3, p12]
    biggest = max(stats, key=lambda s: (s.size, -s.cluster))
    rejected = run.vocabulary_base()[biggest.winner]
    _nav(pg, "Concepts")
    pg.get_by_text("What if?").wait_for()
    _idle(pg)
    mined_before = _metrics(pg)["mined"]
    pick = pg.get_by_label("Concept", exact=True)
    pick.click()
    pg.get_by_role("option", name=rejected, exact=True).click()
    _idle(pg)
    pg.get_by_role("button", name="Reject").click()
    pg.get_by_text(f"{rejected} → rejected").wait_for()
    _idle(pg)
    pg.get_by_label("Add a concept (free text)").fill("garbage truck")
    pg.get_by_role("button", name="Add").click()
    _idle(pg, 1500)
    metrics = _metrics(pg)
    assert metrics["mined"] == mined_before  # the mined count does not fall as the user reviews
    assert metrics["rejected"] == "1" and metrics["added"] == "1"
    _shot(pg, "07-concepts-1400")

    # the rejected concept is marked wherever it names its cluster [p3]
    _nav(pg, "Cluster audit")
    expect(pg.locator("h3", has_text=f"Cluster {biggest.cluster} ·").first).to_contain_text("(rejected)")
    _nav(pg, "Cluster map")
    pg.locator(".js-plotly-plot").first.wait_for()
    assert any(t.startswith(f"cluster {biggest.cluster} · ") and "(rejected)" in t for t in _legend(pg)), _legend(pg)
    _shot(pg, "08-map-rejected-1400")

    # --- What-if on a server folder (the default source): AUROC / FPR95 before and after the edits [p11]
    _nav(pg, "Concepts")
    pg.get_by_text("Effect on OOD detection").click()
    _idle(pg)
    expect(pg.get_by_text(re.compile("stratified over its subfolders"))).to_be_visible()
    pg.get_by_label("Folder of OOD images (inside the allowed data folders)").fill(str(data["ood"]))
    pg.get_by_label("Folder of OOD images (inside the allowed data folders)").press("Enter")
    _idle(pg)
    pg.get_by_role("button", name="Use this folder").click()
    pg.get_by_text("AUROC, now").wait_for(timeout=300_000)
    _idle(pg)
    whatif = _metrics(pg)
    _shot(pg, "09-whatif-folder-1400")

    # --- Scoring: upload two probe photos; the CSV keeps the user's file names [p10]
    _nav(pg, "Scoring")
    pg.locator('input[type="file"]').first.set_input_files([str(p) for p in data["probes"]])
    _idle(pg)
    pg.get_by_role("button", name="Score these images").click()
    pg.get_by_text("images scored").wait_for(timeout=300_000)
    _idle(pg)
    with pg.expect_download() as dl:
        pg.get_by_role("button", name="Download results (CSV)").click()
    scored = tmp_path / "scores.csv"
    dl.value.save_as(scored)
    import csv

    with open(scored, newline="", encoding="utf-8") as fh:
        files = [row["file"] for row in csv.DictReader(fh)]
    assert sorted(files) == sorted(p.name for p in data["probes"])  # '.JPEG', not '.jpeg'
    _shot(pg, "10-scoring-1400")

    # --- Find images: the rejected concept's images sit in a cluster marked rejected [p3]; names kept [p10]
    _nav(pg, "Find images")
    pg.get_by_label("Concept").first.fill(rejected)
    pg.get_by_label("Concept").first.press("Enter")
    pg.get_by_text("Sits in:").wait_for(timeout=120_000)
    _idle(pg)
    found = _text(pg)
    assert f"({rejected} (rejected))" in found, found[:2000]
    assert ".JPEG" in found
    _shot(pg, "11-search-1400")

    # --- Export: the offline HTML report agrees with the pages [p1, p3, p4, p5, p10, p12]
    _nav(pg, "Export")
    with pg.expect_download(timeout=300_000) as dl:
        pg.get_by_role("button", name="Report (.html)").click()
    report = tmp_path / "report.html"
    dl.value.save_as(report)
    html = report.read_text(encoding="utf-8")
    run = _run(runs_root, "journey-a")
    stats = clusterview.occupied_stats(run.cluster_stats())
    assert f"<h2>Clusters ({len(stats)})</h2>" in html
    cards = re.findall(r'<section class="card".*?</section>', html, flags=re.S)
    assert len(cards) == len(stats)
    for card in cards:
        assert not any(f'title="{n}"' in card for n in excluded_names)
    assert "(rejected)" in re.search(rf'id="cluster-{biggest.cluster}".*?</h3>', html, flags=re.S).group(0)
    assert 'id="ood"' in html, "the report lost the what-if's OOD metrics"
    assert "n_clusters=None" not in html
    assert ".JPEG" in html and ".jpeg" not in html
    _shot(pg, "12-export-1400")

    # --- A second run, from the server folder, k-means with C = 4
    pg.goto(server["url"] + "/data")
    pg.get_by_text("1 · ID images").wait_for()
    _idle(pg)
    if pg.get_by_role("button", name="New run").count():
        pg.get_by_role("button", name="New run").first.click()
        _idle(pg)
    pg.get_by_text("Folder on this server", exact=True).click()
    _idle(pg)
    pg.get_by_label("…or a path inside the allowed folders").fill(str(data["ids"]))
    pg.get_by_label("…or a path inside the allowed folders").press("Enter")
    _idle(pg, 1500)
    kmeans_run_options(pg, 4, "journey-b")
    pg.get_by_role("button", name="Launch mining").click()
    pg.get_by_text("Mining finished").wait_for(timeout=MINE_TIMEOUT_MS)
    _idle(pg)
    assert "run=journey-b" in pg.url

    # --- Compare B with A: which run is better, and the direction of the verdict changes [p6]
    _nav(pg, "Compare runs")
    pg.get_by_label(re.compile(r"^OOD folder")).fill(str(data["ood"]))
    pg.get_by_label(re.compile(r"^OOD folder")).press("Enter")
    _idle(pg)
    pg.get_by_role("button", name="Compare").click()
    _idle(pg, 1500)
    pg.get_by_text(re.compile("AUROC")).first.wait_for(timeout=300_000)
    _idle(pg)
    shown = _text(pg)
    from clustermine.workflows.compare import diff_runs

    d = diff_runs(_run(runs_root, "journey-b"), _run(runs_root, "journey-a"), ood_folder=str(data["ood"]))
    verdict = re.search(r"(A is better|B is better|A and B are equal|Neither run is better)[^\n]*", shown).group(0)
    assert verdict.rstrip() == d["verdict"].replace("\\", "")  # the page's sentence is the engine's
    assert re.search(r"AUROC \d\.\d{3} \(A\) vs \d\.\d{3} \(B\)", verdict)
    assert re.search(r"\d+ ID → OOD .*\d+ OOD → ID", shown), shown[:3000]
    # the same images were uploaded for A and read from a folder for B: no 'images_dir' difference
    assert "images_dir" not in d["settings"]
    _shot(pg, "13-compare-1400")

    # --- CLI: exclude a whole class folder of run B and say how many [p14]
    out = subprocess.run([sys.executable, "-m", "clustermine", "exclude", str(runs_root / "journey-b"),
                          ID_CLASSES[0]], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(rf"{ID_CLASSES[0]}\S*: {PER_CLASS} usable image\(s\)", out.stdout), out.stdout
    assert int(_run(runs_root, "journey-b").excluded_mask().sum()) == PER_CLASS

    # --- A first visit to the Runs page draws New run at once [p13]
    fresh = pg.context.new_page()
    t = time.monotonic()
    fresh.goto(server["url"] + "/")
    fresh.locator("h1").first.wait_for()
    expect(fresh.get_by_role("button", name="New run")).to_be_visible(timeout=15_000)
    first_paint = time.monotonic() - t
    fresh.close()

    # --- The same pages at a laptop's 1280 px
    pg.set_viewport_size({"width": 1280, "height": 900})
    for label, name in (("Runs", "runs"), ("Cluster audit", "audit"), ("Concepts", "concepts"),
                        ("Compare runs", "compare"), ("Find images", "search"), ("Export", "export")):
        _nav(pg, label)
        _idle(pg, 800)
        _shot(pg, f"14-{name}-1280")
    assert whatif["AUROC, now"] != "–"

    total = time.monotonic() - t0
    print(f"journey: estimate {estimate_s:.0f} s, mined in {actual_s:.0f} s (after {t_mined:.0f} s), Runs page "
          f"first paint {first_paint:.1f} s, total {total:.0f} s")
