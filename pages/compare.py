"""Compare: the selected run (A) against another finished run (B): which one detects an OOD folder
better (AUROC / FPR95 of each, verdict changes by direction), Y_pos added / removed / kept, cluster
agreement on the images both hold, score shift of the shared held-out images, and the settings and
images that differ. The engine does the work: ``clustermine.workflows.compare``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from clustermine.workflows.compare import diff_runs
from ui import cache, settings, state, widgets
from ui.text import md_escape

state.ensure_frame()
widgets.page_header("Compare runs", "Which run detects OOD images better, and what changed from this run (A) "
                    "to another (B): concepts, clusters, scores, settings and images. Same as "
                    "`clustermine compare A B --ood FOLDER`.")
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
ood = c2.text_input("OOD folder (on this server; says which run is better)", key="compare_ood",
                    help="Images that are not in-distribution: AUROC and FPR95 of each run on them (with the same ID "
                         "images), and how many verdicts change from A to B.")
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
y, c, h, om = d["y_pos"], d["clusters"], d["heldout_shift"], d["ood_metrics"]

with st.container(border=True):
    st.subheader("Which run is better?", anchor=False)
    better = (om or {}).get("better")
    (st.success if better in ("A", "B") else st.info)(md_escape(d["verdict"], None), icon=":material/rule:")
    if om:
        o = d["ood_shift"]
        rows = [{"run": name, "AUROC (higher is better)": widgets.fmt_float(None if m is None else m["auroc"]),
                 "FPR95 (lower is better)": widgets.fmt_pct(None if m is None else m["fpr95"]),
                 "ID images": None if m is None else m["n_id"], "OOD images": None if m is None else m["n_ood"]}
                for name, m in (("A", om["a"]), ("B", om["b"]))]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        if o.get("verdict_changes") is not None:
            st.caption(f"OOD images whose verdict changes from A to B: {o['id_to_ood']} ID → OOD (B catches them), "
                       f"{o['ood_to_id']} OOD → ID (B misses them). Each run judges at its own threshold.")

widgets.metrics_row([
    ("Y_pos added", len(y["added"]), "in B, not in A"), ("Y_pos removed", len(y["removed"]), "in A, not in B"),
    ("Y_pos kept", len(y["kept"])),
    ("ARI", "–" if c["ari"] is None else f"{c['ari']:.3f}", "adjusted Rand index on the shared mined images "
                                                             "(1 = same clusters)"),
    ("matched", widgets.fmt_pct(c["matched_fraction"], 0), "share of shared images in one-to-one matched clusters"),
    ("held-out shift", "–" if h["mean"] is None else f"{0.0 if abs(h['mean']) < 5e-4 else h['mean']:+.3f}",
     f"mean B − A log-score of {h['n']} image(s) held out in both"),
], per_row=3)
if h["verdict_changes"] is not None:
    st.caption(f"ID images held out in both runs whose verdict differs: {h['verdict_changes']} of {h['n']} — "
               f"{h['id_to_ood']} ID → OOD (new false alarms in B), {h['ood_to_id']} OOD → ID (false alarms of A "
               "that B keeps).")
left, right = st.columns(2)
with left:
    st.subheader("Concepts", anchor=False)
    rows = ([{"concept": t, "change": "added"} for t in y["added"]]
            + [{"concept": t, "change": "removed"} for t in y["removed"]]
            + [{"concept": t, "change": "kept"} for t in y["kept"]])
    st.dataframe(pd.DataFrame(rows, columns=["concept", "change"]), hide_index=True, width="stretch")
with right:
    st.subheader("Matched clusters", anchor=False)
    st.caption(f"{c['n_shared']} image(s) mined in both runs; A has {c['clusters_text_a']}, "
               f"B {c['clusters_text_b']}.")
    st.dataframe(pd.DataFrame(c["matched"], columns=["cluster A", "cluster B", "images in both"]),
                 hide_index=True, width="stretch")
st.subheader("Settings that differ", anchor=False)
st.caption(f"Images, compared by content: {md_escape(d['images']['text'])}.")
if d["settings"]:
    st.dataframe(pd.DataFrame([{"setting": k, "A": str(v[0]), "B": str(v[1])} for k, v in d["settings"].items()]),
                 hide_index=True, width="stretch",
                 column_config={"setting": st.column_config.TextColumn(width="small"),
                                "A": st.column_config.TextColumn(width="medium"),
                                "B": st.column_config.TextColumn(width="medium")})
else:
    st.caption("none")
st.caption(f"A: {md_escape(d['run_a'])} · B: {md_escape(d['run_b'])}")
