"""One self-contained HTML report of a run, to hand to a colleague: openable offline, no external
URL at all (a Content-Security-Policy forbids any fetch; images are small embedded base64 JPEG
thumbnails, charts are inline SVG drawn here).

Contents: the run summary and threshold, one card per cluster (vote histogram, purity, entropy,
typical / atypical members, alerts from :func:`clustermine.method.mining.cluster_alerts`), the concept
table (with each concept's stability when the run records it), the decision log (its verified state,
:mod:`clustermine.workflows.decisions`, and who did what), the OOD metrics of an OOD sample when one
is given, and the run's latest stored evaluation when it has one (table, ROC curves, ID vs OOD score
histograms: :mod:`clustermine.workflows.evaluation_store`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from clustermine.workflows import clusterview, decisions
from clustermine.core.config import DEFAULT_TPR
from clustermine.core.errors import ClusterMineError, ImageError
from clustermine.method.mining import ClusterStats, cluster_alerts, typical_atypical
from clustermine.core.storage import atomic_write_text
from clustermine.workflows.whatif import run_detector
from clustermine.store.layout import OOD_SAMPLE_DIR
from clustermine.workflows.ood_eval import evaluate_sample, for_report, uploaded_sample
from clustermine.workflows import evaluation_store
from clustermine.method.images import load_rgb

if TYPE_CHECKING:
    from clustermine.store.run import Run

__all__ = ["typical_atypical", "histogram_svg", "roc_svg", "score_hist_svg", "build_report", "write_report", "ood_metrics_for_folder",
           "report_html", "stored_ood_sample"]

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CURVE_COLORS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#9D755D", "#17BECF")
ID_COLOR, OOD_COLOR = "#4C78A8", "#F58518"


def _escape(value: object) -> Markup:
    """Autoescaping with the stdlib's entities (:func:`html.escape`, ``'`` as ``&#x27;``): the report's
    bytes stay what they were before the template, which readers and tests match with html.escape.
    Markup built in code (the histogram SVG) passes unchanged."""
    if hasattr(value, "__html__"):
        return value  # type: ignore[return-value]
    return Markup(html.escape(str(value), quote=True))


def _when(value: object, n: int) -> str:
    """A stored ISO time as the report prints it: its first ``n`` characters, "T" as a space."""
    return str(value or "")[:n].replace("T", " ")


def _support_text(value) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, (int, float)):
        return f"{float(value):.0%}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {float(v):.0%}" if isinstance(v, (int, float)) else f"{k}: {v}"
                         for k, v in value.items())
    return str(value)


@functools.lru_cache(maxsize=1)
def _templates() -> Environment:
    """The report's Jinja2 templates (``clustermine/templates``), autoescaped."""
    env = Environment(loader=PackageLoader("clustermine", "templates"), autoescape=True, finalize=_escape,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fixed=lambda v, digits: f"{float(v):.{digits}f}", pct=lambda v: f"{float(v):.0%}",
                       when=_when, support=_support_text)
    return env


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
    rows: list[dict] = []
    label_w, gap, line_h, char_w = 190, 6, 14, 7.0  # char_w: a generous 12 px system-font average
    max_chars = int((label_w - 10) // char_w)
    top = max(max(counts, default=0), 1)
    y = gap
    for i, (label, n) in enumerate(zip(labels, counts)):
        lines = _wrap_label(str(label), max_chars)
        row_h = max(bar_h, line_h * len(lines) + 4)
        first = y + (row_h - line_h * len(lines)) / 2 + line_h - 3
        rows.append({"label": label, "n": int(n), "w": (width - label_w - 40) * n / top,
                     "bar_y": y + (row_h - bar_h) / 2, "fill": "#4f6bed" if i == 0 else "#a4b4f5",
                     "lines": [(first + j * line_h, t) for j, t in enumerate(lines)]})
        y += row_h + gap
    svg = _templates().get_template("histogram.svg.j2").render(
        rows=rows, width=width, height=y, label_w=label_w, bar_h=bar_h)
    return Markup(svg)  # built by the autoescaped template: safe to embed


def roc_svg(figs: list[evaluation_store.SetFigure], width: int = 340, height: int = 320) -> str:
    """ROC curves (inline SVG), one polyline per OOD set of ``figs`` (:func:`evaluation_store.figure_data`)."""
    x0, y0 = 46, 10
    pw, ph = width - x0 - 12, height - y0 - 44

    def pt(fx: float, ty: float) -> tuple[float, float]:
        return x0 + fx * pw, y0 + (1 - ty) * ph

    curves = [{"name": f.name, "auroc": f.auroc, "color": CURVE_COLORS[i % len(CURVE_COLORS)],
               "points": " ".join("{:.1f},{:.1f}".format(*pt(float(a), float(b))) for a, b in zip(f.fpr, f.tpr))}
              for i, f in enumerate(figs)]
    ticks = [{"x": pt(v, 0)[0], "y": pt(0, v)[1], "label": f"{v:g}"} for v in (0.0, 0.25, 0.5, 0.75, 1.0)]
    svg = _templates().get_template("roc.svg.j2").render(width=width, height=height, x0=x0, y0=y0, pw=pw, ph=ph,
                                                         curves=curves, ticks=ticks)
    return Markup(svg)  # built by the autoescaped template: safe to embed


def score_hist_svg(f: evaluation_store.SetFigure, width: int = 440, height: int = 210) -> str:
    """ID vs OOD score histogram of one OOD set (inline SVG, shares of each set on shared bins) with the
    threshold that keeps ``f.tpr_target`` of ID as a dashed line."""
    x0, y0 = 40, 8
    pw, ph = width - x0 - 10, height - y0 - 38
    lo, hi = float(f.edges[0]), float(f.edges[-1])
    top = max(float(f.id_share.max()), float(f.ood_share.max()), 1e-12)

    def px(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * pw

    bars = []
    for cls, share, fill, who in (("id", f.id_share, ID_COLOR, "ID"), ("ood", f.ood_share, OOD_COLOR, f"OOD {f.name}")):
        for k, v in enumerate(share):
            if v > 0:
                h = float(v) / top * ph
                bars.append({"cls": cls, "x": px(float(f.edges[k])), "w": px(float(f.edges[k + 1])) - px(float(f.edges[k])),
                             "y": y0 + ph - h, "h": h, "fill": fill,
                             "title": f"{who}: {float(v):.1%} in [{f.edges[k]:.3f}, {f.edges[k + 1]:.3f})"})
    ticks = [{"x": px(v), "label": f"{v:.2f}", "anchor": "start" if k == 0 else "end" if k == 4 else "middle"}
             for k, v in enumerate(np.linspace(lo, hi, 5))]  # end ticks anchored inside: never cut
    svg = _templates().get_template("scores.svg.j2").render(
        width=width, height=height, x0=x0, y0=y0, pw=pw, ph=ph, bars=bars, ticks=ticks, name=f.name,
        thr_x=px(f.threshold), threshold=f.threshold, tpr=f.tpr_target, top_label=f"{top:.0%}")
    return Markup(svg)  # built by the autoescaped template: safe to embed


def _evaluation(run: Run, tpr: float = DEFAULT_TPR) -> dict | None:
    """What the template's Evaluation section shows of the run's latest stored evaluation; None when
    it has none; only the reason when it cannot be read (the rest of the report stands)."""
    try:
        ev = evaluation_store.latest_evaluation(run)
    except ClusterMineError as exc:
        return {"error": str(exc)}
    if ev is None:
        return None
    figs = evaluation_store.figure_data(ev, tpr)
    table = evaluation_store.table_rows(ev)
    return {"error": None, "measured": ev.measured, "stale": ev.stale, "id": ev.result.get("id"),
            "columns": list(table[0]) if table else [], "rows": [list(r.values()) for r in table],
            "roc": roc_svg(figs) if figs else None, "tpr": tpr,
            "legend": [(CURVE_COLORS[i % len(CURVE_COLORS)], f.name, f.auroc) for i, f in enumerate(figs)],
            "sets": [{"name": f.name, "svg": score_hist_svg(f), "id_kept": f.id_kept, "ood_passed": f.ood_passed,
                      "n_id": f.n_id, "n_ood": f.n_ood} for f in figs]}


def ood_metrics_for_folder(run: Run, folder: str | os.PathLike, limit: int = 500, encoder=None) -> dict:
    """AUROC / FPR95 / ... of held-out ID vs the images of ``folder`` (at most ``limit``), with the
    mined (``before``) and current (``after``) concepts, plus ``n_ood`` and ``skipped``; recorded as
    the run's latest OOD evaluation (:func:`clustermine.workflows.ood_eval.evaluate_sample`)."""

    return evaluate_sample(run, folder, encoder, limit=limit, source="report")


# ------------------------------------------------------------------------------------ the report
def _card(run: Run, s: ClusterStats, alerts: list[str], vocab: list[str], paths: list[str], names: list[str],
          n_thumbs: int, top: int, name: clusterview.ClusterName) -> dict:
    """What the template's card of cluster ``s`` shows."""
    hist = s.histogram[:top]
    typical, atypical = clusterview.typical_atypical(run, s.cluster, n_thumbs)
    return {"cluster": s.cluster, "rejected": name.rejected, "concept": name.concept, "label": name.label,
            "size": s.size, "purity": s.purity, "entropy": s.entropy, "margin": s.margin,
            "runner_up": None if s.runner_up is None else vocab[s.runner_up], "alerts": alerts,
            "histogram": histogram_svg([vocab[h[0]] for h in hist], [int(h[1]) for h in hist]),
            "more": max(len(s.histogram) - top, 0),
            "members": [(title, [(names[r], thumbnail_data_uri(paths[r])) for r in rows])
                        for title, rows in (("Most typical", typical),
                                            ("Most atypical (possible contaminants)", atypical))]}


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


def _ood(ood: dict) -> dict:
    """What the template's OOD section shows of an OOD evaluation (:func:`ood_metrics_for_folder`)."""
    return {"n_ood": ood.get("n_ood"), "sample": _sample_name(ood), "sampling": ood.get("sampling"),
            "skipped": ood.get("skipped"), "measured": ood.get("measured"), "current": ood.get("current"),
            "rows": [(label, ood.get(name)) for name, label in (("after", "current concepts"),
                                                                ("before", "mined concepts"))]}


def build_report(run: Run, *, ood: dict | None = None, n_thumbs: int = 4, top: int = 8) -> str:
    """The report as one HTML string (see the module docstring), from the autoescaped template
    ``templates/report.html.j2``. ``ood``: the result of :func:`ood_metrics_for_folder`, or None."""
    all_stats = run.cluster_stats()
    stats = clusterview.occupied_stats(all_stats)  # empty clusters are counted in the summary, not carded
    alerts = cluster_alerts(stats)
    cluster_names = clusterview.cluster_names(run)
    vocab = run.vocabulary_base()
    paths = run.image_paths()  # by feature row
    names = run.image_names()  # the user's own file names (Run.image_names, as every page shows them)
    summary = run.meta.get("summary") or {}
    det = run_detector(run)
    concepts = run.concepts()
    log = decisions.log_state(run)

    figures = [("images", summary.get("n_images")), ("mining", summary.get("n_mining")),
               ("held out", summary.get("n_holdout")), ("clusters", clusterview.cluster_count_text(summary)),
               ("excluded (not ID)", int(run.excluded_mask().sum())),
               ("with alerts", len(alerts)), ("|Y_pos| now", len(run.positive_concepts())),
               ("mean purity", f"{summary['mean_purity']:.0%}" if summary.get("mean_purity") is not None else "–"),
               ("corpus", summary.get("corpus_size"))]
    cfg = run.config
    settings = [(k, _n_clusters_used(cfg, summary, len(all_stats)) if k == "n_clusters" else cfg.get(k))
                for k in ("encoder", "clusterer", "n_clusters", "corpus", "seed", "holdout_fraction") if k in cfg]
    threshold = (f"log-score threshold {det.threshold:.4f} ({det.threshold_rule})" if det.threshold is not None
                 else det.threshold_rule or "no threshold")
    cards = [_card(run, s, alerts.get(s.cluster, []), vocab, paths, names, n_thumbs, top, cluster_names[s.cluster])
             for s in stats]
    return _templates().get_template("report.html.j2").render(
        csp=Markup(CSP), run_id=run.run_id,  # our constant, quoted as written
        label=run.meta.get("label") or "", created=run.meta.get("created") or "?",
        made=f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M}",
        figures=[(k, "–" if v is None else v) for k, v in figures], settings=settings, threshold=threshold,
        y_pos=run.positive_concepts(), cards=cards, n_empty=len(all_stats) - len(stats), concepts=concepts,
        has_support=any("support" in c.to_dict() for c in concepts), log_state=log.message(), log_kind=log.kind,
        decisions=decisions.decisions(run, state=log), ood=None if ood is None else _ood(ood),
        evaluation=_evaluation(run), id_color=ID_COLOR, ood_color=OOD_COLOR)


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
