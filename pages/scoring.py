"""Scoring: score test images with the run's current concepts — score, ID/OOD verdict at the
calibrated threshold, top positive and negative concepts — and download the results as CSV."""

from __future__ import annotations

import streamlit as st

from clustermine.core.config import DEFAULT_TPR

from ui import score_review, scoring_view, state, widgets
from ui.text import md_escape

state.ensure_frame()
widgets.page_header("Scoring", "Scores always reflect the current concept edits. Convention: higher score = "
                    "more in-distribution; an image is ID when its log score reaches the threshold.")
run = state.require_run(done=True)

c1, c2 = st.columns([1, 1], vertical_alignment="bottom")
tpr, thr, rule, cal = float(st.session_state.get(state.TPR_KEY, DEFAULT_TPR)), None, "", None
with widgets.guard("calibrating the threshold"), st.spinner("Calibrating the threshold (first time per run: "
                                                             "every image is scored against the corpus)…"):
    tpr, thr, rule, cal = scoring_view.threshold_controls(run, c1, c2)
    st.markdown(f"**Threshold** {widgets.fmt_float(thr)} — {md_escape(rule)}")
    scoring_view.calibration_notes(run, tpr, thr, cal)
scoring_view.input_section(run)
score_review.show_upload_errors(run)

with widgets.guard("scoring"):
    bar = st.empty()
    df, skipped = None, []
    with st.spinner("Scoring…"):
        df, _, _, skipped = scoring_view.results(
            run, tpr, progress=lambda d, t: bar.progress(d / t, text=f"encoding {d} / {t}") if t else None,
            threshold=thr)
    bar.empty()
    if df is None or df.empty:
        widgets.empty_state("No test image yet — upload some above, or add a server folder.")
    else:
        n_id = int((df["verdict"] == "ID").sum())
        widgets.metrics_row([("images scored", len(df)), ("ID", n_id), ("OOD", len(df) - n_id),
                             ("concepts (Y_pos)", len(run.positive_concepts()))])
        shown = score_review.order_results(df, *score_review.gallery_controls())
        score_review.gallery(shown)
        scoring_view.show_table(shown)
        d1, d2 = st.columns([1, 1])
        d1.download_button("Download results (CSV)", scoring_view.csv_bytes(df, thr, rule),
                           file_name=f"{run.run_id}-scores.csv", mime="text/csv", icon=":material/download:")
        if d2.button("Clear scored images", icon=":material/delete:"):
            scoring_view.clear(run)
            st.rerun()
    score_review.skipped_section(run, skipped, df)
