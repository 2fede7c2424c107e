"""Plotly figures. Every trace that shows images carries the feature row id in ``customdata[0]``
(selections are mapped back through it, never through point order); all user text in hover
labels is entity-escaped; scatter plots use WebGL (``Scattergl``)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .text import hover_escape

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6",
           "#9D755D", "#6B8E23", "#1F77B4", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#17BECF"]
HELD_OUT_COLOR = "#9E9E9E"
EXCLUDED_COLOR = "#5F5F5F"
_LAYOUT = dict(margin=dict(l=10, r=10, t=30, b=10), template="plotly_white",
               font=dict(family="Inter, system-ui, sans-serif", size=12))


def cluster_map(coords: np.ndarray, rows: np.ndarray, cluster: np.ndarray, names: list[str],
                concept: list[str], color_by: str, values: np.ndarray | None = None, height: int = 620,
                excluded: np.ndarray | None = None) -> go.Figure:
    """2-D map of images. ``coords`` [n, 2] for feature ``rows`` [n]; ``cluster`` / ``names`` /
    ``concept`` (place labels: cluster name, 'held out' or 'excluded (not ID)') aligned with
    ``rows``. ``color_by``: cluster | concept (categorical, one trace per group) or purity | score
    (continuous, ``values`` aligned with ``rows``). Images marked not ID (``excluded``, bool [n])
    are drawn in their own grey-cross trace whatever the colouring, so the map shows them."""
    excluded = np.zeros(len(rows), dtype=bool) if excluded is None else np.asarray(excluded, dtype=bool)
    custom_base = np.empty((len(rows), 4), dtype=object)
    custom_base[:, 0] = rows
    custom_base[:, 1] = [hover_escape(n) for n in names]
    custom_base[:, 2] = ["held out" if c < 0 else str(c) for c in cluster]
    custom_base[:, 3] = [hover_escape(c) for c in concept]
    hover = ("<b>%{customdata[1]}</b><br>cluster %{customdata[2]}<br>concept: %{customdata[3]}"
             "<br>row %{customdata[0]}")
    fig = go.Figure()
    kept = np.flatnonzero(~excluded)
    if color_by in ("cluster", "concept"):
        keys = [_cluster_label(cluster[i], concept[i]) if color_by == "cluster" else concept[i] for i in kept]
        groups: dict[str, list[int]] = {}
        for i, k in zip(kept, keys):
            groups.setdefault(k, []).append(int(i))
        first_cluster = {k: int(cluster[idx[0]]) for k, idx in groups.items()}
        ordered = sorted(groups, key=lambda k: (k == "held out", first_cluster[k] if color_by == "cluster" else 0,
                                                _natural(k)))
        for j, k in enumerate(ordered):
            idx = np.array(groups[k])
            held = k == "held out"
            color = HELD_OUT_COLOR if held else PALETTE[j % len(PALETTE)]
            fig.add_trace(go.Scattergl(
                x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=hover_escape(k, 48),
                customdata=custom_base[idx], hovertemplate=hover + "<extra></extra>",
                marker=dict(size=7, color=color, opacity=0.85, symbol="circle-open" if held else "circle",
                            line=dict(width=1.5 if held else 0, color=color))))
    else:
        vals = np.asarray(values, dtype=float) if values is not None else np.zeros(len(rows))
        label = "purity" if color_by == "purity" else "log score"
        fig.add_trace(go.Scattergl(
            x=coords[kept, 0], y=coords[kept, 1], mode="markers", name=label, customdata=custom_base[kept],
            hovertemplate=hover + f"<br>{label} %{{marker.color:.3f}}<extra></extra>",
            marker=dict(size=7, color=vals[kept], colorscale="Viridis", showscale=True, opacity=0.9,
                        colorbar=dict(title=label, thickness=12))))
    if excluded.any():
        idx = np.flatnonzero(excluded)
        fig.add_trace(go.Scattergl(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=f"excluded (not ID): {len(idx):,}",
            customdata=custom_base[idx], hovertemplate=hover + "<extra></extra>",
            marker=dict(size=9, color=EXCLUDED_COLOR, symbol="x-thin", line=dict(width=2, color=EXCLUDED_COLOR))))
    fig.update_layout(height=height, dragmode="lasso", legend=dict(itemsizing="constant", title=None),
                      xaxis=dict(showticklabels=False, title=None, zeroline=False),
                      yaxis=dict(showticklabels=False, title=None, zeroline=False, scaleanchor="x"),
                      **_LAYOUT)
    return fig


def _cluster_label(cluster_id: int, concept: str) -> str:
    """Legend entry of one cluster: its id and its winning concept ("cluster 3 · tench")."""
    return "held out" if cluster_id < 0 else f"cluster {cluster_id} · {concept}"


def _natural(k: str):
    parts = k.split()
    return (0, int(parts[-1])) if parts and parts[-1].isdigit() else (1, k)


def vote_histogram(labels: list[str], counts: list[int], winner_first: bool = True, height: int = 240) -> go.Figure:
    """Horizontal bar chart of the top concepts' votes in one cluster (winner on top)."""
    labels = [hover_escape(l, 40) for l in labels]
    colors = ["#4C78A8" if (i == 0 and winner_first) else "#A0BBD8" for i in range(len(labels))]
    fig = go.Figure(go.Bar(x=counts[::-1], y=labels[::-1], orientation="h", marker_color=colors[::-1],
                           text=counts[::-1], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: %{x} votes<extra></extra>"))
    # votes are counts: integer ticks only; automargin keeps the axis title below its tick labels
    fig.update_layout(height=height, showlegend=False,
                      xaxis=dict(title=dict(text="votes", standoff=6), rangemode="tozero", automargin=True,
                                 tickmode="linear", tick0=0, dtick=count_dtick(max(counts, default=0)),
                                 tickformat="d"),
                      yaxis=dict(automargin=True), **_LAYOUT)
    return fig


def count_dtick(max_count: int, max_ticks: int = 6) -> int:
    """Tick step of a count axis from 0 to ``max_count``: an integer 1, 2 or 5 × 10^k giving at most
    ``max_ticks`` ticks (plotly would otherwise put ticks at 0.5 for small counts)."""
    step = 1
    while max_count / step > max_ticks - 1:
        step = _next_nice(step)
    return step


def _next_nice(step: int) -> int:
    """1 → 2 → 5 → 10 → 20 → 50 → 100 ..."""
    mag = 10 ** (len(str(step)) - 1)
    lead = step // mag
    return {1: 2, 2: 5, 5: 10}[lead] * mag


def score_histograms(before: np.ndarray, after: np.ndarray, threshold: float | None, height: int = 260,
                     extra: dict[str, np.ndarray] | None = None) -> go.Figure:
    """Overlaid histograms of held-out ID log scores with the mined and the current concepts."""
    fig = go.Figure()
    series = {"mined concepts": before, "current concepts": after, **(extra or {})}
    colors = ["#A0BBD8", "#4C78A8", "#E45756", "#F58518"]
    finite = {name: np.asarray(vals, dtype=float) for name, vals in series.items()}
    finite = {name: v[np.isfinite(v)] for name, v in finite.items()}
    pooled = np.concatenate([v for v in finite.values()] + [np.zeros(0)])
    if threshold is not None and np.isfinite(threshold) and len(pooled):
        pooled = np.append(pooled, threshold)  # the bins span the axis the threshold line stretches
    # one set of 40 bins for every series (comparable bars), so the tallest count is known here
    edges = np.histogram_bin_edges(pooled, bins=40) if len(pooled) else np.array([0.0, 1.0])
    top = max([int(np.histogram(v, bins=edges)[0].max()) for v in finite.values() if len(v)], default=0)
    for (name, v), color in zip(finite.items(), colors):
        if len(v):
            fig.add_trace(go.Histogram(x=v, name=name, opacity=0.6, marker_color=color, autobinx=False,
                                       xbins=dict(start=float(edges[0]), size=float(edges[1] - edges[0]) or 1.0,
                                                  end=float(edges[-1] + (edges[1] - edges[0]) / 2))))
    if threshold is not None and np.isfinite(threshold):
        fig.add_vline(x=threshold, line_dash="dash", line_color="#333", annotation_text="threshold",
                      annotation_position="top right")  # inside the plot: never over the count ticks
    fig.update_layout(barmode="overlay", height=height, xaxis=dict(title="log score (higher = more ID)", automargin=True),
                      yaxis=dict(title="images", automargin=True, range=[0, max(top, 1) * 1.15], tickmode="linear",
                                 tick0=0, dtick=count_dtick(top), tickformat="d"),
                      legend=dict(orientation="h", y=1.12), **_LAYOUT)
    return fig


# ------------------------------------------------------------------------------------ large maps
def category_colors(ids: np.ndarray) -> np.ndarray:
    """Hex colour per integer category id (cluster or concept index): the palette by id, grey for
    negative ids (held out). object [n]."""
    ids = np.asarray(ids).astype(np.int64)
    pal = np.array(PALETTE + [HELD_OUT_COLOR], dtype=object)
    return pal[np.where(ids < 0, len(PALETTE), ids % len(PALETTE))]


def _rgb(hex_colors) -> np.ndarray:
    return np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in hex_colors], dtype=np.uint8)


