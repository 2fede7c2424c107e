"""Property-based tests (hypothesis) of the engine's invariants (issue 5).

Pure functions get random inputs directly; run-level properties (concept edits, saved detectors)
use small synthetic run directories written with the engine's own writers, and the encoder-level
ones use the tiny random open_clip model. Example counts are modest: this file runs in well under
a minute on two busy cores.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    adjusted_rand_score,
    average_precision_score,
    normalized_mutual_info_score,
    roc_auc_score,
    roc_curve,
)

from clustermine.method import metrics
from clustermine.method.mining import cluster_statistics, mine_positive_concepts, normalized_entropy, zero_shot_topk
from clustermine.store import Run, concept_id
from clustermine.method.scoring import Detector, WhatIfScorer, log_scores
from clustermine.workflows.whatif import export_detector, run_detector, what_if_scorer

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

pytestmark = pytest.mark.faults

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# Scores are float32 dot products (then float64): a different batch shape may take another BLAS path
# and move the last float32 bit of a cosine (~1e-7), i.e. ~1e-5 of a log score at tau = 0.01.
ATOL = 2e-5
# cos/τ is computed in float32: with τ = 0.01 the logits are ~100, so a different BLAS path (one
# image vs a batch) moves log S by ~1e-6 relative. Batch independence holds to that precision.
RTOL32 = 1e-5


def unit_rows(rng: np.random.Generator, n: int, d: int, fp16: bool = True) -> np.ndarray:
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    return x.astype(np.float16).astype(np.float32) if fp16 else x


# ------------------------------------------------------------------------------------ votes and mining

votes_strategy = st.lists(
    st.tuples(st.integers(-1, 5), st.integers(0, 9), st.floats(-1, 1, allow_nan=False, width=32)),
    min_size=1, max_size=80)


@FAST
@given(votes_strategy, st.integers(0, 5))
def test_purity_in_0_1_and_entropy_in_0_1(rows, extra_vocab):
    cids = np.array([r[0] for r in rows])
    top1 = np.array([r[1] for r in rows])
    sims = np.array([r[2] for r in rows], dtype=np.float32)
    n_vocab = int(top1.max()) + 1 + extra_vocab
    stats = cluster_statistics(cids, top1, sims, n_vocab, n_clusters=6)
    assert len(stats) == 6
    for s in stats:
        members = cids == s.cluster
        assert s.size == int(members.sum())
        assert 0.0 <= s.entropy <= 1.0
        if s.size == 0:
            assert s.winner is None and s.purity == 0.0
            continue
        assert 0.0 < s.purity <= 1.0
        assert sum(h[1] for h in s.histogram) == s.size
        assert s.histogram[0][0] == s.winner and s.purity == s.histogram[0][1] / s.size
        assert 0.0 <= s.margin <= 1.0
        if s.purity == 1.0:
            assert s.entropy == 0.0  # unanimous


@FAST
@given(st.lists(st.integers(0, 50), min_size=1, max_size=30), st.integers(1, 200))
def test_normalized_entropy_bounds(counts, n_vocab):
    counts = np.array(counts)
    h = normalized_entropy(counts, n_vocab)
    assert 0.0 <= h <= 1.0
    nz = counts[counts > 0]
    if nz.size <= 1:
        assert h == 0.0
    elif (nz == 1).all() and nz.size <= n_vocab:  # every member voted differently
        assert h == pytest.approx(1.0)


def _mined_signature(mined, relabel=lambda c: c):
    return [(m.index, m.text, sorted(relabel(c) for c in m.clusters), m.votes, m.members, m.purity,
             list(m.examples)) for m in mined]


@FAST
@given(votes_strategy, st.randoms(use_true_random=False))
def test_mining_unchanged_when_cluster_ids_are_permuted(rows, rnd):
    cids = np.array([r[0] for r in rows])
    top1 = np.array([r[1] for r in rows])
    sims = np.array([r[2] for r in rows], dtype=np.float32)
    vocab = [f"concept {i}" for i in range(10)]
    perm = list(range(6))
    rnd.shuffle(perm)
    permuted = np.array([perm[c] if c >= 0 else -1 for c in cids])
    a_stats = cluster_statistics(cids, top1, sims, len(vocab), 6)
    b_stats = cluster_statistics(permuted, top1, sims, len(vocab), 6)
    a = mine_positive_concepts(a_stats, vocab, top1, sims, cids)
    b = mine_positive_concepts(b_stats, vocab, top1, sims, permuted)
    assert _mined_signature(a, lambda c: perm[c]) == _mined_signature(b)
    for s in a_stats:  # each cluster's statistics move with its id
        t = b_stats[perm[s.cluster]]
        assert (s.size, s.histogram, s.winner, s.purity, s.entropy, s.margin) == \
               (t.size, t.histogram, t.winner, t.purity, t.entropy, t.margin)


# ------------------------------------------------------------------------------------ scores


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.integers(1, 17), st.sampled_from([0.01, 0.05, 1.0]))
def test_scores_independent_of_batch_size_and_order(seed, n, batch, tau):
    rng = np.random.default_rng(seed)
    feats, text = unit_rows(rng, n, 16), unit_rows(rng, 30, 16)
    pos = rng.choice(30, size=int(rng.integers(1, 30)), replace=False)
    det = Detector(concepts=[f"c{i}" for i in range(30)], text_embeddings=text, positive_idx=pos, tau=tau)
    whole = det.log_scores(feats)
    assert np.all(whole <= ATOL) and np.isfinite(whole).all()  # S in (0, 1] up to float32 rounding (see below)
    batched = np.concatenate([det.log_scores(feats[i:i + batch]) for i in range(0, n, batch)])
    np.testing.assert_allclose(batched, whole, rtol=RTOL32, atol=ATOL)
    order = rng.permutation(n)
    np.testing.assert_allclose(det.log_scores(feats[order]), whole[order], rtol=RTOL32, atol=ATOL)
    singles = np.array([det.log_scores(feats[i:i + 1])[0] for i in range(n)])
    np.testing.assert_allclose(singles, whole, rtol=RTOL32, atol=ATOL)
    # the what-if scorer (cached corpus LSE) agrees with the detector
    np.testing.assert_allclose(WhatIfScorer(feats, text, tau).log_scores(pos), whole, rtol=RTOL32, atol=ATOL)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real run made with the tiny open_clip model (12 images, C = 2, 50 concepts)."""
    from test_faults import mine_tiny_run

    base = tmp_path_factory.mktemp("tiny_run")
    return mine_tiny_run(base, base / "run")


