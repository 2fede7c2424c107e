"""Cluster map: a 2-D map of the image features (PCA at once, UMAP on demand), coloured by
cluster, purity, winning concept or score; a lasso / box selection opens the selected images.

Above ``projection.LARGE_MAP`` images the map is fitted on a stratified sample and extended to
every image; every image is shown as a density image, a sample is drawn as points, and a box /
lasso selects every image inside it (:func:`large_map`)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from clustermine.workflows import clusterview, projection
from clustermine.store import layout
from ui import audit_cards, charts, identity, rundata, scores, settings, state, widgets
from ui.text import md_code

state.ensure_frame()
widgets.page_header("Cluster map", "Each point is one image. Lasso or box-select points to see them; "
                    "hover for the file, its cluster and the cluster's concept.")
run = state.require_run(done=True)
audit_cards.exclusion_feedback()
# float16 memmap [N, D] where the run offers it (large runs), else the in-memory float32 features
feats = run.feature_matrix()
n = feats.shape[0]

c1, c2, c3 = st.columns([1.2, 1.4, 2])
method = c1.segmented_control("Projection", ["pca", "umap"], format_func=str.upper, default="pca",
                              key="map_method", required=True) or "pca"
color_by = c2.selectbox("Colour by", ["cluster", "concept", "purity", "score"], key="map_color",
                        format_func={"cluster": "cluster", "concept": "winning concept", "purity": "cluster purity",
                                     "score": "OOD score (current concepts)"}.get)


def scores_or_offer() -> np.ndarray | None:
    """All images' OOD log scores when cached, else None after offering to compute them."""
    if scores.lse_ready(run, np.arange(n)):
        return scores.all_scores(run)
    st.info(f"Scoring all {n:,} images against the whole corpus takes a while the first time "
            "(then it is cached in the run).", icon=":material/speed:")
    if st.button("Compute scores", icon=":material/play_arrow:"):
        bar = st.progress(0.0, text="scoring images…")
        with widgets.guard("scoring the images"):
            scores.all_scores(run, progress=lambda d, t: bar.progress(d / max(t, 1), text=f"{d:,} / {t:,} images"))
            st.rerun()
    return None


def glance() -> None:
    """The per-cluster table and where the maps are cached."""
    with st.expander("Clusters at a glance"):
        winners = rundata.winner_texts(run)
        stats = run.cluster_stats()
        st.dataframe([{"cluster": s.cluster, "size": s.size, "concept": winners.get(s.cluster, "–"),
                       "purity": round(s.purity, 3), "entropy": round(s.entropy, 3)}
                      for s in clusterview.occupied_stats(stats)], hide_index=True, width="stretch")
        if len(stats) > len(clusterview.occupied_stats(stats)):
            st.caption(clusterview.cluster_count_text(run.meta.get("summary") or {}) + ": empty clusters are not listed.")
    st.caption(f"Projection cached in {md_code(layout.projections_dir(run.path))}.")


def _selected(event) -> tuple[list[int], bool]:
    """(rows picked in the chart, whether they came from a drawn box / lasso) of a selection event."""
    sel = event.selection if event is not None and hasattr(event, "selection") else {}
    boxes, lassos = list(sel.get("box") or []), list(sel.get("lasso") or [])
    points = sel.get("points") or []
    return [int(p["customdata"][0]) for p in points if p.get("customdata") is not None], bool(boxes or lassos)


