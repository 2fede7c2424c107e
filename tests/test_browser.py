"""End-to-end journey in a real browser (Debian chromium driven by Playwright's sync API):
upload images, mine, look at every page, select points on the map, score an image, reject a
concept and see the score change, reload and find the same run. Screenshots of every page go to
``test-artifacts/`` (gitignored). Never runs ``playwright install``: it uses /usr/bin/chromium.
"""

from __future__ import annotations

import csv
import time
import zipfile
from pathlib import Path

import pytest
from browser_helpers import browser_page, idle, kmeans_run_options, nav, require_browser, shot
from streamlit_server import streamlit_server
from clustermine.workflows.whatif import run_detector

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
MINE_TIMEOUT_MS = 900_000  # first use embeds the 118K-noun corpus (~90 s idle machine); cached afterwards


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    runs_root = tmp_path_factory.mktemp("browser_runs")
    with streamlit_server(runs_root, runs_root / "streamlit.log", wait_s=60) as srv:
        yield {"url": srv["url"], "runs_root": runs_root}


@pytest.fixture(scope="module")
def page(server):
    with browser_page(1500) as pg:
        yield pg


def _idle(pg, ms: int = 400) -> None:
    idle(pg, ms, timeout_ms=120_000)


def _shot(pg, name: str) -> None:
    shot(pg, ARTIFACTS, name)


_nav = nav


def _download_scores(pg, tmp: Path) -> dict[str, dict]:
    with pg.expect_download() as dl:
        pg.get_by_role("button", name="Download results (CSV)").click()
    path = tmp / f"scores-{time.monotonic_ns()}.csv"
    dl.value.save_as(path)
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def _same_as_engine(row: dict, run_dir: Path, image: Path) -> None:
    """A row of the Scoring page's CSV equals ``clustermine.score_images`` for the same file."""
    from clustermine import score_images
    from clustermine.store import Run

    run = Run.open(run_dir)
    (e,) = score_images(run, [image])
    thr = run_detector(run).threshold
    assert float(row["log score"]) == pytest.approx(e["log_score"], abs=1e-3)  # float32 sums at 1/tau = 100
    assert float(row["threshold"]) == pytest.approx(thr, abs=1e-3)
    assert row["verdict"] == ("ID" if e["log_score"] >= thr else "OOD")
    assert row["top positive concepts"].split(" (")[0] == e["top_positive"][0][0]