def test_encoded_scores_independent_of_batch_size_and_order(tiny_run):
    from clustermine.workflows.pipeline import score_images

    run, enc, paths = tiny_run
    ref = enc.encode_images(paths, batch_size=len(paths)).features
    for bs in (1, 5):
        np.testing.assert_allclose(enc.encode_images(paths, batch_size=bs).features, ref, atol=1e-5)
    order = list(reversed(paths))
    np.testing.assert_allclose(enc.encode_images(order, batch_size=3).features, ref[::-1], atol=1e-5)
    # score_images: same score per file whatever the order, and equal to the score of the run's own
    # stored features for the same image (one image, one score, in the CLI, the app and the run)
    a = {r["path"]: r["log_score"] for r in score_images(run, paths, encoder=enc)}
    b = {r["path"]: r["log_score"] for r in score_images(run, order, encoder=enc)}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-4)
    det = run_detector(run)
    stored = det.log_scores(run.features())
    by_path = {r["abs_path"]: r["row"] for r in run.image_records(ok_only=True)}
    for p in paths:
        assert a[str(p)] == pytest.approx(stored[by_path[str(p.resolve())]], abs=1e-4)


def test_score_never_exceeds_one():
    rng = np.random.default_rng(19362)
    feats, text = unit_rows(rng, 1, 16), unit_rows(rng, 30, 16)
    pos = rng.choice(30, size=int(rng.integers(1, 30)), replace=False)
    det = Detector(concepts=[f"c{i}" for i in range(30)], text_embeddings=text, positive_idx=pos, tau=0.01)
    assert np.all(det.log_scores(feats) <= 0.0) and np.all(det.scores(feats) <= 1.0)


