"""Tests of clustermine.method.clustering: TEMI, the k-means baseline, the factory and the C rules."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from clustermine.method.clustering import (
    MIN_CLUSTER_SIZE,
    TEMI,
    KMeansClusterer,
    clamp_n_clusters,
    default_n_clusters,
    make_clusterer,
)
from clustermine.method.clustering import temi as temi_mod
from clustermine.core.errors import CancelledError, ClusterMineError


def hungarian_acc(y: np.ndarray, pred: np.ndarray) -> float:
    """Best one-to-one matching accuracy between cluster ids and labels."""
    n = int(max(y.max(), pred.max())) + 1
    m = np.zeros((n, n))
    np.add.at(m, (pred, y), 1)
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / len(y))


def blobs(
    n: int = 320, c: int = 4, d: int = 16, spread: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs on the unit sphere: X float32 [n, d], y int [n]."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.arange(n) % c
    X = centres[y] + spread * rng.normal(size=(n, d)) / math.sqrt(d)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


# Small, fast TEMI settings for unit tests (the defaults target ~2000 steps of 512-wide heads).
# One thread: tiny heads gain nothing from intra-op threads and suffer badly on a busy machine.
FAST = dict(n_heads=4, hidden_dim=64, bottleneck_dim=32, batch_size=32, epochs=30, lr=1e-3, n_threads=1)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return blobs()


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, np.ndarray]) -> TEMI:
    return TEMI(4, random_state=0, **FAST).fit(data[0])


# ------------------------------------------------------------------------------------------ TEMI


def test_temi_recovers_blobs(fitted: TEMI, data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    assert hungarian_acc(y, fitted.labels_) > 0.95
    assert normalized_mutual_info_score(y, fitted.labels_) > 0.9


def test_temi_fitted_attributes(fitted: TEMI, data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    n = len(X)
    assert fitted.labels_.shape == (n,) and fitted.labels_.dtype.kind == "i"
    assert fitted.labels_.min() >= 0 and fitted.labels_.max() < 4
    assert fitted.head_losses_.shape == (FAST["n_heads"],)
    assert np.isfinite(fitted.head_losses_).all()
    assert 0 <= fitted.best_head_ < FAST["n_heads"]
    assert fitted.best_head_ == int(np.argmin(fitted.head_losses_))
    assert len(fitted.loss_history_) == FAST["epochs"]
    assert fitted.n_iter_ == FAST["epochs"] * (n // FAST["batch_size"])
    assert fitted.cluster_sizes_.shape == (4,) and fitted.cluster_sizes_.sum() == n
    assert fitted.n_occupied_ == 4
    assert fitted.loss_history_[-1] < fitted.loss_history_[0]
    proba = fitted.predict_proba(X[:10])
    assert proba.shape == (10, 4) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == fitted.labels_[:10]).all()


def test_temi_predict_equals_labels(fitted: TEMI, data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    assert np.array_equal(fitted.predict(X), fitted.labels_)
    assert np.array_equal(fitted.predict(X.astype(np.float16).astype(np.float32)[:50]), fitted.labels_[:50])


def test_temi_pickles_without_callbacks(fitted: TEMI, data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    fitted.progress = lambda done, total: None
    try:
        clone = pickle.loads(pickle.dumps(fitted))
    finally:
        fitted.progress = None
    assert clone.progress is None and clone.cancel is None
    assert np.array_equal(clone.predict(X), fitted.labels_)


def test_temi_deterministic(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    kw = dict(FAST, epochs=5)
    a = TEMI(4, random_state=3, **kw).fit(X)
    b = TEMI(4, random_state=3, **kw).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.head_losses_, b.head_losses_)
    assert a.loss_history_ == b.loss_history_
    c = TEMI(4, random_state=4, **kw).fit(X)
    assert not np.array_equal(a.head_losses_, c.head_losses_)


def test_temi_fit_predict_and_float16(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    m = TEMI(4, **dict(FAST, epochs=2))
    labels = m.fit_predict(X.astype(np.float16))
    assert np.array_equal(labels, m.labels_)
    # float16 input is the same data as its exact float32 widening: same seed, same clustering
    ref = TEMI(4, **dict(FAST, epochs=2)).fit(X.astype(np.float16).astype(np.float32))
    assert np.array_equal(labels, ref.labels_)
    assert np.array_equal(m.head_losses_, ref.head_losses_)


def test_temi_constant_dimensions_no_nan() -> None:
    # N >= 10 D so "auto" standardises; zero and constant columns must be dropped, not divided by 0.
    X, y = blobs(n=320, d=12)
    X = np.hstack([X, np.zeros((len(X), 3), np.float32), np.full((len(X), 1), 0.5, np.float32)])
    m = TEMI(4, **dict(FAST, epochs=60)).fit(X)
    assert m.embed_norm_ == "standardize" and m._norm.n_out == 12
    assert np.isfinite(m.loss_history_).all() and np.isfinite(m.head_losses_).all()
    assert np.isfinite(m.predict_proba(X)).all()
    assert hungarian_acc(y, m.labels_) > 0.95
    # the constant columns are really dropped (not divided by a tiny std): other constants, same output
    moved = X.copy()
    moved[:, 12:15] = 0.3
    moved[:, 15] = -2.0
    np.testing.assert_array_equal(m.predict_proba(moved), m.predict_proba(X))


def test_temi_identical_points_get_one_cluster() -> None:
    # 40 copies of one point: every row must get the same (finite) probabilities, so one cluster.
    X = np.ones((40, 8), np.float32)
    m = TEMI(2, **dict(FAST, batch_size=8, epochs=2)).fit(X)
    assert np.isfinite(m.head_losses_).all()
    proba = m.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba, np.repeat(proba[:1], 40, axis=0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert np.unique(m.labels_).size == 1 and m.n_occupied_ == 1
    expected_sizes = [0, 0]
    expected_sizes[int(m.labels_[0])] = 40
    assert m.cluster_sizes_.tolist() == expected_sizes


def test_temi_cancel(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    with pytest.raises(CancelledError):
        TEMI(4, cancel=lambda: True, **FAST).fit(X)
    calls = {"n": 0}

    def cancel_later() -> bool:
        calls["n"] += 1
        return calls["n"] > 5  # after the kNN phase, during training

    with pytest.raises(CancelledError):
        TEMI(4, cancel=cancel_later, **FAST).fit(X)


def test_temi_progress(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    seen: list[tuple[int, int]] = []
    m = TEMI(4, progress=lambda done, total: seen.append((done, total)), **dict(FAST, epochs=6)).fit(X)
    assert seen, "progress was never called"
    assert seen[-1] == (m.n_iter_, m.n_iter_)
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and len(seen) >= 6


def test_temi_restores_torch_threads(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    before = torch.get_num_threads()
    m = TEMI(4, **dict(FAST, epochs=1, n_threads=1)).fit(X)
    m.predict(X)
    assert torch.get_num_threads() == before


def test_temi_input_errors(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    with pytest.raises(ClusterMineError):
        TEMI(4).predict(X)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ClusterMineError):
        TEMI(4, **FAST).fit(bad)
    with pytest.raises(ClusterMineError):
        TEMI(500, **FAST).fit(X)
    with pytest.raises(ClusterMineError):
        TEMI(4, embed_norm="zscore", **FAST).fit(X)
    with pytest.raises(ClusterMineError):
        TEMI(4, **FAST).fit(X[:, :, None])


def test_temi_init_only_stores_params() -> None:
    m = TEMI(7, n_heads=3, random_state=5)
    assert (m.n_clusters, m.n_heads, m.random_state, m.knn, m.epochs) == (7, 3, 5, None, None)
    assert not hasattr(m, "labels_")


def test_default_schedule() -> None:
    for n in (100, 1000, 10_000, 100_000, 1_300_000):
        bs = temi_mod.default_batch_size(n)
        ep = temi_mod.default_epochs(n, bs)
        assert 2 <= bs <= max(2, n // 4) and bs <= 256
        assert (n // bs) * ep >= 2000  # the default step floor (METHOD 2.9b)
    assert temi_mod.default_batch_size(1000) == 64  # the batch size measured in METHOD 2.9b
    assert temi_mod.default_knn(1000, 10) == 50
    assert temi_mod.default_knn(1000, 100) == 5
    assert temi_mod.default_knn(8, 2) == 5
    assert temi_mod.default_knn(5, 1) == 4  # never more than N - 1


def test_knn_indices_exact() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(57, 5)).astype(np.float32)
    got = temi_mod.knn_indices(X, 4, chunk_bytes=4 * 57 * 10)  # several row chunks
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    want = np.argsort(-S, axis=1)[:, :4]
    assert not (got == np.arange(57)[:, None]).any()
    assert np.array_equal(np.sort(got, 1), np.sort(want, 1))


def _reference_loss(p: dict, x: torch.Tensor, prior: torch.Tensor, beta: float) -> torch.Tensor:
    """METHOD 2.5 written per head with probabilities, as in the official code."""
    H = p["v"].shape[0]
    B = x.shape[0] // 2

    def head(h: int) -> torch.Tensor:
        a = F.gelu(x @ p["w1"][:, h] + p["b1"][h])
        z = F.normalize(a @ p["w2"][h] + p["b2"][h], dim=-1)
        w = p["g"][h] * p["v"][h] / p["v"][h].norm(dim=-1, keepdim=True)
        return z @ w.T

    qt = [F.softmax(head(h).detach() / 0.1, -1) for h in range(H)]
    for h in range(H):
        prior[h] = 0.9 * prior[h] + 0.1 * qt[h].mean(0)
    wts = torch.stack([(q[:B] * q[B:]).sum(-1) for q in qt]).mean(0)
    out = []
    for h in range(H):
        qs = F.softmax(head(h) / 0.1, -1)
        l_ab = -(((qs[:B] * qt[h][B:]) ** beta) / prior[h]).sum(-1).log()
        l_ba = -(((qs[B:] * qt[h][:B]) ** beta) / prior[h]).sum(-1).log()
        out.append(0.5 * ((wts * l_ab).mean() + (wts * l_ba).mean()))
    return torch.stack(out)


def test_batched_heads_match_per_head_reference() -> None:
    H, D, C, B = 3, 8, 5, 6
    p = temi_mod._init_heads(H, D, 16, 12, C, torch.Generator().manual_seed(0))
    x = F.normalize(torch.randn(2 * B, D, generator=torch.Generator().manual_seed(1)), dim=-1)
    prior_a = torch.softmax(torch.randn(H, C), -1)
    prior_b = prior_a.clone()
    logits = temi_mod._heads_forward(p, x)
    loss, _ = temi_mod._temi_loss(logits, logits.detach(), prior_a, 0.6, 0.1, 0.1)
    ref = _reference_loss(p, x, prior_b, 0.6)
    assert torch.allclose(loss, ref, atol=1e-6)
    assert torch.allclose(prior_a, prior_b, atol=1e-7)


# ---------------------------------------------------------------------------------------- k-means


def test_kmeans_baseline(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    km = KMeansClusterer(4, random_state=0).fit(X)
    assert hungarian_acc(y, km.labels_) > 0.95
    assert km.cluster_centers_.shape == (4, X.shape[1])
    assert np.array_equal(km.predict(X), km.labels_)
    assert km.n_occupied_ == 4 and km.cluster_sizes_.sum() == len(X)
    # scale-invariant: features are L2-normalised first
    assert np.array_equal(km.predict(3.0 * X), km.labels_)
    assert np.array_equal(KMeansClusterer(4, random_state=0).fit_predict(X), km.labels_)
    with pytest.raises(CancelledError):
        KMeansClusterer(4, cancel=lambda: True).fit(X)
    with pytest.raises(ClusterMineError):
        KMeansClusterer(4).predict(X)


def test_kmeans_minibatch_branch(monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray]) -> None:
    from clustermine.method.clustering import kmeans as kmeans_mod

    monkeypatch.setattr(kmeans_mod, "MINIBATCH_ABOVE", 100)
    X, y = data
    km = KMeansClusterer(4, random_state=0).fit(X)
    assert type(km._km).__name__ == "SphericalMiniBatchKMeans"
    assert hungarian_acc(y, km.labels_) > 0.95


# ------------------------------------------------------------------------------ factory and rules


def test_make_clusterer() -> None:
    progress = lambda d, t: None  # noqa: E731
    m = make_clusterer("TEMI", 7, seed=3, progress=progress, n_heads=2)
    assert isinstance(m, TEMI) and (m.n_clusters, m.random_state, m.n_heads, m.progress) == (7, 3, 2, progress)
    assert isinstance(make_clusterer("kmeans", 3), KMeansClusterer)
    assert isinstance(make_clusterer("k-means", 3, n_init=2), KMeansClusterer)
    with pytest.raises(ClusterMineError, match="kmeans, temi"):
        make_clusterer("dbscan", 3)
    with pytest.raises(ClusterMineError, match="n_heads"):
        make_clusterer("kmeans", 3, n_heads=4)


def test_clamp_n_clusters() -> None:
    assert clamp_n_clusters(10, 1000) == (10, None)
    c, msg = clamp_n_clusters(100, 60)
    assert c == 60 // MIN_CLUSTER_SIZE and msg and "100" in msg
    assert clamp_n_clusters(3, 4) == (1, clamp_n_clusters(3, 4)[1])
    assert clamp_n_clusters(3, 4)[1] is not None
    assert clamp_n_clusters(0, 100)[0] == 1 and clamp_n_clusters(0, 100)[1]
    assert clamp_n_clusters(1, 1) == (1, None)


def test_default_n_clusters() -> None:
    assert default_n_clusters(1000) == 22
    assert default_n_clusters(50) == 5
    assert default_n_clusters(3) == 1
    assert default_n_clusters(10**7) == 200
    for n in (1, 7, 20, 99, 1234, 54321):
        c = default_n_clusters(n)
        assert clamp_n_clusters(c, n) == (c, None)
