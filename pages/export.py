"""Export: the current Y_pos (txt / CSV / JSON), the detector bundle (zip) and the run summary."""

from __future__ import annotations

import streamlit as st

from clustermine.workflows import export, ood_eval, report, tables
from ui import exports, state, widgets
from ui.text import md_code

state.ensure_frame()
widgets.page_header("Export", "Everything reflects the current concept edits. The detector bundle loads with "
                    "`clustermine.Detector.load(folder)` and scores features from the same encoder.")
run = state.require_run(done=True)
pos = run.positive_concepts()
widgets.metrics_row([("Y_pos", len(pos)), ("concepts reviewed", len(run.concepts())), ("edits", len(run.edits()))])

with st.container(border=True):
    st.subheader("Positive concepts (Y_pos)", anchor=False)
    c1, c2, c3 = st.columns(3)
    c1.download_button("concepts.txt", export.concepts_txt(run), file_name=f"{run.run_id}-positive_concepts.txt",
                       mime="text/plain", icon=":material/description:", width="stretch")
    c2.download_button("concepts.csv", export.concepts_csv(run), file_name=f"{run.run_id}-concepts.csv",
                       mime="text/csv", icon=":material/table:", width="stretch")
    c3.download_button("concepts.json", export.concepts_json(run), file_name=f"{run.run_id}-concepts.json",
                       mime="application/json", icon=":material/data_object:", width="stretch")
    st.text_area("Preview (positive concepts, one per line)", "\n".join(pos), height=160, disabled=True)

with st.container(border=True):
    st.subheader("Detector and summary", anchor=False)
    with widgets.guard("building the export"):
        c1, c2 = st.columns(2)
        c1.download_button("Detector bundle (.zip)", exports.deferred(exports.bundle_zip, str(run.path)),
                           file_name=f"{run.run_id}-detector.zip", mime="application/zip",
                           icon=":material/deployed_code:", width="stretch",
                           help="detector.json + text_embeddings.npy + positive_concepts.txt, threshold "
                                "calibrated on held-out ID images; built when you click")
        c2.download_button("Run summary (.json)", exports.deferred(exports.summary_json, str(run.path)),
                           file_name=f"{run.run_id}-summary.json", mime="application/json",
                           icon=":material/summarize:", width="stretch",
                           help="config, encoder, figures, Y_pos, threshold and rule, and the edit log")
        with st.expander("Run overview"):
            st.json(exports.overview(run), expanded=1)
    st.code("from clustermine import Detector\ndet = Detector.load('detector')\n"
            "log_s = det.log_scores(features)   # features from the same encoder; higher = more ID\n"
            "is_id = log_s >= det.threshold", language="python")

with st.container(border=True):
    st.subheader("Per-image results and shareable report", anchor=False)
    st.caption("One row per image: path, cluster, top-1 concept and similarity, score, verdict at the current "
               "threshold, held-out / excluded flags. The report is one HTML file that opens offline: summary, "
               "every cluster card, the concepts and your decisions, and the OOD metrics of the latest OOD sample "
               "scored in the what-if panel (a server folder or uploaded images).")
    latest_ood = ood_eval.latest(run)
    if latest_ood is None and ood_eval.uploaded_sample(run) is not None:
        st.caption(":material/check: The report includes the OOD metrics of the images uploaded in the what-if "
                   "panel (measured when you click).")
    elif latest_ood is None:
        st.caption(":material/info: No OOD sample scored yet: the report will have no AUROC / FPR95. Give one "
                   "in the what-if panel (Concepts page).")
    else:
        st.caption(f":material/check: The report includes the OOD metrics of {latest_ood['n_ood']} image(s) from "
                   f"{md_code(latest_ood.get('folder', ''))}"
                   + ("" if latest_ood["current"] else " (re-measured with the current concepts when you click)"))
    with widgets.guard("building the export"):
        c1, c2, c3 = st.columns(3)
        c1.download_button("images.csv", exports.deferred(tables.image_table_csv, str(run.path)),
                           file_name=f"{run.run_id}-images.csv", mime="text/csv", icon=":material/table:",
                           width="stretch", key="export_images_csv", help="built when you click")
        c2.download_button("images.parquet", exports.deferred(tables.image_table_parquet, str(run.path)),
                           file_name=f"{run.run_id}-images.parquet", mime="application/vnd.apache.parquet",
                           icon=":material/dataset:", width="stretch", key="export_images_parquet",
                           help="built when you click")
        c3.download_button("Report (.html)", exports.deferred(report.report_html, str(run.path)),
                           file_name=f"{run.run_id}-report.html", mime="text/html", icon=":material/article:",
                           width="stretch", key="export_report",
                           help="self-contained: thumbnails and charts embedded, no external link; built when "
                                "you click")
