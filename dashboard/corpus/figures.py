"""Figures of the Corpus tab: pure functions from numpy arrays to plotly figure dicts (no store, no Dash).

Numeric arrays go out as float32 typed arrays (``attnviz.dashboard.figjson.typed``); only short label lists (head
names, hover lines, pattern names) are sent as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attnviz.dashboard.figjson import Figure, figure, typed
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.style import SELECT_COLOUR
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS

COLOUR_A = "#1f77b4"
COLOUR_B = "#d62728"
#: One colour per pattern label, in PATTERN_LABELS order.
PATTERN_COLOURS: dict[str, str] = {
    "previous": "#1f77b4", "next": "#17becf", "self": "#9467bd", "first": "#d62728", "sep": "#ff7f0e",
    "punct": "#8c564b", "broad": "#2ca02c", "heterogeneous": "#d9d9d9",
}

__all__ = ["COLOUR_A", "COLOUR_B", "HISTOGRAM_BINS", "difference_figure", "distribution_figure", "heatmap_figure",
           "histogram_figure", "shared_edges",
           "layer_difference_figure", "pattern_figure", "profile_figure", "relpos_figure",
           "similarity_figure", "similarity_shapes", "head_name", "parse_head_name"]


def head_name(layer: int, head: int) -> str:
    """``L3H5``: the label of a head on the similarity map."""
    return f"L{layer}H{head}"


def parse_head_name(name: str) -> tuple[int, int] | None:
    """Inverse of :func:`head_name` (None for anything else)."""
    if not isinstance(name, str) or not name.startswith("L") or "H" not in name:
        return None
    layer, _, head = name[1:].partition("H")
    return (int(layer), int(head)) if layer.isdigit() and head.isdigit() else None


def _grid_axes(n_layers: int, n_heads: int) -> dict[str, Any]:
    return {
        "xaxis": {"title": {"text": "head"}, "dtick": 1 if n_heads <= 16 else None, "showgrid": False,
                  "zeroline": False, "range": [-0.5, n_heads - 0.5]},
        "yaxis": {"title": {"text": "layer"}, "dtick": 1 if n_layers <= 16 else None, "autorange": "reversed",
                  "showgrid": False, "zeroline": False},
    }


def _grid_xy(n_layers: int, n_heads: int) -> dict[str, Any]:
    """x (heads) and y (layers) of a layer × head heatmap, with a 1 px gap between cells."""
    return {"x": typed(np.arange(n_heads)), "y": typed(np.arange(n_layers)), "xgap": 1, "ygap": 1}


def _selected_shape(selected: tuple[int, int] | None, n_layers: int, n_heads: int) -> list[dict[str, Any]]:
    if selected is None or not (0 <= selected[0] < n_layers and 0 <= selected[1] < n_heads):
        return []
    layer, head = selected
    return [{"type": "rect", "xref": "x", "yref": "y", "x0": head - 0.5, "x1": head + 0.5, "y0": layer - 0.5,
             "y1": layer + 0.5, "line": {"color": SELECT_COLOUR, "width": 2.5}}]


def _select_meta(n_layers: int, n_heads: int, selectable: bool) -> dict[str, Any]:
    """``layout.meta`` of a layer × head map: whether the picked head is outlined on it (``assets/corpus.js``
    draws the outline of a newly picked head exactly as :func:`_selected_shape` does)."""
    if not selectable:
        return {}
    return {"select": "grid", "grid": [n_layers, n_heads], "select_colour": SELECT_COLOUR}


def _height(n_layers: int) -> int:
    return int(min(520, max(240, 90 + 26 * n_layers)))


def heatmap_figure(z: np.ndarray, *, title: str, label: str, zmin: float | None = None,
                   zmax: float | None = None, selected: tuple[int, int] | None = None,
                   colorscale: str = "Viridis", selectable: bool = True) -> Figure:
    """A layer × head heatmap of one aggregate (NaN cells blank); ``selected`` is outlined (and a head picked
    later, when ``selectable``)."""
    z = np.asarray(z, dtype=np.float32)
    n_layers, n_heads = z.shape
    trace = {"type": "heatmap", "z": typed(z), **_grid_xy(n_layers, n_heads), "colorscale": colorscale,
             "colorbar": {"title": {"text": label, "side": "right"}, "thickness": 12},
             "hovertemplate": "layer %{y}, head %{x}<br>" + label + " %{z:.4g}<extra></extra>"}
    if zmin is not None and zmax is not None and np.isfinite([zmin, zmax]).all():
        trace.update(zmin=float(zmin), zmax=float(zmax) if zmax > zmin else float(zmin) + 1e-9)
    return figure([trace], title=title, height=_height(n_layers), shapes=_selected_shape(selected, *z.shape),
                  meta=_select_meta(n_layers, n_heads, selectable), margin={"l": 55, "r": 10, "t": 40, "b": 45},
                  **_grid_axes(n_layers, n_heads))


def _symmetric_range(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _q_text(q: float, significant: bool) -> str:
    if not np.isfinite(q):
        return "no test"
    return f"q = {q:.3g}" + (" — significant" if significant else "")


def difference_figure(diff: np.ndarray, significant: np.ndarray, q: np.ndarray, *, title: str, label: str,
                      test: str = "", selected: tuple[int, int] | None = None) -> Figure:
    """A − B per head on a diverging scale centred at 0; heads with q < alpha carry a black dot; ``selected``
    (and a head picked later) is outlined."""
    diff = np.asarray(diff, dtype=np.float32)
    n_layers, n_heads = diff.shape
    top = _symmetric_range(diff)
    hover = [[_q_text(qv, s) for qv, s in zip(q_row, s_row, strict=True)]
             for q_row, s_row in zip(q, significant, strict=True)]
    heat = {"type": "heatmap", "z": typed(diff), **_grid_xy(n_layers, n_heads), "colorscale": "RdBu",
            "reversescale": True, "zmid": 0.0, "zmin": -top, "zmax": top, "text": hover,
            "colorbar": {"title": {"text": "A − B", "side": "right"}, "thickness": 12},
            "hovertemplate": "layer %{y}, head %{x}<br>A − B %{z:.4g}<br>%{text}<extra></extra>"}
    layers, heads = np.nonzero(np.asarray(significant, dtype=bool))
    marks = {"type": "scatter", "mode": "markers", "x": typed(heads), "y": typed(layers), "name": "q < FDR",
             "marker": {"symbol": "circle", "size": 7, "color": "black",
                        "line": {"color": "white", "width": 1}},
             "hoverinfo": "skip", "showlegend": False}
    axes = _grid_axes(n_layers, n_heads)
    if test:
        axes["xaxis"]["title"] = {"text": f"head — dots: {test}", "font": {"size": 11}}
    return figure([heat, marks], title=title, height=_height(n_layers),
                  meta={"label": label, **_select_meta(n_layers, n_heads, True)},
                  shapes=_selected_shape(selected, n_layers, n_heads),
                  margin={"l": 55, "r": 10, "t": 40, "b": 45}, **axes)


def layer_difference_figure(diff: np.ndarray, significant: np.ndarray, q: np.ndarray, *, title: str,
                            label: str, test: str = "") -> Figure:
    """A − B per layer (runs whose heads differ): bars, significant layers outlined in black."""
    diff = np.asarray(diff, dtype=np.float32)
    n = diff.shape[0]
    colours = [COLOUR_A if v >= 0 else COLOUR_B for v in np.nan_to_num(diff)]
    lines = ["black" if s else "rgba(0,0,0,0)" for s in significant]
    hover = [f"q = {v:.3g}" if np.isfinite(v) else "no test" for v in q]
    bar = {"type": "bar", "x": typed(np.arange(n)), "y": typed(diff), "text": hover,
           "marker": {"color": colours, "line": {"color": lines, "width": 2}},
           "hovertemplate": "layer %{x}<br>A − B %{y:.4g}<br>%{text}<extra></extra>"}
    return figure([bar], title=title, height=280, meta={"label": label},
                  xaxis={"title": {"text": f"layer — outlined: {test}" if test else "layer",
                                   "font": {"size": 11}}, "dtick": 1},
                  yaxis={"title": {"text": f"A − B ({label})"}},
                  margin={"l": 60, "r": 10, "t": 40, "b": 45})


def profile_figure(profiles: Sequence[tuple[str, dict[str, np.ndarray], str]], *, title: str,
                   label: str) -> Figure:
    """The metric per layer: for each run a mean line and its interquartile band (25th–75th percentile)."""
    data: list[dict[str, Any]] = []
    for name, prof, colour in profiles:
        x = typed(np.arange(prof["mean"].shape[0]))
        data.append({"type": "scatter", "mode": "lines", "x": x, "y": typed(prof["q25"]),
                     "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip", "legendgroup": name})
        data.append({"type": "scatter", "mode": "lines", "x": x, "y": typed(prof["q75"]), "fill": "tonexty",
                     "fillcolor": _rgba(colour, 0.18), "line": {"width": 0}, "name": f"{name} IQR",
                     "hoverinfo": "skip", "legendgroup": name, "showlegend": False})
        data.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": typed(prof["mean"]),
                     "name": name, "line": {"color": colour, "width": 2}, "legendgroup": name,
                     "hovertemplate": "layer %{x}<br>mean %{y:.4g}<extra>" + name + "</extra>"})
    return figure(data, title=title, height=300, xaxis={"title": {"text": "layer"}, "dtick": 1},
                  yaxis={"title": {"text": label}}, legend={"orientation": "h", "y": -0.25},
                  margin={"l": 60, "r": 10, "t": 40, "b": 40})


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


#: Bins of the drill-down's histograms.
HISTOGRAM_BINS = 40


def shared_edges(ranges: Sequence[tuple[float, float]], bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """``bins + 1`` equal-width edges (float64) spanning every ``(min, max)`` of ``ranges`` (one unit around a
    single value; no edges when there is no range): the bins the runs' histograms share."""
    ranges = [(lo, hi) for lo, hi in ranges if np.isfinite(lo) and np.isfinite(hi)]
    if not ranges:
        return np.zeros(0)
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def histogram_figure(hists: Sequence[tuple[str, np.ndarray, str]], edges: np.ndarray, *, title: str,
                     label: str) -> Figure:
    """Overlaid histograms (density) of one head's values over the examples: ``(name, counts, colour)`` per run,
    counts on the shared ``edges`` (:func:`shared_edges`)."""
    total = sum(int(np.sum(c)) for _, c, _ in hists)
    if edges.size < 2 or total == 0:
        return message_figure("no defined value for this head in the selected examples", title=title)
    width = np.diff(edges)
    data = []
    for name, counts, colour in hists:
        n = int(np.sum(counts))
        density = counts / (n * width) if n else np.zeros(width.size)
        data.append({"type": "bar", "x": typed(0.5 * (edges[1:] + edges[:-1])), "y": typed(density),
                     "width": float(edges[1] - edges[0]), "name": f"{name} (n={n})",
                     "marker": {"color": colour}, "opacity": 0.55,
                     "hovertemplate": "%{x:.4g}: density %{y:.3g}<extra>" + name + "</extra>"})
    return figure(data, title=title, height=280, barmode="overlay", bargap=0,
                  xaxis={"title": {"text": label}}, yaxis={"title": {"text": "density"}},
                  legend={"orientation": "h", "y": -0.3}, margin={"l": 55, "r": 10, "t": 40, "b": 40})


