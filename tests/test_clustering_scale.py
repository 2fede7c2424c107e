"""Issue 10 item 4: kNN at scale (exact chunked / approximate NN-descent), the large-N TEMI schedule,
mini-batch spherical k-means on memory-mapped float16 features, and the TEMI-on-CPU feasibility check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clustermine.method.clustering import TEMI, KMeansClusterer
from clustermine.method.cost import check_clusterer_feasible
from clustermine.method.clustering import knn as knn_mod
from clustermine.method.clustering import temi as temi_mod
from clustermine.method.clustering.base import InvalidClusteringInput


def sphere_mixture(n: int, d: int, c: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows u = normalise(mu_y + noise * g / sqrt(d)): float32 [n, d], labels int [n]."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(c, d))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    y = rng.integers(0, c, size=n)
    X = mu[y] + noise * rng.normal(size=(n, d)) / math.sqrt(d)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


def brute_force(X: np.ndarray, k: int) -> np.ndarray:
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


# ====================================================================== kNN
def test_exact_knn_equals_brute_force_on_float16_memmap(tmp_path) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(61, 7)).astype(np.float16)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    got = knn_mod.knn_indices(mm, 5, method="exact", chunk_bytes=4 * 61 * 8)  # several row chunks
    want = brute_force(X.astype(np.float32), 5)
    assert got.dtype == np.int32 and got.shape == (61, 5)
    assert not (got == np.arange(61)[:, None]).any()
    assert np.array_equal(np.sort(got, 1), np.sort(want, 1))
    # nearest first: similarities along each row do not increase
    Xn = X.astype(np.float32) / np.linalg.norm(X.astype(np.float32), axis=1, keepdims=True)
    sims = np.einsum("nd,nkd->nk", Xn, Xn[got])
    assert (np.diff(sims, axis=1) <= 1e-6).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_exact_knn_on_cuda_matches_cpu(dtype) -> None:
    X, _ = sphere_mixture(5000, 64, 50, noise=0.5)
    cpu = knn_mod.exact_knn(X.astype(np.float16), 10)
    gpu = knn_mod.exact_knn(X.astype(np.float16), 10, device="cuda", gpu_dtype=dtype, chunk_bytes=1 << 20)
    assert gpu.dtype == np.int32 and not (gpu == np.arange(5000)[:, None]).any()
    overlap = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(cpu, gpu)])
    assert overlap >= (0.999 if dtype == torch.float32 else 0.97)


def test_normalized_float32_is_chunked_and_keeps_zero_rows(tmp_path) -> None:
    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float16)
    X[7] = 0
    got = knn_mod.normalized_float32(X, chunk_rows=8)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.allclose(np.linalg.norm(np.delete(got, 7, 0), axis=1), 1, atol=1e-6) and not got[7].any()


def test_auto_method_switches_at_the_threshold(monkeypatch) -> None:
    assert knn_mod.resolve_knn_method("auto", knn_mod.APPROX_KNN_ABOVE, "cpu") == "exact"
    assert knn_mod.resolve_knn_method("auto", knn_mod.APPROX_KNN_ABOVE + 1, "cpu") == "approx"
    assert knn_mod.resolve_knn_method("auto", 10**7, "cuda") == "exact"  # a GPU stays exact, chunked
    assert knn_mod.resolve_knn_method("approx", 10, "cpu") == "approx"
    with pytest.raises(InvalidClusteringInput):
        knn_mod.resolve_knn_method("faiss", 10, "cpu")


# Clustered data where neighbours are well defined (100 components, ~30 points each): NN-descent
# recovers nearly all of them. Bound stated: mean recall@10 >= 0.95 (measured ~0.99).
APPROX_RECALL_BOUND = 0.95


def test_approximate_knn_recall_and_determinism() -> None:
    X, _ = sphere_mixture(3000, 48, 100, noise=1.0, seed=1)
    k = 10
    exact = knn_mod.knn_indices(X, k, method="exact")
    threads = torch.get_num_threads()
    approx = knn_mod.knn_indices(X, k, method="approx", random_state=7)
    assert torch.get_num_threads() == threads  # numba's OpenMP layer must not leave torch's threads changed
    assert approx.dtype == np.int32 and approx.shape == (3000, k)
    assert not (approx == np.arange(3000)[:, None]).any()
    assert all(len(set(r)) == k for r in approx[:200])  # no repeated neighbour
    recall = np.mean([len(np.intersect1d(a, e)) / k for a, e in zip(approx, exact)])
    assert recall >= APPROX_RECALL_BOUND, recall
    # nearest first, as the exact contract
    sims = np.einsum("nd,nkd->nk", X, X[approx])
    assert (np.diff(sims, axis=1) <= 1e-5).all()
    again = knn_mod.knn_indices(X, k, method="approx", random_state=7)
    assert np.array_equal(again, approx)


def test_approximate_knn_with_duplicate_rows_still_excludes_self() -> None:
    # duplicates sit at distance 0, so a row's own index need not come first in the graph
    base, _ = sphere_mixture(150, 16, 10, noise=0.5, seed=4)
    X = np.repeat(base, 2, axis=0)
    got = knn_mod.knn_indices(X, 5, method="approx", random_state=0)
    assert got.shape == (300, 5) and not (got == np.arange(300)[:, None]).any()
    assert all(len(set(r)) == 5 for r in got)
    twin = np.arange(300) ^ 1  # row 2i's duplicate is 2i+1
    assert np.mean(got[:, 0] == twin) > 0.95 or np.mean((got == twin[:, None]).any(1)) > 0.99


def test_temi_uses_the_forced_knn_method_and_reports_it() -> None:
    X, _ = sphere_mixture(400, 16, 4, noise=0.3)
    small = dict(n_heads=2, epochs=1, batch_size=64, hidden_dim=16, bottleneck_dim=8, n_threads=1)
    m = TEMI(4, random_state=0, **small).fit(X)
    assert m.knn_method == "auto" and m.knn_method_ == "exact"
    a = TEMI(4, random_state=0, knn_method="approx", **small).fit(X)
    assert a.knn_method_ == "approx" and a.labels_.shape == (400,)
    with pytest.raises(InvalidClusteringInput):
        TEMI(4, knn_method="hnsw", **small).fit(X)


# ====================================================================== TEMI schedule at large N
# The default schedule for N <= 20,000, worked out by hand from the rule (METHOD 2.9, issue 12's step
# floor, issue 18's "at least the steps of N // 2"). batch = power of two nearest N / 16 in [16, 256],
# <= N / 4; floor = clip(1000 + N, 1500, 2000); epochs = whole epochs of N // batch steps reaching
# max(floor, steps(N // 2)). E.g. N = 5000: batch 256, 19 steps an epoch; steps(2500) = 19 x 106 = 2014
# (from 1250's floor of 2,000 at 19 an epoch), so 106 epochs, 2,014 steps. C does not enter below 20,000.
#                    batch  epochs  floor  steps
SMALL_N_SCHEDULE = {500: (32, 101, 1500, 1515),      # 15 steps/epoch; N // 2 = 250 needs 1,515
                    1000: (64, 134, 2000, 2010),     # 15 steps/epoch: ceil(2000 / 15) = 134
                    5000: (256, 106, 2000, 2014),
                    12_345: (256, 42, 2000, 2016),   # 48 steps/epoch; N // 2 = 6172 runs 24 x 84 = 2,016
                    20_000: (256, 26, 2000, 2028)}   # 78 steps/epoch; N // 2 = 10,000 runs 39 x 52 = 2,028


# every C that leaves >= 5 images a cluster (the clamp rule), for each N
@pytest.mark.parametrize("n, c", [(n, c) for n in SMALL_N_SCHEDULE for c in (None, 10, 100, 1000)
                                  if c is None or c <= n // 5])
def test_schedule_unchanged_up_to_20k(n: int, c: int | None) -> None:
    got = temi_mod.default_schedule(n, c)
    assert (got["batch_size"], got["epochs"], got["min_steps"], got["steps"]) == SMALL_N_SCHEDULE[n]


@pytest.mark.parametrize("n, c", [(50_000, 200), (100_000, 1000), (1_281_167, 200), (1_281_167, 1000),
                                  (1_281_167, 4000), (1_281_167, 25_000), (1_281_167, 100_000)])
def test_large_n_schedule_gives_each_cluster_the_official_recipes_training(n: int, c: int) -> None:
    s = temi_mod.default_schedule(n, c)
    spe = n // s["batch_size"]
    assert s["steps"] == spe * s["epochs"]
    assert s["steps"] >= 2000  # the step floor from N = 1000 on (METHOD 2.9b)
    # ~5,000 samples per cluster (ImageNet recipe: 100 ep x 1.28M / 25,000 clusters), at most 100 epochs
    visits = s["steps"] * s["batch_size"] / c
    assert visits >= 5000 or s["epochs"] == 100
    assert s["epochs"] <= max(100, math.ceil(2000 / spe))
    # not more than one epoch beyond what the rule needs
    assert (s["epochs"] - 1) * spe * s["batch_size"] / c < 5000 or s["epochs"] == 1


def test_large_n_schedule_known_answers_and_overrides() -> None:
    n = 1_281_167
    assert temi_mod.default_schedule(n, 1000)["epochs"] == 4        # was 1 (2,000-step floor)
    assert temi_mod.default_schedule(n, 4000)["epochs"] == 16
    assert temi_mod.default_schedule(n, 25_000)["epochs"] == 98     # the recipe's own C: ~its 100 epochs
    assert temi_mod.default_schedule(n, 1000, epochs=100)["steps"] == 100 * (n // 256)
    assert temi_mod.default_schedule(n, 1000, min_steps=2000)["epochs"] == 1  # an explicit floor wins
    # C unknown: the default C rule
    from clustermine.method.clustering import default_n_clusters
    assert temi_mod.default_schedule(n) == temi_mod.default_schedule(n, default_n_clusters(n))


def test_estimate_follows_the_large_n_schedule_and_cluster_count() -> None:
    from clustermine.workflows.estimate import estimate_run_cost

    e = estimate_run_cost(1_000_000, "temi", [], n_clusters=1000, holdout_fraction=0.0)
    assert e.schedule == temi_mod.default_schedule(1_000_000, 1000)
    # the reference machine's 36 us per head x sample (BENCHMARKS "Clustering: TEMI vs k-means") x 16 x 256
    floor = e.schedule["steps"] * 36e-6 * 16 * 256
    assert e.stages["cluster"] > 1.5 * floor  # C = 1,000 costs more per step than C <= 100


# ====================================================================== k-means on a float16 memmap
def test_minibatch_spherical_kmeans_on_float16_memmap(tmp_path, monkeypatch) -> None:
    from clustermine.method.clustering import kmeans as kmeans_mod
    from sklearn.metrics import adjusted_rand_score

    monkeypatch.setattr(kmeans_mod, "MINIBATCH_ABOVE", 1000)
    monkeypatch.setattr(kmeans_mod, "MINIBATCH_SIZE", 1024)
    monkeypatch.setattr(kmeans_mod, "INIT_SAMPLE_MIN", 2000)
    X, y = sphere_mixture(6000, 24, 12, noise=0.5, seed=2)
    np.save(tmp_path / "x.npy", X.astype(np.float16))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    km = KMeansClusterer(12, random_state=0).fit(mm)
    assert isinstance(km._km, kmeans_mod.SphericalMiniBatchKMeans)
    assert km.labels_.dtype == np.int64 and km.labels_.shape == (6000,)
    assert adjusted_rand_score(y, km.labels_) > 0.9
    assert np.allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1, atol=1e-5)  # spherical
    assert np.array_equal(km.predict(mm), km.labels_)
    assert np.array_equal(km.predict(np.asarray(mm[:100], dtype=np.float32) * 3), km.labels_[:100])
    # labels = nearest centre by cosine; inertia = sum of 2 - 2 cos for unit rows
    Xn = X.astype(np.float16).astype(np.float32)
    Xn /= np.linalg.norm(Xn, axis=1, keepdims=True)
    cos = Xn @ km.cluster_centers_.T
    assert (cos[np.arange(6000), km.labels_] >= cos.max(1) - 1e-5).all()
    assert km.inertia_ == pytest.approx(float((2 - 2 * cos.max(1)).sum()), rel=1e-3)
    again = KMeansClusterer(12, random_state=0).fit(mm)
    assert np.array_equal(again.labels_, km.labels_)
    bad = np.array(mm)
    bad[4321, 3] = np.nan
    with pytest.raises(InvalidClusteringInput):
        KMeansClusterer(12).fit(bad)
    with pytest.raises(InvalidClusteringInput):
        km.predict(np.zeros((2000, 5), dtype=np.float16))


def test_minibatch_kmeans_reads_the_memmap_in_batches(tmp_path, monkeypatch) -> None:
    """No full-size float copy: every row read the model makes is a batch of at most batch_size rows."""
    from clustermine.method.clustering import kmeans as kmeans_mod

    X, _ = sphere_mixture(3000, 8, 5, noise=0.3)

    class Spy(np.ndarray):
        largest = 0

        def __getitem__(self, key):
            out = np.ndarray.__getitem__(self, key)
            if isinstance(out, np.ndarray) and out.ndim == 2:
                Spy.largest = max(Spy.largest, out.shape[0])
            return out

    monkeypatch.setattr(kmeans_mod, "MINIBATCH_ABOVE", 1000)
    monkeypatch.setattr(kmeans_mod, "ASSIGN_CHUNK", 512)
    monkeypatch.setattr(kmeans_mod, "INIT_SAMPLE_MIN", 400)
    spy = X.astype(np.float16).view(Spy)
    model = kmeans_mod.SphericalMiniBatchKMeans(5, seed=0, batch_size=256, n_steps=50).fit(spy)
    assert model.labels_.shape == (3000,)
    assert 0 < Spy.largest <= 512


# ====================================================================== TEMI on a CPU at large N
def test_check_clusterer_feasible_flags_temi_on_cpu_at_imagenet_size() -> None:
    msg = check_clusterer_feasible("temi", 1_281_167, "cpu", n_clusters=1000)
    assert msg and "GPU" in msg and "--clusterer kmeans" in msg and "1,281,167" in msg
    assert " h " in msg  # hours, from the estimate's rates
    assert check_clusterer_feasible("temi", 1_281_167, "cuda", n_clusters=1000) is None
    assert check_clusterer_feasible("kmeans", 1_281_167, "cpu", n_clusters=1000) is None
    assert check_clusterer_feasible("temi", 1000, "cpu") is None  # the small-run path is untouched
    # finished runs that show this machine is 4x faster than the reference shrink the estimate
    from clustermine.method.cost import estimate_temi_cpu_seconds
    from clustermine.workflows.estimate import temi_reference_seconds

    sched = {"n_heads": 4, "batch_size": 64, "steps": 2000}
    runs = [{"status": "done", "config": {"clusterer": "temi"},
             "summary": {"n_images": 1000, "timings_s": {"cluster": temi_reference_seconds(sched) / 4},
                         "temi_schedule": sched}}]
    slow, _, _ = estimate_temi_cpu_seconds(1_281_167, 1000)
    fast, _, _ = estimate_temi_cpu_seconds(1_281_167, 1000, runs=runs)
    assert fast == pytest.approx(slow / 4)


def test_temi_fit_warns_when_the_estimate_is_too_long(monkeypatch) -> None:
    from clustermine.method.cost import SlowClusteringWarning
    from clustermine.method import cost as feasibility

    X, _ = sphere_mixture(200, 8, 4, noise=0.3)
    small = dict(n_heads=2, epochs=1, batch_size=32, hidden_dim=16, bottleneck_dim=8, n_threads=1)
    monkeypatch.setattr(feasibility, "TEMI_CPU_MAX_S", 1e-9)
    with pytest.warns(SlowClusteringWarning, match="wants a GPU"):
        TEMI(4, random_state=0, **small).fit(X)
