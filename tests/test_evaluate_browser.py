"""The Evaluate page and the report's Evaluation section in headless Chromium at 1280 and 1400 px, on a
copy of the small real run evaluated on real images: the table and all figures render, nothing
overflows the page sideways; screenshots go to ``test-artifacts/`` (gitignored)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser_helpers import browser_page, idle, require_browser, shot
from streamlit_server import streamlit_server
from test_evaluation_store import eval_folders

from clustermine.store import Run
from clustermine.workflows import evaluation_store as es
from clustermine.workflows.report import write_report

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def evaluated_root(small_run_template, tmp_path_factory) -> tuple[Path, Run]:
    from clustermine.method.encoders import load_encoder

    require_browser()
    root = tmp_path_factory.mktemp("eval_browser")
    run_dir = root / "runs" / Run.open(small_run_template).run_id  # the app finds a run by its folder name
    shutil.copytree(small_run_template, run_dir)
    run = Run.open(run_dir)
    id_dir, sets = eval_folders(root / "data")
    es.evaluate_folders(run, id_dir, sets, load_encoder(run.encoder_spec, "cpu"))
    return root / "runs", run


@pytest.mark.parametrize("width", [1280, 1400])
def test_evaluate_page_and_report_render_whole(evaluated_root, width, tmp_path):
    runs_root, run = evaluated_root
    with streamlit_server(runs_root, tmp_path / "streamlit.log", wait_s=60) as srv, \
            browser_page(width, height=2100) as pg:  # Streamlit scrolls inside its main block: a tall window shows it all
        pg.goto(f"{srv['url']}/evaluate?run={run.run_id}")
        pg.locator("h1", has_text="Evaluate").wait_for()
        idle(pg, timeout_ms=120_000)
        pg.locator(".js-plotly-plot").nth(2).wait_for()
        assert pg.locator(".js-plotly-plot").count() == 3  # ROC + one histogram per OOD set
        assert pg.locator('[data-testid="stDataFrame"]').count() == 1
        overflow = pg.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollWidth"
                               " - document.querySelector('[data-testid=\"stMain\"]').clientWidth")
        assert overflow <= 0
        shot(pg, ARTIFACTS, f"evaluate-{width}")
        out = write_report(run, tmp_path / "report.html")
        pg.goto(out.resolve().as_uri())
        pg.locator("#evaluation").scroll_into_view_if_needed()
        assert pg.locator("#evaluation polyline.roc-curve").count() == 2
        assert pg.locator("#evaluation svg.scores").count() == 2
        assert pg.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
        pg.locator("#evaluation").screenshot(path=str(ARTIFACTS / f"report-evaluation-{width}.png"))