def test_user_journey(server, page, tmp_path):
    from conftest import shared
    from playwright.sync_api import expect

    src = shared("imagenette_train100")
    images = [f for cls in ("n01440764", "n02102040", "n03028079")
              for f in sorted((src / cls).iterdir())[:4]]
    probe = sorted((src / "n02979186").iterdir())[0]  # a class the run never saw
    pg = page
    t0 = time.monotonic()

    # A deep link is the first request this server sees: it must still open inside the app frame.
    pg.goto(server["url"] + "/data")
    pg.get_by_text("1 · ID images").wait_for()
    expect(pg.locator('[data-testid="stSidebarNav"]').get_by_text("Cluster audit")).to_be_visible()

    # --- Data: upload 12 images, C = 2, k-means, launch and wait.
    pg.locator('input[type="file"]').first.set_input_files([str(p) for p in images])
    pg.get_by_text("12 file(s) selected").wait_for()
    kmeans_run_options(pg, 2, "browser run")
    _shot(pg, "1-data-new-run")
    pg.get_by_role("button", name="Launch mining").click()
    pg.get_by_text("Mining finished").wait_for(timeout=MINE_TIMEOUT_MS)
    _idle(pg)
    assert "run=browser-run" in pg.url
    _shot(pg, "2-data-finished")
    t_mined = time.monotonic() - t0

    # --- Reload: the same run comes back (id in the URL, state in the run folder).
    pg.reload()
    pg.get_by_text("Mining finished").wait_for()
    assert "run=browser-run" in pg.url
    expect(pg.get_by_text("Run browser-run")).to_be_visible()
    expect(pg.get_by_role("combobox", name="Run", exact=True)).to_have_value("browser-run")

    # --- Runs page.
    _nav(pg, "Runs")
    assert "run=browser-run" in pg.url  # page navigation keeps the run in the URL
    _shot(pg, "3-runs")

    # --- Cluster map: box-select everything and see thumbnails.
    _nav(pg, "Cluster map")
    plot = pg.locator(".js-plotly-plot").first
    plot.wait_for()
    plot.hover()
    pg.locator('[data-title="Box Select"]').first.click()
    box = pg.locator(".nsewdrag").first.bounding_box()
    pg.mouse.move(box["x"] + 3, box["y"] + 3)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
    pg.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] - 3, steps=5)
    pg.mouse.up()
    pg.get_by_text("12 selected image(s)").wait_for()
    _idle(pg)
    expect(pg.locator('[data-testid="stImage"]')).to_have_count(12, timeout=60_000)  # one thumbnail each
    _shot(pg, "4-cluster-map-selection")

    # --- Audit: one card per cluster.
    _nav(pg, "Cluster audit")
    pg.get_by_text("Most typical").first.wait_for()
    assert pg.locator("h3", has_text="Cluster ").count() == 2
    _shot(pg, "5-audit")

    # --- Scoring: upload an image, read its score from the CSV.
    _nav(pg, "Scoring")
    pg.locator('input[type="file"]').first.set_input_files(str(probe))
    _idle(pg)
    pg.get_by_role("button", name="Score these images").click()
    pg.get_by_text("images scored").wait_for(timeout=120_000)
    _idle(pg)
    before = _download_scores(pg, tmp_path)
    assert list(before) == [probe.name]
    _same_as_engine(before[probe.name], server["runs_root"] / "browser-run", probe)
    top_positive = before[probe.name]["top positive concepts"].split(" (")[0]
    _shot(pg, "6-scoring")

    # --- Concepts: reject the concept that supports this image most.
    _nav(pg, "Concepts")
    pg.get_by_text("What if?").wait_for()
    _idle(pg)
    _shot(pg, "7-concepts")
    pick = pg.get_by_label("Concept", exact=True)
    pick.click()
    pg.get_by_role("option", name=top_positive, exact=True).click()
    _idle(pg)
    pg.get_by_role("button", name="Reject").click()
    pg.get_by_text(f"{top_positive} → rejected").wait_for()  # the toast confirming the edit
    _idle(pg)
    _shot(pg, "8-concepts-after-reject")

    # --- Scoring again: the same image, a different score.
    _nav(pg, "Scoring")
    pg.get_by_text("images scored").wait_for(timeout=120_000)
    _idle(pg)
    after = _download_scores(pg, tmp_path)
    _same_as_engine(after[probe.name], server["runs_root"] / "browser-run", probe)
    # its best positive concept is now a negative: a lower score
    assert float(after[probe.name]["log score"]) < float(before[probe.name]["log score"]) - 1e-3
    assert top_positive not in after[probe.name]["top positive concepts"]

    # --- Export.
    _nav(pg, "Export")
    bundle_button = pg.get_by_role("button", name="Detector bundle (.zip)")
    bundle_button.wait_for()
    _shot(pg, "9-export")
    with pg.expect_download(timeout=120_000) as dl:
        bundle_button.click()
    bundle = tmp_path / "detector.zip"
    dl.value.save_as(bundle)
    with zipfile.ZipFile(bundle) as zf:
        assert "detector/detector.json" in zf.namelist()
        positives = zf.read("detector/positive_concepts.txt").decode().splitlines()
    assert top_positive not in positives  # the bundle reflects the rejection

    # --- A fresh tab with the shared link opens the same run on the same page.
    pg.goto(server["url"] + "/concepts?run=browser-run")
    pg.get_by_text("What if?").wait_for()
    expect(pg.get_by_role("combobox", name="Run", exact=True)).to_have_value("browser-run")

    total = time.monotonic() - t0
    print(f"browser journey: mined after {t_mined:.0f} s, total {total:.0f} s")
