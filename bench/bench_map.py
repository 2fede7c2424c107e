"""Cluster map at paper scale (issue 10, item 7): fit-on-a-sample + extend, density raster, first paint.

Synthetic ImageNet-shaped features: 1,281,167 x 384 float16 (a 1,000-component mixture, unit
norm), written in chunks to a memory-mapped .npy in a temp dir with a fixed seed, and cluster ids =
the mixture component with 2 % of rows held out (-1). Times, on the memmap:

* PCA: fit on the stratified sample, extend to all rows (``projection.full_map(..., "pca")``);
* UMAP: fit on the sample (umap-learn, numba JIT paid before timing) + extension to all rows;
* density raster of all rows (counts, majority cluster, mean purity) at the page's resolution;
* first paint: what the Cluster map page does from the cache — cache lookup (key), load all
  coordinates, rasters, the drawn sample's rows and coordinates.

Peak RSS is the process's (``ru_maxrss``). Writes the "map" block of "Paper scale" in BENCHMARKS.md.

    .venv/bin/python bench/bench_map.py [--n 1281167] [--dim 384] [--no-umap]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, machine_info, machine_line, peak_rss_mb, write_block  # noqa: E402  (sets env, sys.path)

from clustermine.workflows import projection as pj

SECTION = "## Paper scale"


def synthetic(folder: Path, n: int, dim: int, k: int = 1000, seed: int = 0, chunk: int = 65_536
              ) -> tuple[np.memmap, np.ndarray]:
    """(float16 memmap [n, dim] of a k-component unit-norm mixture, component id int64 [n] with 2 % = -1)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    comp = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 5.0)))
    path = folder / "features.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x = centres[comp[a:b]] + rng.normal(scale=0.6 / np.sqrt(dim), size=(b - a, dim)).astype(np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    ids = comp.astype(np.int64)
    ids[rng.random(n) < 0.02] = -1
    return np.load(path, mmap_mode="r"), ids


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def first_paint(run_dir: Path, method: str, feats, ids: np.ndarray, purity: np.ndarray) -> dict:
    """The page's data from cache: the map, extent, the three rasters, the drawn sample."""
    t = {}
    m, t["cache_lookup_load_s"] = timed(lambda: pj.cached_full_map(run_dir, method, feats, ids))
    assert m is not None, "map not cached"
    shape = (360, 540)
    t0 = time.perf_counter()
    ext = pj.map_extent(m.coords)
    pj.density_counts(m.coords, ext, shape)
    t["raster_counts_s"] = time.perf_counter() - t0
    _, t["raster_majority_s"] = timed(lambda: pj.density_majority(m.coords, ids, ext, shape))
    pv = np.where(ids >= 0, purity[np.maximum(ids, 0)], np.nan)
    _, t["raster_mean_s"] = timed(lambda: pj.density_mean(m.coords, pv, ext, shape))
    draw, t["draw_sample_s"] = timed(lambda: pj.drawn_rows(m, ids))

    def figure() -> int:  # what the page then builds and sends: RGBA image, PNG, plotly JSON
        from ui import charts

        labels, _ = pj.density_majority(m.coords, ids, ext, shape)
        counts = pj.density_counts(m.coords, ext, shape)
        rgba = charts.raster_rgba(counts, labels=np.where(counts > 0, labels, -1))
        names = [f"n{r:07d}/img_{r}.JPEG" for r in draw.tolist()]
        fig = charts.density_map(rgba, ext, m.coords[draw], draw, ids[draw], names, ["concept"] * len(draw),
                                 "cluster", point_colors=charts.category_colors(ids[draw]))
        return len(fig.to_json())

    t["figure_json_bytes"], t["figure_s"] = timed(figure)
    t["total_s"] = sum(v for k, v in t.items() if k.endswith("_s"))
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_281_167)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--no-umap", action="store_true")
    a = ap.parse_args()
    import plotly.graph_objects  # noqa: F401  (the app preloads plotly; its import is not first paint)
    res: dict = {"n": a.n, "dim": a.dim, "fit_points": pj.FIT_POINTS, "draw_points": pj.DRAW_POINTS}
    with tempfile.TemporaryDirectory(prefix="bench_map_") as tmp:
        tmp = Path(tmp)
        (feats, ids), res["make_features_s"] = timed(lambda: synthetic(tmp, a.n, a.dim))
        purity = np.random.default_rng(1).uniform(0.3, 1.0, ids.max() + 1)
        rss0 = peak_rss_mb()
        _, res["pca_full_map_s"] = timed(lambda: pj.full_map(tmp, "pca", feats, ids))
        res["pca_first_paint"] = first_paint(tmp, "pca", feats, ids, purity)
        res["peak_rss_after_pca_mb"] = peak_rss_mb()
        if not a.no_umap:
            pj.warm_up_umap(background=False)  # numba JIT: paid once per process, not part of the fit
            fit_rows = pj.stratified_rows(ids, pj.FIT_POINTS, 0)
            sample = np.asarray(feats[fit_rows], dtype=np.float32)
            fit, res["umap_fit_s"] = timed(lambda: pj.umap_2d(sample, seed=0))
            coords, res["umap_extend_s"] = timed(lambda: pj.extend_map(feats, fit_rows, fit, ids))
            pj.save_full_map(tmp, "umap", feats, ids, fit_rows, coords)  # what full_map caches
            res["umap_first_paint"] = first_paint(tmp, "umap", feats, ids, purity)
            res["peak_rss_after_umap_mb"] = peak_rss_mb()
            # the extension without cluster groups (exact kNN to the whole sample), timed on a slice
            m, step = 16_384, 2048
            cand = pj._unit(sample)
            t0 = time.perf_counter()
            for s in range(0, m, step):
                pj._weighted_neighbours(pj._unit(np.asarray(feats[s:s + step], dtype=np.float32)), cand, fit,
                                        pj.EXTEND_K, pj.EXTEND_TEMPERATURE)
            res["umap_extend_ungrouped_estimate_s"] = (time.perf_counter() - t0) * a.n / m
        res["peak_rss_mb"] = peak_rss_mb()
        res["peak_rss_before_maps_mb"] = rss0
    info = machine_info()
    res["machine"] = info
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "map_scale.json").write_text(json.dumps(res, indent=2))
    fp = res["pca_first_paint"]
    rows = [f"| PCA: fit on the sample + extend to all rows (`full_map`) | {res['pca_full_map_s']:.1f} s |",
            f"| first paint from cache (PCA): lookup + load coords {fp['cache_lookup_load_s']:.2f} s, rasters "
            f"{fp['raster_counts_s'] + fp['raster_majority_s'] + fp['raster_mean_s']:.2f} s, sample "
            f"{fp['draw_sample_s']:.2f} s, figure (image + {pj.DRAW_POINTS:,} points, "
            f"{fp['figure_json_bytes'] / 1e6:.1f} MB JSON) {fp['figure_s']:.2f} s | **{fp['total_s']:.1f} s** |"]
    if "umap_fit_s" in res:
        up = res["umap_first_paint"]
        rows += [f"| UMAP fit on the {pj.FIT_POINTS:,}-row stratified sample (JIT excluded) | {res['umap_fit_s']:.1f} s |",
                 f"| UMAP extension to all rows ({pj.EXTEND_K} nearest fitted rows of the same cluster) | {res['umap_extend_s']:.1f} s |",
                 f"| (extension against the whole sample instead, estimated from {16_384:,} rows) | "
                 f"{res['umap_extend_ungrouped_estimate_s']:.0f} s |",
                 f"| first paint from cache (UMAP) | **{up['total_s']:.1f} s** |"]
    text = (f"### Cluster map (item 7)\n\nCommand: `.venv/bin/python bench/bench_map.py --n {a.n} --dim {a.dim}"
            f"{' --no-umap' if a.no_umap else ''}` · {machine_line(info)}\n\n"
            f"Synthetic {a.n:,} x {a.dim} float16 memmap (1,000-component mixture, 2 % held out), "
            f"written in {res['make_features_s']:.0f} s.\n\n| step | time |\n|---|---|\n" + "\n".join(rows) +
            f"\n\nPeak RSS (ru_maxrss, which counts the memmap's file pages the process has touched): "
            f"{res['peak_rss_before_maps_mb']:,.0f} MB before the maps, {res['peak_rss_after_pca_mb']:,.0f} MB after "
            f"PCA" + (f", {res['peak_rss_after_umap_mb']:,.0f} MB after UMAP" if "umap_fit_s" in res else "") +
            f", {res['peak_rss_mb']:,.0f} MB at the end; features are read in row chunks, never copied whole. "
            f"First paint = what the page needs "
            f"from the cache: the all-row coordinates, the density rasters (360 x 540 px; counts, majority "
            f"cluster, mean purity), the {pj.DRAW_POINTS:,} drawn points and the plotly figure (colour by cluster; "
            f"the drawn images' names, read from the run, are not in this synthetic timing). Target < 10 s.")
    write_block(SECTION, "map", text)
    print(text)


if __name__ == "__main__":
    main()
