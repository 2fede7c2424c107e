"""One self-contained HTML report of a run, to hand to a colleague: openable offline, no external
URL at all (a Content-Security-Policy forbids any fetch; images are small embedded base64 JPEG
thumbnails, charts are inline SVG drawn here).

Contents: the run summary and threshold, one card per cluster (vote histogram, purity, entropy,
typical / atypical members, alerts from :func:`clustermine.method.mining.cluster_alerts`), the concept
table (with each concept's stability when the run records it), the decisions log, and the OOD
metrics of an OOD sample when one is given.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clustermine.workflows import clusterview
from clustermine.core.errors import ClusterMineError, ImageError
from clustermine.method.mining import ClusterStats, cluster_alerts, typical_atypical
from clustermine.core.storage import atomic_write_text
from clustermine.workflows.whatif import run_detector
from clustermine.store.layout import OOD_SAMPLE_DIR
from clustermine.workflows.ood_eval import evaluate_sample, for_report, uploaded_sample
from clustermine.method.images import load_rgb

if TYPE_CHECKING:
    from clustermine.store.run import Run

__all__ = ["typical_atypical", "histogram_svg", "build_report", "write_report", "ood_metrics_for_folder",
           "report_html", "stored_ood_sample"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2430;background:#fafbfc}
h1{margin:0 0 4px} h2{margin-top:32px;border-bottom:1px solid #d9dde3;padding-bottom:4px}
.muted{color:#667085} table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d9dde3;padding:4px 8px;text-align:left;vertical-align:top} th{background:#eef1f5}
.figures{display:flex;flex-wrap:wrap;gap:8px}.fig{background:#fff;border:1px solid #d9dde3;border-radius:8px;
padding:8px 12px;min-width:110px}.fig b{display:block;font-size:20px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
.card{background:#fff;border:1px solid #d9dde3;border-radius:10px;padding:12px 16px}
.card h3{margin:0 0 6px}.alert{background:#fff4e5;border-left:4px solid #f79009;padding:4px 8px;margin:4px 0;
font-size:13px}.ok{color:#12b76a;font-size:13px}.thumbs{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0}
.thumbs figure{margin:0;width:96px;font-size:10px;color:#667085}
.thumbs figcaption{overflow-wrap:anywhere;line-height:1.25}
.thumbs img{width:96px;height:96px;object-fit:cover;border-radius:4px;display:block}
.status-rejected{color:#b42318}.status-accepted,.status-added{color:#027a48}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# ------------------------------------------------------------------------------------ pieces
def thumbnail_data_uri(path: str | os.PathLike, size: int = 96, quality: int = 70) -> str | None:
    """``data:image/jpeg;base64,...`` of a ``size``-pixel thumbnail; None if the file cannot be read."""

    try:
        img = load_rgb(path)
    except (ImageError, OSError):
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _wrap_label(label: str, max_chars: int, max_lines: int = 3) -> list[str]:
    """``label`` in lines of at most ``max_chars`` characters, broken at spaces (a longer word is cut);
    an ellipsis only past ``max_lines`` lines (the full text is in the bar's tooltip)."""
    lines: list[str] = []
    for word in label.split():
        while len(word) > max_chars:
            lines.append(word[:max_chars])
            word = word[max_chars:]
        if lines and len(lines[-1]) + 1 + len(word) <= max_chars:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max_chars - 1] + "…"
    return lines or [""]