# ------------------------------------------------------------------------------------ synthetic runs


def write_synthetic_run(path: Path, seed: int = 0, n_img: int = 40, n_vocab: int = 24, dim: int = 8,
                        n_clusters: int = 5) -> Run:
    """A finished run directory built with the engine's writers from random features."""
    rng = np.random.default_rng(seed)
    feats, text = unit_rows(rng, n_img, dim), unit_rows(rng, n_vocab, dim)
    vocab = [f"concept {i}" for i in range(n_vocab)]
    run = Run.create(path, {"encoder": "synthetic", "tau": 0.05, "seed": seed})
    hold = set(rng.choice(n_img, size=n_img // 10, replace=False).tolist())
    cids = np.array([-1 if i in hold else int(rng.integers(0, n_clusters)) for i in range(n_img)])
    top_idx, top_sim = zero_shot_topk(feats, text, k=3)
    top_sim = top_sim.astype(np.float16).astype(np.float32)
    sel = cids >= 0
    stats = cluster_statistics(cids[sel], top_idx[sel, 0], top_sim[sel, 0], n_vocab, n_clusters)
    mined = mine_positive_concepts(stats, vocab, top_idx[:, 0], top_sim[:, 0], cids)
    run.write_images([{"path": f"img_{i}.jpg", "abs_path": f"/nonexistent/img_{i}.jpg", "size_bytes": 1,
                       "sha1": f"{i:040x}", "status": "ok", "reason": None, "duplicate_of": None, "row": i,
                       "split": "holdout" if i in hold else "mine"} for i in range(n_img)])
    run.write_array("features.npy", feats.astype(np.float16))
    run.write_array("clusters.npy", cids.astype(np.int32))
    run.write_votes(top_idx, top_sim)
    run.write_vocabulary(vocab, text)
    run.write_mining(stats, mined)
    run.mark_stage("vote", status="done", summary={"n_images": n_img})
    return Run.open(path)


def plant_added_embedding(run: Run, text: str, seed: int) -> None:
    """What `edit_concept("add", text)` needs for a concept outside the corpus (normally from the
    encoder): its float16 embedding in added/<id>.npy."""
    from clustermine.core.storage import atomic_save_npy

    emb = unit_rows(np.random.default_rng(seed), 1, run.text_embeddings().shape[1])[0]
    atomic_save_npy(run.path / "added" / f"{concept_id(text)}.npy", emb.astype(np.float16))


@pytest.fixture(scope="module")
def synthetic_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "run"
    write_synthetic_run(path, seed=3)
    return path


edit_strategy = st.lists(st.tuples(st.sampled_from(["accept", "reject", "restore", "add"]),
                                   st.integers(0, 23), st.booleans()), max_size=8)


@SLOW
@given(edit_strategy, st.integers(0, 23), st.booleans())
def test_rejecting_a_concept_never_grows_y_pos_or_raises_scores(synthetic_template, edits, victim, victim_new):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run"
        shutil.copytree(synthetic_template, path)
        run = Run.open(path)
        vocab = run.vocabulary_base()
        for action, i, outside in edits:
            text = f"user concept {i}" if outside else vocab[i]
            if outside:
                plant_added_embedding(run, text, i)
            if action != "add" and run.find_concept(text) is None:
                continue
            run.edit_concept(action, text, user="prop")
        table = run.concepts()
        key = (table[victim % len(table)].text if victim_new else vocab[victim])
        if run.find_concept(key) is None:
            run.edit_concept("add", key, user="prop")
        before = set(run.positive_concepts())
        feats = run.features()
        scores_before = run_detector(run, calibrate=False).log_scores(feats) if before else None

        run.edit_concept("reject", key, user="prop")
        after = set(run.positive_concepts())
        assert after <= before and key not in after
        assert len(before) - len(after) == (1 if key in before else 0)
        if after:
            det = run_detector(run, calibrate=False)
            scores_after = det.log_scores(feats)
            assert np.all(scores_after <= scores_before + ATOL)
            # the what-if scorer gives the same scores as the detector after the edit
            _, extra, pos = run.vocabulary()
            np.testing.assert_allclose(what_if_scorer(run, feats).log_scores(pos, extra), scores_after, rtol=0, atol=ATOL)
        # the log replays to the table that concepts.json holds
        import json

        on_disk = json.loads((path / "concepts.json").read_text(encoding="utf-8"))
        assert on_disk == [c.to_dict() for c in run.concepts()]
        assert [e["seq"] for e in run.edits()] == list(range(1, len(run.edits()) + 1))


# ------------------------------------------------------------------------------------ metrics vs scikit-learn
# metrics.py computes these from its own counts (no scikit-learn), so scikit-learn is an independent reference.

score_lists = st.lists(st.integers(-20, 20), min_size=1, max_size=60)  # small integers: many ties


def _sklearn_roc(id_s, ood_s):
    """scikit-learn's tie-grouped ROC curve, ID positive, highest threshold first (no (0, 0) point)."""
    labels = np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))]
    fpr, tpr, thr = roc_curve(labels, np.r_[id_s, ood_s], drop_intermediate=False)
    return fpr[1:], tpr[1:], thr[1:]  # drop the (0, 0) point at threshold +inf


