"""Data & encoding: bring ID images (upload, zip, server folder), choose the options, launch the
mining job in a worker process and follow it (progress, ETA, cancel, resume, skipped files)."""

from __future__ import annotations

import streamlit as st

from ui import cache, cluster_panel, job_panel, new_run, state, widgets

state.ensure_frame()
widgets.page_header("Data & encoding", "Your in-distribution images, the encoder and the mining options. "
                    "The job runs in the background: you can switch pages and come back.")

ref = state.current()
if ref.run_id is None:
    cluster_panel.cluster_box()
    new_run.new_run_section()
elif ref.error:
    widgets.show_error(ref.error)
    if st.button("Start a new run instead", icon=":material/add:"):
        state.set_run(None)
        st.rerun()
else:
    with widgets.guard("showing the run"):
        job_panel.run_panel(cache.load_run(ref.path))
