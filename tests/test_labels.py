"""Issue 18 (12): labels a user reads whole — vote-count axes with integer ticks and their title
clear of the ticks, report histogram labels and captions never cut, the cluster count the run
used (not "None"), and "1 member" in the singular."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from clustermine.method.mining import AlertRules, ClusterStats, cluster_alerts
from clustermine.workflows.report import build_report, histogram_svg
from clustermine.store import layout
from clustermine.store import Run


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 26, 99, 100, 101, 999, 12_345])
def test_count_axis_ticks_are_integers_and_few(n):
    from ui.charts import count_dtick

    step = count_dtick(n)
    assert isinstance(step, int) and step >= 1
    assert n / step <= 5  # at most 6 ticks: 0, step, ..., covering n
    assert step == 1 or n / step > 2  # not coarser than needed (1-2-5 steps)


def test_vote_histogram_has_integer_ticks_and_room_for_its_title():
    from ui.charts import vote_histogram

    fig = vote_histogram(["tench", "German short-haired pointer", "goldfish"], [3, 2, 1])
    x = fig.layout.xaxis
    assert x.tickmode == "linear" and x.dtick == 1 and x.tick0 == 0 and x.tickformat == "d"
    assert x.automargin is True and x.title.text == "votes"
    # the long concept name is not cut (only HTML-escaped for hover safety)
    assert "German short-haired pointer" in list(fig.data[0].y)


def test_score_histograms_count_axis_is_integer_and_covers_the_tallest_bar():
    from ui.charts import score_histograms

    rng = np.random.default_rng(0)
    before, after = rng.normal(-3, 1, 7), rng.normal(-2.5, 1, 7)  # a tiny held-out set
    fig = score_histograms(before, after, -3.0)
    y = fig.layout.yaxis
    assert y.tickformat == "d" and isinstance(y.dtick, int) and y.dtick >= 1
    # every series uses the same explicit bins, from which the tallest bar was computed
    bins = {(t.xbins.start, t.xbins.size) for t in fig.data}
    assert len(bins) == 1
    start, size = bins.pop()
    tallest = max(int(np.bincount(((v - start) // size).astype(int)).max()) for v in (before, after))
    assert tallest / y.dtick <= 5


def test_report_histogram_wraps_long_labels_instead_of_cutting_them():
    labels = ["German short-haired pointer", "tench", "a" * 40]
    svg = histogram_svg(labels, [5, 3, 1])
    spans = re.findall(r"<text text-anchor=\"end\" font-size=\"12\">(.*?)</text>", svg)
    shown = [" ".join(re.findall(r"<tspan[^>]*>(.*?)</tspan>", s)) for s in spans]
    assert shown[0] == "German short-haired pointer"
    assert shown[1] == "tench"
    assert shown[2].replace(" ", "") == "a" * 40  # a long word is broken over lines, all of it kept
    assert "…" not in svg
    assert re.findall(r">(\d+)</text></g>", svg) == ["5", "3", "1"]  # integer counts at the bar ends


def test_tiny_cluster_alert_is_singular_for_one_member():
    rules = AlertRules()
    one = ClusterStats(cluster=0, size=1, histogram=[(0, 1, 0.3)], winner=0, purity=1.0, margin=1.0)
    two = ClusterStats(cluster=1, size=2, histogram=[(1, 2, 0.3)], winner=1, purity=1.0, margin=1.0)
    alerts = cluster_alerts([one, two], rules)
    assert "tiny cluster (1 member)" in alerts[0]
    assert rules.tiny_size > 2 and "tiny cluster (2 members)" in alerts[1]


def test_report_prints_the_number_of_clusters_used(small_run):
    text = build_report(Run.open(small_run))
    assert "n_clusters=4," in text and "n_clusters=None" not in text
    meta_file = layout.meta_path(small_run)
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["config"]["n_clusters"] = None  # as a run with the automatic cluster count stores it
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    run = Run.open(small_run)
    assert run.config["n_clusters"] is None
    text = build_report(run)
    assert f"n_clusters={len(run.cluster_stats())} (automatic)" in text and "n_clusters=None" not in text


def test_fit_width_covers_the_longest_cell_and_the_header():
    from ui.widgets import fit_width

    short, long_ = fit_width(["baseline"], "label"), fit_width(["baseline with more words"], "label")
    assert long_ > short >= 7.5 * len("baseline")
    assert fit_width([1, 22, 333], "concepts") >= 6.8 * len("concepts")  # header wider than the numbers
    assert fit_width(["x" * 200], "label", max_px=200) == 200
    assert fit_width([], "status") >= 56


@pytest.mark.app
def test_runs_table_shows_labels_whole_and_every_column(small_run, monkeypatch):
    """Issue 18 (12): the Runs table's label is not cut ("baselin") and the created column is there."""
    from clustermine.workflows.run_admin import set_label
    from test_app import no_exception, open_app

    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(small_run.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    set_label(small_run, "baseline")
    at = open_app(small_run.name)
    no_exception(at)
    df = at.dataframe[0]
    table = df.value
    assert list(table.columns) == ["run", "label", "status", "images", "clusters", "concepts", "mean purity",
                                   "created"]
    assert table.loc[table["run"] == small_run.name, "label"].item() == "baseline"
    from ui.widgets import fit_width

    cfg = {k.split(":", 1)[-1]: v for k, v in json.loads(df.proto.columns).items()}  # the page's column_config
    assert cfg["label"]["width"] >= fit_width(["baseline"], "label")
    assert cfg["created"]["width"] >= fit_width(list(table["created"]), "created")
    assert sum(cfg[c]["width"] for c in table.columns) <= 790  # all 8 columns fit a 1280 px window
    set_label(small_run, "second try with three garbage trucks added to the images")
    at = open_app(small_run.name)
    shown = at.dataframe[0].value.loc[lambda t: t["run"] == small_run.name, "label"].item()
    assert shown.endswith("…") and "second try with three garbage trucks added to the images".startswith(shown[:-1])
    assert "second try with three garbage trucks added to the images" in "\n".join(m.value for m in at.markdown)
