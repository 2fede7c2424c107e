"""Issue 19 (7): where a kept library does it better. The HTML report is rendered by autoescaped
Jinja2 templates shipped as package data; the density rasters are ``np.histogram2d``; every NumPy
L2 normalisation of features goes through :func:`clustermine.core.linalg.l2_normalize`."""

from __future__ import annotations

import fnmatch
import html
import json
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from clustermine.workflows import concept_edits
from clustermine.core.linalg import l2_normalize
from clustermine.store import Run, layout
from clustermine.workflows import projection as pj
from clustermine.workflows import report

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ the report
def test_report_templates_ship_as_package_data():
    """The templates live in the package and the wheel's package-data globs cover each of them."""
    folder = resources.files("clustermine") / "templates"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".j2"))
    assert {"report.html.j2", "histogram.svg.j2"} <= set(names)
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = cfg["tool"]["setuptools"]["package-data"]["clustermine"]
    for name in names:
        assert any(fnmatch.fnmatch(f"templates/{name}", g) for g in globs), name
    deps = " ".join(cfg["project"]["dependencies"]).lower()
    reqs = (ROOT / "requirements.txt").read_text(encoding="utf-8").lower()
    assert "jinja2" in deps and "jinja2==" in reqs


def test_report_escapes_every_user_text_and_keeps_its_markup(small_run):
    """Hostile text in the run label, a concept, an edit's user and a file name comes out as text
    (the html.escape form readers search for); the report's own markup (SVG bars, thumbnails) is intact."""
    evil = "<script>alert('x')</script> & \"q\""
    meta_file = layout.meta_path(small_run)
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["label"] = evil
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    run = Run.open(small_run)
    concept_edits.edit_concept(run, "add", "o'brien <i>fish</i>", user=evil)
    run = Run.open(small_run)
    text = report.build_report(run, n_thumbs=2)
    assert "<script" not in text and "<i>fish" not in text
    assert text.count(html.escape(evil)) >= 3  # label in the header, the concept's and the edit's user
    assert html.escape("o'brien <i>fish</i>") in text
    stats = [s for s in run.cluster_stats() if s.size]
    assert text.count('<svg class="hist"') == sum(1 for s in stats if s.histogram)
    assert text.count("<rect") == sum(min(len(s.histogram), 8) for s in stats)
    assert text.count('src="data:image/jpeg;base64,') >= len(stats)
    assert report._templates().autoescape is True


def test_histogram_labels_are_escaped_and_the_svg_is_markup():
    svg = report.histogram_svg(["<b>&'\"</b>", "tench"], [2, 1])
    assert hasattr(svg, "__html__")  # embeds unescaped in the report
    assert "<b>" not in svg and html.escape("<b>&'\"</b>") in svg
    assert svg.count("<rect") == 2 and svg.startswith('<svg class="hist"')
    assert report.histogram_svg([], []) == '<p class="muted">no votes</p>'


# ------------------------------------------------------------------------------------ density rasters
def _points_on_edges(extent, shape, rng) -> np.ndarray:
    """Random points plus points exactly on every pixel edge, on the extent's border, outside it and NaN."""
    x0, x1, y0, y1 = extent
    h, w = shape
    xe, ye = np.linspace(x0, x1, w + 1), np.linspace(y0, y1, h + 1)
    inside = np.c_[rng.uniform(x0, x1, 5000), rng.uniform(y0, y1, 5000)]
    grid = np.array(np.meshgrid(xe, ye)).reshape(2, -1).T
    outside = np.array([[x0 - 1e-3, y0], [x1 + 1e-3, y1], [x0, y1 + 1.0], [np.nan, y0], [x0, np.inf]])
    return np.concatenate([inside, grid, outside])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_density_counts_are_numpys_histogram2d_and_pixel_of_bins_alike(dtype):
    rng = np.random.default_rng(11)
    extent, shape = (-1.3, 2.9, 0.1, 0.8), (7, 13)
    c = _points_on_edges(extent, shape, rng).astype(dtype)
    ref, _, _ = np.histogram2d(c[:, 1], c[:, 0], bins=shape, range=[extent[2:], extent[:2]])
    counts = pj.density_counts(c, extent, shape)
    assert counts.dtype == np.int64 and np.array_equal(counts, ref)
    pix = pj.pixel_of(c, extent, shape)
    # the majority raster's pixels are the counts' pixels, edge points included
    assert np.array_equal(np.bincount(pix[pix >= 0], minlength=shape[0] * shape[1]).reshape(shape), counts)
    x, y = c[:, 0].astype(np.float64), c[:, 1].astype(np.float64)  # as stored: a float32 edge may fall outside
    inside = (x >= extent[0]) & (x <= extent[1]) & (y >= extent[2]) & (y <= extent[3])
    assert np.array_equal(pix >= 0, inside) and not inside[-5:].any() and counts.sum() == inside.sum()
    lab, _ = pj.density_majority(c, rng.integers(0, 3, len(c)), extent, shape)
    assert ((lab >= 0) == (counts > 0)).all()