def histogram_svg(labels: list[str], counts: list[int], width: int = 460, bar_h: int = 18) -> str:
    """A horizontal bar chart (inline SVG) of vote ``counts`` per concept ``labels``: labels wrap
    over up to three lines instead of being cut; counts are printed as integers at the bar ends."""
    if not counts:
        return '<p class="muted">no votes</p>'
    label_w, gap, line_h, char_w = 190, 6, 14, 7.0  # char_w: a generous 12 px system-font average
    max_chars = int((label_w - 10) // char_w)
    wrapped = [_wrap_label(str(label), max_chars) for label in labels]
    rows_h = [max(bar_h, line_h * len(w) + 4) for w in wrapped]
    height = sum(rows_h) + gap * (len(rows_h) + 1)
    top = max(max(counts), 1)
    parts = [f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="vote histogram">']
    y = gap
    for i, (label, lines, n, row_h) in enumerate(zip(labels, wrapped, counts, rows_h)):
        w = (width - label_w - 40) * n / top
        first = y + (row_h - line_h * len(lines)) / 2 + line_h - 3
        tspans = "".join(f'<tspan x="{label_w - 6}" y="{first + j * line_h:.1f}">{_e(t)}</tspan>'
                         for j, t in enumerate(lines))
        bar_y = y + (row_h - bar_h) / 2
        parts.append(f'<g><title>{_e(label)}: {int(n)} votes</title>'
                     f'<text text-anchor="end" font-size="12">{tspans}</text>')
        parts.append(f'<rect x="{label_w}" y="{bar_y:.1f}" width="{w:.1f}" height="{bar_h}" '
                     f'fill="{"#4f6bed" if i == 0 else "#a4b4f5"}"/>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{bar_y + bar_h - 5:.1f}" font-size="12">{int(n)}</text></g>')
        y += row_h + gap
    parts.append("</svg>")
    return "".join(parts)


def ood_metrics_for_folder(run: Run, folder: str | os.PathLike, limit: int = 500, encoder=None) -> dict:
    """AUROC / FPR95 / ... of held-out ID vs the images of ``folder`` (at most ``limit``), with the
    mined (``before``) and current (``after``) concepts, plus ``n_ood`` and ``skipped``; recorded as
    the run's latest OOD evaluation (:func:`clustermine.workflows.ood_eval.evaluate_sample`)."""

    return evaluate_sample(run, folder, encoder, limit=limit, source="report")


# ------------------------------------------------------------------------------------ the report
def _card(run: Run, s: ClusterStats, alerts: list[str], vocab: list[str], paths: list[str], names: list[str],
          n_thumbs: int, top: int, name: clusterview.ClusterName) -> str:
    title = (f"<s>{_e(name.concept)}</s> <span class=\"status-rejected\">(rejected)</span>" if name.rejected
             else _e(name.label))
    out = [f'<section class="card" id="cluster-{s.cluster}" data-cluster="{s.cluster}">',
           f"<h3>Cluster {s.cluster} · {title}</h3>",
           f'<div class="muted">size {s.size} · purity {s.purity:.0%} · entropy {s.entropy:.2f}'
           + (f" · runner-up {_e(vocab[s.runner_up])} (margin {s.margin:.0%})" if s.runner_up is not None else "")
           + "</div>"]
    out += [f'<div class="alert">⚠ {_e(a)}</div>' for a in alerts]
    if not alerts and s.size:
        out.append('<div class="ok">✓ no alert</div>')
    hist = s.histogram[:top]
    out.append(histogram_svg([vocab[h[0]] for h in hist], [int(h[1]) for h in hist]))
    if len(s.histogram) > top:
        out.append(f'<div class="muted">and {len(s.histogram) - top} other concept(s) with fewer votes</div>')
    typical, atypical = clusterview.typical_atypical(run, s.cluster, n_thumbs)
    for title, rows in (("Most typical", typical), ("Most atypical (possible contaminants)", atypical)):
        if not rows:
            continue
        out.append(f"<div><b>{title}</b></div><div class=\"thumbs\">")
        for r in rows:
            uri = thumbnail_data_uri(paths[r])
            img = f'<img alt="{_e(names[r])}" src="{uri}">' if uri else '<div class="muted">unreadable</div>'
            out.append(f'<figure title="{_e(names[r])}">{img}<figcaption>{_e(names[r])}</figcaption></figure>')
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def _support_text(value) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, (int, float)):
        return f"{float(value):.0%}"
    if isinstance(value, dict):
        return ", ".join(f"{_e(k)}: {float(v):.0%}" if isinstance(v, (int, float)) else f"{_e(k)}: {_e(v)}"
                         for k, v in value.items())
    return _e(value)


def _n_clusters_used(cfg: dict, summary: dict, n_used: int) -> str:
    """The number of clusters the clusterer was given (``n_used``), and why when it is not the
    configured one: "8 (automatic)", "8 (10 requested, clamped)"."""
    requested = summary.get("n_clusters_requested")
    if cfg.get("n_clusters") is None:
        return f"{n_used} (automatic)"
    if requested is not None and int(requested) != n_used:
        return f"{n_used} ({int(requested)} requested, clamped)"
    return str(n_used)


def _sample_name(ood: dict) -> str:
    """The OOD sample as a reader knows it: the folder's name, or where the what-if panel's
    uploaded images came from."""

    name = Path(str(ood.get("folder", ""))).name
    return "uploaded in the what-if panel" if name == OOD_SAMPLE_DIR else name


def _ood_html(ood: dict) -> str:
    rows = []
    for name, label in (("after", "current concepts"), ("before", "mined concepts")):
        m = ood.get(name)
        if m is None:
            rows.append(f"<tr><td>{label}</td><td colspan=4 class=muted>undefined (no positive concept)</td></tr>")
            continue
        rows.append(f"<tr><td>{label}</td><td>{m['auroc']:.4f}</td><td>{m['fpr95']:.4f}</td>"
                    f"<td>{m['aupr_in']:.4f}</td><td>{m['aupr_out']:.4f}</td></tr>")
    when = str(ood.get("measured") or "")[:16].replace("T", " ")
    return (f'<section id="ood"><h2>OOD metrics</h2><p class="muted">held-out ID images vs {ood.get("n_ood")} images '
            f'of the OOD sample {_e(_sample_name(ood))}'
            + (f"; {_e(ood['sampling'])}" if ood.get("sampling") else
               (f' ({ood["skipped"]} skipped)' if ood.get("skipped") else ""))
            + (f"; measured {_e(when)} UTC" if when else "") + "</p>"
            + ('<div class="alert">⚠ measured before later changes to this run (concept edits, exclusions or a '
               "re-mine) and the sample can no longer be read: score an OOD sample again for current numbers</div>"
               if ood.get("current") is False else "")
            + "<table><tr><th>concepts</th><th>AUROC</th><th>FPR95</th><th>AUPR-In</th><th>AUPR-Out</th></tr>"
            + "".join(rows) + "</table></section>")


def build_report(run: Run, *, ood: dict | None = None, n_thumbs: int = 4, top: int = 8) -> str:
    """The report as one HTML string (see the module docstring). ``ood``: the result of
    :func:`ood_metrics_for_folder`, or None."""
    all_stats = run.cluster_stats()
    stats = clusterview.occupied_stats(all_stats)  # empty clusters are counted in the summary, not carded
    alerts = cluster_alerts(stats)
    cluster_names = clusterview.cluster_names(run)
    vocab = run.vocabulary_base()
    paths = run.image_paths()  # by feature row
    names = run.image_names()  # the user's own file names (Run.image_names, as every page shows them)
    summary = run.meta.get("summary") or {}
    det = run_detector(run)
    label = run.meta.get("label") or ""
    concepts = run.concepts()
    edits = run.edits()

    fig = [("images", summary.get("n_images")), ("mining", summary.get("n_mining")),
           ("held out", summary.get("n_holdout")), ("clusters", clusterview.cluster_count_text(summary)),
           ("excluded (not ID)", int(run.excluded_mask().sum())),
           ("with alerts", len(alerts)), ("|Y_pos| now", len(run.positive_concepts())),
           ("mean purity", f"{summary['mean_purity']:.0%}" if summary.get("mean_purity") is not None else "–"),
           ("corpus", summary.get("corpus_size"))]
    cfg = run.config
    settings = ", ".join(f"{k}={_e(_n_clusters_used(cfg, summary, len(all_stats)) if k == 'n_clusters' else cfg.get(k))}"
                         for k in ("encoder", "clusterer", "n_clusters", "corpus", "seed", "holdout_fraction")
                         if k in cfg)
    thr = (f"log-score threshold {det.threshold:.4f} ({_e(det.threshold_rule)})" if det.threshold is not None
           else _e(det.threshold_rule or "no threshold"))
    has_support = any("support" in c.to_dict() for c in concepts)
    created = str(run.meta.get("created") or "?")[:16].replace("T", " ")

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
             f"<title>ClusterMine report · {_e(run.run_id)}</title><style>{_CSS}</style></head><body>",
             f"<header><h1>ClusterMine report · {_e(run.run_id)}</h1>",
             f'<div class="muted">{_e(label) + " · " if label else ""}created {_e(created)} · '
             f'report made {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC</div></header>',
             '<section id="summary"><h2>Run summary</h2><div class="figures">']
    parts += [f'<div class="fig"><span class="muted">{_e(k)}</span><b>{_e("–" if v is None else v)}</b></div>'
              for k, v in fig]
    parts.append(f"</div><p>{settings}</p><p>{thr}</p>")
    parts.append("<p><b>Y_pos:</b> " + _e(", ".join(run.positive_concepts()) or "(empty)") + "</p></section>")

    empty = len(all_stats) - len(stats)
    parts.append(f'<section id="clusters"><h2>Clusters ({len(stats)})</h2>'
                 + (f'<p class="muted">{empty} more cluster(s) were left empty by the clustering.</p>' if empty else "")
                 + '<div class="cards">')
    for s in stats:
        parts.append(_card(run, s, alerts.get(s.cluster, []), vocab, paths, names, n_thumbs, top,
                           cluster_names[s.cluster]))
    parts.append("</div></section>")

    parts.append(f'<section id="concepts"><h2>Concepts ({len(concepts)})</h2><table>'
                 "<tr><th>concept</th><th>status</th><th>source</th><th>clusters</th><th>votes</th><th>purity</th>"
                 + ("<th>stability (support)</th>" if has_support else "") + "<th>updated</th><th>by</th></tr>")
    for c in concepts:
        d = c.to_dict()
        parts.append(f'<tr class="concept" data-concept-id="{_e(c.id)}"><td>{_e(c.text)}</td>'
                     f'<td class="status-{_e(c.status)}">{_e(c.status)}</td><td>{_e(c.source)}</td>'
                     f'<td>{_e(" ".join(map(str, c.clusters)) or "–")}</td><td>{c.votes}</td>'
                     f'<td>{"–" if c.purity is None else f"{c.purity:.2f}"}</td>'
                     + (f"<td>{_support_text(d.get('support'))}</td>" if has_support else "")
                     + f'<td>{_e((c.updated or "")[:19].replace("T", " "))}</td><td>{_e(c.user or "")}</td></tr>')
    parts.append("</table></section>")

    parts.append(f'<section id="decisions"><h2>Decisions log ({len(edits)})</h2>')
    if edits:
        parts.append("<table><tr><th>when</th><th>action</th><th>concept</th><th>by</th></tr>")
        for ed in edits:
            parts.append(f'<tr><td>{_e(str(ed.get("time") or ed.get("ts") or "")[:19].replace("T", " "))}</td>'
                         f'<td>{_e(ed.get("action", ""))}</td><td>{_e(ed.get("text") or ed.get("concept") or "")}</td>'
                         f'<td>{_e(ed.get("user") or "")}</td></tr>')
        parts.append("</table>")
    else:
        parts.append('<p class="muted">no concept edit: Y_pos is as mined</p>')
    parts.append("</section>")
    if ood is not None:
        parts.append(_ood_html(ood))
    parts.append("</body></html>")
    return "\n".join(parts)


def stored_ood_sample(run: Run) -> Path | None:
    """The OOD sample uploaded in the app's what-if panel (``ood_sample/``), None when there is none."""

    return uploaded_sample(run)


def report_html(run: Run, *, encoder=None) -> str:
    """The report of ``run``, with the OOD metrics of its latest OOD evaluation whichever sample it
    was (a server folder or uploaded images in the what-if panel, ``clustermine report --ood``:
    :func:`clustermine.workflows.ood_eval.for_report`); an unreadable sample is left out, never an error."""

    return build_report(run, ood=for_report(run, encoder))


def write_report(run: Run, out: str | os.PathLike, *, ood_dir: str | os.PathLike | None = None,
                 ood_limit: int = 500, encoder=None) -> Path:
    """Write :func:`build_report` to the file ``out`` (atomically); with ``ood_dir`` the OOD metrics
    of that image folder are included. Returns the file's path."""
    out = Path(out)
    if out.is_dir():
        raise ClusterMineError(f"{out}: is a folder; give the HTML file to write, e.g. {out / 'report.html'}")
    ood = ood_metrics_for_folder(run, ood_dir, ood_limit, encoder) if ood_dir else None
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, build_report(run, ood=ood))
    return out
