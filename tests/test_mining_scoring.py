import numpy as np
import pytest

from clustermine.core.errors import ClusterMineError
from clustermine.method.mining import (cluster_alerts, cluster_statistics, mine_positive_concepts, normalized_entropy,
                                posmine, summary, zero_shot_topk)
from clustermine.method.scoring import (Detector, WhatIfScorer, log_scores, mcm_scores, neg_mining, neglabel_scores)


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_zero_shot_topk_matches_full_sort_across_chunks():
    rng = np.random.default_rng(0)
    f, t = _unit(rng, 30, 16), _unit(rng, 1000, 16)
    idx, sim = zero_shot_topk(f, t, k=5, chunk_size=97)
    full = f @ t.T
    ref = np.argsort(-full, axis=1)[:, :5]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(sim, np.take_along_axis(full, ref, axis=1), rtol=1e-5)


def test_zero_shot_topk_image_chunks_give_the_same_answer_and_keep_tie_order():
    rng = np.random.default_rng(1)
    f, t = _unit(rng, 53, 8), _unit(rng, 300, 8)
    t[150] = t[20]  # an exact tie: the lower corpus index must come first in every chunking
    f[7] = t[20]
    whole = zero_shot_topk(f, t, k=4, chunk_size=1000, image_chunk_size=1000)
    for image_chunk, corpus_chunk in ((1, 7), (10, 64), (53, 150), (64, 301)):
        idx, sim = zero_shot_topk(f, t, k=4, chunk_size=corpus_chunk, image_chunk_size=image_chunk)
        np.testing.assert_array_equal(idx, whole[0])
        np.testing.assert_allclose(sim, whole[1], rtol=1e-6, atol=1e-7)  # BLAS blocking differs by shape
    assert list(whole[0][7, :2]) == [20, 150]


def test_zero_shot_topk_many_exact_ties_take_the_full_scan_and_keep_index_order():
    """30 copies of one concept: more ties than the top-(k+16) shortlist holds, so the rows must
    fall back to the full candidate scan and still list the lowest corpus indices first."""
    rng = np.random.default_rng(5)
    f, t = _unit(rng, 12, 8), _unit(rng, 400, 8)
    copies = np.arange(100, 400, 10)  # 30 rows
    t[copies] = t[3]
    f[4] = t[3]
    idx, sim = zero_shot_topk(f, t, k=5, chunk_size=400)
    assert list(idx[4]) == [3] + list(copies[:4])
    np.testing.assert_allclose(sim[4], 1.0, atol=1e-5)
    full = f @ t.T
    for r in range(len(f)):
        order = sorted(range(len(t)), key=lambda c: (-round(float(full[r, c]), 5), c))[:5]
        assert sorted(idx[r]) == sorted(order) or r == 4


def test_zero_shot_topk_fused_lse_matches_logsumexp_and_float16_memmap_input(tmp_path):
    from scipy.special import logsumexp

    from clustermine.method.scoring import corpus_logsumexp

    rng = np.random.default_rng(6)
    f, t = _unit(rng, 70, 24).astype(np.float16), _unit(rng, 900, 24)
    path = tmp_path / "f.npy"
    np.save(path, f)
    mm = np.load(path, mmap_mode="r")
    idx, sim, lse = zero_shot_topk(mm, t, k=3, chunk_size=128, image_chunk_size=16, tau=0.05)
    ref_idx, ref_sim = zero_shot_topk(f.astype(np.float32), t, k=3)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(sim, ref_sim)
    ref = logsumexp(f.astype(np.float64) @ t.astype(np.float64).T / 0.05, axis=1)
    np.testing.assert_allclose(lse, ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(corpus_logsumexp(mm, t, 0.05, chunk_size=100, image_chunk_size=9), ref, rtol=0, atol=2e-5)


def test_cluster_statistics_hand_worked():
    cluster_ids = np.array([0, 0, 0, 0, 1, 1, -1])
    top1 = np.array([7, 7, 7, 3, 2, 5, 9])
    sims = np.array([0.9, 0.8, 0.7, 0.5, 0.4, 0.6, 0.1])
    stats = cluster_statistics(cluster_ids, top1, sims, n_vocab=10, n_clusters=3)
    assert stats[0].size == 4 and stats[0].winner == 7 and stats[0].purity == 0.75
    assert stats[0].runner_up == 3 and stats[0].margin == pytest.approx(0.5)
    # tie 1-1 in cluster 1: the larger summed similarity wins (concept 5, 0.6 > 0.4)
    assert stats[1].winner == 5 and stats[1].entropy == pytest.approx(1.0)
    assert stats[2].size == 0 and stats[2].winner is None
    mined = mine_positive_concepts(stats, [f"w{i}" for i in range(10)], top1, sims, cluster_ids)
    assert [m.text for m in mined] == ["w7", "w5"]
    assert mined[0].examples == [0, 1, 2]  # voters of w7, most similar first
    alerts = cluster_alerts(stats)
    assert 2 not in alerts  # an empty cluster is not audited (issue 18: it is mentioned, never counted)
    assert any("tiny" in a for a in alerts[1]) and any("nearly tied" in a for a in alerts[1])
    s = summary(stats, mined)
    assert s["n_occupied"] == 2 and s["n_positive"] == 2
    assert s["mean_purity"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)


def test_entropy_known_values():
    assert normalized_entropy(np.array([5]), 100) == 0.0
    assert normalized_entropy(np.array([1, 1, 1]), 100) == pytest.approx(1.0)
    # votes 3:1 -> H = -(3/4 ln 3/4 + 1/4 ln 1/4) nats, divided by ln(min(n=4, |V|=100)) = ln 4
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert normalized_entropy(np.array([3, 1]), 100) == pytest.approx(h / np.log(4), abs=1e-12)
    # a vocabulary smaller than the cluster caps the denominator: ln 3 instead of ln 4
    assert normalized_entropy(np.array([2, 1, 1, 0]), 3) == pytest.approx(
        -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)) / np.log(3), abs=1e-12)


