"""The first page's introduction: what the app does, the workflow in three steps, and what a run
costs on this machine (an estimate from clustermine.workflows.estimate, labelled as such)."""

from __future__ import annotations

from typing import Callable

import streamlit as st

from clustermine.workflows.estimate import MachineSpeed, estimate_run_cost, fmt_duration

STEPS = [
    ("1 · Bring your in-distribution images", ":material/add_photo_alternate:",
     "Upload photos or a zip, or pick a folder on this server (Data & encoding). No labels needed."),
    ("2 · Mine and audit the concepts", ":material/fact_check:",
     "The app clusters the images, lets each cluster vote for a word from a large concept list, and keeps "
     "the winners as the concepts that describe your data. Check them on the Cluster map and Cluster audit."),
    ("3 · Review, score and export", ":material/speed:",
     "Accept or reject concepts, score new images (ID or OOD at a calibrated threshold) and export the "
     "detector."),
]
EXAMPLE_SIZES = (200, 1000)


#: The default corpus's cache state once this process has checked it (the check loads the encoder:
#: seconds on a first visit); the first paint of the cost lines reads only this.
_KNOWN_CORPUS_STATE: dict[str, bool | None] = {}


def cost_lines(runs: list[dict], corpus_cached: bool | None = None, speed: MachineSpeed | None = None,
               checking: bool = False) -> list[str]:
    """One line per example size with the TEMI and k-means estimates, the corpus cache state and the
    source of the figures. ``speed``: this machine's speed now (None: finished runs / reference
    figures); ``checking``: the corpus cache state is still being looked up."""
    lines = []
    source = ""
    for n in EXAMPLE_SIZES:
        temi = estimate_run_cost(n, "temi", runs, corpus_cached=corpus_cached, speed=speed)
        km = estimate_run_cost(n, "kmeans", runs, corpus_cached=corpus_cached, speed=speed)
        source = temi.source
        lines.append(f"{n:,} images: about **{fmt_duration(temi.seconds)}** with TEMI "
                     f"({temi.schedule['n_heads']} heads), **{fmt_duration(km.seconds)}** with k-means")
    corpus = estimate_run_cost(1, "kmeans", runs, speed=speed).corpus_first_use_s
    if corpus_cached:
        lines.append("the concept corpus is already embedded on this machine (cached): no run waits for it")
    elif checking:
        lines.append("the concept corpus: checking whether it is already embedded on this machine…")
    else:
        state = "not cached yet" if corpus_cached is False else "cache state unknown"
        lines.append(f"the concept corpus ({state}) is embedded once by the first run, about "
                     f"{fmt_duration(corpus)}, and cached afterwards (`clustermine prepare` does it ahead)")
    lines.append(f"rates from {source}; an estimate, not a promise: other jobs on the machine slow it down")
    return lines


def _default_corpus_cached() -> bool | None:
    """Whether the default encoder's default corpus embedding is cached (same check as the Data page)."""
    from clustermine.core.config import MineConfig

    from .new_run import corpus_cached

    d = MineConfig()
    return corpus_cached(d.encoder, d.corpus)


def first_paint_lines(runs: list[dict]) -> list[str]:
    """The cost lines drawn at once: figures of finished runs or the reference machine and the corpus
    state if this process already knows it. Imports no torch and loads no model."""
    known = "default" in _KNOWN_CORPUS_STATE
    return cost_lines(runs, _KNOWN_CORPUS_STATE.get("default"), checking=not known)


def intro(runs: list[dict]) -> Callable[[], None]:
    """What the app does, the three steps and the cost estimate (collapsed once runs exist).

    Draws the cost lines at once from :func:`first_paint_lines` and returns ``refine``: call it last
    on the page; it looks up the corpus cache state and this machine's speed now (the encoder's
    fingerprint, a short probe) and redraws the lines in place, so nothing above waits for it."""
    with st.expander("What this app does", expanded=not runs, icon=":material/info:"):
        st.markdown("**ClusterMine Studio builds an out-of-distribution (OOD) detector from unlabelled images.** "
                    "Show it examples of what is normal for you (in-distribution, ID); it finds words that "
                    "describe them and then flags new images that match none of them.")
        cols = st.columns(3)
        for col, (title, icon, text) in zip(cols, STEPS):
            with col.container(border=True):
                st.markdown(f"{icon} **{title}**")
                st.caption(text)
        slot = st.empty()

    def draw(lines: list[str]) -> None:
        slot.markdown("**What a run costs on this machine** (estimate):\n" + "\n".join(f"- {line}" for line in lines))

    draw(first_paint_lines(runs))

    def refine() -> None:
        from clustermine.workflows.estimate import measure_speed

        _KNOWN_CORPUS_STATE["default"] = state = _default_corpus_cached()
        draw(cost_lines(runs, state, measure_speed()))

    return refine
