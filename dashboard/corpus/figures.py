"""Figures of the Corpus tab: pure functions from numpy arrays to plotly figure dicts (no store, no Dash).

Numeric arrays go out as float32 typed arrays (``attnviz.dashboard.figjson.typed``); only short label lists (head
names, hover lines, pattern names) are sent as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attnviz.dashboard.figjson import Figure, clear_of_toolbar, subtitled, typed
from attnviz.dashboard.figjson import figure as _figure
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.style import SELECT_COLOUR
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS
from attnviz.pipeline.statistics.similarity import cluster_tree

COLOUR_A = "#1f77b4"
COLOUR_B = "#d62728"
#: One colour per pattern label, in PATTERN_LABELS order.
PATTERN_COLOURS: dict[str, str] = {
    "previous": "#1f77b4", "next": "#17becf", "self": "#9467bd", "first": "#d62728", "sep": "#ff7f0e",
    "punct": "#8c564b", "induction": "#e377c2", "duplicate": "#bcbd22", "broad": "#2ca02c",
    "heterogeneous": "#d9d9d9",
}

#: What a pattern cell shows (one or two characters, so neighbouring cells never run together); the colour bar
#: and the hover name the pattern in full.
PATTERN_MARKS: dict[str, str] = {
    "previous": "←", "next": "→", "self": "↺", "first": "1st", "sep": "SEP", "punct": ".,", "induction": "ind",
    "duplicate": "dup", "broad": "≈", "heterogeneous": "",
}
#: The colour bar's names of the patterns (short enough not to be cut at the figure's edge).
PATTERN_SHORT: dict[str, str] = {
    "previous": "← previous", "next": "→ next", "self": "↺ self", "first": "1st / [CLS]", "sep": "SEP [SEP]",
    "punct": "., punctuation", "induction": "ind induction", "duplicate": "dup duplicate token", "broad": "≈ broad",
    "heterogeneous": "mixed",
}


def figure(data: list[dict[str, Any]], **layout_values: Any) -> Figure:
    """A Corpus figure: its title (and subtitle line) kept clear of Plotly's toolbar."""
    return clear_of_toolbar(_figure(data, **layout_values))


__all__ = ["COLOUR_A", "COLOUR_B", "HISTOGRAM_BINS", "difference_figure", "distribution_figure", "heatmap_figure",
           "histogram_figure", "pattern_figure", "profile_figure", "relpos_figure", "shared_edges",
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
                   colorscale: str = "Viridis", selectable: bool = True, subtitle: str | None = None) -> Figure:
    """A layer × head heatmap of one aggregate (NaN cells blank); ``selected`` is outlined (and a head picked
    later, when ``selectable``); ``subtitle`` (the run) goes on a second, smaller title line."""
    z = np.asarray(z, dtype=np.float32)
    n_layers, n_heads = z.shape
    trace = {"type": "heatmap", "z": typed(z), **_grid_xy(n_layers, n_heads), "colorscale": colorscale,
             "colorbar": {"title": {"text": label, "side": "right"}, "thickness": 12},
             "hovertemplate": "layer %{y}, head %{x}<br>" + label + " %{z:.4g}<extra></extra>"}
    if zmin is not None and zmax is not None and np.isfinite([zmin, zmax]).all():
        trace.update(zmin=float(zmin), zmax=float(zmax) if zmax > zmin else float(zmin) + 1e-9)
    return figure([trace], title=subtitled(title, subtitle), height=_height(n_layers),
                  shapes=_selected_shape(selected, *z.shape), meta=_select_meta(n_layers, n_heads, selectable),
                  margin={"l": 55, "r": 10, "t": 40, "b": 45}, **_grid_axes(n_layers, n_heads))


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
                   selectable: bool = True, subtitle: str | None = None) -> Figure:
    """Layer × head map of pattern labels (``statistics.patterns.classify_heads`` keys), a colour each and a
    one- or two-character mark (:data:`PATTERN_MARKS`); ``selected`` is outlined (and a head picked later, when
    ``selectable``)."""
    keys = list(PATTERN_LABELS)
    labels = np.asarray(labels, dtype=object)
    n_layers, n_heads = labels.shape
    codes = np.array([[keys.index(v) if v in keys else np.nan for v in row] for row in labels],
                     dtype=np.float32)
    k = len(keys)
    scale = []
    for i, key in enumerate(keys):  # a stepwise colour scale: code i covers [i/k, (i+1)/k]
        scale += [[i / k, PATTERN_COLOURS[key]], [(i + 1) / k, PATTERN_COLOURS[key]]]
    text = [[PATTERN_LABELS.get(v, "undefined") for v in row] for row in labels]
    cell = [[PATTERN_MARKS.get(v, "") for v in row] for row in labels]
    trace = {"type": "heatmap", "z": typed(codes), **_grid_xy(n_layers, n_heads),
             "zmin": -0.5, "zmax": k - 0.5, "colorscale": scale, "customdata": text,
             "text": cell, "texttemplate": "%{text}" if n_heads <= 24 else "",
             "textfont": {"size": 10 if n_heads <= 12 else 8},
             "colorbar": {"tickvals": list(range(k)), "ticktext": [PATTERN_SHORT[x] for x in keys],
                          "thickness": 12, "len": 1.0, "tickfont": {"size": 10}},
             "hovertemplate": "layer %{y}, head %{x}<br>%{customdata}<extra></extra>"}
    return figure([trace], title=subtitled(title, subtitle), height=_height(n_layers),
                  shapes=_selected_shape(selected, n_layers, n_heads),
                  meta=_select_meta(n_layers, n_heads, selectable), margin={"l": 55, "r": 10, "t": 40, "b": 45},
                  **_grid_axes(n_layers, n_heads))


