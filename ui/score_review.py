"""Scoring page: reading the results (gallery order and filter), upload errors that stay on screen
until dismissed, and removing one bad uploaded file without clearing the others."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from clustermine.store import Run
from clustermine.workflows import scoring_uploads

from . import cache, widgets
from .text import fmt_num, md_escape, wrap_name

SORTS = {"ood_first": "OOD first, lowest score first", "low": "lowest score first", "high": "highest score first"}
VERDICTS = {"all": "all", "OOD": "OOD only", "ID": "ID only"}
_ERRORS_KEY = "score_upload_errors"  # session: {run_id: [(file, reason), ...]}


def order_results(df: pd.DataFrame, sort: str = "ood_first", verdict: str = "all") -> pd.DataFrame:
    """The scored rows filtered by ``verdict`` (all | OOD | ID) and ordered by ``sort`` (a key of
    SORTS); ties keep file-name order. Scores: higher = more in-distribution."""
    out = df if verdict == "all" else df[df["verdict"] == verdict]
    out = out.assign(_ood=(out["verdict"] != "OOD").astype(int))
    if sort == "ood_first":
        keys, asc = ["_ood", "log score", "file"], [True, True, True]
    elif sort == "high":
        keys, asc = ["log score", "file"], [False, True]
    else:
        keys, asc = ["log score", "file"], [True, True]
    return out.sort_values(keys, ascending=asc, kind="mergesort").drop(columns="_ood")


def gallery_controls() -> tuple[str, str]:
    c1, c2 = st.columns([1.4, 1])
    sort = c1.segmented_control("Order", list(SORTS), format_func=SORTS.get, default="ood_first", key="score_sort",
                                required=True) or "ood_first"
    verdict = c2.segmented_control("Show", list(VERDICTS), format_func=VERDICTS.get, default="all",
                                   key="score_verdict", required=True) or "all"
    return sort, verdict


def gallery(df: pd.DataFrame, limit: int = 12, columns: int = 6) -> None:
    """The first ``limit`` rows of ``df`` (already ordered) as cards: thumbnail, verdict, log score."""
    head = df.head(limit)
    for start in range(0, len(head), columns):
        cols = st.columns(columns)
        for col, (_, r) in zip(cols, head.iloc[start:start + columns].iterrows()):
            with col.container(border=True):
                data = cache.thumb(r["path"], 192)
                if data is not None:
                    st.image(data, width="stretch")
                color = "green" if r["verdict"] == "ID" else "red"
                st.markdown(f":{color}-badge[{r['verdict']}] **{fmt_num(r['log score'], 2)}**", help="log score")
                st.caption(md_escape(wrap_name(r["file"]), 80))
    if len(df) > limit:
        st.caption(f"… {len(df) - limit} more in the table below (same order).")


# ------------------------------------------------------------------------------------ upload errors
def remember_upload_errors(run: Run, skipped) -> None:
    """Keep the refused files of an upload (``UploadedFile`` reports with display_name / reason) for
    this session, so a rerun after the good files were saved does not wipe their messages."""
    errors = st.session_state.setdefault(_ERRORS_KEY, {}).setdefault(run.run_id, [])
    for f in skipped:
        item = (str(f.display_name), str(f.reason))
        if item not in errors:
            errors.append(item)


def show_upload_errors(run: Run) -> None:
    """Every refused upload of this session, one line each, until the user dismisses them."""
    errors = st.session_state.get(_ERRORS_KEY, {}).get(run.run_id) or []
    if not errors:
        return
    lines = "\n".join(f"- {md_escape(name)}: {md_escape(reason, None)}" for name, reason in errors)
    st.error(f"{len(errors)} file(s) could not be added:\n{lines}", icon=":material/error:")
    if st.button("Dismiss these messages", key="dismiss_upload_errors", icon=":material/close:"):
        st.session_state[_ERRORS_KEY].pop(run.run_id, None)
        st.rerun()


# ------------------------------------------------------------------------------------ bad uploaded files
def bad_uploads(run: Run, skipped: list[tuple[str, str]], scored: pd.DataFrame | None) -> list[tuple[str, str]]:
    """(stored file name, reason) of uploaded test files that were saved but could not be scored."""
    good = scored["path"] if scored is not None and len(scored) else ()
    return scoring_uploads.bad_uploads(run, skipped, good)


def skipped_section(run: Run, skipped: list[tuple[str, str]], scored: pd.DataFrame | None) -> None:
    """Files that were not scored, with the reason; a bad uploaded file has its own Remove button."""
    if not skipped:
        return
    bad = bad_uploads(run, skipped, scored)
    names = scoring_uploads.display_names(run)
    with st.expander(f"Not scored ({len(skipped)})", expanded=bool(bad)):
        for stored, reason in bad:
            c1, c2 = st.columns([5, 1], vertical_alignment="center")
            c1.markdown(f":red[:material/broken_image:] **{md_escape(wrap_name(names.get(stored, stored)))}** — "
                        f"{md_escape(reason, 300)}")
            if c2.button("Remove", key=f"rm-upload-{stored}", icon=":material/delete:", width="stretch",
                         help="Delete this uploaded file only; the other images stay."):
                with widgets.guard("removing the file"):
                    scoring_uploads.remove_upload(run, stored)
                    st.rerun()
        others = [(f, r) for f, r in skipped if f not in {b[0] for b in bad}]
        if others:
            st.dataframe([{"file": f, "reason": r} for f, r in others], hide_index=True, width="stretch")
