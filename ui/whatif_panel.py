"""What-if panel: the effect of the concept edits on held-out ID images (false alarms at the
mined detector's threshold) and, given an OOD sample, on AUROC / FPR95."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from clustermine.workflows import ood_eval
from clustermine.core.errors import ClusterMineError
from clustermine.store import Run
from clustermine.workflows.uploads import resolve_in_roots
from clustermine.workflows.whatif import SAMPLE_LIMIT

from . import cache, charts, scores, settings, skips, state, widgets
from .text import md_code, md_escape

OOD_KEY = "whatif_ood"  # session: {"run": run_id, "folder": str}
TPR_KEY = state.TPR_KEY


def heldout_panel(run: Run) -> None:
    tpr = float(st.session_state.get(TPR_KEY, 0.95))
    with st.spinner("Scoring the ID images (first time per run: the whole corpus is scanned)…"):
        wi = scores.what_if(run, tpr)
    delta = wi.cal_far_after - wi.cal_far_before
    far_help = (f"calibration ID images ({wi.n_cal}: cross-fitted mining + held-out) below the threshold that "
                "the rule sets without their fold, i.e. never judged by a threshold they helped set")
    widgets.metrics_row([
        ("concepts (Y_pos)", wi.n_pos_after, f"{wi.n_pos_before} as mined"),
        ("ID false alarms, mined", widgets.fmt_pct(wi.cal_far_before), far_help + "; mined concepts"),
        ("ID false alarms, now", widgets.fmt_pct(wi.cal_far_after),
         "same images and thresholds (mined concepts), current concepts"),
        ("median score shift", widgets.fmt_float(float(np.median(wi.after - wi.before))
                                                 if np.isfinite(wi.after).all() else None, 3),
         "held-out ID images, log-score units"),
    ], per_row=2)
    if wi.cal_warning:
        st.warning(wi.cal_warning, icon=":material/warning:")
    if delta > 0:
        st.warning(f"The edits raise false alarms on ID images by {100 * delta:.1f} points at this threshold; "
                   "re-calibrate (Scoring page) or revisit the last rejections.", icon=":material/trending_up:")
    if wi.n_pos_after == 0:
        st.error("No positive concept is left: accept or add at least one, or nothing scores as ID.")
    st.plotly_chart(charts.score_histograms(wi.before, wi.after, wi.cal_threshold), width="stretch",
                    key="whatif_hist", config={"displayModeBar": False})
    st.caption(f"Held-out ID images. Threshold with the mined concepts = {widgets.fmt_float(wi.cal_threshold)} "
               f"({wi.cal_rule}). Higher score = more in-distribution.")


def _ood_folder_input(run: Run) -> Path | None:
    mode = st.radio("OOD sample", ["folder", "upload"], horizontal=True, key="ood_mode",
                    format_func={"folder": "a folder on this server", "upload": "upload images"}.get)
    if mode == "folder":
        roots = settings.data_roots()
        path = st.text_input("Folder of OOD images (inside the allowed data folders)", key="ood_path",
                             placeholder="e.g. dtd10 or an absolute path under " + (str(roots[0]) if roots else "…"))
        if st.button("Use this folder", key="ood_use_folder") and path.strip():
            try:
                return resolve_in_roots(path, roots)
            except ClusterMineError as exc:
                widgets.show_error(exc)
        return None
    files = st.file_uploader("OOD images", accept_multiple_files=True, key="ood_files")
    if files and st.button("Use these images", key="ood_use_upload"):
        saved = ood_eval.save_uploaded_sample(run, files)
        if saved.skipped:
            st.caption(f"{len(saved.skipped)} file(s) skipped")
        return ood_eval.uploaded_sample(run) if saved.n_saved else None
    return None


def ood_panel(run: Run) -> None:
    st.markdown("Point to a sample of **OOD** images (what the detector should reject) to see AUROC and "
                f"FPR95 with the mined concepts and with the current ones. A folder of more than {SAMPLE_LIMIT} "
                f"images is sampled: {SAMPLE_LIMIT} images drawn at random with a fixed seed, stratified over its "
                "subfolders (every subfolder represented, in proportion to its size).")
    chosen = _ood_folder_input(run)
    if chosen is not None:
        state.remember_ood_sample(run.run_id, str(chosen))  # session and URL: a refresh keeps it
    sample = st.session_state.get(OOD_KEY)
    if not sample or sample.get("run") != run.run_id:
        return
    folder = sample["folder"]
    bar = st.progress(0.0, text="encoding the OOD sample…")
    with widgets.guard("scoring the OOD sample"):
        enc = cache.get_encoder(cache.run_encoder_spec(run))
        try:  # the engine records it as the run's latest OOD evaluation: the report shows it
            with st.spinner("Encoding and scoring the OOD sample against the corpus…"):
                cmp = ood_eval.evaluate_sample(
                    run, folder, enc, held=scores.heldout(run), scorer=lambda f: scores.sample_scorer(run, f),
                    progress=lambda d, t: bar.progress(d / max(t, 1), text=f"encoding the OOD sample… {d} / {t}"))
        except ClusterMineError as exc:
            bar.empty()
            st.warning(str(exc))
            return
        bar.empty()
        st.caption(f"OOD sample: {cmp['n_ood']} image(s) from {md_code(folder)}; "
                   + md_escape(cmp["sampling"], None) + ". Included in the report (Export page).")
        skips.show_skipped([tuple(x) for x in cmp["skipped_files"]], "Skipped OOD images")
        b, a = cmp.get("before"), cmp.get("after")
        if a is None or b is None:
            st.error("Scores are undefined without positive concepts.")
            return
        widgets.metrics_row([
            ("AUROC, mined", widgets.fmt_float(b["auroc"])),
            ("AUROC, now", widgets.fmt_float(a["auroc"]), None),
            ("FPR95, mined", widgets.fmt_pct(b["fpr95"])),
            ("FPR95, now", widgets.fmt_pct(a["fpr95"]), "lower is better"),
        ], per_row=2)
        st.caption(f"ID = {a['n_id']} held-out images, OOD = {a['n_ood']} images. AUROC: higher is better.")


def panel(run: Run) -> None:
    """The whole what-if panel (in a fragment: its widgets do not rerun the page)."""
    with widgets.guard("the what-if analysis"):
        heldout_panel(run)
    with st.expander("Effect on OOD detection (give an OOD sample)", expanded=bool(st.session_state.get(OOD_KEY))):
        ood_panel(run)
