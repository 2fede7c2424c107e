"""Where features meet (issue 18, points 1-4 and the Concepts counts of 12): excluded images,
rejected concepts, empty clusters and the review tallies read the same from the engine
(``clustermine.workflows.clusterview``), the pages, search, the CLI and the HTML report. Real images: the
planted-contaminant run of ``test_exclusions`` (3 Imagenette classes x 12 + 6 garbage trucks)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from clustermine.workflows import clusterview
from clustermine.cli import main
from clustermine.workflows.remine import remine
from clustermine.method.mining import cluster_alerts
from clustermine.workflows.report import build_report
from clustermine.store import Run
from clustermine.workflows.search import search_image
from test_app import app_env, no_exception, open_app  # noqa: F401  (app_env is a fixture)
from test_exclusions import planted, planted_template  # noqa: F401  (fixtures)


def _names(run: Run) -> list[str]:
    return [str(r["path"]) for r in sorted(run.image_records(ok_only=True), key=lambda r: r["row"])]


def _empty_one_cluster(run: Run) -> tuple[int, list[int]]:
    """Exclude every member of the smallest cluster and re-mine (reuse): the issue's 'size 0' card."""
    stats = [s for s in run.cluster_stats() if s.size > 0]
    target = min(stats, key=lambda s: (s.size, s.cluster)).cluster
    rows = [int(r) for r in np.flatnonzero(run.cluster_ids() == target)]
    run.set_excluded(rows, user="tester")
    remine(run, user="tester")
    return target, rows


def test_excluded_images_are_never_members(planted):
    run = planted
    target, rows = _empty_one_cluster(run)
    other = next(s for s in run.cluster_stats() if s.size > 1 and s.cluster != target)
    extra = int(clusterview.cluster_members(run, other.cluster)[0])
    run.set_excluded([extra], user="tester")  # excluded after the last mining: still hidden

    excluded = set(rows) | {extra}
    for s in run.cluster_stats():
        typical, atypical = clusterview.typical_atypical(run, s.cluster, 6)
        assert not (set(typical) | set(atypical)) & excluded, s.cluster
        assert not set(clusterview.cluster_members(run, s.cluster).tolist()) & excluded
    assert clusterview.typical_atypical(run, target, 6) == ([], [])
    assert (clusterview.voting_cluster_ids(run)[sorted(excluded)] == -1).all()

    labels = clusterview.place_labels(run, np.array(sorted(excluded)))
    assert labels == [clusterview.EXCLUDED] * len(excluded)

    # the report shows no excluded image in a card, and no card for the emptied cluster
    html = build_report(run, n_thumbs=6)
    cards = re.findall(r'<section class="card".*?</section>', html, flags=re.S)
    names = _names(run)
    for card in cards:
        for r in excluded:
            assert f'title="{names[r]}"' not in card
    assert f'id="cluster-{target}"' not in html
    assert "excluded (not ID)" in html

    # search names the excluded image's place
    hits = search_image(run, int(clusterview.cluster_members(run, other.cluster)[1]), k=len(names) - 1)
    by_row = {h.row: h for h in hits}
    assert by_row[extra].excluded and by_row[extra].place == clusterview.EXCLUDED
    assert all(not h.excluded for h in hits if h.row not in excluded)


def test_empty_clusters_are_not_counted_as_clusters(planted):
    run = planted
    target, _ = _empty_one_cluster(run)
    stats = run.cluster_stats()
    assert next(s for s in stats if s.cluster == target).size == 0
    summary = run.meta["summary"]
    assert (summary["n_clusters"], summary["n_occupied"]) == (4, 3)
    assert clusterview.cluster_count(summary) == (3, 1)
    assert clusterview.cluster_count_text(summary) == "3 clusters (1 left empty)"
    assert target not in cluster_alerts(stats)
    assert [s.cluster for s in clusterview.occupied_stats(stats)] == [s.cluster for s in stats if s.cluster != target]
    assert clusterview.cluster_names(run)[target].label == "– (empty)"
    html = build_report(run)
    assert "<h2>Clusters (3)</h2>" in html and "1 more cluster(s) were left empty" in html


