"""Find images (clustermine.workflows.search): rankings equal a brute-force float64 ranking; a class name
finds that class's photos in a real run; the CLI verb and the app page."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clustermine.cli import main
from clustermine.core.errors import ClusterMineError
from clustermine.store import Run
from clustermine.workflows.search import FeatureIndex, feature_index, row_of_path, search_image, search_text, top_k
from test_app import app_env, no_exception, open_app  # noqa: F401,E402  (app_env is a fixture)

ROOT = Path(__file__).resolve().parents[1]


def brute_force(features: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of every row with ``query``, float64, written out independently of the engine."""
    f = features.astype(np.float64)
    q = query.astype(np.float64)
    return np.array([row @ q / (np.sqrt(row @ row) * np.sqrt(q @ q)) for row in f])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(500, 24)).astype(np.float32) * rng.uniform(0.5, 3, size=(500, 1)).astype(np.float32)
    query = rng.normal(size=24).astype(np.float32)
    rows, sims = FeatureIndex(feats).nearest(query, 10)
    ref = brute_force(feats, query)
    # the same 10 rows in the same order, unless two brute-force values are closer than float32 noise
    expected = np.argsort(-ref, kind="stable")[:10]
    gaps = -np.diff(np.sort(ref)[::-1][:11])
    assert gaps.min() > 1e-5, "random data with a near tie: pick another seed"
    assert rows.tolist() == expected.tolist()
    np.testing.assert_allclose(sims, ref[rows], atol=1e-5)


def test_top_k_ties_exclusion_and_small_k():
    sims = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert top_k(sims, 3).tolist() == [1, 3, 0]  # ties: lower row first
    assert top_k(sims, 2, exclude=np.array([1])).tolist() == [3, 0]
    assert top_k(sims, 99).tolist() == [1, 3, 0, 2, 4]
    assert top_k(sims, 0).tolist() == []


def test_image_query_on_a_run_excludes_itself_and_matches_brute_force(small_run_template):
    run = Run.open(small_run_template)
    feats = run.features()
    ref = brute_force(feats, feats[7])
    ref[7] = -np.inf
    hits = search_image(run, 7, k=5)
    assert 7 not in [h.row for h in hits]
    assert [h.row for h in hits] == np.argsort(-ref, kind="stable")[:5].tolist()
    cids = run.cluster_ids()
    stats = {s.cluster: s for s in run.cluster_stats()}
    vocab = run.vocabulary_base()
    for h in hits:
        assert h.cluster == int(cids[h.row])
        assert abs(h.similarity - ref[h.row]) < 1e-5
        want = vocab[stats[h.cluster].winner] if h.cluster >= 0 else None
        assert h.cluster_concept == want
    # the index is cached per features version
    assert feature_index(run) is feature_index(Run.open(small_run_template))
    with pytest.raises(ClusterMineError, match="out of range"):
        search_image(run, len(feats), k=3)


def test_text_query_finds_the_class(small_run_template):
    """The run holds 10 photos each of tench, springer, cassette player and church."""
    run = Run.open(small_run_template)
    for text, wnid in (("tench", "n01440764"), ("church", "n03028079")):
        hits = search_text(run, text, k=5)
        classes = [Path(h.path).parts[0] for h in hits]
        assert classes == [wnid] * 5, (text, classes)
        # similarities equal the cosine of the stored features with the query embedding
        from clustermine.workflows.search import embed_query

        q = embed_query(run, text)
        ref = brute_force(run.features(), q)
        assert [h.row for h in hits] == np.argsort(-ref, kind="stable")[:5].tolist()
    with pytest.raises(ClusterMineError, match="empty"):
        search_text(run, "   ")


