"""Scoring page helpers: the images to score (kept in ``<run>/scoring/`` so they survive page
switches and refreshes), their scores under the current concepts, and the results table."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pandas as pd
import streamlit as st

from clustermine.errors import ClusterMineError, NoImagesError
from clustermine.rundir import layout
from clustermine.runs import Run
from clustermine.storage import atomic_write_json
from clustermine.uploads import resolve_in_roots, save_uploads

from . import cache, score_review, scores, settings, widgets
from .text import clean_zero, fmt_num

def uploads_dir(run: Run) -> Path:
    return layout.scoring_uploads_dir(run.path)


def _folders_file(run: Run) -> Path:
    return layout.scoring_dir(run.path) / layout.SCORING_FOLDERS


def folders(run: Run) -> list[str]:
    try:
        return list(json.loads(_folders_file(run).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return []


def _names_file(run: Run) -> Path:
    return layout.scoring_dir(run.path) / layout.SCORING_NAMES


def display_names(run: Run) -> dict[str, str]:
    """stored (sanitised) file name -> the name the user's file had (display text only)."""
    try:
        return dict(json.loads(_names_file(run).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def add_uploads(run: Run, files) -> int:
    rep = save_uploads(files, uploads_dir(run))
    score_review.remember_upload_errors(run, rep.skipped)  # shown by the page until dismissed
    names = display_names(run)
    names.update({f.stored_name: f.display_name for f in rep.saved})
    atomic_write_json(_names_file(run), names)
    return rep.n_saved


def add_folder(run: Run, typed: str) -> None:
    folder = str(resolve_in_roots(typed, settings.data_roots()))
    known = folders(run)
    if folder not in known:
        atomic_write_json(_folders_file(run), known + [folder])


def clear(run: Run) -> None:
    shutil.rmtree(layout.scoring_dir(run.path), ignore_errors=True)


def _data_uri(path: str) -> str | None:
    data = cache.thumb(path, 96)
    return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _fmt_concepts(pairs) -> str:
    return ", ".join(f"{c} ({fmt_num(s, 2)})" for c, s in pairs)


def results(run: Run, tpr: float, progress=None) -> tuple[pd.DataFrame, float | None, str, list]:
    """Score every image in the run's scoring sources with the current concepts.

    Returns (table, threshold, rule, skipped [(file, reason)])."""
    sources = ([str(uploads_dir(run))] if uploads_dir(run).is_dir() else []) + folders(run)
    enc = None
    rows, skipped = [], []
    shown = display_names(run)
    for src in sources:
        try:
            if enc is None:
                enc = cache.get_encoder(cache.run_encoder_spec(run))
            recs, feats, skip = scores.encode_folder(src, enc, limit=2000, progress=progress)
        except NoImagesError as exc:
            skipped.append((src, str(exc)))
            continue
        skipped += skip
        out, thr, rule = scores.score_features(run, feats, tpr)
        for r, e in zip(recs, out):
            rows.append({
                "thumbnail": _data_uri(r.abs_path), "file": r.path if src != str(uploads_dir(run)) else shown.get(Path(r.path).name, Path(r.path).name),
                "source": "upload" if src == str(uploads_dir(run)) else src,
                "verdict": "ID" if e["is_id"] else "OOD", "log score": e["log_score"], "score": e["score"],
                "top positive concepts": _fmt_concepts(e["top_positive"]),
                "top negative concepts": _fmt_concepts(e["top_negative"]), "path": r.abs_path})
    thr, rule = scores.current_threshold(run, tpr)
    return pd.DataFrame(rows), thr, rule, skipped


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
    out = df.drop(columns=["thumbnail"]).copy()
    out["threshold"] = threshold
    out["threshold_rule"] = rule
    return out.to_csv(index=False).encode("utf-8")


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


def gallery(df: pd.DataFrame, limit: int = 12, columns: int = 6) -> None:
    """The first scored images as cards: thumbnail, verdict and log score (file names escaped)."""
    from .text import md_escape

    head = df.head(limit)
    for start in range(0, len(head), columns):
        cols = st.columns(columns)
        for col, (_, r) in zip(cols, head.iloc[start:start + columns].iterrows()):
            with col.container(border=True):
                data = cache.thumb(r["path"], 192)
                if data is not None:
                    st.image(data, width="stretch")
                color = "green" if r["verdict"] == "ID" else "red"
                st.markdown(f":{color}-badge[{r['verdict']}] **{r['log score']:.2f}**", help="log score")
                st.caption(md_escape(r["file"], 60))
    if len(df) > limit:
        st.caption(f"… {len(df) - limit} more in the table below.")