def test_posmine():
    assert posmine(np.array([1, 1, 2, 3, 3, 3]), k=2).tolist() == [3, 1]
    assert posmine(np.array([1, 1, 2]), min_count=2).tolist() == [1]


def test_log_score_equals_naive_formula():
    rng = np.random.default_rng(1)
    f, t = _unit(rng, 8, 12), _unit(rng, 50, 12)
    pos = np.array([3, 10, 11])
    tau = 0.05
    e = np.exp((f @ t.T) / tau)
    naive = np.log(e[:, pos].sum(1) / e.sum(1))
    np.testing.assert_allclose(log_scores(f, t, pos, tau), naive, rtol=1e-6)
    # tau = 0.01 does not overflow in log space
    assert np.isfinite(log_scores(f, t, pos, 0.01)).all()
    with pytest.raises(ClusterMineError):
        log_scores(f, t, np.array([], dtype=int), 0.01)


def _naive_grouped_score(f, pos_emb, groups, tau):
    """NegLabel's grouped score by its definition, in float64: mean over the negative groups of
    sum_pos e^{cos/tau} / (sum_pos e^{cos/tau} + sum_group e^{cos/tau})."""
    f64 = f.astype(np.float64)
    pos_mass = np.exp(f64 @ pos_emb.astype(np.float64).T / tau).sum(1)
    per_group = [pos_mass / (pos_mass + np.exp(f64 @ g.astype(np.float64).T / tau).sum(1)) for g in groups]
    return np.log(np.mean(per_group, axis=0))


def test_grouping_one_negative_per_group_equals_naive_formula():
    # With as many groups as negatives every group is one negative, whatever the permutation seed:
    # S = mean_j P / (P + e^{cos_j/tau}).
    rng = np.random.default_rng(2)
    f, t = _unit(rng, 5, 8), _unit(rng, 41, 8)
    pos = np.array([0, 3])
    negs = np.setdiff1d(np.arange(41), pos)
    ref = _naive_grouped_score(f, t[pos], [t[[j]] for j in negs], 0.1)
    for seed in (0, 1, 7):
        np.testing.assert_allclose(log_scores(f, t, pos, 0.1, n_groups=negs.size, seed=seed), ref, rtol=1e-6)
    # the grouped score is not the ungrouped one (the grouping is actually applied)
    assert np.max(np.abs(ref - log_scores(f, t, pos, 0.1))) > 0.1


def test_grouping_uses_equal_groups_and_drops_the_remainder():
    # 10 identical negatives in 3 groups: groups of floor(10 / 3) = 3, the 10th is dropped, so every
    # group scores P / (P + 3 e^{q/tau}) whichever negatives it holds.
    rng = np.random.default_rng(4)
    f = _unit(rng, 6, 8)
    pos_emb, neg = _unit(rng, 2, 8), _unit(rng, 1, 8)
    t = np.concatenate([pos_emb, np.repeat(neg, 10, axis=0)])
    ref = _naive_grouped_score(f, pos_emb, [np.repeat(neg, 3, axis=0)], 0.2)
    np.testing.assert_allclose(log_scores(f, t, np.array([0, 1]), 0.2, n_groups=3, seed=5), ref, rtol=1e-6)
    np.testing.assert_allclose(neglabel_scores(f, pos_emb, np.repeat(neg, 10, axis=0), tau=0.2, n_groups=3),
                               ref, rtol=1e-6)


