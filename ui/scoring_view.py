"""Scoring page helpers: the images to score (kept in ``<run>/scoring/`` so they survive page
switches and refreshes), their scores under the current concepts, and the results table."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
import streamlit as st

from clustermine.workflows import scoring_uploads, whatif
from clustermine.method.calibration import DEFAULT_CONFIDENCE
from clustermine.core.errors import ClusterMineError
from clustermine.store import Run

from . import cache, score_review, scores, settings, state, widgets
from .text import clean_zero, fmt_num


def add_uploads(run: Run, files) -> int:
    """Keep the uploaded files in the run (``scoring_uploads.add_uploads``); the refused ones are shown
    by the page until dismissed. Returns how many were saved."""
    rep = scoring_uploads.add_uploads(run, files)
    score_review.remember_upload_errors(run, rep.skipped)
    return rep.n_saved


def add_folder(run: Run, typed: str) -> None:
    scoring_uploads.add_folder(run, typed, roots=settings.data_roots())


def clear(run: Run) -> None:
    scoring_uploads.clear(run)


def _data_uri(path: str) -> str | None:
    data = cache.thumb(path, 96)
    return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _fmt_concepts(pairs) -> str:
    return ", ".join(f"{c} ({fmt_num(s, 2)})" for c, s in pairs)


TPR_KEY = state.TPR_KEY
THRESHOLD_KEY = "score_threshold"  # the threshold slider, in log-score units
MANUAL_KEY = "score_threshold_manual"  # run id whose threshold was set by hand with the slider


def _tpr_moved() -> None:
    st.session_state.pop(MANUAL_KEY, None)  # the TPR rule sets the threshold again


def _threshold_moved(run_id: str) -> None:
    st.session_state[MANUAL_KEY] = run_id


def threshold_controls(run: Run, tpr_col, thr_col) -> tuple[float, float | None, str, whatif.Calibration | None]:
    """The TPR slider and, beside it, the threshold slider in log-score units, kept consistent:
    moving the TPR slider puts the calibrated threshold (order-statistic rule) on the threshold
    slider; moving the threshold slider sets the threshold by hand until the TPR slider moves again.
    Returns ``(tpr, threshold, rule text, calibration of the current concepts)``."""
    tpr = tpr_col.slider("Target ID true-positive rate", 0.80, 0.99, value=float(st.session_state.get(TPR_KEY, 0.95)),
                         step=0.01, key=TPR_KEY, on_change=_tpr_moved,
                         help="The threshold keeps at least this share of ID images, with "
                              f"{DEFAULT_CONFIDENCE:.0%} confidence when the calibration set is large enough.")
    thr, rule = scores.current_threshold(run, tpr)
    if thr is None:
        return tpr, None, rule, None
    cal = whatif.calibration(run, tpr)
    finite = cal.scores[np.isfinite(cal.scores)]
    if not math.isfinite(thr) or not finite.size:
        return tpr, thr, rule, cal
    lo, hi = float(math.floor(min(finite.min(), thr)) - 1.0), 0.0
    manual = st.session_state.get(MANUAL_KEY) == run.run_id and THRESHOLD_KEY in st.session_state
    if not manual:
        st.session_state[THRESHOLD_KEY] = min(max(round(thr, 3), lo), hi)
    else:
        st.session_state[THRESHOLD_KEY] = min(max(float(st.session_state[THRESHOLD_KEY]), lo), hi)
    chosen = thr_col.slider("Threshold (log score)", lo, hi, step=0.01, key=THRESHOLD_KEY, format="%.3f",
                            on_change=_threshold_moved, args=(run.run_id,),
                            help="An image is ID when its log score reaches this value. Moving it sets the "
                                 "threshold by hand; moving the TPR slider brings back the calibrated one.")
    if manual:
        kept = cal.kept_share(chosen)
        rule = (f"set by hand: keeps {kept:.1%} of the {cal.n} calibration ID images "
                f"(the {tpr:.0%} TPR rule gives {thr:.3f})")
        return tpr, float(chosen), rule, cal
    return tpr, thr, rule, cal


def calibration_notes(run: Run, tpr: float, threshold: float | None, cal: whatif.Calibration | None) -> None:
    """Under the threshold: the expected ID false-alarm rate (from images that did not set the
    threshold) and the warning when the calibration set is too small for the target TPR."""
    if cal is None or threshold is None:
        return
    manual = st.session_state.get(MANUAL_KEY) == run.run_id
    if manual:
        far = 1.0 - cal.kept_share(threshold)
        how = "calibration ID images below the hand-set threshold"
    elif cal.n_folds > 1:
        far = cal.false_alarms
        how = (f"each of the {cal.n} calibration ID images judged by the threshold the rule sets on the other "
               f"{cal.n_folds - 1} folds (never by a threshold it helped set)")
    else:  # a one-image run: nothing else to judge it by
        far, how = cal.false_alarms, "a single calibration image, judged by its own threshold"
    st.caption(f"Expected ID false alarms: **{100 * far:.1f} %** — {how}.")
    if cal.warning:
        st.warning(cal.warning, icon=":material/warning:")


def results(run: Run, tpr: float, progress=None, threshold: float | None = None
            ) -> tuple[pd.DataFrame, float | None, str, list]:
    """Score every image in the run's scoring sources with the current concepts.

    ``threshold``: a log-score threshold set by hand (default: the calibrated one for ``tpr``).
    Returns (table, threshold, rule, skipped [(file, reason)])."""
    kept, skipped = [], []
    if scoring_uploads.sources(run):  # the encoder and the cached detector only when there is something to score
        kept, _, _, skipped = scoring_uploads.score_kept(
            run, tpr, cache.get_encoder(cache.run_encoder_spec(run)), detector=scores.detector_now(run),
            held=scores.heldout(run), progress=progress)
    rows = []
    for e in kept:
        is_id = e["is_id"] if threshold is None else bool(e["log_score"] >= threshold)
        rows.append({
            "thumbnail": _data_uri(e["path"]), "file": e["file"], "source": e["source"],
            "verdict": "ID" if is_id else "OOD", "log score": e["log_score"], "score": e["score"],
            "top positive concepts": _fmt_concepts(e["top_positive"]),
            "top negative concepts": _fmt_concepts(e["top_negative"]), "path": e["path"]})
    thr, rule = scores.current_threshold(run, tpr)
    return pd.DataFrame(rows), thr if threshold is None else threshold, rule, skipped


def show_table(df: pd.DataFrame) -> None:
    st.dataframe(
        _table_fit(df), hide_index=True, width="stretch", row_height=64,
        column_config={
            **_TABLE_WIDTHS,
            "thumbnail": st.column_config.ImageColumn("image", width="small"),
            "log score": st.column_config.NumberColumn(format="%.3f", help="log S; higher = more in-distribution"),
            "score": st.column_config.NumberColumn(format="%.4f", help="S = softmax mass on Y_pos, in (0, 1]"),
            "verdict": st.column_config.TextColumn(help="ID when log score >= threshold"),
        })


_TABLE_WIDTHS = {"file": st.column_config.TextColumn(width="medium"),
                 "source": st.column_config.TextColumn(width="small"),
                 "top positive concepts": st.column_config.TextColumn(width="medium"),
                 "top negative concepts": st.column_config.TextColumn(width="medium")}


def _table_fit(df: pd.DataFrame) -> pd.DataFrame:
    """The table as shown: no path column, no source column when every row is an upload (so the
    columns fit a 1400 px window), log scores without a negative zero."""
    out = df.drop(columns=["path"])
    if "source" in out and (out["source"] == "upload").all():
        out = out.drop(columns=["source"])
    out["log score"] = [clean_zero(v, 3) for v in out["log score"]]
    return out


def csv_bytes(df: pd.DataFrame, threshold: float | None, rule: str) -> bytes:
    """The results table as the download's CSV (the engine's writer: formula guard on text cells)."""
    out = df.drop(columns=["thumbnail"])
    return scoring_uploads.results_csv(out.to_dict("records"), threshold, rule, columns=list(out.columns)).encode("utf-8")


def input_section(run: Run) -> None:
    mode = st.radio("Images to score", ["upload", "folder"], horizontal=True, key="score_mode",
                    format_func={"upload": "upload test images", "folder": "a folder on this server"}.get)
    if mode == "upload":
        with st.form("score_upload", clear_on_submit=True, border=False):
            files = st.file_uploader("Test images", accept_multiple_files=True, key="score_files")
            if st.form_submit_button("Score these images", type="primary", icon=":material/speed:") and files:
                if add_uploads(run, files):
                    st.rerun()
    else:
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        typed = c1.text_input("Folder (inside the allowed data folders)", key="score_folder",
                              placeholder="e.g. imagenette_val100/n03888257")
        if c2.button("Add folder", icon=":material/add:", width="stretch") and typed.strip():
            try:
                add_folder(run, typed)
                st.rerun()
            except ClusterMineError as exc:
                widgets.show_error(exc)