def show_selection(picked: list[int], total: int | None = None) -> None:
    """Thumbnails (first 60) of the selected feature rows, how many of them are marked not ID, and
    the exclude / restore buttons (each acts on the rows it can change, then redraws the page so
    the map, the counts and the message agree at once)."""
    st.subheader(f"{total or len(picked):,} selected image(s)", anchor=False)
    rows = np.asarray(picked, dtype=np.int64)
    cids = run.cluster_ids()[rows]
    excluded = run.excluded_mask()[rows]
    vals, counts = np.unique(cids, return_counts=True)
    top = np.argsort(-counts, kind="stable")[:12]
    st.caption("by cluster: " + ", ".join(f"{'held out' if vals[i] < 0 else vals[i]}: {counts[i]:,}" for i in top)
               + (f" … ({len(vals) - 12} more clusters)" if len(vals) > 12 else ""))
    n_excluded = int(excluded.sum())
    if n_excluded:
        st.info(f"{n_excluded:,} of the {len(picked):,} selected image(s) are marked not ID (grey crosses on the "
                "map). Re-mine on the Cluster audit page to mine without them.", icon=":material/block:")
    limit = 60
    shown = rows[:limit]
    names = rundata.names_for_rows(run, shown)
    paths = rundata.paths_for_rows(run, shown)
    widgets.thumbnail_grid([(p, f"{nm} · {'not ID' if x else f'c{c}'}")
                            for p, nm, c, x in zip(paths, names, cids[:limit], excluded[:limit])], columns=8)
    if len(picked) > limit:
        st.caption(f"… and {len(picked) - limit:,} more (narrow the selection to see them).")
    to_mark, to_restore = rows[~excluded].tolist(), rows[excluded].tolist()
    c1, c2 = st.columns(2)
    blocked = identity.role_block("exclude")
    if c1.button(f"Mark {len(to_mark):,} selected as not ID", key="map_exclude", icon=":material/block:",
                 disabled=not to_mark or bool(blocked),
                 help=blocked or "Logged with your name; re-mine on the Cluster audit page to mine without them."):
        audit_cards.exclude_images(str(run.path), to_mark)
        st.rerun()  # the whole page: the map draws the crosses, the message shows once
    if c2.button(f"Restore {len(to_restore):,} selected", key="map_restore", icon=":material/undo:",
                 disabled=not to_restore or bool(blocked), help=blocked):
        audit_cards.exclude_images(str(run.path), to_restore, True)
        st.rerun()


def large_map(method: str, color_by: str) -> None:
    """The map of a run above ``projection.LARGE_MAP`` images: fitted on a stratified sample,
    extended to all images, all of them as a density image, a sample as points."""
    groups = run.cluster_ids()
    fmap = projection.cached_full_map(run.path, method, feats, groups)
    if fmap is None and method == "pca":
        with st.spinner(f"Projecting all {n:,} images (PCA fitted on {min(n, projection.FIT_POINTS):,})…"):
            fmap = projection.full_map(run.path, "pca", feats, groups)
    if fmap is None:
        if settings.umap_warmup_enabled():
            projection.warm_up_umap()
        st.info(f"UMAP is computed on demand and cached in the run: fitted on a stratified sample of "
                f"{projection.FIT_POINTS:,} images, then extended to all {n:,}. "
                + widgets.umap_readiness(projection.umap_state()["status"]), icon=":material/hourglass_top:")
        if st.button("Compute UMAP", type="primary", icon=":material/play_arrow:"):
            bar = st.progress(0.0, text="fitting UMAP on the sample…")
            with widgets.guard("computing UMAP"):
                projection.full_map(run.path, "umap", feats, groups, progress=lambda d, t: bar.progress(
                    d / max(t, 1), text=f"placing images: {d:,} / {t:,}"))
                st.rerun()
        st.caption("Showing PCA meanwhile.")
        method = "pca"
        fmap = projection.full_map(run.path, "pca", feats, groups)
    coords = fmap.coords
    draw = projection.drawn_rows(fmap, groups)
    info = rundata.point_table(run, draw)
    shape = (360, 540)
    extent = projection.map_extent(coords)
    counts = projection.density_counts(coords, extent, shape)
    point_colors, values, vrange, labels, means = None, None, (0.0, 1.0), None, None
    winners = run.cluster_stats()
    all_scores = scores_or_offer() if color_by == "score" else None
    if color_by == "score" and all_scores is None:
        color_by = "cluster"
    if color_by in ("purity", "score"):
        if color_by == "purity":
            per_row = np.append(rundata.cluster_purity(run), np.nan)[np.where(groups >= 0, groups, -1)]
        else:
            per_row = np.asarray(all_scores, dtype=float)
        finite = per_row[np.isfinite(per_row)]
        vrange = (float(np.quantile(finite, 0.01)), float(np.quantile(finite, 0.99))) if len(finite) else (0.0, 1.0)
        means = projection.density_mean(coords, per_row, extent, shape)
        values = per_row[draw]
    else:
        if color_by == "cluster":
            per_row = groups
        else:  # concept: one colour per winning concept (index in the corpus), held out grey
            win = np.full(int(groups.max(initial=-1)) + 2, -1, dtype=np.int64)
            for s in winners:
                win[s.cluster] = -1 if s.winner is None else s.winner
            per_row = win[groups]  # index -1 (held out) reads the last entry, -1
        labels, _ = projection.density_majority(coords, per_row, extent, shape)
        labels = np.where(counts > 0, labels, -1)
        point_colors = charts.category_colors(per_row[draw])
    rgba = charts.raster_rgba(counts, labels=labels, values=means, vrange=vrange)
    what = {"cluster": "the most frequent cluster", "concept": "the most frequent winning concept",
            "purity": "the mean cluster purity", "score": "the mean OOD score"}[color_by]
    st.caption(f"**{n:,} images.** Map fitted on a stratified sample of {len(fmap.fit_rows):,} images (every "
               f"cluster present) and extended to all images — "
               + ("PCA: the same linear projection. " if method == "pca" else
                  f"UMAP: each other image placed at the similarity-weighted mean of its {projection.EXTEND_K} most "
                  "similar fitted images of its own cluster, so distances inside a cluster are approximate. ")
               + f"The shaded image shows **every** image ({shape[1]} x {shape[0]} pixels; colour = {what} in the "
               f"pixel, opacity = how many); the dots are a stratified sample of {len(draw):,} images for hover. "
               "Box or lasso selects every image inside the drawn area, not only the dots.")

    @st.fragment
    def chart() -> None:
        fig = charts.density_map(rgba, extent, coords[draw], draw, info["cluster"], info["names"], info["concept"],
                                 color_by, point_colors=point_colors, values=values, vrange=vrange,
                                 excluded_coords=coords[run.excluded_mask()])
        event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"),
                                key=f"bigmap-{method}-{color_by}", config={"displaylogo": False})
        picked, drawn = _selected(event)
        if drawn:
            sel = event.selection
            picked = projection.rows_in_selection(coords, sel.get("box"), sel.get("lasso")).tolist()
        if not picked:
            st.caption("Tip: choose Lasso or Box select in the chart's toolbar, then draw around an area.")
            return
        show_selection(list(dict.fromkeys(picked)))

    chart()