def test_neglabel_and_mcm_equal_naive_formulas():
    rng = np.random.default_rng(2)
    f, t = _unit(rng, 5, 8), _unit(rng, 41, 8)
    # NegLabel without grouping: log S over positives (first rows) and negatives, computed naively
    nl = neglabel_scores(f, t[:2], t[2:], tau=0.1)
    np.testing.assert_allclose(nl, _naive_grouped_score(f, t[:2], [t[2:]], 0.1), rtol=1e-6)
    # MCM: the largest softmax probability over the class-name similarities / tau
    logits = f.astype(np.float64) @ t[:4].astype(np.float64).T / 0.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(mcm_scores(f, t[:4], tau=0.5), p.max(1), rtol=1e-12)


def test_neg_mining_picks_least_similar():
    pos = np.array([[1.0, 0.0]], dtype=np.float32)
    cands = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], dtype=np.float32)
    assert neg_mining(pos, cands, fraction=0.5).tolist() == [3, 2]


def test_whatif_equals_detector_with_extras(tmp_path):
    rng = np.random.default_rng(3)
    f, t, extra = _unit(rng, 20, 16), _unit(rng, 300, 16), _unit(rng, 2, 16)
    pos = np.array([5, 7, 301])  # 301 = second extra concept
    full = np.concatenate([t, extra])
    ref = log_scores(f, full, pos, 0.01)
    w = WhatIfScorer(f, t, 0.01)
    np.testing.assert_allclose(w.log_scores(pos, extra), ref, rtol=1e-9, atol=1e-9)
    det = Detector([f"c{i}" for i in range(302)], full, pos, tau=0.01, encoder_fingerprint_id="abc")
    det.calibrate(f, 0.95)
    assert np.mean(det.is_id(f)) >= 0.95
    det.save(tmp_path / "det")
    det2 = Detector.load(tmp_path / "det")
    assert det2.positive_concepts == ["c5", "c7", "c301"]
    # fp16 storage: the reloaded detector scores exactly the fp16-rounded embeddings ...
    np.testing.assert_allclose(det2.log_scores(f), log_scores(f, full.astype(np.float16).astype(np.float32), pos, 0.01),
                               rtol=0, atol=1e-9)
    # ... and rounding moves each unit-norm embedding by at most u = 2^-11 relative per component, so
    # every cosine by at most 2^-11 and log S = LSE(pos) - LSE(all) by at most 2 * 2^-11 / tau = 0.098
    # (measured here: 0.015)
    assert np.max(np.abs(det2.log_scores(f) - ref)) <= 2 * 2.0 ** -11 / 0.01
    np.testing.assert_array_equal(Detector.load(tmp_path / "det").log_scores(f), det2.log_scores(f))
    ex = det.explain(f[:2], top=3)
    assert len(ex[0]["top_positive"]) == 3 and len(ex[0]["top_negative"]) == 3
    assert {c for c, _ in ex[0]["top_positive"]} <= {"c5", "c7", "c301"}


def test_zero_shot_topk_does_not_depend_on_summation_order():
    """Permuting the feature dimensions of both sides leaves every cosine mathematically unchanged but
    makes BLAS add the products in another order (as another CPU would): ranking and similarities
    must stay bit-identical, including exact ties, and equal an exact integer reference."""
    rng = np.random.default_rng(2)
    f, t = _unit(rng, 40, 32), _unit(rng, 500, 32)
    t[300] = t[10]
    t[301] = t[10]
    f[:5] = t[10]
    base_idx, base_sim = zero_shot_topk(f, t, k=3)
    assert [list(r) for r in base_idx[:5]] == [[10, 300, 301]] * 5
    for seed in range(6):
        perm = np.random.default_rng(seed).permutation(f.shape[1])
        idx, sim = zero_shot_topk(f[:, perm], t[:, perm], k=3, chunk_size=int(50 + 37 * seed),
                                  image_chunk_size=7 + seed)
        np.testing.assert_array_equal(idx, base_idx)
        np.testing.assert_array_equal(sim, base_sim)
    # independent reference: Python integers on the same 2^20 grid, sorted by (-dot, index)
    fq = [[round(float(v) * 2 ** 20) for v in row] for row in f[:6]]
    tq = [[round(float(v) * 2 ** 20) for v in row] for row in t]
    for i, row in enumerate(fq):
        dots = [sum(a * b for a, b in zip(row, col)) for col in tq]
        ref = sorted(range(len(tq)), key=lambda j: (-dots[j], j))[:3]
        assert list(base_idx[i]) == ref
        assert [float(x) for x in base_sim[i]] == [float(np.float32(dots[j] / 2 ** 40)) for j in ref]
