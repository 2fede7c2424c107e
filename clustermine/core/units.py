"""Values as people read them: durations, and text cells that a spreadsheet will not run as formulas."""

from __future__ import annotations


def fmt_duration(seconds: float) -> str:
    """``seconds`` as a rounded human duration: '40 s', '3 min', '1 h 05 min'."""
    s = max(float(seconds), 0.0)
    if s < 60:
        return f"{max(1, round(s))} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def csv_safe(value):
    """Neutralise spreadsheet formulas: text starting with = + - @ (or a tab / CR) gets a leading '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
