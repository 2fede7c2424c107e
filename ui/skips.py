"""Why images of a sample were skipped, said in one line (and listed on demand)."""

from __future__ import annotations

import re

import streamlit as st

from .text import md_escape

_LIMIT = re.compile(r"over the limit of (\d+) images per sample")


def skip_summary(skipped: list[tuple[str, str]]) -> str:
    """'12 skipped: 10 over the 500-image limit per sample, 2 unreadable or not images' ('' if none).

    ``skipped``: (file, reason) pairs as returned by ``clustermine.whatif.encode_folder``."""
    if not skipped:
        return ""
    limits = [int(m.group(1)) for _, r in skipped if (m := _LIMIT.search(str(r)))]
    parts = []
    if limits:
        parts.append(f"{len(limits)} over the {max(limits)}-image limit per sample (only the first "
                     f"{max(limits)} images, in file-name order, are used)")
    rest = len(skipped) - len(limits)
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