def distribution_figure(samples: Sequence[tuple[str, np.ndarray, str]], *, title: str, label: str,
                        bins: int = HISTOGRAM_BINS) -> Figure:
    """Overlaid histograms (density) of one head's values over the examples, on shared bins."""
    finite = [np.asarray(v, dtype=np.float64)[np.isfinite(v)] for _, v, _ in samples]
    edges = shared_edges([(float(v.min()), float(v.max())) for v in finite if v.size], bins)
    hists = [(name, np.histogram(v, bins=edges)[0] if edges.size else np.zeros(0, np.int64), colour)
             for (name, _, colour), v in zip(samples, finite, strict=True)]
    return histogram_figure(hists, edges, title=title, label=label)


def pattern_figure(labels: np.ndarray, *, title: str, selected: tuple[int, int] | None = None,
                   selectable: bool = True) -> Figure:
    """Layer × head map of pattern labels (``statistics.patterns.classify_heads`` keys), a colour each;
    ``selected`` is outlined (and a head picked later, when ``selectable``)."""
    keys = list(PATTERN_LABELS)
    labels = np.asarray(labels, dtype=object)
    n_layers, n_heads = labels.shape
    codes = np.array([[keys.index(v) if v in keys else np.nan for v in row] for row in labels],
                     dtype=np.float32)
    k = len(keys)
    scale = []
    for i, key in enumerate(keys):  # a stepwise colour scale: code i covers [i/k, (i+1)/k]
        scale += [[i / k, PATTERN_COLOURS[key]], [(i + 1) / k, PATTERN_COLOURS[key]]]
    short = {"previous": "prev", "next": "next", "self": "self", "first": "CLS", "sep": "SEP",
             "punct": "punct", "broad": "broad", "heterogeneous": ""}
    text = [[PATTERN_LABELS.get(v, "undefined") for v in row] for row in labels]
    cell = [[short.get(v, "") for v in row] for row in labels]
    trace = {"type": "heatmap", "z": typed(codes), **_grid_xy(n_layers, n_heads),
             "zmin": -0.5, "zmax": k - 0.5, "colorscale": scale, "customdata": text,
             "text": cell, "texttemplate": "%{text}" if n_heads <= 16 else "",
             "textfont": {"size": 9},
             "colorbar": {"tickvals": list(range(k)), "ticktext": [PATTERN_LABELS[x] for x in keys],
                          "thickness": 12, "len": 1.0},
             "hovertemplate": "layer %{y}, head %{x}<br>%{customdata}<extra></extra>"}
    return figure([trace], title=title, height=_height(n_layers),
                  shapes=_selected_shape(selected, n_layers, n_heads),
                  meta=_select_meta(n_layers, n_heads, selectable), margin={"l": 55, "r": 10, "t": 40, "b": 45},
                  **_grid_axes(n_layers, n_heads))


