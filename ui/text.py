"""Rendering user-provided text (concept names, file names) as text, never as markup."""

from __future__ import annotations

import html
import re

# Everything CommonMark lets us backslash-escape that Streamlit's Markdown could interpret
# (emphasis, links, images, headings, tables, HTML, math, :directives: and :colour[...] tags).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'])")


def md_escape(text: object, max_len: int | None = 200) -> str:
    """``text`` escaped for use inside a Markdown string (st.markdown, captions, headings).

    Newlines become spaces; the result renders literally, e.g. ``<script>`` shows as ``<script>``.
    """
    s = str(text).replace("\r", " ").replace("\n", " ")
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", s)


def hover_escape(text: object, max_len: int = 120) -> str:
    """``text`` for plotly hover labels / tick labels (plotly parses a little HTML): entity-escaped."""
    s = str(text)
    if len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return html.escape(s, quote=False)


def wrap_name(name: object) -> str:
    """A file name with zero-width break opportunities after ``_ - . /``, so a long name wraps at
    its separators instead of overflowing or breaking mid-word (escape it afterwards as usual)."""
    return re.sub(r"([_\-./])", "\\1\u200b", str(name))


def md_code(text: object, max_len: int | None = 300) -> str:
    """``text`` as an inline Markdown code span (rendered literally; backticks neutralised)."""
    s = str(text).replace("\r", " ").replace("\n", " ").replace("`", "ʼ")
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return f"`{s}`"


def fmt_num(x: object, digits: int = 2) -> str:
    """A number with ``digits`` decimals that never reads "-0.00": values that round to zero print
    without a sign. None / NaN / non-numbers give "–"."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    if v != v:  # NaN
        return "–"
    out = f"{v:.{digits}f}"
    if out.startswith("-") and float(out) == 0.0:
        out = out[1:]
    return out


def clean_zero(x: float, digits: int) -> float:
    """``x`` rounded to ``digits`` decimals with a negative zero turned into 0.0 (for tables that
    format numbers themselves)."""
    return round(float(x), digits) + 0.0
