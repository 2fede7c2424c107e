"""The concept review table (st.data_editor keyed by concept id, edits applied through a callback
into ``Run.edit_concept``), quick actions, free-text additions and the edit log."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from clustermine.core.errors import ClusterMineError
from clustermine.core.identity import Actor
from clustermine.store import Run
from clustermine.store.concepts import CONCEPT_STATUSES, action_for

from . import cache, identity, rundata, widgets
from .text import md_escape

STATUSES = list(CONCEPT_STATUSES)  # the engine's rule (clustermine.store.concepts), shown as the column's options
_ERR_KEY = "concept_edit_error"
_OK_KEY = "concept_edit_ok"


def reviewer() -> Actor:
    """Who signs this session's decisions (:func:`ui.identity.acting`: the identity mode's actor and
    role, resolved now); ClusterMineError when the session may not act."""
    return identity.acting()


def apply(run_path: str, action: str, key: str, encoder=None) -> None:
    """Apply one edit and remember its outcome for the next script run (callbacks cannot draw)."""
    run = cache.load_run(run_path)
    try:
        c = run.edit_concept(action, key, encoder=encoder, actor=reviewer())
        st.session_state[_OK_KEY] = f"{action}: {c.text} → {c.status}"
    except ClusterMineError as exc:
        st.session_state[_ERR_KEY] = str(exc)


def _on_table_edit(run_path: str, editor_key: str, ids: list[str], statuses: list[str]) -> None:
    changes = (st.session_state.get(editor_key) or {}).get("edited_rows", {})
    for pos, cols in changes.items():
        new = cols.get("status")
        pos = int(pos)
        if new is None or pos >= len(ids):
            continue
        action = action_for(statuses[pos], new)
        if action:
            apply(run_path, action, ids[pos])


def feedback() -> None:
    """Show (once) the outcome of the last edit."""
    err, ok = st.session_state.pop(_ERR_KEY, None), st.session_state.pop(_OK_KEY, None)
    if err:
        widgets.show_error(err)
    elif ok:
        st.toast(md_escape(ok), icon=":material/check:")


def table(run: Run) -> pd.DataFrame:
    """The editable concept table. Its widget key changes with every edit, so it is always rebuilt
    from the run (the edit log), never from stale widget state."""
    df = with_support(run, rundata.concept_table(run))
    key = f"concepts-editor-{cache.edits_key(run)}"
    blocked = identity.role_block("edit_concepts")
    if blocked:
        st.caption(f":material/lock: The table is read-only: {md_escape(blocked)}.")
    st.data_editor(
        df, key=key, width="stretch", hide_index=False, num_rows="fixed",
        disabled=True if blocked else [c for c in df.columns if c != "status"],
        column_config={
            "_index": st.column_config.TextColumn("id", help="stable concept id"),
            "status": st.column_config.SelectboxColumn("status", options=STATUSES, required=True,
                                                       help="mined / accepted count as positive; rejected ones "
                                                            "become negatives"),
            "source": st.column_config.TextColumn("source", width="small"),
            "clusters": st.column_config.TextColumn("clusters", width="small"),
            "purity": st.column_config.ProgressColumn("purity", min_value=0.0, max_value=1.0, format="%.2f",
                                                      width="small"),
            "votes": st.column_config.NumberColumn("votes", format="%d", width="small"),
            "updated": st.column_config.TextColumn("updated", width="small"),
            "by": st.column_config.TextColumn("by", width="small"),
            "support": st.column_config.ProgressColumn(
                "support", min_value=0.0, max_value=1.0, format="%.2f", width="small",
                help="fraction of the run's clusterings (TEMI heads, or seeds) whose vote elects this concept; "
                     "empty = unknown"),
            "stability": st.column_config.TextColumn("stability", width="small",
                                                     help="⚠ 1 head: elected by a single "
                                                     "clustering, may be noise"),
        },
        on_change=_on_table_edit, args=(str(run.path), key, list(df.index), list(df["status"])))
    return df


def with_support(run: Run, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``support`` column (None = unknown) and a ``stability`` flag, by concept id."""
    by_id = {c.id: c for c in run.concepts()}
    df = df.copy()
    df["support"] = [by_id[i].support if i in by_id else None for i in df.index]
    df["stability"] = ["⚠ 1 head" if i in by_id and by_id[i].single_head
                       else ("unknown" if i not in by_id or by_id[i].support is None else "")
                       for i in df.index]
    return df


