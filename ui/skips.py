"""Why images of a sample were skipped, said in one line (and listed on demand)."""

from __future__ import annotations

import streamlit as st

from clustermine.workflows.whatif import not_drawn

from .text import md_escape

def skip_summary(skipped: list[tuple[str, str]]) -> str:
    """'103 skipped: 100 not drawn into the 500-image sample, 3 unreadable or not an image' ('' if none).

    ``skipped``: (file, reason) pairs as returned by ``clustermine.workflows.whatif.encode_folder``."""
    if not skipped:
        return ""
    left_out, limit = not_drawn(skipped)
    parts = []
    if left_out:
        parts.append(f"{len(left_out)} not drawn into the {limit}-image sample")
    rest = len(skipped) - len(left_out)
    if rest:
        parts.append(f"{rest} unreadable or not an image")
    return f"{len(skipped)} skipped: " + "; ".join(parts)


def show_skipped(skipped: list[tuple[str, str]], label: str = "Skipped images") -> None:
    """The one-line summary and a popover listing every skipped file with its reason (a popover, not an
    expander: this is drawn inside expanders)."""
    if not skipped:
        return
    st.caption(md_escape(skip_summary(skipped), None))
    with st.popover(f"{label} ({len(skipped)})", icon=":material/list:"):
        st.dataframe([{"file": f, "reason": r} for f, r in skipped], hide_index=True, width="stretch")