def _viridis_lut(n: int = 256) -> np.ndarray:
    from plotly.colors import sample_colorscale, unlabel_rgb

    cols = sample_colorscale("Viridis", list(np.linspace(0, 1, n)))
    return np.array([unlabel_rgb(c) for c in cols], dtype=float).round().astype(np.uint8)


def raster_rgba(counts: np.ndarray, *, labels: np.ndarray | None = None, values: np.ndarray | None = None,
                vrange: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """RGBA image uint8 [H, W, 4] (row 0 = top) of a density raster (row 0 = lowest y): opacity from
    log(count) so every image shows; colour from ``labels`` (category per pixel, see
    :func:`category_colors`), from ``values`` (mean per pixel on Viridis over ``vrange``) or a
    single blue."""
    h, w = counts.shape
    img = np.zeros((h, w, 4), dtype=np.uint8)
    filled = counts > 0
    if not filled.any():
        return img
    alpha = 0.35 + 0.65 * np.log1p(counts) / np.log1p(counts.max())
    img[..., 3] = np.where(filled, np.round(255 * alpha), 0).astype(np.uint8)
    if labels is not None:
        keys, inv = np.unique(labels, return_inverse=True)
        img[..., :3] = _rgb(category_colors(keys))[inv.reshape(h, w)]
    elif values is not None:
        lo, hi = vrange
        t = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        img[..., :3] = _viridis_lut()[np.round(t * 255).astype(int)]
        img[..., :3] = np.where(np.isnan(values)[..., None], _rgb([HELD_OUT_COLOR])[0], img[..., :3])
    else:
        img[..., :3] = _rgb([PALETTE[0]])[0]
    img[~filled] = 0
    return img[::-1]


def png_data_uri(rgba: np.ndarray) -> str:
    """PNG data URI of an RGBA uint8 [H, W, 4] image."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def density_map(rgba: np.ndarray, extent: tuple[float, float, float, float], coords: np.ndarray,
                rows: np.ndarray, cluster: np.ndarray, names: list[str], concept: list[str], color_by: str,
                point_colors: np.ndarray | None = None, values: np.ndarray | None = None,
                vrange: tuple[float, float] = (0.0, 1.0), height: int = 620,
                excluded_coords: np.ndarray | None = None) -> go.Figure:
    """Map of a large run: every image as the density image ``rgba`` (see :func:`raster_rgba`)
    stretched over ``extent`` (x0, x1, y0, y1), and a sample of images as one WebGL trace on top
    (``coords`` [n, 2] of feature ``rows`` [n]; ``cluster`` / ``names`` / ``concept`` aligned),
    coloured by ``point_colors`` (categorical) or ``values`` (Viridis over ``vrange``). The images
    marked not ID (``excluded_coords`` [m, 2]) are drawn on top as grey crosses."""
    x0, x1, y0, y1 = extent
    custom = np.empty((len(rows), 4), dtype=object)
    custom[:, 0] = rows
    custom[:, 1] = [hover_escape(n) for n in names]
    custom[:, 2] = ["held out" if c < 0 else str(c) for c in cluster]
    custom[:, 3] = [hover_escape(c) for c in concept]
    hover = ("<b>%{customdata[1]}</b><br>cluster %{customdata[2]}<br>concept: %{customdata[3]}"
             "<br>row %{customdata[0]}")
    if color_by in ("purity", "score"):
        label = "purity" if color_by == "purity" else "log score"
        marker = dict(size=4, color=np.asarray(values, dtype=float), colorscale="Viridis", cmin=vrange[0],
                      cmax=vrange[1], showscale=True, opacity=0.8, colorbar=dict(title=label, thickness=12))
        hover += f"<br>{label} %{{marker.color:.3f}}"
    else:
        marker = dict(size=4, color=list(point_colors) if point_colors is not None else PALETTE[0], opacity=0.8)
    fig = go.Figure(go.Scattergl(x=coords[:, 0], y=coords[:, 1], mode="markers", name="sampled images",
                                 customdata=custom, hovertemplate=hover + "<extra></extra>", marker=marker,
                                 showlegend=False))
    if excluded_coords is not None and len(excluded_coords):
        fig.add_trace(go.Scattergl(x=excluded_coords[:, 0], y=excluded_coords[:, 1], mode="markers",
                                   name=f"excluded (not ID): {len(excluded_coords):,}", hoverinfo="skip",
                                   marker=dict(size=8, color=EXCLUDED_COLOR, symbol="x-thin",
                                               line=dict(width=2, color=EXCLUDED_COLOR))))
    fig.add_layout_image(source=png_data_uri(rgba), xref="x", yref="y", x=x0, y=y1, sizex=x1 - x0, sizey=y1 - y0,
                         sizing="stretch", layer="below", opacity=1.0)
    fig.update_layout(height=height, dragmode="lasso",
                      xaxis=dict(showticklabels=False, title=None, zeroline=False, showgrid=False, range=[x0, x1]),
                      yaxis=dict(showticklabels=False, title=None, zeroline=False, showgrid=False, range=[y0, y1],
                                 scaleanchor="x"),
                      **_LAYOUT)
    return fig


# ------------------------------------------------------------------------------------ evaluations
def roc_curves(curves: list[tuple[str, np.ndarray, np.ndarray, float]], height: int = 380) -> go.Figure:
    """ROC curves, ID positive: one line per OOD set from (name, FPR [K], TPR [K], AUROC), with the
    chance diagonal."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", hoverinfo="skip",
                             line=dict(color="#BBB", dash="dot", width=1)))
    for i, (name, fpr, tpr, auc) in enumerate(curves):
        label = f"{hover_escape(name, 40)} (AUROC {auc:.3f})"
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=label, line=dict(color=PALETTE[i % len(PALETTE)],
                                 width=2, shape="linear"),
                                 hovertemplate=f"{hover_escape(name, 40)}<br>FPR %{{x:.3f}}<br>TPR %{{y:.3f}}<extra></extra>"))
    fig.update_layout(height=height, xaxis=dict(title="false-positive rate (OOD taken for ID)", range=[0, 1],
                                                 constrain="domain", automargin=True),
                      yaxis=dict(title="true-positive rate (ID kept)", range=[0, 1.02], automargin=True),
                      legend=dict(orientation="h", y=-0.25), **_LAYOUT)
    return fig


