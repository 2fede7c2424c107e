"""Issue 19 (7): where a kept library does it better. The HTML report is rendered by autoescaped
Jinja2 templates shipped as package data; the density rasters are ``np.histogram2d``; every NumPy
L2 normalisation of features goes through :func:`clustermine.linalg.l2_normalize`."""

from __future__ import annotations

import fnmatch
import html
import json
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from clustermine.workflows import report
from clustermine.store import layout
from clustermine.store import Run

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
    run.edit_concept("add", "o'brien <i>fish</i>", user=evil)
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
