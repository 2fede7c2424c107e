"""Evaluate: the run's latest stored evaluation — ID images against one or more named OOD sets — as a
table (AUROC, FPR95, AUPR per set and their mean, 95 % intervals when measured, label-based baselines
marked), ROC curves per OOD set, and ID vs OOD score histograms with the threshold. A form evaluates
folders on this server. The engine does the work: ``clustermine.workflows.evaluation_store``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from clustermine.core.config import DEFAULT_TPR
from clustermine.workflows import evaluation_store as es
from clustermine.workflows.uploads import resolve_in_roots
from ui import cache, charts, identity, settings, state, widgets
from ui.text import md_code, md_escape

state.ensure_frame()
widgets.page_header("Evaluate", "How well this run's detector tells in-distribution (ID) images from OOD sets: "
                    "AUROC, FPR95 and AUPR per set, ROC curves and score distributions. Same as "
                    "`clustermine evaluate RUN --id DIR --ood NAME=DIR [--ood NAME=DIR ...]`.")
run = state.require_run(done=True)
CLI = f"clustermine evaluate {run.path} --id ID_FOLDER --ood NAME=OOD_FOLDER [--ood NAME=OOD_FOLDER ...]"


def _evaluate_form(expanded: bool) -> None:
    """ID folder + named OOD folders on this server → a new stored evaluation (engine: evaluate_folders)."""
    with st.expander("Evaluate folders on this server", expanded=expanded, icon=":material/play_circle:"):
        roots = settings.data_roots()
        st.caption("Folders inside the allowed data folders: "
                   + (", ".join(md_code(r) for r in roots) if roots else "none (set CLUSTERMINE_DATA_ROOTS)"))
        with st.form("eval_form", border=False):
            id_dir = st.text_input("ID images (folder)", key="eval_id", placeholder="e.g. imagenette_val100")
            ood_text = st.text_area("OOD sets, one per line: NAME=FOLDER", key="eval_ood", height=110,
                                    placeholder="textures=dtd10\ncifar=cifar10_test")
            go_ = st.form_submit_button("Evaluate", type="primary", icon=":material/play_arrow:")
        if not go_:
            return
        with st.spinner("Encoding the folders and scoring them…"), widgets.guard("evaluating the folders"):
            sets = es.parse_named_folders(ood_text)
            resolved = {name: resolve_in_roots(folder, roots) for name, folder in sets.items()}
            enc = cache.get_encoder(cache.run_encoder_spec(run))
            es.evaluate_folders(run, resolve_in_roots(id_dir, roots), resolved, enc, actor=identity.acting())
            st.rerun()


ev = None
with widgets.guard("reading the run's evaluation"):
    ev = es.latest_evaluation(run)
if ev is None:
    with st.container(border=True):
        st.markdown("**This run has no evaluation yet.** Evaluate it on a folder of ID images and one or more "
                    "named OOD folders, from a terminal:")
        st.code(CLI, language="bash")
        st.markdown("…or with the form below (folders on this server).")
    _evaluate_form(expanded=True)
    st.stop()

tpr = float(st.session_state.get(state.TPR_KEY, DEFAULT_TPR))
if ev.stale:
    st.warning("The run's concepts changed after this evaluation (a concept edit, a re-mine, another τ or "
               "encoder): these numbers describe the detector as it was. Evaluate again for current numbers.",
               icon=":material/update:")
res = ev.result
where = f" on {md_code(res['id'])}" if res.get("id") else ""
st.caption(f"Measured {md_escape(ev.measured[:16].replace('T', ' '))} UTC{where} · ID positive; FPR95 by the "
           "CLIP-OOD papers' rule (Hendrycks). Label-free rows score with the run's own concepts; "
           "label-based baselines need the true class names.")

st.subheader("Results", anchor=False)
table = es.table_rows(ev)
st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")

figs = es.figure_data(ev, tpr)
st.subheader("ROC curves", anchor=False)
st.caption("One curve per OOD set, from the label-free scores: each point is a threshold; the higher and further "
           "left, the better. The dotted line is chance.")
st.plotly_chart(charts.roc_curves([(f.name, f.fpr, f.tpr, f.auroc) for f in figs]), width="stretch",
                key="eval_roc")

st.subheader("ID vs OOD scores", anchor=False)
st.caption(f"Share of each set per log-score bin. The dashed line is the threshold that keeps at least {tpr:.0%} "
           "of the ID images (target TPR, set on the Scoring page); OOD images right of it pass as ID.")
cols = st.columns(2)
for i, f in enumerate(figs):
    with cols[i % 2]:
        st.markdown(f"**{md_escape(f.name)}** · ID kept {widgets.fmt_pct(f.id_kept)} · OOD passing as ID "
                    f"{widgets.fmt_pct(f.ood_passed)} · {f.n_id} ID / {f.n_ood} OOD images")
        st.plotly_chart(charts.id_ood_histogram(f.name, f.edges, f.id_share, f.ood_share, f.threshold,
                                                f.tpr_target), width="stretch", key=f"eval_hist_{i}")

_evaluate_form(expanded=False)
