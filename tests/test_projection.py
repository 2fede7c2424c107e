"""The PCA cluster map: known answers, an independent SVD reference, invariances that a mirrored
or CPU-dependent map would break, and the on-disk cache written by earlier versions."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from clustermine.workflows import projection
from clustermine.workflows.projection import pca_2d


def reference_pca(x: np.ndarray) -> np.ndarray:
    """Independent reference: SVD of the centred data; each axis oriented so that its
    largest-magnitude loading is positive. float64 [N, 2]."""
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    v = vt[:2].T
    v = v * np.sign(v[np.abs(v).argmax(axis=0), [0, 1]])
    return xc @ v


def spectrum_data(n: int = 240, d: int = 24, seed: int = 0) -> np.ndarray:
    """Random data with clearly separated leading variances (no near-degenerate axes)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = np.geomspace(4.0, 0.05, d)
    return ((rng.normal(size=(n, d)) * scales) @ q.T + 3.0).astype(np.float32)


def test_known_answer_on_uncorrelated_columns() -> None:
    a = np.array([-3.0, -1.0, 1.0, 3.0])
    b = np.array([1.0, -1.0, -1.0, 1.0]) * 0.5  # sum(a * b) = 0: the columns are uncorrelated
    x = np.stack([a, b, np.zeros(4)], axis=1) + np.array([10.0, -5.0, 2.0])
    # PC1 = +e1 (variance 20/3), PC2 = +e2 (variance 1/3): the coordinates are the centred columns
    np.testing.assert_allclose(pca_2d(x), np.stack([a, b], axis=1), atol=1e-6)
    # swapping and negating columns moves the axes but keeps them oriented by the positive-loading rule
    np.testing.assert_allclose(pca_2d(-x[:, [1, 0, 2]]), np.stack([-a, -b], axis=1), atol=1e-6)


def test_matches_an_independent_svd_reference() -> None:
    x = spectrum_data()
    got = pca_2d(x)
    assert got.dtype == np.float32 and got.shape == (240, 2)
    np.testing.assert_allclose(got, reference_pca(x.astype(np.float64)), atol=2e-4)


def test_map_does_not_depend_on_row_order_column_order_or_summation_order() -> None:
    """Permuting rows or feature dimensions changes every summation order (as another CPU or BLAS
    would) but not the map: no axis may flip and the coordinates agree to float precision."""
    x = spectrum_data(seed=1)
    base = pca_2d(x)
    rows = np.random.default_rng(2).permutation(len(x))
    cols = np.random.default_rng(3).permutation(x.shape[1])
    np.testing.assert_allclose(pca_2d(x[rows])[np.argsort(rows)], base, atol=1e-4)
    np.testing.assert_allclose(pca_2d(x[:, cols]), base, atol=1e-4)
    np.testing.assert_allclose(pca_2d(x.astype(np.float64)), base, atol=1e-4)
    # negating the data mirrors the points, never the axes
    np.testing.assert_allclose(pca_2d(-x), -base, atol=1e-4)
    # a second call gives the very same bytes
    assert pca_2d(x).tobytes() == base.tobytes()


def test_first_axis_carries_the_most_variance() -> None:
    coords = pca_2d(spectrum_data(seed=4)).astype(np.float64)
    assert coords[:, 0].var() > coords[:, 1].var() > 0
    assert abs(np.corrcoef(coords.T)[0, 1]) < 1e-4  # principal axes are uncorrelated


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_rows_give_zeros(n: int) -> None:
    out = pca_2d(np.ones((n, 5)))
    assert out.shape == (n, 2) and not out.any()


def test_rank_limited_inputs() -> None:
    # one feature: the first coordinate is the centred value, the second is zero
    col = np.array([[1.0], [4.0], [7.0]])
    np.testing.assert_allclose(pca_2d(col), [[-3.0, 0.0], [0.0, 0.0], [3.0, 0.0]], atol=1e-6)
    # two rows: the first axis is their difference direction, oriented by the largest loading
    two = np.array([[0.0, 1.0, 0.0], [0.0, -3.0, 0.0]])  # loading on dim 1 is +1 => row 0 at +2
    np.testing.assert_allclose(pca_2d(two), [[2.0, 0.0], [-2.0, 0.0]], atol=1e-6)
    # identical rows: a single point at the origin, no NaN
    same = pca_2d(np.tile([[0.3, -1.0, 2.0]], (6, 1)))
    assert np.isfinite(same).all() and np.allclose(same, 0.0)


def test_maps_cached_by_earlier_versions_are_still_served(tmp_path) -> None:
    """Earlier versions computed the map by hand (covariance eigenvectors, largest loading made
    positive) and cached it as ``projections/pca-s<seed>-<sha1 key>.npy``. The library version gives
    the same map, and a cache file written under that name is read back without recomputing."""
    x = spectrum_data(n=120, d=10, seed=5)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    vals, vecs = np.linalg.eigh(xc.T @ xc / (len(x) - 1))
    v = vecs[:, np.argsort(vals)[::-1][:2]]
    v = v * np.sign(v[np.abs(v).argmax(axis=0), [0, 1]])
    old_map = (xc @ v).astype(np.float32)
    np.testing.assert_allclose(pca_2d(x), old_map, atol=1e-4)

    a = np.ascontiguousarray(x)
    key = hashlib.sha1(f"{a.shape}|{a.dtype}".encode() + a.tobytes()).hexdigest()[:16]
    folder = tmp_path / "projections"
    folder.mkdir()
    marker = old_map + 1000.0  # not what pca_2d would compute: proves it was read, not recomputed
    np.save(folder / f"pca-s0-{key}.npy", marker)
    rows, coords = projection.projection(tmp_path, "pca", x)
    assert np.array_equal(rows, np.arange(120)) and np.array_equal(coords, marker)