def _sklearn_fpr_keeping_tpr(id_s, ood_s, tpr=0.95):
    fpr, tprs, thr = _sklearn_roc(id_s, ood_s)
    i = int(np.argmax(tprs >= tpr - 1e-12))  # first (largest) threshold keeping >= 95 % of ID
    return fpr[i], thr[i]


def _sklearn_fpr_nearest_recall(id_s, ood_s, level=0.95):
    """Hendrycks' rule on scikit-learn's ROC points: from the first full-recall point back up,
    first point whose recall (TP / N_ID) is nearest ``level``."""
    fpr, _, thr = _sklearn_roc(id_s, ood_s)
    tp = np.array([np.sum(id_s >= t) for t in thr])  # recall recomputed as TP / N_ID, as the reference
    full = int(np.argmax(tp == id_s.size))
    recall = tp[full::-1] / id_s.size
    return fpr[full::-1][int(np.argmin(np.abs(recall - level)))]


@FAST
@given(score_lists, score_lists, st.floats(0.0, 1.0), st.integers(0, 10))
def test_ood_metrics_equal_sklearn(id_raw, ood_raw, scale, shift):
    id_s = np.array(id_raw, dtype=np.float64) * scale + shift
    ood_s = np.array(ood_raw, dtype=np.float64) * scale + shift
    m = metrics.ood_metrics(id_s, ood_s)
    labels = np.r_[np.ones(id_s.size), np.zeros(ood_s.size)]
    both = np.r_[id_s, ood_s]
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, both), abs=1e-12)
    assert m["aupr_in"] == pytest.approx(average_precision_score(labels, both), abs=1e-12)
    assert m["aupr_out"] == pytest.approx(average_precision_score(1 - labels, -both), abs=1e-12)
    assert m["fpr95"] == pytest.approx(_sklearn_fpr_nearest_recall(id_s, ood_s), abs=1e-12)
    fpr, thr = _sklearn_fpr_keeping_tpr(id_s, ood_s)
    assert metrics.fpr_at_tpr(id_s, ood_s, 0.95) == pytest.approx(fpr, abs=1e-12)
    assert metrics.threshold_at_tpr(id_s, 0.95) == pytest.approx(thr)
    assert m["n_id"] == id_s.size and m["n_ood"] == ood_s.size