def test_density_mean_is_the_weighted_histogram2d_over_the_counts():
    rng = np.random.default_rng(12)
    extent, shape = (0.0, 1.0, 0.0, 1.0), (6, 9)
    c = _points_on_edges(extent, shape, rng)
    v = rng.normal(size=len(c))
    v[::5] = np.nan
    ok = np.isfinite(v)
    s, _, _ = np.histogram2d(c[ok, 1], c[ok, 0], bins=shape, range=[(0, 1), (0, 1)], weights=v[ok])
    n, _, _ = np.histogram2d(c[ok, 1], c[ok, 0], bins=shape, range=[(0, 1), (0, 1)])
    mean = pj.density_mean(c, v, extent, shape)
    assert np.array_equal(np.isnan(mean), n == 0)
    np.testing.assert_allclose(mean[n > 0], s[n > 0] / n[n > 0], rtol=1e-12)
    pix = pj.pixel_of(c, extent, shape)
    for p in rng.choice(np.flatnonzero(n.ravel()), 10, replace=False):  # brute force on a few pixels
        assert mean.ravel()[p] == pytest.approx(np.nanmean(v[pix == p]))


# ------------------------------------------------------------------------------------ one L2 helper
def test_l2_normalize_dtypes_vectors_and_in_place_chunks():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(9, 5)).astype(np.float16)
    x[4] = 0
    ref = x.astype(np.float64) / np.where(np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True) > 0,
                                          np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True), 1.0)
    f64 = l2_normalize(x, dtype=np.float64)
    assert f64.dtype == np.float64 and np.allclose(f64, ref, atol=1e-15, rtol=0)
    big = np.full((12, 5), 7.0, dtype=np.float32)
    got = l2_normalize(x, out=big[2:11])
    assert np.shares_memory(got, big) and (big[[0, 1, 11]] == 7.0).all()  # only the chunk is written
    np.testing.assert_allclose(big[2:11], ref, atol=1e-6)
    v = l2_normalize(np.array([3.0, -4.0]))
    assert v.shape == (2,) and np.allclose(v, [0.6, -0.8])
    assert l2_normalize(np.zeros((0, 5))).shape == (0, 5)


def test_features_are_normalised_by_the_one_helper_everywhere():
    """Each engine path that makes unit rows agrees with the helper (search index, typical members,
    the chunked k-NN input, the map's neighbour weights) and no module divides by row norms by hand."""
    import re

    from clustermine.method.clustering.knn import normalized_float32
    from clustermine.method.mining import typical_atypical
    from clustermine.workflows.search import FeatureIndex

    rng = np.random.default_rng(14)
    x = rng.normal(size=(40, 6)).astype(np.float32) * rng.uniform(0.1, 9, (40, 1)).astype(np.float32)
    x[5] = 0
    unit = l2_normalize(x)
    assert np.array_equal(FeatureIndex(x).unit, unit)
    assert np.array_equal(normalized_float32(x, chunk_rows=7), unit)
    q = x[3] * 5
    np.testing.assert_allclose(FeatureIndex(x).similarities(q), unit @ unit[3], rtol=1e-5, atol=1e-6)
    ids = np.zeros(40, dtype=int)
    u64 = l2_normalize(x, dtype=np.float64)
    sims = u64 @ l2_normalize(x.astype(np.float64).mean(axis=0), dtype=np.float64)
    order = np.lexsort((np.arange(40), -sims))
    assert typical_atypical(x, ids, 0, 5) == (order[:5].tolist(), order[::-1][:5].tolist())

    by_hand = re.compile(r"/=?\s*(np\.maximum\(|np\.where\(|max\(|float\()*\s*(np\.linalg\.norm|norms?\b|np\.sqrt)")
    allowed = {"linalg.py", "feature_input.py"}  # feature_input: the norms it checks divide the rows
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "clustermine").rglob("*.py"))
                 if p.name not in allowed
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if by_hand.search(line)]
    assert offenders == []
