"""Runs: every run folder under the runs root, with its status and headline figures."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from clustermine.workflows import clusterview
from ui import cache, home, run_admin, settings, state, widgets
from ui.text import md_escape

state.ensure_frame()
widgets.page_header("Runs", "Each run is one folder (config, features, clusters, concepts, edits) — "
                    "reproducible and refresh-proof: its id sits in the page URL.")

runs = cache.list_runs_light(settings.runs_root())
top = st.columns([4, 1])
if top[1].button("New run", type="primary", icon=":material/add:", width="stretch"):
    state.set_run(None)
    st.switch_page("pages/data.py")
# The cost lines are drawn at once from cheap figures; refine_costs() (last on the page) redraws them
# with the corpus cache state and this machine's speed, which load the encoder on a first visit.
refine_costs = home.intro(runs)
ref = state.current()
if ref.error:
    widgets.show_error(ref.error)

if not runs:
    widgets.empty_state("No runs yet — create one on the Data page.",
                        link=("pages/data.py", "Go to Data & encoding", ":material/add_photo_alternate:"))
    refine_costs()
    st.stop()

statuses = [r["status"] for r in runs]
widgets.metrics_row([("runs", len(runs)), ("finished", statuses.count("done")),
                     ("running", statuses.count("running") + statuses.count("created")),
                     ("failed / cancelled", statuses.count("failed") + statuses.count("cancelled"))])


def _row(r: dict) -> dict:
    s = r.get("summary") or {}
    return {"run": r["run_id"], "label": r.get("label") or "", "status": r["status"],
            "images": s.get("n_images"), "clusters": clusterview.cluster_count(s)[0],
            "concepts": s.get("n_positive"), "mean purity": s.get("mean_purity"),
            "created": (r.get("created") or "")[:16].replace("T", " ")}


def _setup(r: dict) -> str:
    c = r.get("config") or {}
    return " · ".join(f"{k} {c[k]}" for k in ("encoder", "clusterer", "corpus") if c.get(k))


table = pd.DataFrame([_row(r) for r in runs])
# Explicit widths from the longest cell, so run ids, labels and dates are not cut ("baselin"). The
# 8 columns fit the ~820 px a 1280 px window leaves: the label gets what the others leave (at least
# 140 px; a longer label is shown whole in the selected run's box below). Encoder / clusterer / corpus
# of the selected run are shown there too.
TABLE_PX = 790  # 1280 px window - sidebar - page padding - the selection column
widths = {col: widgets.fit_width(table[col], col) for col in table.columns if col not in ("label", "mean purity")}
widths["mean purity"] = 100
widths["label"] = widgets.fit_width(table["label"], "label", max_px=max(140, TABLE_PX - sum(widths.values())))
fits = int((widths["label"] - 26) // 7.5)  # characters the label column shows; longer: an explicit "…"
table["label"] = [t if len(t) <= fits else t[: fits - 1].rstrip() + "…" for t in table["label"]]
config = {col: st.column_config.Column(width=w) for col, w in widths.items()}
config["mean purity"] = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f", width=100)
event = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                     key="runs_table", column_config=config)
picked = event.selection.rows if event is not None and hasattr(event, "selection") else []
if picked and picked != st.session_state.get("_runs_pick"):  # act on a new selection only
    st.session_state["_runs_pick"] = picked
    rid = table.iloc[picked[0]]["run"]
    if rid != st.session_state.get(state.RUN_KEY):
        state.set_run(rid)
        st.rerun()
st.caption("Select a row to open that run; the sidebar selector does the same.")

if ref.run_id and not ref.error:
    with st.container(border=True):
        picked_row = next((r for r in runs if r["run_id"] == ref.run_id), {})
        label, setup = picked_row.get("label") or "", _setup(picked_row) if picked_row else ""
        st.markdown(f"**Selected run:** `{ref.run_id}`" + (f" · {md_escape(label)}" if label else "")
                    + (f" · {md_escape(setup)}" if setup else ""))
        cols = st.columns(5)
        cols[0].page_link("pages/data.py", label="Data & progress", icon=":material/add_photo_alternate:")
        cols[1].page_link("pages/clusters.py", label="Cluster map", icon=":material/scatter_plot:")
        cols[2].page_link("pages/audit.py", label="Cluster audit", icon=":material/fact_check:")
        cols[3].page_link("pages/concepts.py", label="Concepts", icon=":material/checklist:")
        cols[4].page_link("pages/scoring.py", label="Scoring", icon=":material/speed:")
    run_admin.panel(ref.run_id, ref.path, next((r.get("label") or "" for r in runs if r["run_id"] == ref.run_id), ""))
refine_costs()
