"""Small visual building blocks shared by the pages."""

from __future__ import annotations

import contextlib
import logging
import traceback
from pathlib import Path
from typing import Iterable, Sequence

import streamlit as st

from clustermine.core.errors import ClusterMineError
from clustermine.workflows.decisions import log_state

from . import cache
from .text import fmt_num, md_escape, wrap_name

_LOG = logging.getLogger("clustermine.app")
ASSETS = Path(__file__).resolve().parents[1] / "assets"

STATUS_COLORS = {"done": "green", "running": "blue", "created": "gray", "failed": "red",
                 "cancelled": "orange", "corrupt": "red"}
STATUS_ICONS = {"done": ":material/check_circle:", "running": ":material/progress_activity:",
                "created": ":material/schedule:", "failed": ":material/error:",
                "cancelled": ":material/cancel:", "corrupt": ":material/broken_image:"}


def inject_css() -> None:
    """The app's stylesheet (static file shipped with the app; no user data)."""
    css = (ASSETS / "style.css").read_text(encoding="utf-8") if (ASSETS / "style.css").is_file() else ""
    if css:
        st.html(f"<style>{css}</style>")


def page_header(title: str, subtitle: str | None = None, icon: str | None = None) -> None:
    """Consistent page title (+ one-line caption)."""
    st.title(f"{icon} {title}" if icon else title, anchor=False)
    if subtitle:
        st.caption(subtitle)


def status_badge(status: str) -> None:
    s = status if status in STATUS_COLORS else "corrupt"
    st.badge(md_escape(status), icon=STATUS_ICONS[s], color=STATUS_COLORS[s])


def live_status_badge(status: str, stage_label: str | None = None, worker_alive: bool = False) -> None:
    """The status of a run whose job may be in flight: "starting" while the worker loads, "running ·
    <stage>" while it runs, else the run's own status (done / failed / cancelled)."""
    if status == "created" and worker_alive:
        st.badge("starting", icon=STATUS_ICONS["created"], color="blue")
    elif status == "running":
        label = "running" + (f" · {stage_label}" if stage_label else "")
        st.badge(md_escape(label), icon=STATUS_ICONS["running"], color=STATUS_COLORS["running"])
    else:
        status_badge(status)


def sidebar_status(run_path: str, status: str, every_s: float = 2.0) -> None:
    """The sidebar's status badge; while the run's job is active it is polled (live state and stage)."""
    if status not in ("created", "running"):
        status_badge(status)
        return

    @st.fragment(run_every=every_s)
    def _poll() -> None:
        try:
            run = cache.load_run(run_path)
            run.reload_meta()
            from clustermine.workflows import jobs

            stage = (run.progress() or {}).get("stage")
            live_status_badge(run.status, stage, bool(jobs.job_state(run.path).get("alive")))
        except ClusterMineError:
            status_badge("corrupt")

    _poll()


def sidebar_log_state(run_path: str) -> None:
    """The run's decision log in a few words (red when it was altered); nothing before the first
    decision or for a run that does not open."""
    try:
        state = log_state(cache.load_run(run_path))
    except (ClusterMineError, OSError):
        return
    text = state.short()
    if text:
        st.caption((":red[:material/gpp_bad: {}]" if not state.ok else ":material/verified_user: {}"
                    if state.kind == "verified" else ":material/link_off: {}").format(md_escape(text)))


def show_error(message: object) -> None:
    """An error box with the message as literal text (messages quote paths and concept names)."""
    st.error(md_escape(str(message), max_len=2000), icon=":material/error:")


def empty_state(text: str, link: tuple[str, str, str] | None = None) -> None:
    """A friendly 'nothing here yet' box with an optional link to the page that fixes it."""
    with st.container(border=True):
        st.markdown(f":gray[{md_escape(text, max_len=500)}]")
        if link:
            page, label, icon = link
            st.page_link(page, label=label, icon=icon)


@contextlib.contextmanager
def guard(what: str = "this action"):
    """Show ClusterMineError messages in an error box; log anything else and show a short notice.

    Streamlit's own control-flow exceptions (st.stop, st.rerun) derive from BaseException and
    pass through untouched.
    """
    try:
        yield
    except ClusterMineError as exc:
        show_error(exc)
    except Exception as exc:  # a bug: keep the page alive, keep the traceback in the server log
        _LOG.error("internal error during %s:\n%s", what, traceback.format_exc())
        show_error(f"internal error during {what}: {type(exc).__name__}: {exc} (details in the server log)")


def metrics_row(items: Sequence[tuple[str, object] | tuple[str, object, str | None]], per_row: int | None = None) -> None:
    """Rows of st.metric tiles: (label, value[, help]); ``per_row`` tiles per row (default: all)."""
    per_row = per_row or len(items)
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, item in zip(cols, items[start:start + per_row]):
            label, value = item[0], item[1]
            col.metric(label, value, help=item[2] if len(item) > 2 else None, border=True)


def thumbnail_grid(items: Iterable[tuple[str, str]], columns: int = 6, size: int = 192,
                   empty: str = "no images") -> int:
    """A grid of (image path, caption) thumbnails; unreadable files get a placeholder. Captions are
    user text (file names): escaped. Returns the number of images shown."""
    items = list(items)
    if not items:
        st.caption(empty)
        return 0
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (path, caption) in zip(cols, items[start:start + columns]):
            data = cache.thumb(path, size)
            with col:
                if data is None:
                    st.markdown(":gray-background[:material/hide_image: unreadable]")
                    st.caption(md_escape(wrap_name(caption), 80))
                else:
                    st.image(data, caption=md_escape(wrap_name(caption), 80), width="stretch")
    return len(items)


def fmt_float(x: float | None, digits: int = 3) -> str:
    return fmt_num(x, digits)


def fmt_pct(x: float | None, digits: int = 1) -> str:
    shown = fmt_num(None if x is None else 100 * x, digits)
    return shown if shown == "–" else f"{shown} %"


def fit_width(values: Iterable[object], header: str, *, min_px: int = 56, max_px: int = 260) -> int:
    """Pixel width of a dataframe column that shows its longest cell and its header whole (~7.5 px
    per character of the 14 px table font, plus padding), within [min_px, max_px]. Streamlit's own
    fit can leave text such as a run label cut ("baselin")."""
    cells = max([len(str(v)) for v in values if v is not None], default=0)
    return int(min(max(7.5 * cells + 26, 6.8 * len(header) + 30, min_px), max_px))


def umap_readiness(status: str) -> str:
    """One plain sentence on how long the first UMAP will take (``projection.umap_state()`` status)."""
    if status == "warm":
        return "UMAP is ready: a map of this size takes seconds."
    if status == "warming":
        return "UMAP is being prepared in the background (one-time set-up of this server, ~15–40 s on 2 cores)."
    if str(status).startswith("failed"):
        return "UMAP could not be prepared in the background; computing it may fail or take longer."
    return "The first UMAP of this server also sets UMAP up once (~15–40 s on 2 cores)."
