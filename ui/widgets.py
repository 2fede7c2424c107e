"""Small visual building blocks shared by the pages."""

from __future__ import annotations

import contextlib
import logging
import traceback
from pathlib import Path
from typing import Iterable, Sequence

import streamlit as st

from clustermine.errors import ClusterMineError

from . import cache
from .text import md_escape

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
                    st.caption(md_escape(caption, 60))
                else:
                    st.image(data, caption=md_escape(caption, 60), width="stretch")
    return len(items)


def fmt_float(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"
