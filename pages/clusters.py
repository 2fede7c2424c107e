"""Cluster map: a 2-D map of the image features (PCA at once, UMAP on demand), coloured by
cluster, purity, winning concept or score; a lasso / box selection opens the selected images."""

from __future__ import annotations

import numpy as np
import streamlit as st

from clustermine import projection
from clustermine.rundir import layout
from ui import audit_cards, charts, rundata, scores, settings, state, widgets
from ui.text import md_code

state.ensure_frame()
widgets.page_header("Cluster map", "Each point is one image. Lasso or box-select points to see them; "
                    "hover for the file, its cluster and the cluster's concept.")
run = state.require_run(done=True)
audit_cards.exclusion_feedback()
feats = run.features()
n = feats.shape[0]

c1, c2, c3 = st.columns([1.2, 1.4, 2])
method = c1.segmented_control("Projection", ["pca", "umap"], format_func=str.upper, default="pca",
                              key="map_method", required=True) or "pca"
color_by = c2.selectbox("Colour by", ["cluster", "concept", "purity", "score"], key="map_color",
                        format_func={"cluster": "cluster", "concept": "winning concept", "purity": "cluster purity",
                                     "score": "OOD score (current concepts)"}.get)

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
    if scores.lse_ready(run, np.arange(n)):
        values = scores.all_scores(run)[rows]
    else:
        st.info(f"Scoring all {n:,} images against the whole corpus takes a while the first time "
                "(then it is cached in the run).", icon=":material/speed:")
        if st.button("Compute scores", icon=":material/play_arrow:"):
            bar = st.progress(0.0, text="scoring images…")
            with widgets.guard("scoring the images"):
                scores.all_scores(run, progress=lambda d, t: bar.progress(d / max(t, 1), text=f"{d:,} / {t:,} images"))
                st.rerun()
        color_by = "cluster"

if len(rows) < n:
    c3.caption(f"Showing a random sample of {len(rows):,} of {n:,} images (WebGL).")
else:
    c3.caption(f"{n:,} images · {int((info['cluster'] < 0).sum())} held out of mining (grey when coloured by cluster)")


@st.fragment
def map_and_selection() -> None:
    fig = charts.cluster_map(coords, rows, info["cluster"], info["names"], info["concept"], color_by, values)
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"),
                            key=f"map-{method}-{color_by}", config={"displaylogo": False})
    points = event.selection.points if event is not None and hasattr(event, "selection") else []
    picked = [int(p["customdata"][0]) for p in points if p.get("customdata") is not None]
    if not picked:
        st.caption("Tip: choose Lasso or Box select in the chart's toolbar, then draw around points.")
        return
    picked = list(dict.fromkeys(picked))  # unique, in selection order
    st.subheader(f"{len(picked)} selected image(s)", anchor=False)
    cids = run.cluster_ids()[picked]
    counts = {int(c): int((cids == c).sum()) for c in np.unique(cids)}
    st.caption("by cluster: " + ", ".join(f"{'held out' if c < 0 else c}: {k}" for c, k in counts.items()))
    paths = run.image_paths()
    names = rundata.image_names(run)
    limit = 60
    widgets.thumbnail_grid([(paths[r], f"{names[r]} · c{run.cluster_ids()[r]}") for r in picked[:limit]], columns=8)
    if len(picked) > limit:
        st.caption(f"… and {len(picked) - limit} more (narrow the selection to see them).")
    c1, c2 = st.columns(2)
    c1.button(f"Mark {len(picked)} selected as not ID", key="map_exclude", icon=":material/block:",
              on_click=audit_cards.exclude_images, args=(str(run.path), picked),
              help="Logged with your name; re-mine on the Cluster audit page to mine without them.")
    c2.button("Restore selected", key="map_restore", icon=":material/undo:",
              on_click=audit_cards.exclude_images, args=(str(run.path), picked, True))


map_and_selection()

with st.expander("Clusters at a glance"):
    winners = rundata.winner_texts(run)
    st.dataframe([{"cluster": s.cluster, "size": s.size, "concept": winners.get(s.cluster, "–"),
                   "purity": round(s.purity, 3), "entropy": round(s.entropy, 3)} for s in run.cluster_stats()],
                 hide_index=True, width="stretch")
st.caption(f"Projection cached in {md_code(layout.projections_dir(run.path))}.")