def test_a_rejected_concept_is_marked_wherever_it_names_its_cluster(planted, capsys):
    run = planted
    s = max(run.cluster_stats(), key=lambda s: (s.size, -s.cluster))
    concept = run.vocabulary_base()[s.winner]
    run.edit_concept("reject", concept, user="tester")

    name = clusterview.cluster_names(run)[s.cluster]
    assert name.rejected and name.label == f"{concept} (rejected)"
    member = int(clusterview.cluster_members(run, s.cluster)[0])
    assert clusterview.place_labels(run, np.array([member])) == [f"{concept} (rejected)"]
    html = build_report(run)
    card = re.search(rf'<section class="card" id="cluster-{s.cluster}".*?</h3>', html, flags=re.S).group(0)
    assert "(rejected)" in card and f"<s>{concept}</s>" in card
    hits = search_image(run, member, k=5)
    assert any(h.cluster_concept == f"{concept} (rejected)" for h in hits if h.cluster == s.cluster)

    assert main(["search", str(run.path), _names(run)[member], "--image", "--k", str(len(_names(run)) - 1)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if f"cluster {s.cluster} (" in ln]
    assert lines and all(f"cluster {s.cluster} ({concept} (rejected))" in ln for ln in lines)


def test_mined_count_does_not_fall_as_the_user_reviews(planted):
    run = planted
    before = clusterview.concept_counts(run.concepts())
    texts = [c.text for c in run.concepts()]
    assert before["mined"] == len(texts) and before["to_review"] == len(texts) and before["y_pos"] == len(texts)
    run.edit_concept("accept", texts[0], user="tester")
    run.edit_concept("reject", texts[1], user="tester")
    after = clusterview.concept_counts(run.concepts())
    assert after["mined"] == before["mined"]
    assert after["to_review"] == before["to_review"] - 2
    assert (after["accepted"], after["rejected"], after["y_pos"]) == (1, 1, len(texts) - 1)


@pytest.mark.app
def test_pages_agree_on_clusters_names_and_exclusions(app_env, planted):
    run = planted
    target, rows = _empty_one_cluster(run)
    s = max(run.cluster_stats(), key=lambda s: (s.size, -s.cluster))
    concept = run.vocabulary_base()[s.winner]
    run.edit_concept("reject", concept, user="tester")

    at = open_app(run.path.name, "pages/audit.py")
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["clusters"] == "3"
    assert metrics["with alerts"] == str(len(cluster_alerts(clusterview.occupied_stats(run.cluster_stats()))))
    headers = [h.value for h in at.subheader]
    assert not any(h.startswith(f"Cluster {target} ") for h in headers)
    assert any(h.startswith(f"Cluster {s.cluster} ") and "(rejected)" in h for h in headers)

    at = open_app(run.path.name, "pages/concepts.py")
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    counts = clusterview.concept_counts(run.concepts())
    assert metrics["mined"] == str(counts["mined"]) and metrics["to review"] == str(counts["to_review"])

    at = open_app(run.path.name, "pages/clusters.py")
    no_exception(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t.get("name", "") for t in fig["data"]]
    assert f"excluded (not ID): {len(rows)}" in names
    assert any("(rejected)" in n for n in names)


def _select(at, rows: list[int]) -> None:
    """Send a lasso selection of feature ``rows`` on the page's first chart, as the browser sends it
    (the chart's JSON widget state, kept for later runs as the browser keeps it), and run the page."""
    chart_id = at.get("plotly_chart")[0].proto.id
    original = at.__dict__.setdefault("_unpatched_states", at._tree.get_widget_states)

    def with_selection():
        ws = original()
        w = ws.widgets.add()
        w.id = chart_id
        w.string_value = json.dumps({"selection": {"points": [{"customdata": [r]} for r in rows],
                                                   "point_indices": rows, "box": [], "lasso": []}})
        return ws

    at._tree.get_widget_states = with_selection
    at.run()


@pytest.mark.app
def test_map_selection_feedback_is_immediate_and_honest(app_env, planted):
    """The map's exclude button acts on the selected images not yet excluded; the click redraws the
    whole page at once (the map shows the crosses, one toast says how many), and selecting the same
    images again says they are already not ID instead of 'saving nothing'."""
    run = planted
    picked = [3, 17, 25]
    at = open_app(run.path.name, "pages/clusters.py")
    no_exception(at)
    _select(at, picked)
    assert at.button(key="map_exclude").label == "Mark 3 selected as not ID"
    assert at.button(key="map_restore").disabled
    at.button(key="map_exclude").click().run()
    no_exception(at)
    assert sorted(map(int, np.flatnonzero(Run.open(run.path).excluded_mask()))) == picked
    toasts = [t.value.replace("\\", "") for t in at.toast if "marked not ID" in t.value]  # markdown-escaped
    assert toasts == ["3 image(s) marked not ID; re-mine on the Cluster audit page to apply"]
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "excluded (not ID): 3" in [t.get("name") for t in fig["data"]]

    _select(at, picked)  # the same images again
    assert at.button(key="map_exclude").disabled and at.button(key="map_exclude").label == "Mark 0 selected as not ID"
    assert at.button(key="map_restore").label == "Restore 3 selected"
    assert any("3 of the 3 selected image(s) are marked not ID" in i.value.replace("\\", "") for i in at.info)
    assert not any("marked not ID;" in t.value for t in at.toast)  # no stale toast on a later change
