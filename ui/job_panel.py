"""The Data page's view of one run: mining progress (polled), cancel / stop, resume, results and
skipped files. The job itself runs in a worker process (clustermine.workflows.jobs); this only reads
``progress.json`` / ``run.json`` and writes the cancel flag."""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from clustermine.workflows import clusterview, jobs
from clustermine.store import layout
from clustermine.store import Run

from . import cache, cluster_panel, identity, rundata, state, widgets
from .text import md_escape

STAGE_LABELS = {"scan": "Scan files", "encode": "Encode images", "corpus": "Embed the concept corpus",
                "cluster": "Cluster", "vote": "Vote & mine concepts"}
POLL_SECONDS = 1.0


def _fmt_eta(eta: float | None) -> str:
    """'1 min 05 s', '12 s'; 'starting…' without a rate yet (None), 'finishing…' under a second."""
    if eta is None:
        return "starting…"
    if eta < 1.0:
        return "finishing…"
    eta = int(round(eta))
    return f"{eta // 60} min {eta % 60:02d} s" if eta >= 60 else f"{eta} s"


def config_summary(run: Run) -> None:
    cfg = run.config
    enc = run.meta.get("encoder") or {}
    c = cfg.get("n_clusters")
    params = cfg.get("clusterer_params") or {}
    rows = [("encoder", enc.get("spec") or cfg.get("encoder", "")),
            ("device", enc.get("device") or cfg.get("device", "")),
            ("clusters C", "auto" if c is None else str(c)), ("clusterer", cfg.get("clusterer", "")),
            ("clusterer options", ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"),
            ("corpus", str(cfg.get("corpus", ""))), ("score temperature τ", f"{run.tau:g}"),
            ("top-k votes stored", str(cfg.get("topk", ""))), ("seed", str(cfg.get("seed", ""))),
            ("held out", f"{float(cfg.get('holdout_fraction', 0)):.0%}"), ("images", str(cfg.get("images_dir", "")))]
    st.dataframe(pd.DataFrame(rows, columns=["setting", "value"]), hide_index=True, width="stretch")


def progress_view(run: Run) -> str:
    """Draw the stage list with the current stage's progress and ETA; returns the run status."""
    run.reload_meta()
    jobs.reconcile(run)
    prog = run.progress() or {}
    status = run.status
    stages = list(prog.get("stages") or STAGE_LABELS)
    current = prog.get("stage") if status in ("running", "cancelled", "failed") else None
    done_stages = set(run.meta.get("stages_done", []))
    if prog.get("stage_index", -1) >= 0 and current:
        done_stages |= set(stages[: prog["stage_index"]])
    job = jobs.job_state(run.path)
    if status == "created" and job.get("alive"):
        st.info("Starting the worker… (loading the encoder can take a few seconds)", icon=":material/hourglass_top:")
    for s in stages:
        label = STAGE_LABELS.get(s, s)
        if s == current:
            done, total = int(prog.get("done", 0)), int(prog.get("total", 0))
            frac = min(done / total, 1.0) if total else 0.0
            tail = f"stage ETA {_fmt_eta(prog.get('eta_s'))}" if status == "running" else f"stopped here ({status})"
            st.progress(frac, text=f"**{label}** — {done:,} / {total:,} · {tail}")
        elif s in done_stages or status == "done":
            st.markdown(f":green[:material/check_circle:] {label}")
        else:
            st.markdown(f":gray[:material/radio_button_unchecked: {label}]")
    if status == "running" and prog.get("plan_s"):
        detail = f" ({md_escape(prog['plan_detail'], None)})" if prog.get("plan_detail") else ""
        eta = prog.get("job_eta_s")
        # no number until the current stage has a rate: a guess would sit still or read "0 s" (issue 18)
        left = f"about {_fmt_eta(eta)} left" if eta is not None and eta >= 1.0 else _fmt_eta(eta)
        st.markdown(f":material/schedule: **Whole job: {left}**, all remaining stages{detail}")
    if status == "running" and prog.get("started"):
        st.caption(f"running for {_fmt_eta(max(time.time() - float(prog['started']), 1.0))}"
                   + (f" · worker pid {job['pid']}" if job.get("pid") else ""))
    return status


def _live_badge(slot, run: Run, status: str) -> None:
    """The run's live state in ``slot``: starting, running · <stage>, or how it ended."""
    stage = (run.progress() or {}).get("stage")
    with slot:
        widgets.live_status_badge(status, STAGE_LABELS.get(stage, stage), bool(jobs.job_state(run.path).get("alive")))


def live_progress(run_path) -> None:
    """Poll the run every second while it is active; cancel / stop buttons; refresh the page when
    the job ends."""
    @st.fragment(run_every=POLL_SECONDS)
    def _poll() -> None:
        run = cache.load_run(run_path)
        badge = st.empty()  # filled once the run's state is known (below)
        status = progress_view(run)
        _live_badge(badge, run, status)
        if status not in ("created", "running"):
            st.rerun(scope="app")
        c1, c2, _ = st.columns([1, 1, 3])
        if run.cancel_requested():
            c1.button("Cancelling…", disabled=True, key="cancel_wait")
            c2.button("Stop now", key="kill", icon=":material/stop_circle:", on_click=jobs.kill_job, args=(run.path,),
                      help="Stops the worker at once (use when it does not react); finished work is kept.")
        else:
            c1.button("Cancel", key="cancel", icon=":material/cancel:", on_click=jobs.cancel_job, args=(run.path,),
                      help="Stops the job at its next checkpoint; finished work is kept and can be resumed.")

    _poll()


def skipped_files(run: Run) -> pd.DataFrame:
    """Files not used, with the reason: refused at upload (uploads.json) or skipped by the scan /
    decoder (images.jsonl). File names are data here (rendered as table cells, never markup)."""
    rows = []
    saved = []
    try:
        manifest = json.loads(layout.uploads_manifest(run.path).read_text(encoding="utf-8"))
        rows += [(f["display_name"], "upload", f["reason"]) for f in manifest.get("skipped", [])]
        saved = [f for f in manifest.get("saved", []) if f.get("path")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    if run.file(layout.IMAGES).is_file():
        try:
            import pyarrow.compute as pc

            shown = rundata.upload_names(run)
            table = run.image_table()
            skipped = table.filter(pc.is_null(table["row"])).select(["path", "reason"]).to_pylist()
            rows += [(shown.get(r["path"], r["path"]), "scan", r.get("reason") or "") for r in skipped]
            if saved:  # the scan ignores non-image files (e.g. a zip's README)
                scanned = set(table.column("path").to_pylist())
                rows += [(f["display_name"], "scan", "not an image file type")
                         for f in saved if f["path"] not in scanned]
        except Exception:  # a corrupt images.jsonl is reported by the pages that need it
            pass
    return pd.DataFrame(rows, columns=["file", "stage", "reason"])


def finished_view(run: Run) -> None:
    s = run.meta.get("summary") or {}
    st.success("Mining finished. Explore the clusters, audit them, then review the concepts.",
               icon=":material/check_circle:")
    widgets.metrics_row([
        ("images used", f"{s.get('n_images', 0):,}", "usable images (held-out ones included)"),
        ("held out", f"{s.get('n_holdout', 0):,}", "kept out of mining to calibrate the threshold"),
        ("clusters", clusterview.cluster_count(s)[0] or "–", clusterview.cluster_count_text(s)),
        ("concepts mined", s.get("n_positive", "–"), "|Y_pos| as mined"),
        ("mean purity", widgets.fmt_float(s.get("mean_purity"), 2)),
    ])
    if s.get("clamp_warning"):
        st.warning(md_escape(s["clamp_warning"], None))
    timings = s.get("timings_s") or {}
    if timings:
        st.caption("stage times: " + " · ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    c1, c2, c3 = st.columns(3)
    c1.page_link("pages/clusters.py", label="Cluster map", icon=":material/scatter_plot:")
    c2.page_link("pages/audit.py", label="Cluster audit", icon=":material/fact_check:")
    c3.page_link("pages/concepts.py", label="Review concepts", icon=":material/checklist:")


def run_panel(run: Run) -> None:
    """Everything the Data page shows for an existing run."""
    run.reload_meta()
    jobs.reconcile(run)
    head = st.columns([3, 1])
    status = run.status
    never_started = status == "created" and jobs.read_job(run.path) is None  # e.g. created by a script
    live = status in ("created", "running") and not never_started
    with head[0]:
        st.subheader(f"Run {md_escape(run.run_id)}", anchor=False)
        if not live:  # a live job's badge is drawn (and refreshed) by the progress poll
            widgets.status_badge(run.status)
        if live or status != "done" or run.meta.get("executed_on"):
            cluster_panel.cluster_box(run.meta.get("executed_on"))
    with head[1]:
        if st.button("New run", icon=":material/add:", width="stretch"):
            state.set_run(None)
            st.rerun()
    if live:
        live_progress(run.path)
    elif status == "done":
        finished_view(run)
    else:
        if never_started:
            st.info("This run has not been started yet.", icon=":material/schedule:")
        elif status == "cancelled":
            st.warning("Cancelled. Finished work is kept (encoded images are cached): press **Resume** to "
                       "continue with the same settings.", icon=":material/pause_circle:")
        else:
            widgets.show_error(run.meta.get("error") or f"the run is {status}")
        progress_view(run)
        blocked = identity.role_block("launch")
        if st.button("Resume", type="primary", icon=":material/play_arrow:", key="resume", disabled=bool(blocked),
                     help=blocked or "Continue with the same settings; images already encoded are not encoded again."):
            with widgets.guard("resuming the run"):
                jobs.start_mine_job(run.path, cancel_at_exit=True, actor=identity.acting())
                st.rerun()
        tail = jobs.log_tail(run.path)
        if tail:
            with st.expander("Worker log (last lines)"):
                st.code(tail, language=None)
    with st.expander("Settings", expanded=False):
        config_summary(run)
    skipped = skipped_files(run)
    if len(skipped):
        with st.expander(f"Skipped files ({len(skipped)})", expanded=status == "done"):
            st.dataframe(skipped, hide_index=True, width="stretch")
