"""The cluster map at large N (issue 10, item 7): a map fitted on a stratified sample and extended
to every row, density rasters of all rows, and box / lasso selections of all rows — checked
against brute-force references on synthetic features (the sizes are small; the code paths are the
large-run ones, selected by passing the sample sizes explicitly)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clustermine.workflows import projection as pj
from clustermine.store import layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app import app_env, no_exception, open_app, texts  # noqa: F401,E402  (app_env is a fixture)


def mixture(n: int = 3000, d: int = 16, k: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm features of a k-component mixture (float32 [n, d]) and the component of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    sizes = rng.dirichlet(np.ones(k) * 0.5) * n
    lab = np.repeat(np.arange(k), np.maximum(1, sizes.astype(int)))[:n]
    lab = np.concatenate([lab, np.zeros(n - len(lab), dtype=int)])
    x = centres[lab] + rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), lab


def test_stratified_sample_covers_every_cluster_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    groups = np.concatenate([np.full(5000, 0), np.full(3, 1), np.full(1, 2), rng.integers(3, 40, 2000),
                             np.full(50, -1)])
    rng.shuffle(groups)
    rows = pj.stratified_rows(groups, 200, seed=0)
    assert len(rows) == 200 and len(np.unique(rows)) == 200 and np.all(np.diff(rows) > 0)
    assert set(groups[rows]) == set(groups)  # the 1-image and 3-image clusters and the held-out ones too
    # one row per group first (40 groups), the other 160 in proportion to the rows left per group
    k = len(np.unique(groups))
    assert abs(int((groups[rows] == 0).sum()) - (1 + 160 * 4999 / (len(groups) - k))) <= 1
    assert np.array_equal(rows, pj.stratified_rows(groups, 200, seed=0))
    assert not np.array_equal(rows, pj.stratified_rows(groups, 200, seed=1))
    assert np.array_equal(pj.stratified_rows(groups[:150], 200), np.arange(150))  # small: all rows
    # more clusters than rows: one row each for the largest clusters
    many = np.repeat(np.arange(100), np.arange(1, 101))
    few = pj.stratified_rows(many, 10)
    assert sorted(many[few]) == list(range(90, 100))


def test_drawn_rows_are_a_stratified_sample(monkeypatch) -> None:
    _, lab = mixture(n=2000)
    m = pj.FullMap(np.zeros((2000, 2), np.float32), pj.stratified_rows(lab, 300), "pca")
    monkeypatch.setattr(pj, "DRAW_POINTS", 300)
    assert np.array_equal(pj.drawn_rows(m, lab), m.fit_rows)  # same size: the fitted rows themselves
    monkeypatch.setattr(pj, "DRAW_POINTS", 120)
    drawn = pj.drawn_rows(m, lab)
    assert np.array_equal(drawn, pj.stratified_rows(lab, 120)) and set(lab[drawn]) == set(lab)
    monkeypatch.setattr(pj, "DRAW_POINTS", 5000)
    assert np.array_equal(pj.drawn_rows(m, lab), np.arange(2000))


def test_pca_extension_agrees_with_the_sample_fit() -> None:
    x, lab = mixture()
    fit = pj.stratified_rows(lab, 400)
    mean, axes = pj.pca_fit(x[fit])
    allc = pj.pca_extend(x, mean, axes, chunk=257)
    np.testing.assert_allclose(allc[fit], pj.pca_2d(x[fit]), atol=1e-4)
    # extending is the same linear map for the other rows: an independent computation
    ref = (x.astype(np.float64) - x[fit].astype(np.float64).mean(axis=0)) @ axes.T
    np.testing.assert_allclose(allc, ref, atol=1e-4)


def test_neighbour_extension_keeps_fitted_rows_and_places_copies_on_their_original() -> None:
    x, lab = mixture(n=2000)
    fit = pj.stratified_rows(lab, 300)
    fit_coords = pj.pca_2d(x[fit])  # a smooth map of the fitted rows, as a real fit is
    # rows 2000.. are exact copies of fitted rows: their most similar fitted row is the original (cos 1)
    src = fit[::7]
    feats = np.concatenate([x, x[src]])
    groups = np.concatenate([lab, lab[src]])
    pos = {int(r): i for i, r in enumerate(fit)}
    want = fit_coords[[pos[int(r)] for r in src]]
    spread = np.ptp(fit_coords, axis=0).max()
    for g in (groups, None):
        out = pj.extend_map(feats, fit, fit_coords, g, chunk=333)
        assert out.shape == (len(feats), 2) and out.dtype == np.float32 and np.isfinite(out).all()
        np.testing.assert_array_equal(out[fit], fit_coords)  # fitted rows keep their fit exactly
        # copies land among their original's neighbours on the map
        assert np.median(np.linalg.norm(out[2000:] - want, axis=1)) < 0.05 * spread
        # a sharp softmax puts them on the original itself
        sharp = pj.extend_map(feats, fit, fit_coords, g, temperature=1e-3)
        np.testing.assert_allclose(sharp[2000:], want, atol=1e-3 * spread)
    # within a group: each point is a convex combination of its group's fitted coordinates
    out = pj.extend_map(feats, fit, fit_coords, groups)
    for c in np.unique(lab):
        fc = fit_coords[lab[fit] == c]
        pts = out[groups == c]
        assert (pts >= fc.min(axis=0) - 1e-5).all() and (pts <= fc.max(axis=0) + 1e-5).all()


def test_neighbour_extension_matches_a_brute_force_reference() -> None:
    x, lab = mixture(n=600, d=8, k=5, seed=4)
    fit = pj.stratified_rows(lab, 80)
    fc = np.random.default_rng(5).normal(size=(len(fit), 2)).astype(np.float32)
    got = pj.extend_map(x, fit, fc, None, k=4, temperature=0.1, chunk=50)
    ref = np.empty((len(x), 2))
    for i in range(len(x)):
        s = x[fit].astype(np.float64) @ x[i]
        top = np.argsort(-s)[:4]
        w = np.exp((s[top] - s[top].max()) / 0.1)
        ref[i] = (w / w.sum()) @ fc[top]
    ref[fit] = fc
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_full_map_from_a_float16_memmap_is_cached_atomically(tmp_path) -> None:
    x, lab = mixture(n=2500)
    path = tmp_path / "feats.npy"
    np.save(path, x.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap) and mm.dtype == np.float16
    m = pj.full_map(tmp_path, "pca", mm, lab, fit_points=300)
    assert m.coords.shape == (2500, 2) and len(m.fit_rows) == 300
    np.testing.assert_allclose(m.coords[m.fit_rows], pj.pca_2d(x.astype(np.float16)[m.fit_rows]), atol=1e-3)
    npz, meta = layout.full_map_files(tmp_path, "pca", 0, pj.map_key(mm, lab, m.fit_rows))
    assert npz.is_file() and meta.is_file() and npz.parent == layout.projections_dir(tmp_path)
    assert not list(npz.parent.glob(".*.tmp"))
    hit = pj.cached_full_map(tmp_path, "pca", mm, lab, fit_points=300)
    assert hit is not None and np.array_equal(hit.coords, m.coords)
    # other clusters or other features: another key, not served
    assert pj.cached_full_map(tmp_path, "pca", mm, np.roll(lab, 1), fit_points=300) is None
    assert pj.cached_full_map(tmp_path, "pca", np.asarray(mm) * 2, lab, fit_points=300) is None


@pytest.mark.slow
def test_full_umap_map_extends_the_sample_fit(tmp_path) -> None:
    x, lab = mixture(n=1500, k=6)
    m = pj.full_map(tmp_path, "umap", x, lab, fit_points=300)
    assert m.coords.shape == (1500, 2) and np.isfinite(m.coords).all()
    np.testing.assert_allclose(m.coords[m.fit_rows], pj.umap_2d(x[m.fit_rows]), atol=1e-3)


def test_density_counts_sum_to_n_and_match_histogram2d() -> None:
    rng = np.random.default_rng(6)
    c = rng.normal(size=(10_000, 2)).astype(np.float32)
    ext = pj.map_extent(c)
    counts = pj.density_counts(c, ext, (40, 60))
    assert counts.shape == (40, 60) and counts.sum() == 10_000
    ref, _, _ = np.histogram2d(c[:, 1], c[:, 0], bins=(40, 60), range=[ext[2:], ext[:2]])
    assert np.abs(counts - ref).sum() <= 4  # edge rounding only
    # points outside a given extent are not counted
    assert pj.density_counts(c, (0.0, 10.0, 0.0, 10.0), (8, 8)).sum() == int(((c >= 0) & (c <= 10)).all(axis=1).sum())


def test_density_mean_and_majority_per_pixel() -> None:
    c = np.array([[0.1, 0.1], [0.2, 0.2], [0.15, 0.1], [0.9, 0.9], [0.9, 0.1]], dtype=np.float32)
    ext = (0.0, 1.0, 0.0, 1.0)
    mean = pj.density_mean(c, np.array([1.0, 2.0, np.nan, 5.0, np.nan]), ext, (2, 2))
    assert mean[0, 0] == pytest.approx(1.5) and mean[1, 1] == 5.0
    assert np.isnan(mean[0, 1]) and np.isnan(mean[1, 0])  # only NaN values / empty
    lab, share = pj.density_majority(c, np.array([7, 3, 7, 3, 3]), ext, (2, 2))
    assert lab[0, 0] == 7 and share[0, 0] == pytest.approx(2 / 3)
    assert lab[1, 1] == 3 and lab[0, 1] == 3 and lab[1, 0] == 2 and share[1, 0] == 0  # empty pixel
    tie, _ = pj.density_majority(c[:2], np.array([9, 4]), ext, (1, 1))
    assert tie[0, 0] == 4  # ties go to the smaller label
    # brute force on random data
    rng = np.random.default_rng(7)
    cc = rng.random((3000, 2))
    ll = rng.integers(-1, 5, 3000)
    lab, share = pj.density_majority(cc, ll, ext, (5, 5))
    pix = pj.pixel_of(cc, ext, (5, 5))
    for p in range(25):
        cnt = np.bincount(ll[pix == p] + 1, minlength=6)
        assert lab.ravel()[p] == int(np.argmax(cnt)) - 1 and share.ravel()[p] == pytest.approx(cnt.max() / cnt.sum())


def test_box_and_lasso_select_exactly_the_rows_inside() -> None:
    rng = np.random.default_rng(8)
    c = rng.normal(size=(20_000, 2)).astype(np.float32)
    box = pj.rows_in_box(c, (0.5, -0.3), (-1.0, 0.2))
    brute = [i for i, (x, y) in enumerate(c.tolist()) if -0.3 <= x <= 0.5 and -1.0 <= y <= 0.2]
    assert box.tolist() == brute and len(brute) > 100
    # lasso: a triangle; brute force by barycentric sign tests
    xs, ys = [-1.0, 1.5, 0.0], [-1.0, -0.5, 1.2]
    got = pj.rows_in_polygon(c, xs, ys)

    def side(px, py, ax, ay, bx, by):
        return (bx - ax) * (py - ay) - (by - ay) * (px - ax)

    s1 = side(c[:, 0], c[:, 1], xs[0], ys[0], xs[1], ys[1])
    s2 = side(c[:, 0], c[:, 1], xs[1], ys[1], xs[2], ys[2])
    s3 = side(c[:, 0], c[:, 1], xs[2], ys[2], xs[0], ys[0])
    ref = np.flatnonzero(((s1 > 0) & (s2 > 0) & (s3 > 0)) | ((s1 < 0) & (s2 < 0) & (s3 < 0)))
    assert got.tolist() == ref.tolist() and len(ref) > 100
    # a concave lasso (an L shape) and the union with a box, in Streamlit's event format
    lx, ly = [0, 2, 2, 1, 1, 0], [0, 0, 1, 1, 2, 2]
    sel = pj.rows_in_selection(c, boxes=[{"x": [-3, -2], "y": [-3, 3]}], lassos=[{"x": lx, "y": ly}])
    in_l = ((c[:, 0] > 0) & (c[:, 0] < 2) & (c[:, 1] > 0) & (c[:, 1] < 1)) | \
           ((c[:, 0] > 0) & (c[:, 0] < 1) & (c[:, 1] >= 1) & (c[:, 1] < 2))
    in_b = (c[:, 0] >= -3) & (c[:, 0] <= -2) & (c[:, 1] >= -3) & (c[:, 1] <= 3)
    assert sel.tolist() == np.flatnonzero(in_l | in_b).tolist()
    assert pj.rows_in_selection(c).size == 0 and pj.rows_in_polygon(c, [0, 1], [0, 1]).size == 0


def _plotly_array(v) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed-array form ``{"dtype", "bdata"}``."""
    if isinstance(v, dict):
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v, dtype=float)