def similarity_figure(distance: np.ndarray, order: np.ndarray, n_heads: int, *, title: str,
                      selected: tuple[int, int] | None = None) -> Figure:
    """Head × head Jensen–Shannon distance, rows and columns in clustered order, labelled ``L<l>H<h>``; the
    ``selected`` head's row and column are marked (:func:`similarity_shapes`; ``assets/corpus.js`` marks a head
    picked later the same way)."""
    order = np.asarray(order, dtype=np.int64)
    d = np.asarray(distance, dtype=np.float32)[np.ix_(order, order)]
    names = [head_name(int(c) // n_heads, int(c) % n_heads) for c in order]
    trace = {"type": "heatmap", "z": typed(d), "x": names, "y": names, "colorscale": "Viridis",
             "reversescale": True, "zmin": 0.0, "zmax": max(float(np.nanmax(d)) if d.size else 0.0, 1e-3),
             "colorbar": {"title": {"text": "JS distance"}, "thickness": 12},
             "hovertemplate": "%{y} vs %{x}<br>JS distance %{z:.3f}<extra></extra>"}
    size = int(min(640, max(320, 120 + 5 * len(names))))
    axis = {"type": "category", "tickfont": {"size": 8}, "showgrid": False,
            "showticklabels": len(names) <= 160}
    return figure([trace], title=title, height=size, shapes=similarity_shapes(names, selected),
                  meta={"select": "similarity", "select_colour": SELECT_COLOUR}, xaxis=dict(axis),
                  yaxis={**axis, "autorange": "reversed"}, margin={"l": 60, "r": 10, "t": 40, "b": 60})


def similarity_shapes(names: Sequence[str], selected: tuple[int, int] | None) -> list[dict[str, Any]]:
    """The lines marking head ``selected``'s row and column on a similarity map whose heads are ``names``."""
    name = head_name(*selected) if selected is not None else None
    if name is None or name not in names:
        return []
    i = list(names).index(name)
    return [{"type": "line", "xref": "x", "yref": "paper", "x0": i, "x1": i, "y0": 0, "y1": 1,
             "line": {"color": SELECT_COLOUR, "width": 1}},
            {"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": i, "y1": i,
             "line": {"color": SELECT_COLOUR, "width": 1}}]


def relpos_figure(curves: Sequence[tuple[str, np.ndarray, str]], max_offset: int, *, title: str) -> Figure:
    """Mean attention by relative offset ``j − i`` in ``−k..k`` of one head, one line per run."""
    x = typed(np.arange(-max_offset, max_offset + 1))
    data = [{"type": "scatter", "mode": "lines+markers", "x": x, "y": typed(curve), "name": name,
             "line": {"color": colour, "width": 2},
             "hovertemplate": "offset %{x}<br>mean weight %{y:.4f}<extra>" + name + "</extra>"}
            for name, curve, colour in curves]
    xaxis = {"title": {"text": "key offset j − i"}, "dtick": 1 if max_offset <= 16 else None,
             "zeroline": True}
    return figure(data, title=title, height=280, xaxis=xaxis,
                  yaxis={"title": {"text": "mean attention weight"}, "rangemode": "tozero"},
                  legend={"orientation": "h", "y": -0.3}, margin={"l": 60, "r": 10, "t": 40, "b": 40})