def stability_panel(run: Run) -> None:
    """Where the support comes from; for runs without head labels (k-means, older runs), a button
    that re-clusters with a few seeds (progress bar) to compute it."""
    from clustermine.workflows.stability import seed_stability, stability_source

    source = stability_source(run)
    concepts = run.concepts()
    flagged = [c.text for c in concepts if c.single_head]
    with st.expander("Stability (support across heads / seeds)", expanded=bool(flagged)):
        if source == "heads":
            st.caption(f"Support = share of the {concepts[0].support_total if concepts else '?'} TEMI heads whose "
                       "own cluster vote elects the concept.")
        elif source == "seeds":
            st.caption(f"Support = share of {concepts[0].support_total if concepts else '?'} clusterings "
                       "(different seeds) whose vote elects the concept.")
        else:
            st.caption("Support unknown: this run stores no head labels (k-means, or a run mined before "
                       "stability existed). Compute it by re-clustering with a few seeds.")
        if flagged:
            st.warning("Elected by one head only: " + ", ".join(md_escape(t) for t in flagged),
                       icon=":material/warning:")
        c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
        n_seeds = int(c1.number_input("Seeds", min_value=2, max_value=20, value=5, key="stability_seeds"))
        blocked = identity.role_block("stability")
        if c2.button("Compute support across seeds", key="stability_go", icon=":material/replay:",
                     disabled=bool(blocked), help=blocked):
            bar = st.progress(0.0, text="clustering with several seeds…")
            with widgets.guard("computing stability"):
                seed_stability(run, n_seeds, actor=reviewer(),
                               progress=lambda d, t: bar.progress(d / max(t, 1), text=f"{d} / {t} clusterings"))
                st.rerun()


def quick_actions(run: Run, df: pd.DataFrame) -> None:
    labels = {cid: str(row.concept) for cid, row in df.iterrows()}
    pick = st.selectbox("Concept", list(labels), format_func=lambda k: labels.get(k, k), key="concept_pick",
                        index=0 if labels else None)
    if pick is not None and pick in df.index:
        st.caption(f"status: **{df.loc[pick, 'status']}** · id {md_escape(pick)}")
    c2, c3, c4 = st.columns(3)
    blocked = identity.role_block("edit_concepts")
    for col, action, icon in ((c2, "accept", ":material/check:"), (c3, "reject", ":material/close:"),
                              (c4, "restore", ":material/undo:")):
        col.button(action.capitalize(), key=f"btn_{action}", icon=icon, width="stretch",
                   disabled=pick is None or bool(blocked), help=blocked,
                   on_click=apply, args=(str(run.path), action, pick))


def add_form(run: Run) -> None:
    with st.form("add_concept", clear_on_submit=True, border=False):
        c1, c2 = st.columns([2.6, 1], vertical_alignment="bottom")  # room for the button's label
        text = c1.text_input("Add a concept (free text)", max_chars=200, key="add_text",
                             placeholder="e.g. golf ball — embedded with this run's encoder")
        blocked = identity.role_block("edit_concepts")
        if c2.form_submit_button("Add", icon=":material/add:", width="stretch", disabled=bool(blocked),
                                 help=blocked) and text.strip():
            apply(str(run.path), "add", text, encoder=cache.LazyEncoder(cache.run_encoder_spec(run)))
            st.rerun()


def edit_log(run: Run) -> None:
    edits = run.edits()
    with st.expander(f"Decision log ({len(edits)} edit(s), append-only)"):
        if edits:
            st.dataframe(pd.DataFrame(edits)[["seq", "ts", "user", "action", "text", "concept_id"]].iloc[::-1],
                         hide_index=True, width="stretch")
        else:
            st.caption("no edit yet")