def similarity_figure(distance: np.ndarray, order: np.ndarray, n_heads: int, *, title: str,
                      selected: tuple[int, int] | None = None, subtitle: str | None = None) -> Figure:
    """Head × head Jensen–Shannon distance in clustered order, labelled ``L<l>H<h>``, under the dendrogram of
    that clustering (average linkage, as ``attnviz analyze`` ordered the heads); the ``selected`` head's row and
    column are marked (:func:`similarity_shapes`; ``assets/corpus.js`` marks a head picked later the same way)."""
    d_all = np.asarray(distance, dtype=np.float32)
    tree = cluster_tree(d_all)
    order = tree.order if tree is not None else np.asarray(order, dtype=np.int64)
    d = d_all[np.ix_(order, order)]
    c = len(order)
    names = [head_name(int(i) // n_heads, int(i) % n_heads) for i in order]
    trace = {"type": "heatmap", "z": typed(d), "x": names, "y": names, "colorscale": "Viridis",
             "reversescale": True, "zmin": 0.0, "zmax": max(float(np.nanmax(d)) if d.size else 0.0, 1e-3),
             "colorbar": {"title": {"text": "JS distance", "side": "right"}, "thickness": 12, "len": 0.78,
                          "y": 0, "yanchor": "bottom"},
             "hovertemplate": "%{y} vs %{x}<br>JS distance %{z:.3f}<extra></extra>"}
    data: list[dict[str, Any]] = [trace]
    top = 0.8 if tree is not None else 1.0
    if tree is not None:  # the dendrogram above the map: leaf k sits over column k
        xs: list[float] = []
        ys: list[float] = []
        for ic, dc in zip(tree.icoord, tree.dcoord, strict=True):
            xs += [(x - 5.0) / 10.0 for x in ic] + [np.nan]
            ys += list(dc) + [np.nan]
        data.append({"type": "scatter", "mode": "lines", "x": typed(np.array(xs)), "y": typed(np.array(ys)),
                     "xaxis": "x2", "yaxis": "y2", "line": {"color": "#495057", "width": 1},
                     "hoverinfo": "skip", "showlegend": False})
    font = 11 if c <= 48 else 9 if c <= 96 else 7
    size = int(min(900, max(380, 150 + (font + 3) * c)))
    axis = {"type": "category", "tickfont": {"size": font}, "showgrid": False, "showticklabels": c <= 160,
            "automargin": True}
    layout: dict[str, Any] = {"xaxis": dict(axis), "yaxis": {**axis, "autorange": "reversed", "domain": [0, top]}}
    if tree is not None:
        layout["xaxis2"] = {"range": [-0.5, c - 0.5], "visible": False, "anchor": "y2", "domain": [0, 1]}
        layout["yaxis2"] = {"domain": [top + 0.02, 1], "visible": False, "rangemode": "tozero", "anchor": "x2"}
    return figure(data, title=subtitled(title, subtitle), height=size, shapes=similarity_shapes(names, selected),
                  meta={"select": "similarity", "select_colour": SELECT_COLOUR},
                  margin={"l": 60, "r": 10, "t": 40, "b": 60}, **layout)


def similarity_shapes(names: Sequence[str], selected: tuple[int, int] | None) -> list[dict[str, Any]]:
    """The lines marking head ``selected``'s row and column on a similarity map whose heads are ``names`` (within
    the map, not over its dendrogram)."""
    name = head_name(*selected) if selected is not None else None
    if name is None or name not in names:
        return []
    i = list(names).index(name)
    return [{"type": "line", "xref": "x", "yref": "y domain", "x0": i, "x1": i, "y0": 0, "y1": 1,
             "line": {"color": SELECT_COLOUR, "width": 1}},
            {"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": i, "y1": i,
             "line": {"color": SELECT_COLOUR, "width": 1}}]


def _offset_step(max_offset: int) -> int:
    """Tick step of the relative-position axis: at most ~10 labels across ``-k..k``."""
    for step in (1, 2, 4, 5, 8, 10, 16, 20, 25, 50, 100):
        if 2 * max_offset / step <= 10:
            return step
    return max(1, max_offset // 5)


def relpos_figure(curves: Sequence[tuple[str, np.ndarray, str]], max_offset: int, *, title: str) -> Figure:
    """Mean attention by relative offset ``j − i`` in ``−k..k`` of one head, one line per run."""
    x = typed(np.arange(-max_offset, max_offset + 1))
    data = [{"type": "scatter", "mode": "lines+markers", "x": x, "y": typed(curve), "name": name,
             "line": {"color": colour, "width": 2},
             "hovertemplate": "offset %{x}<br>mean weight %{y:.4f}<extra>" + name + "</extra>"}
            for name, curve, colour in curves]
    xaxis = {"title": {"text": "key offset j − i (negative: earlier keys)"}, "tick0": 0,
             "dtick": _offset_step(max_offset), "zeroline": True, "range": [-max_offset - 0.5, max_offset + 0.5]}
    return figure(data, title=title, height=280, xaxis=xaxis,
                  yaxis={"title": {"text": "mean attention weight"}, "rangemode": "tozero"},
                  legend={"orientation": "h", "y": -0.3}, margin={"l": 60, "r": 10, "t": 40, "b": 40})