@pytest.mark.app
@pytest.mark.parametrize("color_by", ["cluster", "purity", "concept"])
def test_clusters_page_large_run_path(app_env, monkeypatch, color_by) -> None:
    """The small run, with the large-run thresholds lowered: the page shows every image as a density
    image, a stratified sample of points carrying row ids, and states the choice and its limits."""
    from clustermine.store import Run

    monkeypatch.setattr(pj, "LARGE_MAP", 10)
    monkeypatch.setattr(pj, "FIT_POINTS", 12)
    monkeypatch.setattr(pj, "DRAW_POINTS", 12)
    run = Run.open(app_env)
    at = open_app(app_env.name, "pages/clusters.py")
    if color_by != "cluster":
        at.selectbox(key="map_color").set_value(color_by).run()
    no_exception(at)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["type"] for t in fig["data"]] == ["scattergl"]
    rows = [int(cd[0]) for cd in fig["data"][0]["customdata"]]
    cids = run.cluster_ids()
    assert len(rows) == 12 and len(set(rows)) == 12
    assert set(cids[rows]) == set(cids)  # stratified: every cluster (and the held-out images) drawn
    # the drawn points sit where the all-row map puts them
    m = pj.cached_full_map(app_env, "pca", run.feature_matrix(), cids, fit_points=12)
    assert m is not None and len(m) == len(cids)
    xy = np.c_[_plotly_array(fig["data"][0]["x"]), _plotly_array(fig["data"][0]["y"])]
    np.testing.assert_allclose(xy, m.coords[rows], atol=1e-5)
    images = fig["layout"]["images"]
    assert len(images) == 1 and images[0]["source"].startswith("data:image/png;base64,")
    page = texts(at)
    assert f"{len(cids):,} images" in page and "stratified sample of 12 images" in page
    assert "every" in page and "selects every image inside" in page
    if color_by == "purity":
        assert fig["data"][0]["marker"]["showscale"]


