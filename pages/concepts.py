"""Concepts: review the mined Y_pos (accept / reject / restore, add free-text concepts) and see the
effect of every edit on held-out ID scores — and on AUROC / FPR95 given an OOD sample."""

from __future__ import annotations

import streamlit as st

from clustermine.workflows import clusterview

from ui import concept_review, identity, state, whatif_panel, widgets

state.ensure_frame()
widgets.page_header("Concepts", "Mined concepts are positives (Y_pos); a rejected concept becomes a negative. "
                    "Every decision is logged with who and when.")
run = state.require_run(done=True)
concept_review.feedback()

counts = clusterview.concept_counts(run.concepts())
widgets.metrics_row([
    ("Y_pos now", counts["y_pos"], "mined (not rejected) + accepted + added"),
    ("mined", counts["mined"], "concepts the clusters elected (does not change as you review)"),
    ("to review", counts["to_review"], "mined concepts with no decision yet"),
    ("accepted", counts["accepted"]), ("rejected", counts["rejected"]),
    ("added", counts["added"]), ("edits", len(run.edits())),
])

st.subheader("Review", anchor=False)
if identity.self_declared():  # a verified identity (login, proxy) ignores the box and ?reviewer=
    state.restore_reviewer()
    st.text_input("Your name (recorded in the decision log)", key="reviewer", on_change=state.remember_reviewer,
                  placeholder=identity.local_default_name(), help="Kept in the page URL, so a refresh keeps it. "
                  "Self-declared: recorded as such (auth \"none\").")
# Full width: every column of the table stays visible at 1400 px (no horizontal scrolling).
df = concept_review.table(run)
concept_review.stability_panel(run)
st.caption("Change a status in the table, or use the buttons below. The table is rebuilt from the run's "
           "edit log after every change.")
left, right = st.columns([1, 1.2], gap="large")
with left:
    concept_review.quick_actions(run, df)
    concept_review.add_form(run)
with right:
    st.subheader("What if?", anchor=False)
    st.fragment(whatif_panel.panel)(run)
concept_review.edit_log(run)
