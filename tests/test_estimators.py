"""The clusterers are scikit-learn estimators: parameters, cloning, seeds, fitting contracts,
scikit-learn's own estimator checks, and ``make_clusterer``."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from clustermine.method.clustering import KMeansClusterer, TEMI, make_clusterer
from clustermine.core.errors import ClusterMineError

# Tiny TEMI: a few hundred optimiser steps of narrow heads on one thread.
FAST = dict(n_heads=3, hidden_dim=32, bottleneck_dim=16, batch_size=16, epochs=25, lr=1e-3, n_threads=1)
ESTIMATORS = {
    "kmeans": lambda **kw: KMeansClusterer(3, n_init=3, **kw),
    "temi": lambda **kw: TEMI(3, **{**FAST, **kw}),
}


def blobs(n: int, d: int = 8, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """c tight, well-separated blobs on the unit sphere: X float32 [n, d], y int [n]."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:c] * 3.0
    y = np.arange(n) % c
    X = centres[y] + 0.1 * rng.normal(size=(n, d))
    return X.astype(np.float32), y


def agreement(y: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of samples whose cluster maps to their class under the best one-to-one matching."""
    m = np.zeros((int(pred.max()) + 1, int(y.max()) + 1))
    np.add.at(m, (pred, y), 1)
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / len(y))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_params_round_trip_and_clone(name: str) -> None:
    est = ESTIMATORS[name](random_state=7, verbose=False)
    params = est.get_params()
    assert params["random_state"] == 7 and params["n_clusters"] == 3 and "seed" not in params
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    assert not hasattr(twin, "labels_")
    # set_params changes exactly what it is given and returns the estimator
    assert est.set_params(n_clusters=4, random_state=1) is est
    assert est.get_params() == {**params, "n_clusters": 4, "random_state": 1}
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(not_a_param=1)
    # every constructor parameter is stored unchanged (no work in __init__)
    fresh = type(est)(**params)
    assert fresh.get_params() == params


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fit_contract_on_two_data_sizes(name: str) -> None:
    X, y = blobs(90)
    est = ESTIMATORS[name](random_state=0)
    assert est.fit(X) is est
    assert est.labels_.dtype == np.int64 and est.labels_.shape == (90,)
    # three separated blobs: k-means finds them exactly; the tiny TEMI schedule (~140 steps) nearly
    least = 1.0 if name == "kmeans" else 0.9
    assert agreement(y, est.labels_) >= least
    assert np.array_equal(est.predict(X), est.labels_)
    assert est.n_features_in_ == 8 and int(est.cluster_sizes_.sum()) == 90
    # fit_predict == labels_ of a fit with the same random_state
    assert np.array_equal(ESTIMATORS[name](random_state=0).fit_predict(X), est.labels_)
    # refitting the same object on more samples and other features replaces every fitted attribute
    X2, y2 = blobs(150, d=5, seed=1)
    est.fit(X2)
    assert est.labels_.shape == (150,) and est.n_features_in_ == 5 and int(est.cluster_sizes_.sum()) == 150
    assert agreement(y2, est.labels_) >= least
    with pytest.raises(ClusterMineError, match="5 features"):
        est.predict(X)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_same_random_state_same_labels(name: str) -> None:
    X, _ = blobs(60, seed=3)
    X = X + np.random.default_rng(5).normal(scale=1.0, size=X.shape).astype(np.float32)  # overlapping
    a = ESTIMATORS[name](random_state=11).fit(X)
    b = ESTIMATORS[name](random_state=11).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    # a RandomState instance is accepted; equal states give equal results
    c = ESTIMATORS[name](random_state=np.random.RandomState(2)).fit(X)
    d = ESTIMATORS[name](random_state=np.random.RandomState(2)).fit(X)
    assert np.array_equal(c.labels_, d.labels_)


def test_temi_random_state_changes_the_initialisation() -> None:
    X, _ = blobs(60)
    a = TEMI(3, **{**FAST, "epochs": 1}, random_state=0).fit(X)
    b = TEMI(3, **{**FAST, "epochs": 1}, random_state=1).fit(X)
    assert not np.allclose(a.head_losses_, b.head_losses_)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_deprecated_seed_keyword_is_random_state(name: str) -> None:
    X, _ = blobs(60, seed=4)
    with pytest.warns(DeprecationWarning, match="random_state"):
        old = ESTIMATORS[name](seed=5)
    assert old.get_params()["random_state"] == 5
    assert np.array_equal(old.fit(X).labels_, ESTIMATORS[name](random_state=5).fit(X).labels_)
    with pytest.warns(DeprecationWarning):
        assert old.seed == 5
    with pytest.raises(TypeError, match="seed=5 and random_state=6"):
        ESTIMATORS[name](seed=5, random_state=6)
    with pytest.raises(TypeError, match="unexpected keyword argument 'sead'"):
        ESTIMATORS[name](sead=5)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_unfitted_and_bad_input_errors(name: str) -> None:
    est = ESTIMATORS[name]()
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(np.zeros((2, 8), dtype=np.float32))
    with pytest.raises(ClusterMineError, match="NaN"):
        est.fit(np.full((20, 4), np.nan))
    with pytest.raises(ClusterMineError, match="2D array"):
        est.fit(np.zeros(20))
    with pytest.raises(ClusterMineError, match="exceeds the number of samples"):
        type(est)(30).fit(blobs(20)[0])


@pytest.mark.parametrize("name", ESTIMATORS)
def test_pickle_keeps_the_model_and_drops_callbacks(name: str) -> None:
    X, _ = blobs(60)
    calls: list[tuple[int, int]] = []
    est = ESTIMATORS[name](progress=lambda done, total: calls.append((done, total))).fit(X)
    assert calls and calls[-1][0] == calls[-1][1]
    back = pickle.loads(pickle.dumps(est))
    assert back.progress is None and back.cancel is None
    assert np.array_equal(back.predict(X), est.labels_)


# Checks of scikit-learn's suite that do not apply, each with the reason.
_NOT_APPLICABLE = {
    "check_do_not_raise_errors_in_init_or_set_params": (
        "passes a keyword named after the **deprecated catch-all (kept for the old `seed` keyword); "
        "unknown keywords raise TypeError on purpose"
    ),
    "check_array_api_input": "array API inputs are not supported (features are NumPy arrays)",
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_scikit_learn_estimator_checks(name: str) -> None:
    """scikit-learn's own estimator checks (clone, params, pickling, dtypes, n_features_in_,
    idempotent fit, sample-order invariance, error messages, ...)."""
    from sklearn.utils.estimator_checks import estimator_checks_generator

    est = ESTIMATORS[name]()
    if name == "temi":
        est.set_params(epochs=2, batch_size=8)  # the checks test contracts (on 10-30 samples), not quality
    ran = []
    for estimator, check in estimator_checks_generator(est, legacy=True):
        check_name = getattr(check, "func", check).__name__
        if check_name in _NOT_APPLICABLE:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning etc. on the checks' random data
            check(estimator)
        ran.append(check_name)
    assert {"check_estimators_pickle", "check_clustering", "check_fit_idempotent",
            "check_n_features_in_after_fitting", "check_estimators_unfitted"} <= set(ran)


# ------------------------------------------------------------------------------ make_clusterer


def test_make_clusterer_passes_parameters_through() -> None:
    def progress(done: int, total: int) -> None:
        pass

    m = make_clusterer("TEMI", 7, seed=3, progress=progress, n_heads=2, beta=0.5)
    assert isinstance(m, TEMI)
    assert {k: m.get_params()[k] for k in ("n_clusters", "random_state", "n_heads", "beta", "progress")} == {
        "n_clusters": 7, "random_state": 3, "n_heads": 2, "beta": 0.5, "progress": progress}
    assert make_clusterer("temi", 7, random_state=3).get_params()["random_state"] == 3
    assert make_clusterer("temi", 7).get_params()["random_state"] == 0
    k = make_clusterer(" k-means ", 3, n_init=2, max_iter=50)
    assert isinstance(k, KMeansClusterer) and (k.n_init, k.max_iter, k.random_state) == (2, 50, 0)
    # every default other than the ones given is the class's own default
    assert clone(k).set_params(n_init=10, max_iter=300).get_params() == KMeansClusterer(3).get_params()


def test_make_clusterer_rejects_unknown_options_clearly() -> None:
    with pytest.raises(ClusterMineError, match=r"unknown option\(s\) for clusterer 'kmeans': n_heads; valid: max_iter, n_init, verbose"):
        make_clusterer("kmeans", 3, n_heads=4)
    with pytest.raises(ClusterMineError, match="bogus.*valid: .*beta"):
        make_clusterer("temi", 3, bogus=1)
    with pytest.raises(ClusterMineError, match="choose one of: kmeans, temi"):
        make_clusterer("dbscan", 3)
    with pytest.raises(ClusterMineError, match="seed=1 and random_state=2"):
        make_clusterer("temi", 3, seed=1, random_state=2)