def test_cli_search(small_run_template, capsys):
    assert main(["search", str(small_run_template), "church", "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [Path(h["path"]).parts[0] for h in hits] == ["n03028079"] * 3
    run = Run.open(small_run_template)
    first = hits[0]["path"]
    assert main(["search", str(small_run_template), first, "--image", "--k", "2", "--json"]) == 0
    near = json.loads(capsys.readouterr().out)
    assert [h["row"] for h in near] == [h.row for h in search_image(run, row_of_path(run, first), 2)]
    assert main(["search", str(small_run_template), "no/such.jpg", "--image"]) == 2
    assert "not a usable image" in capsys.readouterr().err


@pytest.mark.app
def test_search_page(app_env, small_run):
    at = open_app(small_run.name, "pages/search.py")
    no_exception(at)
    at.text_input(key="search_text").set_value("church").run()
    assert not at.exception, [e.value for e in at.exception]
    run = Run.open(small_run)
    expected = [h.path for h in search_text(run, "church", k=12)]
    assert len(at.dataframe) == 1
    table = at.dataframe[0].value
    assert table["image"].tolist() == expected
    # image -> images: pick the first hit as the query image
    at.selectbox(key="search_image").set_value(expected[0]).run()
    assert not at.exception, [e.value for e in at.exception]
    want = [h.path for h in search_image(run, row_of_path(run, expected[0]), 12)]
    assert len(at.dataframe) == 2  # text results first, then the neighbours
    assert at.dataframe[1].value["image"].tolist() == want


def test_row_of_path_and_find_image_paths_are_columnar(small_run_template):
    from clustermine.workflows.search import find_image_paths

    run = Run.open(small_run_template)
    records = run.image_records(ok_only=True)
    for r in records[::7]:  # relative and absolute paths both name the row
        assert row_of_path(run, r["path"]) == r["row"] == row_of_path(run, r["abs_path"])
    church = [r["path"] for r in records if "n03028079" in r["path"]]
    found, n = find_image_paths(run, "N03028079/", limit=4)  # case-insensitive substring, row order
    assert n == len(church) and found == church[:4]
    everything, n_all = find_image_paths(run, "", limit=1000)
    assert everything == [r["path"] for r in records] and n_all == len(records)
    assert find_image_paths(run, "no-such-name") == ([], 0)


@pytest.mark.app
def test_search_page_filters_the_picker_on_a_large_run(app_env, small_run, monkeypatch):
    """Above PICKER_MAX images the page does not list every image: a filter narrows the picker."""
    import clustermine.workflows.search as search_engine

    monkeypatch.setattr(search_engine, "PICKER_MAX", 5)
    at = open_app(small_run.name, "pages/search.py")
    no_exception(at)
    assert len(at.selectbox(key="search_image").options) == 5
    assert "first 5 are listed" in " ".join(c.value for c in at.caption)
    at.text_input(key="search_image_filter").set_value("n02979186").run()
    options = at.selectbox(key="search_image").options
    run = Run.open(small_run)
    assert options == [r["path"] for r in run.image_records(ok_only=True) if "n02979186" in r["path"]][:5]
    at.selectbox(key="search_image").set_value(options[0]).run()
    no_exception(at)
    want = [h.path for h in search_image(run, row_of_path(run, options[0]), 12)]
    assert at.dataframe[-1].value["image"].tolist() == want


@pytest.mark.browser
def test_search_page_in_chromium(small_run, tmp_path):
    """The real UI: a deep link to the Find images page, type a class name, see its photos."""
    import time

    from conftest import CHROMIUM, missing_resource

    if not CHROMIUM.exists():
        missing_resource(f"{CHROMIUM} not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_resource(f"playwright not importable: {exc}")
    sys.path.insert(0, str(ROOT / "tests"))
    from streamlit_server import streamlit_server

    expected = [h.path for h in search_text(Run.open(small_run), "church", k=12)]
    with streamlit_server(small_run.parent, tmp_path / "streamlit.log", wait_s=60) as srv:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(120_000)
            pg.goto(f"{srv['url']}/search?run={small_run.name}")
            pg.get_by_role("heading", name="Find images").wait_for()
            box = pg.get_by_label("Concept")
            box.fill("church")
            box.press("Enter")
            pg.get_by_text("Sits in:").wait_for()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and pg.locator('[data-testid="stImage"] img').count() < 12:
                pg.wait_for_timeout(250)
            # captions carry zero-width break opportunities after _ - . / (ui.text.wrap_name)
            captions = [c.replace("\u200b", "") for c in pg.locator('[data-testid="stImageCaption"]').all_inner_texts()]
            browser.close()
    assert len(captions) >= 12
    assert [c.split(" · ")[0].split(". ", 1)[1] for c in captions[:12]] == expected
