"""ClusterMine Studio — the Streamlit entry point (the frame around every page).

Run it with ``bash scripts/run_app.sh`` (or ``.venv/bin/python -m streamlit run app.py``). This
file builds the navigation, keeps the selected run in sync with the ``?run=`` query parameter and
draws the sidebar (run selector, run status, device and encoder). Heavy libraries (torch, umap,
the encoder) are never imported here: pages load them lazily through ``ui.cache``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from clustermine.workflows import clusterview
from ui import identity, settings, state, widgets
from ui.cache import list_runs_light, system_device, warm_imports
from ui.text import md_code, md_escape

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="ClusterMine Studio", page_icon=str(HERE / "assets" / "icon.svg"), layout="wide",
                   initial_sidebar_state="expanded")
widgets.inject_css()

PAGES = {
    "Project": [
        st.Page("pages/runs.py", title="Runs", icon=":material/folder_open:", default=True),
        st.Page("pages/data.py", title="Data & encoding", icon=":material/add_photo_alternate:", url_path="data"),
    ],
    "Explore": [
        st.Page("pages/clusters.py", title="Cluster map", icon=":material/scatter_plot:", url_path="clusters"),
        st.Page("pages/audit.py", title="Cluster audit", icon=":material/fact_check:", url_path="audit"),
        st.Page("pages/search.py", title="Find images", icon=":material/image_search:", url_path="search"),
        st.Page("pages/compare.py", title="Compare runs", icon=":material/compare_arrows:", url_path="compare"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/query_stats:", url_path="evaluate"),
    ],
    "Review & use": [
        st.Page("pages/concepts.py", title="Concepts", icon=":material/checklist:", url_path="concepts"),
        st.Page("pages/scoring.py", title="Scoring", icon=":material/speed:", url_path="scoring"),
        st.Page("pages/export.py", title="Export", icon=":material/download:", url_path="export"),
    ],
}


def _signin_pages(draw) -> list:
    """Before login every address draws only the sign-in page: "/signin" plus each page's own path, so a
    deep link (``/concepts?run=...``) lands on the sign-in page, not on "Page not found"."""
    pages = [st.Page(draw, title="Sign in", url_path="signin", default=True)]
    pages += [st.Page(draw, title=f"Sign in ({p.title})", url_path=p.url_path)
              for group in PAGES.values() for p in group if p.url_path]
    return pages


def _list_runs() -> list[dict]:
    return list_runs_light(settings.runs_root())


def _on_select() -> None:
    value = st.session_state.get(state.SELECT_KEY)
    state.set_run(None if value in (None, state.NEW_RUN) else value)


def sidebar(who: identity.IdentityConfig, actor) -> None:
    st.logo(str(HERE / "assets" / "logo.svg"), icon_image=str(HERE / "assets" / "icon.svg"), size="large")
    runs = _list_runs()
    by_id = {r["run_id"]: r for r in runs}
    current = st.session_state.get(state.RUN_KEY)
    options = [state.NEW_RUN] + [r["run_id"] for r in runs]
    if current and current not in by_id:
        options.append(current)
    want = current or state.NEW_RUN
    if st.session_state.get(state.SELECT_KEY) != want:
        st.session_state[state.SELECT_KEY] = want

    def label(rid: str) -> str:
        if rid == state.NEW_RUN:
            return "+ New run"
        return rid if rid in by_id else f"{rid} (not found)"

    with st.sidebar:
        st.selectbox("Run", options, format_func=label, key=state.SELECT_KEY, on_change=_on_select,
                     help=f"Runs under {settings.runs_root()} (set CLUSTERMINE_RUNS_ROOT to change).")
        r = by_id.get(current) if current else None
        if r:
            enc = r.get("config", {}).get("encoder", "offline")
            summary = r.get("summary") or {}
            c1, c2 = st.columns(2)
            with c1:
                widgets.sidebar_status(r["path"], r["status"])
            with c2:
                st.badge(f"device: {system_device()}", icon=":material/memory:", color="violet")
            st.caption(f"Encoder: **{md_escape(enc)}**")
            if summary:
                st.caption(f"{summary.get('n_images', 0):,} images · {clusterview.cluster_count_text(summary)} · "
                           f"{summary.get('n_positive', '–')} concepts mined")
            if r["status"] == "done":
                widgets.sidebar_log_state(r["path"])
        else:
            st.badge(f"device: {system_device()}", icon=":material/memory:", color="violet")
            st.caption("Encoder: **offline** (default, no network)")
        st.caption(f"{len(runs)} run(s) in {md_code(settings.runs_root())}")
        identity.sidebar(who, actor)


with state.frame():  # pages check it: see ui.state.ensure_frame for deep links into pages/
    mode, res = identity.gate()
    if res.actor is None:  # nothing of any run before login / for a refused request: no sidebar
        nav = st.navigation(_signin_pages(lambda: identity.blocked_page(mode, res)), position="hidden")
        nav.run()
        st.stop()
    state.sync_from_query()
    state.sync_sticky()
    nav = st.navigation(PAGES, position="sidebar", expanded=True)
    sidebar(mode, res.actor)
    try:
        nav.run()
    finally:  # after the first page is drawn: preload what the other pages need, in the background
        warm_imports()
