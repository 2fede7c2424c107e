"""Find images: the run's images nearest a typed concept (in the corpus or not), and the nearest
neighbours of one of its images, with the cluster each one sits in."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import streamlit as st

from clustermine.core.errors import ClusterMineError
from clustermine.workflows import search as search_engine
from clustermine.workflows.search import find_image_paths, row_of_path, search_image, search_text
from ui import cache, state, widgets
from ui.text import md_escape

state.ensure_frame()
widgets.page_header("Find images", "Type a concept — from the corpus or not — to see the images nearest to it, or "
                    "pick an image to see its nearest neighbours. Same encoder as the run; cosine similarity over "
                    "the stored features.")
run = state.require_run(done=True)


def _table(hits) -> pd.DataFrame:
    return pd.DataFrame([{"rank": h.rank, "image": h.name, "similarity": round(h.similarity, 4),
                          "cluster": "held out" if h.cluster < 0 else str(h.cluster),
                          "cluster concept": h.cluster_concept or "–", "not ID": h.excluded} for h in hits],
                        columns=["rank", "image", "similarity", "cluster", "cluster concept", "not ID"])


def _show(hits, key: str) -> None:
    if not hits:
        st.caption("no image")
        return
    where = Counter(h.place for h in hits)
    st.caption("Sits in: " + md_escape(", ".join(f"{k} ×{n}" for k, n in where.most_common()), None))
    widgets.thumbnail_grid([(h.abs_path, f"{h.rank}. {h.name} · {h.similarity:.3f}") for h in hits], columns=6)
    st.dataframe(_table(hits), hide_index=True, width="stretch", key=key)


k = int(st.slider("Images to show", min_value=6, max_value=48, value=12, step=6, key="search_k"))

with st.container(border=True):
    st.subheader("Text → images", anchor=False)
    text = st.text_input("Concept", key="search_text", placeholder="e.g. church, a red car, snow",
                         max_chars=200)
    if text.strip():
        with widgets.guard("searching"):
            try:
                hits = search_text(run, text, k, encoder=cache.LazyEncoder(cache.run_encoder_spec(run)))
            except ClusterMineError as exc:
                widgets.show_error(exc)
            else:
                _show(hits, "search_results")

with st.container(border=True):
    st.subheader("Image → images", anchor=False)
    limit = search_engine.PICKER_MAX
    query = ""
    if run.n_images() > limit:  # a large run: list the matches of a filter, not every image
        query = st.text_input("Filter the run's images by path", key="search_image_filter",
                              placeholder="part of a file or folder name, e.g. n01440764/ or 0042")
    paths, n_match = find_image_paths(run, query, limit)
    if n_match > len(paths):
        st.caption(f"{n_match:,} images match; the first {len(paths):,} are listed: type more of the path to narrow.")
    picked = st.selectbox("Image", paths, index=None, key="search_image", placeholder="pick an image of the run")
    if picked:
        with widgets.guard("searching"):
            row = row_of_path(run, picked)
            data = cache.thumb(run.image_path(row), 192)
            if data is not None:
                st.image(data, caption=md_escape(picked, 80), width=192)
            _show(search_image(run, row, k), "search_neighbours")