@FAST
@given(st.lists(st.integers(0, 3), min_size=2, max_size=40), st.lists(st.integers(0, 3), min_size=2, max_size=40))
def test_clustering_metrics_equal_sklearn(labels, clusters):
    n = min(len(labels), len(clusters))
    y, c = np.array(labels[:n]), np.array(clusters[:n])
    s = metrics.clustering_scores(y, c)
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(y, c), abs=1e-12)
    assert s["ari"] == pytest.approx(adjusted_rand_score(y, c), abs=1e-12)
    # Hungarian accuracy vs brute force over one-to-one maps (when there are no more clusters than classes)
    ys, cs = np.unique(y), np.unique(c)
    if cs.size <= ys.size:
        best = max(np.mean(np.array([dict(zip(cs, p))[v] for v in c]) == y)
                   for p in itertools.permutations(ys, cs.size))
        assert s["acc"] == pytest.approx(best)
    # relabelling clusters changes nothing
    perm = {v: (v * 7 + 3) % 11 for v in range(4)}
    assert metrics.clustering_scores(y, np.array([perm[v] for v in c])) == pytest.approx(s)


# ------------------------------------------------------------------------------------ detector round trip


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(2, 40), st.floats(0.005, 2.0), st.booleans())
def test_saved_and_reloaded_detector_gives_identical_scores(seed, m, tau, calibrate):
    rng = np.random.default_rng(seed)
    text = unit_rows(rng, m, 12)  # float16-exact, like every detector a run produces
    pos = rng.choice(m, size=int(rng.integers(1, m)), replace=False)
    det = Detector(concepts=[f"concept {i} ü" for i in range(m)], text_embeddings=text, positive_idx=pos, tau=tau,
                   encoder_spec="openclip:x:none", encoder_fingerprint={"kind": "t"}, encoder_fingerprint_id="abc",
                   template="a photo of a {}.")
    feats = unit_rows(rng, 25, 12, fp16=False)
    if calibrate:
        det.calibrate(feats[:10], 0.95)
    with tempfile.TemporaryDirectory() as tmp:
        back = Detector.load(det.save(Path(tmp) / "bundle"))
    np.testing.assert_array_equal(back.log_scores(feats), det.log_scores(feats))
    assert back.threshold == det.threshold and back.threshold_rule == det.threshold_rule
    assert back.concepts == det.concepts and back.positive_concepts == det.positive_concepts
    assert (back.tau, back.encoder_fingerprint_id, back.template) == (det.tau, det.encoder_fingerprint_id, det.template)
    if calibrate:
        np.testing.assert_array_equal(back.is_id(feats), det.is_id(feats))


def test_run_detector_round_trip_with_edits(synthetic_template, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(synthetic_template, path)
    run = Run.open(path)
    plant_added_embedding(run, "my own concept", 7)
    run.edit_concept("add", "my own concept")
    run.edit_concept("add", run.vocabulary_base()[0])
    first = run.positive_concepts()[0]
    run.edit_concept("reject", first)
    det = run_detector(run)
    back = Detector.load(export_detector(run, tmp_path / "bundle"))
    feats = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    np.testing.assert_array_equal(back.log_scores(feats), det.log_scores(feats))
    assert back.threshold == det.threshold
    assert "my own concept" in back.positive_concepts and first not in back.positive_concepts


def test_log_scores_are_in_0_1_and_rejecting_everything_is_refused():
    rng = np.random.default_rng(1)
    feats, text = unit_rows(rng, 5, 8), unit_rows(rng, 6, 8)
    s = log_scores(feats, text, np.arange(6), 0.01)
    # all concepts positive: S = 1, up to the float32 products of the two sums (not bit-exact across CPUs)
    assert (s <= 0.0).all()
    np.testing.assert_allclose(s, 0.0, atol=1e-5)
    from clustermine.core.errors import ClusterMineError

    with pytest.raises(ClusterMineError, match="no positive concepts"):
        log_scores(feats, text, np.array([], dtype=int), 0.01)