def id_ood_histogram(name: str, edges: np.ndarray, id_share: np.ndarray, ood_share: np.ndarray, threshold: float,
                     tpr_target: float, height: int = 300) -> go.Figure:
    """Overlaid ID and OOD score histograms (shares of each set on shared bin ``edges`` [B + 1]) with
    the threshold that keeps ``tpr_target`` of ID drawn as a dashed line."""
    edges = np.asarray(edges, dtype=float)
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for label, share, color in (("ID", id_share, PALETTE[0]), (f"OOD: {hover_escape(name, 40)}", ood_share, PALETTE[1])):
        fig.add_trace(go.Bar(x=centers, y=100 * np.asarray(share, dtype=float), width=widths, name=label, opacity=0.6,
                             marker_color=color, hovertemplate="log score %{x:.3f}<br>%{y:.1f} %<extra></extra>"))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#333",
                  annotation_text=f"threshold (keeps ≥ {tpr_target:.0%} of ID)", annotation_position="top left")
    fig.update_layout(barmode="overlay", bargap=0, height=height,
                      xaxis=dict(title="log score (higher = more ID)", automargin=True),
                      yaxis=dict(title="share of the set (%)", automargin=True, rangemode="tozero"),
                      legend=dict(orientation="h", y=1.15), **_LAYOUT)
    return fig
