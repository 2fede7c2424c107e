"""Exclude contaminants and re-mine (issue 13, section 1), on real images with a planted contaminant
class: 3 Imagenette classes x 12 photos plus 6 photos of a fourth class (garbage truck)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_subset, shared

from clustermine.cli import main
from clustermine.core.errors import ClusterMineError
from clustermine.workflows.remine import last_changes, remine
from clustermine.store import layout
from clustermine.store import Run
from test_app import app_env, no_exception, open_app  # noqa: F401,E402  (app_env is a fixture)
from clustermine.workflows.whatif import run_detector

ID_CLASSES = ["n01440764", "n02102040", "n03028079"]
CONTAMINANT = "n03417042"


@pytest.fixture(scope="module")
def planted_template(tmp_path_factory) -> Path:
    from clustermine.workflows.pipeline import MineConfig, mine

    root = tmp_path_factory.mktemp("planted")
    src = shared("imagenette_train100")
    images = copy_subset(src, root / "images", ID_CLASSES, 12)
    copy_subset(src, images, [CONTAMINANT], 6)
    mine(images, root / "run", MineConfig(n_clusters=4, clusterer="kmeans", seed=0))
    return root / "run"


@pytest.fixture
def planted(planted_template, tmp_path) -> Run:
    dst = tmp_path / "run"
    shutil.copytree(planted_template, dst)
    return Run.open(dst)


def contaminant_rows(run: Run) -> list[int]:
    return [r["row"] for r in run.image_records(ok_only=True) if r["path"].startswith(CONTAMINANT + "/")]


def contaminant_concept(run: Run) -> str:
    """The mined concept whose electing clusters are mostly contaminant images (the scenario's premise)."""
    cids, bad = run.cluster_ids(), set(contaminant_rows(run))
    for m in run.mined_concepts():
        members = [i for i in np.flatnonzero(np.isin(cids, m.clusters))]
        if sum(i in bad for i in members) > len(members) / 2:
            return m.text
    pytest.fail("the planted class did not elect its own concept: the scenario does not hold")


def test_excluding_the_planted_class_removes_its_concept_and_keeps_decisions(planted):
    run = planted
    bad_concept = contaminant_concept(run)
    others = [m.text for m in run.mined_concepts() if m.text != bad_concept]
    assert others
    unrelated = others[-1]
    run.edit_concept("reject", unrelated, user="ann")
    paths = [str(Path(run.image_paths()[r])) for r in contaminant_rows(run)]  # absolute paths work
    changed = run.set_excluded(paths, user="bob")
    assert sorted(changed) == sorted(contaminant_rows(run))
    assert run.excluded_mask().sum() == 6 and run.excluded_mask()[contaminant_rows(run)].all()
    log = run.exclusion_log()
    assert {e["user"] for e in log} == {"bob"} and all(e["ts"] and e["action"] == "exclude" for e in log)

    changes = remine(run, user="bob")
    run = Run.open(run.path)
    mined = {m.text for m in run.mined_concepts()}
    assert bad_concept not in mined and bad_concept not in run.positive_concepts()
    assert set(others) <= mined  # the clusters of the other classes vote as before
    assert run.find_concept(unrelated).status == "rejected"  # the user's decision still applies
    assert changes["y_pos_removed"] == [bad_concept] and changes["y_pos_added"] == []
    assert changes["decisions_not_applying"] == []
    # the cluster(s) the contaminant elected lost members: they are the affected ones
    assert changes["clusters_affected"] and all(
        s.size < json.loads((layout.previous_dir(run.path) / layout.CLUSTER_STATS).read_text())[s.cluster]["size"]
        for s in run.cluster_stats() if s.cluster in changes["clusters_affected"])
    prev = json.loads((layout.previous_dir(run.path) / layout.MINED).read_text())
    assert bad_concept in {m["text"] for m in prev}
    assert last_changes(run) == changes
    # no excluded image votes: every cluster's size counts only kept mining images
    assert sum(s.size for s in run.cluster_stats()) == int(((run.cluster_ids() >= 0) & ~run.excluded_mask()).sum())


def test_decision_on_a_concept_no_longer_mined_is_reported_and_returns_with_it(planted):
    run = planted
    bad_concept = contaminant_concept(run)
    run.edit_concept("accept", bad_concept, user="ann")
    run.set_excluded(contaminant_rows(run), user="bob")
    changes = remine(run)
    assert [(d["concept"], d["action"], d["user"]) for d in changes["decisions_not_applying"]] == \
        [(bad_concept, "accept", "ann")]
    run.set_excluded(contaminant_rows(run), restore=True, user="bob")
    assert not run.excluded_mask().any()
    changes = remine(run)
    assert changes["y_pos_added"] == [bad_concept]
    assert Run.open(run.path).find_concept(bad_concept).status == "accepted"


def test_threshold_is_calibrated_without_excluded_images(planted):
    """Excluding a held-out image (held-out images never vote, so no other calibration score can
    change) removes exactly its score from the calibration set; the threshold is then the
    order-statistic rule on the remaining scores."""
    from clustermine.method.calibration import choose_threshold
    from clustermine.workflows.whatif import calibration_set

    run = planted
    before = calibration_set(run)
    hold_rows = before.rows[before.is_holdout]
    assert len(hold_rows) >= 3
    victim = int(hold_rows[np.argmin(before.current[before.is_holdout])])  # the lowest held-out score
    run.set_excluded([victim], user="bob")
    remine(run)
    run = Run.open(run.path)
    assert not run.holdout_mask()[victim]
    after = calibration_set(run)
    assert victim not in after.rows.tolist()
    keep = before.rows != victim
    np.testing.assert_array_equal(after.rows, before.rows[keep])
    np.testing.assert_allclose(after.current, before.current[keep], atol=1e-9)
    expected = choose_threshold(before.current[keep], 0.95).threshold
    assert run_detector(run).threshold == pytest.approx(expected, abs=1e-9)
    if before.current.min() == before.current[before.rows == victim][0]:  # it set the old threshold
        assert run_detector(run).threshold > choose_threshold(before.current, 0.95).threshold


def test_recluster_uses_the_stored_settings_and_leaves_excluded_images_out(planted):
    from clustermine.method.clustering import make_clusterer

    run = planted
    bad_concept = contaminant_concept(run)
    run.set_excluded(contaminant_rows(run))
    changes = remine(run, recluster=True)
    run = Run.open(run.path)
    assert changes["mode"] == "recluster"
    voters = (run.cluster_ids() >= 0) & ~run.excluded_mask()
    ref = make_clusterer("kmeans", 4, seed=0).fit_predict(run.features()[voters])
    assert np.array_equal(run.cluster_ids()[voters], ref)
    assert (run.cluster_ids()[contaminant_rows(run)] >= 0).all()  # still placed on the map, but do not vote
    assert bad_concept not in {m.text for m in run.mined_concepts()}


def test_exclusion_log_survives_concurrent_sessions(planted):
    rows = contaminant_rows(planted)
    runs = [Run.open(planted.path) for _ in rows]
    threads = [threading.Thread(target=r.set_excluded, args=([row],), kwargs={"user": f"u{row}"})
               for r, row in zip(runs, rows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = Run.open(planted.path).exclusion_log()
    assert sorted(e["row"] for e in log) == sorted(rows) and [e["seq"] for e in log] == list(range(1, 7))


def test_bad_input_is_named_and_cli_verbs(planted, capsys):
    with pytest.raises(ClusterMineError, match="nope.jpg"):
        planted.set_excluded(["nope.jpg"])
    assert main(["exclude", str(planted.path), "nope.jpg"]) == 2
    assert "nope.jpg" in capsys.readouterr().err
    rel = [r["path"] for r in planted.image_records(ok_only=True) if r["row"] in contaminant_rows(planted)]
    assert main(["exclude", str(planted.path), *rel, "--user", "cli"]) == 0
    assert main(["exclude", str(planted.path), rel[0], "--restore"]) == 0
    assert int(Run.open(planted.path).excluded_mask().sum()) == 5
    capsys.readouterr()
    assert main(["remine", str(planted.path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_excluded"] == 5 and out["mode"] == "reuse"
    from clustermine.workflows.tables import image_table

    table, _ = image_table(Run.open(planted.path))
    assert sum(table["excluded"]) == 5


def test_cli_excludes_a_folder_or_a_pattern_and_says_how_many(planted, capsys, monkeypatch):
    """A folder (scanned-relative or absolute) or a glob excludes every usable image under it and
    prints how many; a path matching nothing is refused with its name and nothing is logged."""
    bad = sorted(contaminant_rows(planted))
    folder_abs = Path(planted.image_paths()[bad[0]]).parent
    assert main(["exclude", str(planted.path), str(folder_abs)]) == 0
    out = capsys.readouterr().out
    assert f"{folder_abs}: {len(bad)} usable image(s) under this folder" in out
    assert f"excluded {len(bad)} image(s)" in out
    assert sorted(np.flatnonzero(Run.open(planted.path).excluded_mask())) == bad

    assert main(["exclude", str(planted.path), CONTAMINANT + "/", "--restore"]) == 0  # as scanned
    assert f"restored {len(bad)} image(s)" in capsys.readouterr().out
    assert not Run.open(planted.path).excluded_mask().any()

    one_class = [r["row"] for r in planted.image_records(ok_only=True) if r["path"].startswith(ID_CLASSES[0] + "/")]
    assert main(["exclude", str(planted.path), f"{ID_CLASSES[0]}/*", "--user", "cli"]) == 0
    out = capsys.readouterr().out
    assert f"{ID_CLASSES[0]}/*: {len(one_class)} usable image(s) match" in out
    assert sorted(np.flatnonzero(Run.open(planted.path).excluded_mask())) == sorted(one_class)

    monkeypatch.chdir(folder_abs.parent)  # relative to the current folder works too
    assert main(["exclude", str(planted.path), CONTAMINANT]) == 0
    assert f"excluded {len(bad)} image(s)" in capsys.readouterr().out

    n_logged = len(Run.open(planted.path).exclusion_log())
    empty = folder_abs.parent / "empty_dir"
    empty.mkdir()
    for key, needle in ((str(empty), "holds none of this run's"), ("nosuch/*", "matches none of this run's"),
                        ("nosuch_dir", "not one of this run's usable images")):
        assert main(["exclude", str(planted.path), ID_CLASSES[1] + "/", key]) == 2  # all or nothing
        err = capsys.readouterr().err
        assert key in err and needle in err
    assert len(Run.open(planted.path).exclusion_log()) == n_logged


@pytest.mark.app
def test_audit_page_excludes_from_a_card_and_remines(app_env, small_run):
    at = open_app(small_run.name, "pages/audit.py")
    no_exception(at)
    run = Run.open(small_run)
    members = np.flatnonzero(run.cluster_ids() == 0)
    pick = at.multiselect(key="excl-pick-0")
    row = int(pick.options[0]) if str(pick.options[0]).isdigit() else None
    pick.set_value([pick.options[0]]).run()
    at.button(key="excl-go-0").click().run()
    assert not at.exception, [e.value for e in at.exception]
    mask = Run.open(small_run).excluded_mask()
    assert int(mask.sum()) == 1 and mask[members].any()
    if row is not None:
        assert mask[row]
    assert Run.open(small_run).exclusion_log()[0]["action"] == "exclude"
    before = {s.cluster: s.size for s in run.cluster_stats()}
    at.button(key="remine_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    after = Run.open(small_run)
    assert after.meta["last_remine"]["clusters_affected"] == [0]
    assert after.cluster_stats()[0].size == before[0] - 1
    shown = "\n".join(m.value for m in at.markdown)
    assert "Changes since last mining" in shown


@pytest.mark.app
def test_cluster_map_selection_marks_images_not_id(app_env, small_run):
    """A lasso selection on the map (sent as the browser sends it: the chart's JSON widget state)
    and the button under it exclude exactly the selected images."""
    at = open_app(small_run.name, "pages/clusters.py")
    no_exception(at)
    chart = at.get("plotly_chart")[0]
    picked = [3, 17, 25]
    original = at._tree.get_widget_states

    def with_selection():
        ws = original()
        w = ws.widgets.add()
        w.id = chart.proto.id
        w.string_value = json.dumps({"selection": {"points": [{"customdata": [r]} for r in picked],
                                                   "point_indices": picked, "box": [], "lasso": []}})
        return ws

    at._tree.get_widget_states = with_selection
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="map_exclude").click().run()
    assert not at.exception, [e.value for e in at.exception]
    mask = Run.open(small_run).excluded_mask()
    assert sorted(map(int, np.flatnonzero(mask))) == picked
