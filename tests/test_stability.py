"""Concept stability (issue 13, section 2): support across TEMI heads or k-means seeds.

Reference winners are recomputed here with a plain Counter: a cluster elects the top-1 concept most
of its members vote for (ties: larger summed similarity, then lower corpus index)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from clustermine.cli import main
from clustermine.store import layout
from clustermine.store import Run
from test_app import no_exception, open_app  # noqa: E402


def reference_winners(labels: np.ndarray, top1: np.ndarray, sim: np.ndarray) -> set[int]:
    members: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(labels):
        if c >= 0:
            members[int(c)].append(i)
    out = set()
    for rows in members.values():
        votes = Counter(int(top1[i]) for i in rows)
        sims: dict[int, float] = defaultdict(float)
        for i in rows:
            sims[int(top1[i])] += float(sim[i])
        out.add(min(votes, key=lambda w: (-votes[w], -sims[w], w)))
    return out


def test_concept_elected_by_one_head_only_is_flagged(small_run, capsys):
    run = Run.open(small_run)
    cids = run.cluster_ids()
    top_idx, top_sim = run.votes()
    top1, sim = top_idx[:, 0], top_sim[:, 0]
    mine_rows = cids >= 0
    # heads 1 and 2 put every mining image in one cluster: they elect the overall plurality concept only
    one = np.where(mine_rows, 0, -1)
    heads = np.stack([cids, one, one]).astype(np.int32)
    np.save(run.file(layout.HEAD_LABELS), heads)
    overall = reference_winners(one, top1, sim)
    assert len(overall) == 1
    plurality = next(iter(overall))
    run = Run.open(small_run)
    concepts = {c.corpus_index: c for c in run.concepts()}
    assert set(concepts) == reference_winners(cids, top1, sim)
    assert len(concepts) >= 2
    for idx, c in concepts.items():
        expected = 3 if idx == plurality else 1
        assert (c.support_count, c.support_total) == (expected, 3)
        assert c.support == pytest.approx(expected / 3)
        assert c.single_head == (idx != plurality)
    assert main(["concepts", str(small_run), "--json"]) == 0
    rows = {d["corpus_index"]: d for d in json.loads(capsys.readouterr().out)}
    assert {i: d["support"] for i, d in rows.items()} == pytest.approx(
        {i: (1.0 if i == plurality else 1 / 3) for i in concepts})
    assert main(["concepts", str(small_run)]) == 0
    out = capsys.readouterr().out
    assert out.count("[one head only]") == len(concepts) - 1


def test_old_run_without_head_labels_has_unknown_support(small_run, capsys):
    run = Run.open(small_run)
    assert not run.file(layout.HEAD_LABELS).exists()
    assert all(c.support is None and not c.single_head for c in run.concepts())
    assert main(["stability", str(small_run)]) == 0
    assert "support unknown" in capsys.readouterr().out


def test_kmeans_seed_stability_on_request(small_run, capsys):
    from clustermine.method.clustering import make_clusterer
    from clustermine.workflows.stability import seed_stability

    run = Run.open(small_run)
    calls = []
    labels = seed_stability(run, 3, progress=lambda d, t: calls.append((d, t)))
    cids = run.cluster_ids()
    rows = cids >= 0
    assert calls[-1] == (3, 3) and np.array_equal(labels[0][rows], cids[rows])
    assert (labels[:, ~rows] == -1).all()
    for s in (1, 2):
        ref = make_clusterer("kmeans", 4, seed=s).fit_predict(run.features()[rows])
        assert np.array_equal(labels[s][rows], ref)
    top_idx, top_sim = run.votes()
    winners = [reference_winners(lab, top_idx[:, 0], top_sim[:, 0]) for lab in labels]
    run = Run.open(small_run)
    for c in run.concepts():
        assert c.support == pytest.approx(sum(c.corpus_index in w for w in winners) / 3)
        assert c.support >= 1 / 3  # the run's own clustering is one of the seeds
    assert main(["stability", str(small_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "seeds"


def test_real_tiny_temi_run_stores_heads_and_support(small_images, tmp_path):
    from clustermine.workflows.pipeline import MineConfig, mine

    n_heads = 4
    run = mine(small_images, tmp_path / "temi", MineConfig(
        n_clusters=4, clusterer="temi", seed=0,
        clusterer_params={"n_heads": n_heads, "epochs": 5, "hidden_dim": 64, "bottleneck_dim": 32}))
    heads = np.load(run.file(layout.HEAD_LABELS))
    cids = run.cluster_ids()
    assert heads.shape == (n_heads, len(cids))
    assert (heads[:, cids < 0] == -1).all() and (heads[:, cids >= 0] >= 0).all()
    assert any(np.array_equal(h, cids) for h in heads)  # the best head is the run's clustering
    top_idx, top_sim = run.votes()
    winners = [reference_winners(h, top_idx[:, 0], top_sim[:, 0]) for h in heads]
    for c in run.concepts():
        assert 0.0 <= c.support <= 1.0 and c.support >= 1 / n_heads
        assert c.support == pytest.approx(sum(c.corpus_index in w for w in winners) / n_heads)
    # re-clustering without a few excluded images stores the new heads; excluded images do not vote
    from clustermine.workflows.remine import remine

    gone = [int(r) for r in np.flatnonzero(cids >= 0)[:3]]
    run.set_excluded(gone)
    remine(run, recluster=True)
    run = Run.open(run.path)
    heads = np.load(run.file(layout.HEAD_LABELS))
    assert heads.shape == (n_heads, len(cids)) and (heads[:, gone] == -1).all()
    assert (run.cluster_ids()[gone] >= 0).all()
    voters = (run.cluster_ids() >= 0) & ~run.excluded_mask()
    assert (heads[:, voters] >= 0).all()
    assert any(np.array_equal(h[voters], run.cluster_ids()[voters]) for h in heads)
    winners = [reference_winners(h, top_idx[:, 0], top_sim[:, 0]) for h in heads]
    for c in run.concepts():
        assert c.support == pytest.approx(sum(c.corpus_index in w for w in winners) / n_heads) and c.support > 0


def test_temi_head_labels_are_each_heads_argmax():
    from clustermine.method.clustering import TEMI

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(m, 0.1, size=(20, 8)) for m in (-1.0, 0.0, 1.0)]).astype(np.float32)
    est = TEMI(3, n_heads=3, epochs=3, hidden_dim=16, bottleneck_dim=8, random_state=0).fit(X)
    assert est.head_labels_.shape == (3, 60)
    assert np.array_equal(est.head_labels_[est.best_head_], est.labels_)
    assert est.head_labels_.min() >= 0 and est.head_labels_.max() < 3


def _open_page(run_dir, page, monkeypatch):
    """``page`` of the app with ``run_dir`` selected (runs root = its parent folder)."""
    monkeypatch.setenv("CLUSTERMINE_RUNS_ROOT", str(run_dir.parent))
    monkeypatch.setenv("CLUSTERMINE_UMAP_WARMUP", "0")
    at = open_app(run_dir.name, page)
    no_exception(at)
    return at


@pytest.mark.app
def test_concepts_and_audit_pages_flag_single_head_concepts(small_run, monkeypatch):
    run = Run.open(small_run)
    cids = run.cluster_ids()
    one = np.where(cids >= 0, 0, -1)
    np.save(run.file(layout.HEAD_LABELS), np.stack([cids, one, one]).astype(np.int32))
    flagged = sorted(c.text for c in Run.open(small_run).concepts() if c.single_head)
    assert flagged
    at = _open_page(small_run, "pages/concepts.py", monkeypatch)
    table = at.data_editor[0].value
    assert sorted(table.loc[table["stability"] == "⚠ 1 head", "concept"]) == flagged
    assert "one head only" in "\n".join(w.value for w in at.warning)
    at = _open_page(small_run, "pages/audit.py", monkeypatch)
    shown = "\n".join(m.value for m in at.markdown)  # st.badge is drawn as markdown
    assert shown.count("elected by one head only") == sum(
        1 for s in run.cluster_stats() if s.winner is not None and run.vocabulary_base()[s.winner] in flagged)


@pytest.mark.app
def test_concepts_page_computes_seed_support_with_a_button(small_run, monkeypatch):
    at = _open_page(small_run, "pages/concepts.py", monkeypatch)
    assert "Support unknown" in "\n".join(c.value for c in at.caption)
    at.number_input(key="stability_seeds").set_value(2).run()
    at.button(key="stability_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run = Run.open(small_run)
    assert run.file(layout.SEED_LABELS).is_file()
    assert all(c.support is not None and c.support_total == 2 for c in run.concepts())
