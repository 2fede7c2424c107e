"""Compare: the selected run (A) against another finished run (B): Y_pos added / removed / kept,
cluster agreement on the images both hold, score shift of the shared held-out images (and of an
OOD folder), and the settings that differ. The engine does the work: ``clustermine.compare``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from clustermine.compare import diff_runs
from ui import cache, settings, state, widgets
from ui.text import md_escape

state.ensure_frame()
widgets.page_header("Compare runs", "What changed from this run (A) to another (B): concepts, clusters, "
                    "scores and settings. Same as `clustermine diff A B`.")
run_a = state.require_run(done=True)
others = [r for r in cache.list_runs_light(settings.runs_root())
          if r["status"] == "done" and r["run_id"] != run_a.run_id]
if not others:
    widgets.empty_state("No other finished run to compare with: mine another one first.",
                        link=("pages/data.py", "Go to Data & encoding", ":material/add_photo_alternate:"))
    st.stop()
by_id = {r["run_id"]: r for r in others}
c1, c2 = st.columns([2, 2])
b_id = c1.selectbox("Compare with (B)", list(by_id), key="compare_b")
ood = c2.text_input("OOD folder (optional, on this server)", key="compare_ood",
                    help="Images that are not in-distribution: their score shift from A to B is shown too.")
if st.button("Compare", type="primary", icon=":material/compare_arrows:", key="compare_go"):
    with st.spinner("Comparing…"), widgets.guard("comparing the runs"):
        run_b = cache.load_run(by_id[b_id]["path"])
        st.session_state["compare_result"] = (run_a.run_id, b_id, diff_runs(run_a, run_b,
                                                                            ood_folder=ood.strip() or None))

result = st.session_state.get("compare_result")
if not result or result[0] != run_a.run_id or result[1] != b_id:
    st.caption("Pick run B and press Compare.")
    st.stop()
d = result[2]
y, c, h = d["y_pos"], d["clusters"], d["heldout_shift"]
widgets.metrics_row([
    ("Y_pos added", len(y["added"]), "in B, not in A"), ("Y_pos removed", len(y["removed"]), "in A, not in B"),
    ("Y_pos kept", len(y["kept"])),
    ("ARI", "–" if c["ari"] is None else f"{c['ari']:.3f}", "adjusted Rand index on the shared mined images "
                                                             "(1 = same clusters)"),
    ("matched", widgets.fmt_pct(c["matched_fraction"], 0), "share of shared images in one-to-one matched clusters"),
    ("held-out shift", "–" if h["mean"] is None else f"{h['mean']:+.3f}",
     f"mean B − A log-score of {h['n']} image(s) held out in both"),
])
left, right = st.columns(2)
with left:
    st.subheader("Concepts", anchor=False)
    rows = ([{"concept": t, "change": "added"} for t in y["added"]]
            + [{"concept": t, "change": "removed"} for t in y["removed"]]
            + [{"concept": t, "change": "kept"} for t in y["kept"]])
    st.dataframe(pd.DataFrame(rows, columns=["concept", "change"]), hide_index=True, width="stretch")
    st.subheader("Settings that differ", anchor=False)
    if d["settings"]:
        st.dataframe(pd.DataFrame([{"setting": k, "A": str(v[0]), "B": str(v[1])} for k, v in d["settings"].items()]),
                     hide_index=True, width="stretch")
    else:
        st.caption("none")
with right:
    st.subheader("Matched clusters", anchor=False)
    st.caption(f"{c['n_shared']} image(s) mined in both runs; A has {c['n_clusters_a']} clusters, "
               f"B {c['n_clusters_b']}.")
    st.dataframe(pd.DataFrame(c["matched"], columns=["cluster A", "cluster B", "images in both"]),
                 hide_index=True, width="stretch")
    st.subheader("Scores", anchor=False)
    if h["verdict_changes"] is not None:
        st.caption(f"held-out images whose verdict differs: {h['verdict_changes']} of {h['n']}")
    if d["ood_shift"]:
        o = d["ood_shift"]
        st.caption(f"OOD sample: mean B − A log-score {o['mean']:+.3f} over {o['n']} image(s)"
                   + (f"; verdict changes: {o['verdict_changes']}" if "verdict_changes" in o else ""))
st.caption(f"A: {md_escape(d['run_a'])} · B: {md_escape(d['run_b'])}")