def test_point_table_reads_only_the_drawn_rows_and_matches_the_full_tables(small_run) -> None:
    from clustermine.store import Run
    from ui import rundata

    run = Run.open(small_run)
    rows = np.array([5, 0, 17, 3], dtype=np.int64)
    table = rundata.point_table(run, rows)
    everyone = rundata.image_names(run)
    assert table["names"] == [everyone[r] for r in rows]
    assert rundata.paths_for_rows(run, rows) == [run.image_paths()[r] for r in rows]
    assert np.array_equal(table["cluster"], run.cluster_ids()[rows])
    # records stored out of row order: the same answer through the row lookup
    run.write_images(run.image_records()[::-1])
    assert rundata.names_for_rows(run, rows) == [everyone[r] for r in rows]
    purity = rundata.cluster_purity(run)
    assert all(purity[s.cluster] == s.purity for s in run.cluster_stats())


@pytest.mark.app
def test_large_map_box_and_lasso_select_every_image_inside(app_env, monkeypatch) -> None:
    """A box (then a lasso) sent as the browser sends it selects every image inside — also those
    not drawn as dots — and "Mark selected as not ID" excludes exactly them."""
    from clustermine.store import Run

    monkeypatch.setattr(pj, "LARGE_MAP", 10)
    monkeypatch.setattr(pj, "FIT_POINTS", 12)
    monkeypatch.setattr(pj, "DRAW_POINTS", 12)
    at = open_app(app_env.name, "pages/clusters.py")
    no_exception(at)
    run = Run.open(app_env)
    coords = pj.cached_full_map(app_env, "pca", run.feature_matrix(), run.cluster_ids(), fit_points=12).coords
    x_mid = float(np.median(coords[:, 0]))
    box = {"xref": "x", "yref": "y", "x": [float(coords[:, 0].min()) - 1, x_mid],
           "y": [float(coords[:, 1].min()) - 1, float(coords[:, 1].max()) + 1]}
    inside = [i for i, (x, _) in enumerate(coords.tolist()) if x <= x_mid]
    drawn = set(pj.drawn_rows(pj.cached_full_map(app_env, "pca", run.feature_matrix(), run.cluster_ids(), fit_points=12),
                              run.cluster_ids()).tolist())
    assert set(inside) - drawn, "the box must hold images that are not drawn as dots"
    chart = at.get("plotly_chart")[0]
    original = at._tree.get_widget_states
    selection = {"points": [], "point_indices": [], "box": [box], "lasso": []}

    def with_selection():  # the chart as last drawn; the browser's new selection replaces the kept one
        ws = original()
        chart_id = at.get("plotly_chart")[0].proto.id
        kept = [x for x in ws.widgets if x.id != chart_id]
        del ws.widgets[:]
        ws.widgets.extend(kept)
        w = ws.widgets.add()
        w.id = chart_id
        w.string_value = json.dumps({"selection": selection})
        return ws

    at._tree.get_widget_states = with_selection
    at.run()
    no_exception(at)
    assert f"{len(inside):,} selected image(s)" in [s.value for s in at.subheader]
    at.button(key="map_exclude").click().run()
    no_exception(at)
    assert np.flatnonzero(Run.open(app_env).excluded_mask()).tolist() == inside
    # a lasso: the same half as a polygon, drawn on the map as it now is (a fresh page: the mark redrew
    # the whole page, so the map is a new chart)
    selection.update(box=[], lasso=[{"xref": "x", "yref": "y", "x": [box["x"][0], x_mid + 1e-6, x_mid + 1e-6, box["x"][0]],
                                     "y": [box["y"][0], box["y"][0], box["y"][1], box["y"][1]]}])
    at = open_app(app_env.name, "pages/clusters.py")
    no_exception(at)
    original = at._tree.get_widget_states
    at._tree.get_widget_states = with_selection
    at.run()
    no_exception(at)
    assert f"{len(inside):,} selected image(s)" in [s.value for s in at.subheader]
    assert any(f"{len(inside)} of the {len(inside)} selected image(s) are marked not ID" in i.value.replace("\\", "")
               for i in at.info)
