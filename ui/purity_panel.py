"""The audit page's "Against the folder labels" section: clustering ACC / NMI / ARI against the class
subfolders of the run's images and the classes each cluster merges
(:func:`clustermine.workflows.diagnostics.purity_diagnostics`; nothing is drawn without labels)."""

from __future__ import annotations

import streamlit as st

from clustermine.store import Run, layout
from clustermine.workflows.diagnostics import purity_diagnostics

from . import cache, widgets

TITLE = "Against the folder labels"


@st.cache_data(max_entries=16, show_spinner=False)
def _diagnostics(path: str, stamp: tuple, _run: Run) -> dict | None:
    return purity_diagnostics(_run)


def diagnostics(run: Run) -> dict | None:
    """:func:`purity_diagnostics` once per version of the clusters, exclusions and concept edits."""
    stamp = (run.files_stamp((layout.CLUSTER_IDS, layout.EXCLUSIONS, layout.CLUSTER_STATS)), cache.edits_key(run))
    return _diagnostics(str(run.path), stamp, run)


def folder_labels_section(run: Run) -> None:
    """A collapsed section with the three scores and one line per cluster (least pure first)."""
    res = diagnostics(run)
    if res is None:
        return
    with st.expander(TITLE, expanded=False):
        st.caption(f"The images sit in class subfolders, so the clusters can be checked against them "
                   f"({res['label_rule']}). {res['n_images']} clustered images, {len(res['classes'])} classes, "
                   f"{res['n_clusters']} clusters. The labels are not used by mining: this is a diagnosis only.")
        widgets.metrics_row([
            ("clustering ACC", widgets.fmt_float(res["acc"], 3), "Hungarian match, extra clusters to their majority"),
            ("NMI", widgets.fmt_float(res["nmi"], 3)),
            ("ARI", widgets.fmt_float(res["ari"], 3)),
        ])
        if res["n_unlabelled"]:
            st.caption(f"{res['n_unlabelled']} clustered images lie directly in the images folder (no class) "
                       "and are left out.")
        rows = sorted(res["clusters"], key=lambda c: (c["share"], c["cluster"]))
        import pandas as pd  # heavy: only when the section is drawn

        st.dataframe(pd.DataFrame([{"cluster": c["cluster"], "name": c["name"], "size": c["size"], "majority class": c["majority"],
                       "share": f"{c['share']:.0%}", "classes": c["n_classes"],
                       "counts": ", ".join(f"{k} {v}" for k, v in c["counts"].items())} for c in rows]),
                     hide_index=True, width="stretch")
