"""The Runs page's panel for the selected run: give it a label, delete it (with confirmation;
the engine refuses while its job runs)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from clustermine.core.errors import ClusterMineError
from clustermine.workflows.run_admin import MAX_LABEL_CHARS, delete_run, set_label

from . import identity, state, widgets
from .text import md_escape

_CONFIRM_KEY = "_runs_delete_confirm_for"


def panel(run_id: str, path: Path, label: str) -> None:
    """Label and delete controls for the run ``run_id`` in folder ``path`` (current label ``label``)."""
    with st.container(border=True):
        st.markdown("**Manage this run**")
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        new_label = c1.text_input("Label", value=label, max_chars=MAX_LABEL_CHARS, key="runs_label",
                                  placeholder="e.g. baseline, k-means C=100", help="Shown in the runs table; "
                                  "stored in the run's run.json.")
        no_label, no_delete = identity.role_block("label"), identity.role_block("delete")
        if c2.button("Save label", key="runs_label_save", width="stretch", disabled=bool(no_label), help=no_label):
            try:
                set_label(path, new_label, actor=identity.acting())
            except ClusterMineError as exc:
                widgets.show_error(exc)
            else:
                st.toast("Label saved")
                st.rerun()
        if st.session_state.get(_CONFIRM_KEY) != run_id:
            if st.button("Delete run…", key="runs_delete", icon=":material/delete:", disabled=bool(no_delete),
                         help=no_delete):
                st.session_state[_CONFIRM_KEY] = run_id
                st.rerun()
            return
        st.warning(f"Delete run **{md_escape(run_id)}** and all its files (features, concepts, edits)? "
                   "This cannot be undone.", icon=":material/warning:")
        d1, d2, _ = st.columns([1, 1, 3])
        if d1.button("Delete for good", key="runs_delete_confirm", type="primary", icon=":material/delete_forever:"):
            st.session_state.pop(_CONFIRM_KEY, None)
            try:
                delete_run(path, actor=identity.acting())
            except ClusterMineError as exc:
                widgets.show_error(exc)
                return
            state.set_run(None)
            st.toast(f"Deleted run {run_id}")
            st.rerun()
        if d2.button("Cancel", key="runs_delete_cancel"):
            st.session_state.pop(_CONFIRM_KEY, None)
            st.rerun()