def small_map(method: str, color_by: str) -> None:
    """The map of a run up to ``projection.LARGE_MAP`` images (all drawn as points above
    ``projection.MAX_POINTS``: a random sample)."""
    hit = projection.cached_projection(run.path, method, feats)
    if hit is None and method == "pca":
        hit = projection.projection(run.path, "pca", feats)
    if hit is None:  # UMAP not computed yet for this run
        if settings.umap_warmup_enabled():
            projection.warm_up_umap()  # compiles numba in the background while the user reads this
        st.info(f"UMAP is computed on demand and cached in the run ({n:,} points). "
                + widgets.umap_readiness(projection.umap_state()["status"]), icon=":material/hourglass_top:")
        if st.button("Compute UMAP", type="primary", icon=":material/play_arrow:"):
            with st.spinner("Computing UMAP…"), widgets.guard("computing UMAP"):
                projection.projection(run.path, "umap", feats)
                st.rerun()
        st.caption("Showing PCA meanwhile.")
        hit = projection.projection(run.path, "pca", feats)
    rows, coords = hit
    info = rundata.point_table(run, rows)

    values = None
    if color_by == "purity":
        values = info["purity"]
    elif color_by == "score":
        all_scores = scores_or_offer()
        if all_scores is not None:
            values = all_scores[rows]
        else:
            color_by = "cluster"

    if len(rows) < n:
        c3.caption(f"Showing a random sample of {len(rows):,} of {n:,} images (WebGL).")
    else:
        n_excl = int(info["excluded"].sum())
        c3.caption(f"{n:,} images · {int(((info['cluster'] < 0) & ~info['excluded']).sum())} held out of mining "
                   "(grey rings when coloured by cluster)" + (f" · {n_excl} marked not ID (grey crosses)" if n_excl else ""))

    @st.fragment
    def map_and_selection() -> None:
        fig = charts.cluster_map(coords, rows, info["cluster"], info["names"], info["concept"], color_by, values,
                                 excluded=info["excluded"])
        event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"),
                                key=f"map-{method}-{color_by}", config={"displaylogo": False})
        points = event.selection.points if event is not None and hasattr(event, "selection") else []
        picked = [int(p["customdata"][0]) for p in points if p.get("customdata") is not None]
        if not picked:
            st.caption("Tip: choose Lasso or Box select in the chart's toolbar, then draw around points.")
            return
        show_selection(list(dict.fromkeys(picked)))  # unique, in selection order

    map_and_selection()


if n > projection.LARGE_MAP:
    large_map(method, color_by)
else:
    small_map(method, color_by)
glance()
