"""Pure figure builders of the Example tab: numpy arrays and token labels in, plotly figure dicts out.

Numeric data is float32 encoded as base64 typed arrays (:mod:`attnviz.dashboard.figjson`): never lists, never
float16. Token labels are made unique with their position (``"3 the"``) because plotly merges equal category
labels. Every builder's output is a valid ``plotly.graph_objects.Figure`` argument (the tests check it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from attnviz.dashboard.example.analysis import HEAD_VIEW_EDGES, Histogram, head_view_bins, pool_matrix
from attnviz.dashboard.example.tokens import axis_labels
from attnviz.dashboard.figjson import Figure, figure, grid_domains, typed
from attnviz.dashboard.style import SELECT_COLOUR

#: One colour per head in multi-head views (cycled beyond 20 heads).
HEAD_COLOURS: tuple[str, ...] = (
    "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22",
    "#17BECF", "#393B79", "#AD494A", "#637939", "#8C6D31", "#843C39", "#7B4173", "#3182BD", "#E6550D",
    "#31A354", "#756BB1",
)
#: ColorBrewer Blues, white at 0 (plotly.js's own "Blues" starts grey).
ATTENTION_COLORSCALE: list[list] = [[0.0, "#ffffff"], [0.125, "#deebf7"], [0.25, "#c6dbef"], [0.375, "#9ecae1"],
                                    [0.5, "#6baed6"], [0.625, "#4292c6"], [0.75, "#2171b5"], [0.875, "#08519c"],
                                    [1.0, "#08306b"]]
#: Coarser bins when every head is drawn (fewer traces).
MULTI_HEAD_EDGES: tuple[float, ...] = (0.05, 0.15, 0.35, 0.6, 1.0 + 1e-6)
#: Largest matrix whose hover carries every cell's raw tokens when a Python builder fills them (the page fills
#: them itself at any size, see ``payload.templates``).
RAW_HOVER_MAX_CELLS = 65_536
#: Most lines a head view draws (the strongest are kept; shared by every head in the all-heads view).
HEAD_VIEW_MAX_SEGMENTS = 20_000


def image_config(filename: str) -> dict[str, Any]:
    """``dcc.Graph`` config: plotly's modebar (zoom, reset axes) with an image button saving ``filename``."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    }


def _rect(x0: float, x1: float, y0: float, y1: float, width: float = 1.5) -> dict[str, Any]:
    return {"type": "rect", "xref": "x", "yref": "y", "x0": x0, "x1": x1, "y0": y0, "y1": y1,
            "line": {"color": SELECT_COLOUR, "width": width}}


def _category_axis(title: str | None = None, **extra: Any) -> dict[str, Any]:
    axis: dict[str, Any] = {"type": "category", "tickfont": {"size": 10}, "automargin": True, "showline": True,
                            "mirror": True, "linecolor": "#adb5bd"}
    if title:
        axis["title"] = {"text": title}
    axis.update(extra)
    return axis


#: Tick label width per character at the axes' 10 px font (measured on DejaVu Sans: ~5.5-6 px).
_LABEL_PX_PER_CHAR = 6.2


def label_margins(x_labels: Collection[str], y_labels: Collection[str], top: int = 50) -> dict[str, int]:
    """Margins that fit the tick labels (x turned by 60 degrees), so that Plotly need not measure every label
    and draw twice (``automargin``: ~4x slower with 128 labels)."""
    def longest(labels: Collection[str]) -> int:
        return max((len(str(s)) for s in labels), default=1)

    left = int(min(260, 40 + _LABEL_PX_PER_CHAR * longest(y_labels))) if y_labels else 60
    bottom = int(min(260, 45 + 0.87 * _LABEL_PX_PER_CHAR * longest(x_labels)))
    return {"l": left, "r": 20, "t": top, "b": bottom}


def matrix_hovertemplate(query_axis: str, key_axis: str, value: str, *, raw: bool) -> str:
    """The attention matrix's hover: query and key labels (with their raw tokens, from the cell's ``text`` and
    ``customdata``, when ``raw``) and the value."""
    q_raw, k_raw = (" %{text}", " %{customdata}") if raw else ("", "")
    return f"{query_axis}: %{{y}}{q_raw}<br>{key_axis}: %{{x}}{k_raw}<br>{value}: %{{z:.4f}}<extra></extra>"


def raw_cells(raw_query: Sequence[str], raw_key: Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Per cell of a ``[Tq, Tk]`` matrix: its query's raw token (``text``) and its key's (``customdata``)."""
    keys = list(raw_key)
    return [[r] * len(keys) for r in raw_query], [keys] * len(raw_query)


def attention_matrix_figure(weights: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str], *,
                            title: str = "", step: int | None = None, colorbar_title: str = "weight",
                            query_axis: str = "query", key_axis: str = "key",
                            raw: tuple[Sequence[str], Sequence[str]] | None = None,
                            fill_raw: bool = True) -> Figure:
    """Heatmap of ``[Tq, Tk]`` attention: rows are queries (top to bottom), columns keys.

    Hover shows the query token, the key token and the weight; with ``raw`` (the raw labels of queries and
    keys, :func:`~attnviz.dashboard.example.tokens.raw_labels`) each token's raw form beside it, filled in
    per cell (:func:`raw_cells`) when ``fill_raw`` and the matrix has at most :data:`RAW_HOVER_MAX_CELLS` cells
    (the page fills them itself). ``step`` outlines one query row.
    """
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2 or w.shape != (len(query_tokens), len(key_tokens)):
        raise ValueError(f"weights {w.shape} do not match {len(query_tokens)} queries x {len(key_tokens)} keys")
    if raw is not None and (len(raw[0]), len(raw[1])) != w.shape:
        raise ValueError(f"raw tokens {len(raw[0])} x {len(raw[1])} do not match weights {w.shape}")
    with_raw = raw is not None and (not fill_raw or w.size <= RAW_HOVER_MAX_CELLS)
    x_labels, y_labels = axis_labels(key_tokens), axis_labels(query_tokens)
    heat = {
        "type": "heatmap", "z": typed(w), "x": x_labels, "y": y_labels,
        "colorscale": ATTENTION_COLORSCALE, "zmin": 0.0,
        "colorbar": {"title": {"text": colorbar_title}, "thickness": 12},
        "hovertemplate": matrix_hovertemplate(query_axis, key_axis, colorbar_title, raw=with_raw),
    }
    if with_raw and fill_raw and raw is not None:
        heat["text"], heat["customdata"] = raw_cells(*raw)
    shapes = []
    if step is not None and 0 <= step < w.shape[0]:
        shapes.append(_rect(-0.5, w.shape[1] - 0.5, step - 0.5, step + 0.5))
    return figure(
        [heat], title=title, height=int(min(900, max(380, 16 * w.shape[0] + 150))), shapes=shapes,
        xaxis=_category_axis(key_axis, tickangle=-60, automargin=False),
        yaxis=_category_axis(query_axis, autorange="reversed", automargin=False),
        margin=label_margins(x_labels, y_labels), meta={"view": "matrix", "shape": list(w.shape)},
    )


def _token_trace(labels: Sequence[str], x: float, side: str, hover: Sequence[str], selected: int | None,
                 show_text: bool, font_size: int, raw: Sequence[str] | None = None) -> dict[str, Any]:
    """A head view's token column; with ``raw``, each token's raw label in ``customdata``, shown under the hover
    (the page's canvas shows it in its tooltip too)."""
    n = len(labels)
    highlight = np.zeros(n, dtype=np.float32)
    if selected is not None:
        highlight[selected] = 1.0
    hover_fields: dict[str, Any] = {"hoverinfo": "text"} if raw is None else {
        "customdata": list(raw), "hovertemplate": "%{hovertext}<br>raw %{customdata}<extra></extra>"}
    return {
        "type": "scatter", "x": typed(np.full(n, x)), "y": typed(np.arange(n)), "name": side,
        "mode": "markers+text" if show_text else "markers", "text": list(labels), "hovertext": list(hover),
        **hover_fields, "textposition": "middle left" if side == "queries" else "middle right",
        "textfont": {"size": font_size}, "showlegend": False,
        "marker": {"size": 8, "color": typed(highlight), "cmin": 0.0, "cmax": 1.0,
                   "colorscale": [[0, "#666666"], [1, SELECT_COLOUR]]},
    }


def _top_hover(w: np.ndarray, q_tokens: Sequence[str], k_tokens: Sequence[str], axis: int) -> list[str]:
    """Per token: its three strongest connections (axis 1: a query's keys; axis 0: a key's queries)."""
    n, width = (w.shape[0], w.shape[1]) if axis == 1 else (w.shape[1], w.shape[0])
    k = min(3, width)
    own, other, arrow = (q_tokens, k_tokens, "→") if axis == 1 else (k_tokens, q_tokens, "←")
    if k == 0:
        return [f"{i} {own[i]}" for i in range(n)]
    work = np.array(w, dtype=np.float32)  # repeated argmax beats argpartition ~10x for k = 3
    rows = np.arange(n)
    top = np.empty((n, k), dtype=np.int64)
    vals = np.empty((n, k), dtype=np.float32)
    for c in range(k):
        j = work.argmax(axis=axis)
        top[:, c] = j
        if axis == 1:
            vals[:, c] = work[rows, j]
            work[rows, j] = -np.inf
        else:
            vals[:, c] = work[j, rows]
            work[j, rows] = -np.inf
    return [f"{i} {own[i]} {arrow} " + ", ".join(f"{other[j]} {v:.2f}" for j, v in zip(r, vr, strict=True))
            for i, (r, vr) in enumerate(zip(top.tolist(), vals.tolist(), strict=True))]


def head_view_figure(weights: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str], *,
                     head_labels: Sequence[str] | None = None, selected: tuple[str, int] | None = None,
                     title: str = "", max_segments: int = HEAD_VIEW_MAX_SEGMENTS,
                     raw: tuple[Sequence[str], Sequence[str]] | None = None) -> Figure:
    """bertviz-style head view: queries on the left, keys on the right, one line per weight at or above the
    first bin edge, its opacity the mid-point of its weight bin.

    ``weights`` is ``[Tq, Tk]`` for one head, or ``[H, Tq, Tk]`` to draw every head in its own colour.
    ``selected`` = ("query", i) or ("key", j) keeps only that token's lines. Traces 0 and 1 are the query and
    key tokens (point index = token position), then one trace per (head, opacity bin) with NaN-separated
    segments; each line trace's ``meta`` gives its head, bin and segment count. ``raw`` (raw labels of queries
    and keys) puts each token's raw form under its hover.
    """
    w = np.asarray(weights, dtype=np.float32)
    multi = w.ndim == 3
    stack = w if multi else w[None]
    n_heads, tq, tk = stack.shape
    if (tq, tk) != (len(query_tokens), len(key_tokens)):
        raise ValueError(f"weights {w.shape} do not match {len(query_tokens)} x {len(key_tokens)} tokens")
    if raw is not None and (len(raw[0]), len(raw[1])) != (tq, tk):
        raise ValueError(f"raw tokens {len(raw[0])} x {len(raw[1])} do not match {tq} x {tk} tokens")
    labels = list(head_labels) if head_labels is not None else [f"head {h}" for h in range(n_heads)]
    q_sel = selected[1] if selected and selected[0] == "query" else None
    k_sel = selected[1] if selected and selected[0] == "key" else None
    mean = stack.mean(axis=0)
    longest = max(tq, tk, 1)
    show_text = longest <= 150
    font = 11 if longest <= 40 else 9
    traces = [
        _token_trace(query_tokens, 0.0, "queries", _top_hover(mean, query_tokens, key_tokens, 1), q_sel,
                     show_text, font, raw[0] if raw else None),
        _token_trace(key_tokens, 1.0, "keys", _top_hover(mean, query_tokens, key_tokens, 0), k_sel,
                     show_text, font, raw[1] if raw else None),
    ]
    edges = MULTI_HEAD_EDGES if multi else HEAD_VIEW_EDGES
    dropped_total = 0
    for h in range(n_heads):
        bins, dropped = head_view_bins(stack[h], edges=edges, query=q_sel, key=k_sel,
                                       max_segments=max(1, max_segments // n_heads))
        dropped_total += dropped
        colour = HEAD_COLOURS[h % len(HEAD_COLOURS)] if multi else HEAD_COLOURS[0]
        for k, b in enumerate(bins):
            traces.append({
                "type": "scatter", "x": typed(b.x), "y": typed(b.y), "mode": "lines", "opacity": b.opacity,
                "line": {"color": colour, "width": 2}, "hoverinfo": "skip", "name": labels[h],
                "legendgroup": labels[h], "showlegend": multi and k == 0,
                "meta": {"head": h, "lo": b.lo, "hi": b.hi, "segments": b.count},
            })
    note = f" ({dropped_total} weakest lines not drawn)" if dropped_total else ""
    return figure(
        traces, title=title + note, height=int(min(2400, max(320, 18 * longest + 100))), hovermode="closest",
        xaxis={"visible": False, "range": [-1.1, 2.1], "fixedrange": True},
        yaxis={"visible": False, "range": [longest - 0.5, -0.8]},
        legend={"orientation": "h", "y": -0.01, "yanchor": "top", "font": {"size": 10}},
        margin={"l": 10, "r": 10, "t": 50, "b": 30},
        meta={"view": "head", "selected": list(selected) if selected else None, "edges": list(edges),
              "heads": n_heads, "dropped": dropped_total},
    )


def model_view_figure(attn: np.ndarray, *, tile: int = 24, selected: tuple[int, int] | None = None,
                      title: str = "") -> Figure:
    """Every layer (rows) and head (columns) of one example as small matrices in one heatmap.

    ``attn`` is ``[L, H, Tq, Tk]``; matrices longer than ``tile`` are block-mean pooled. Tiles are separated by
    empty cells. Category labels ``"L<l> q<i>"`` / ``"H<h> k<j>"`` let a click name its layer and head.
    """
    a = np.asarray(attn, dtype=np.float32)
    if a.ndim != 4:
        raise ValueError(f"model view needs [L, H, Tq, Tk], got shape {a.shape}")
    n_layers, n_heads = a.shape[:2]
    pooled = pool_matrix(a, tile, tile)
    sr, sc = pooled.shape[-2:]
    z = np.full((n_layers * (sr + 1) - 1, n_heads * (sc + 1) - 1), np.nan, dtype=np.float32)
    for layer in range(n_layers):
        for head in range(n_heads):
            r0, c0 = layer * (sr + 1), head * (sc + 1)
            z[r0:r0 + sr, c0:c0 + sc] = pooled[layer, head]
    ylab = [f"L{r // (sr + 1)} " + (f"q{r % (sr + 1)}" if r % (sr + 1) < sr else "·") for r in range(z.shape[0])]
    xlab = [f"H{c // (sc + 1)} " + (f"k{c % (sc + 1)}" if c % (sc + 1) < sc else "·") for c in range(z.shape[1])]
    heat = {
        "type": "heatmap", "z": typed(z), "x": xlab, "y": ylab, "colorscale": ATTENTION_COLORSCALE, "zmin": 0.0,
        "hoverongaps": False,
        "colorbar": {"title": {"text": "weight"}, "thickness": 10},
        "hovertemplate": "%{y} · %{x}<br>weight %{z:.3f}<br>click to select<extra></extra>",
    }
    shapes = []
    if selected is not None:
        layer, head = selected
        shapes.append(_rect(head * (sc + 1) - 0.5, head * (sc + 1) + sc - 0.5, layer * (sr + 1) - 0.5,
                            layer * (sr + 1) + sr - 0.5, width=2.5))
    return figure(
        [heat], title=title, height=int(min(900, max(320, 64 * n_layers + 120))), shapes=shapes,
        xaxis={"type": "category", "tickmode": "array", "side": "top", "showgrid": False,
               "tickvals": [xlab[h * (sc + 1) + sc // 2] for h in range(n_heads)],
               "ticktext": [f"H{h}" for h in range(n_heads)]},
        yaxis={"type": "category", "autorange": "reversed", "tickmode": "array", "showgrid": False,
               "tickvals": [ylab[layer * (sr + 1) + sr // 2] for layer in range(n_layers)],
               "ticktext": [f"L{layer}" for layer in range(n_layers)]},
        margin={"l": 50, "r": 20, "t": 80, "b": 20}, plot_bgcolor="#ced4da",
        meta={"view": "model", "tile": [sr, sc], "layers": n_layers, "heads": n_heads},
    )


def parse_model_view_click(point: Mapping[str, Any]) -> tuple[int, int] | None:
    """(layer, head) of a clicked model-view cell from its category labels, or None if not a cell."""
    try:
        y, x = str(point["y"]), str(point["x"])
        if not (y.startswith("L") and x.startswith("H")):
            return None
        return int(y[1:].split()[0]), int(x[1:].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def timestep_bars_figure(row: np.ndarray, key_tokens: Sequence[str], *, title: str = "",
                         key_axis: str = "key") -> Figure:
    """The attention of one query position over the keys, as bars."""
    r = np.asarray(row, dtype=np.float32)
    if r.shape != (len(key_tokens),):
        raise ValueError(f"row {r.shape} does not match {len(key_tokens)} keys")
    bars = {"type": "bar", "x": axis_labels(key_tokens), "y": typed(r), "marker": {"color": HEAD_COLOURS[0]},
            "hovertemplate": f"{key_axis}: %{{x}}<br>weight: %{{y:.4f}}<extra></extra>"}
    return figure([bars], title=title, height=300, margin=label_margins(axis_labels(key_tokens), [], top=45),
                  xaxis=_category_axis(key_axis, tickangle=-60, automargin=False),
                  yaxis={"title": {"text": "weight"}, "rangemode": "tozero"}, meta={"view": "timestep-bars"})


def timestep_layers_figure(rows: np.ndarray, key_tokens: Sequence[str], *, title: str = "",
                           selected_layer: int | None = None, key_axis: str = "key") -> Figure:
    """How one query position's attention over the keys changes across layers: ``[L, Tk]`` heatmap."""
    r = np.asarray(rows, dtype=np.float32)
    if r.ndim != 2 or r.shape[1] != len(key_tokens):
        raise ValueError(f"rows {r.shape} do not match {len(key_tokens)} keys")
    x_labels, y_labels = axis_labels(key_tokens), [f"L{layer}" for layer in range(r.shape[0])]
    heat = {"type": "heatmap", "z": typed(r), "x": x_labels, "y": y_labels, "colorscale": ATTENTION_COLORSCALE,
            "zmin": 0.0, "colorbar": {"title": {"text": "weight"}, "thickness": 10},
            "hovertemplate": f"%{{y}}<br>{key_axis}: %{{x}}<br>weight: %{{z:.4f}}<extra></extra>"}
    shapes = []
    if selected_layer is not None and 0 <= selected_layer < r.shape[0]:
        shapes.append(_rect(-0.5, r.shape[1] - 0.5, selected_layer - 0.5, selected_layer + 0.5))
    return figure([heat], title=title, height=int(min(600, max(240, 28 * r.shape[0] + 130))), shapes=shapes,
                  xaxis=_category_axis(key_axis, tickangle=-60, automargin=False),
                  yaxis=_category_axis("layer", autorange="reversed", automargin=False),
                  margin=label_margins(x_labels, y_labels, top=45),
                  meta={"view": "timestep-layers"})


def _panel_axes(n: int, columns: int, gap_x: float = 0.07, gap_y: float = 0.2
                ) -> tuple[dict[str, Any], list[tuple[str, str, float, float]]]:
    """Layout axes of a grid of ``n`` panels and, per panel, (x axis ref, y axis ref, title x, title y)."""
    rows = max(1, -(-n // columns))
    xs = grid_domains(columns, gap_x)
    ys = grid_domains(rows, gap_y / rows)[::-1]
    axes: dict[str, Any] = {}
    refs = []
    for k in range(n):
        r, c = divmod(k, columns)
        suffix = "" if k == 0 else str(k + 1)
        axes[f"xaxis{suffix}"] = {"domain": list(xs[c]), "anchor": f"y{suffix}", "zeroline": False}
        axes[f"yaxis{suffix}"] = {"domain": list(ys[r]), "anchor": f"x{suffix}", "zeroline": False}
        refs.append((f"x{suffix}", f"y{suffix}", (xs[c][0] + xs[c][1]) / 2, ys[r][1]))
    return axes, refs


def histograms_figure(hists: Mapping[str, Histogram], *, title: str = "", columns: int = 3) -> Figure:
    """Small multiples of pre-binned histograms (hidden states, Q, K, V, attention, scores)."""
    names = list(hists)
    axes, refs = _panel_axes(len(names), columns)
    traces, notes = [], []
    for k, (name, h) in enumerate(hists.items()):
        xref, yref, tx, ty = refs[k]
        width = float(h.edges[1] - h.edges[0]) if h.edges.size > 1 else 1.0
        traces.append({"type": "bar", "x": typed(h.centers), "y": typed(h.counts, np.int32), "name": name,
                       "xaxis": xref, "yaxis": yref, "showlegend": False, "width": width,
                       "marker": {"color": HEAD_COLOURS[k % len(HEAD_COLOURS)], "line": {"width": 0}},
                       "hovertemplate": "%{x:.3g}: %{y}<extra>" + name + "</extra>"})
        notes.append({"text": f"<b>{name}</b><br>n={h.n}, mean {h.mean:.3g}, sd {h.std:.3g}", "x": tx, "y": ty,
                      "xref": "paper", "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                      "showarrow": False, "font": {"size": 11}})
    rows = max(1, -(-len(names) // columns))
    return figure(traces, title=title, height=250 * rows + 90, bargap=0, annotations=notes,
                  margin={"t": 100, "b": 40}, meta={"view": "histograms", "panels": names}, **axes)


def embeddings_figure(input_2d: np.ndarray, output_2d: np.ndarray, tokens: Sequence[str], *,
                      title: str = "") -> Figure:
    """Input and output embeddings of the tokens in 2-D (PCA), side by side, coloured by position."""
    a, b = np.asarray(input_2d, dtype=np.float32), np.asarray(output_2d, dtype=np.float32)
    t = len(tokens)
    if a.shape != (t, 2) or b.shape != (t, 2):
        raise ValueError(f"embeddings {a.shape}/{b.shape} do not match {t} tokens")
    axes, refs = _panel_axes(2, 2, gap_x=0.1)
    pos = np.arange(t, dtype=np.float32)
    traces, notes = [], []
    for k, (pts, name) in enumerate(((a, "input embeddings (PCA)"), (b, "output embeddings (PCA)"))):
        xref, yref, tx, ty = refs[k]
        traces.append({
            "type": "scatter", "x": typed(pts[:, 0]), "y": typed(pts[:, 1]), "xaxis": xref, "yaxis": yref,
            "mode": "markers+text" if t <= 80 else "markers", "text": list(tokens), "name": name,
            "textposition": "top center", "textfont": {"size": 9}, "customdata": typed(pos),
            "hovertemplate": "%{customdata:.0f} %{text}<extra></extra>", "showlegend": False,
            "marker": {"size": 9, "color": typed(pos), "colorscale": "Viridis", "showscale": k == 1,
                       "colorbar": {"title": {"text": "position"}, "thickness": 10}},
        })
        notes.append({"text": f"<b>{name}</b>", "x": tx, "y": ty, "xref": "paper", "yref": "paper",
                      "xanchor": "center", "yanchor": "bottom", "showarrow": False})
    for key in axes:
        axes[key]["title"] = {"text": "PC1" if key.startswith("x") else "PC2"}
    return figure(traces, title=title, height=430, annotations=notes, margin={"t": 80},
                  meta={"view": "embeddings"}, **axes)


def norm_strip_figure(norms: np.ndarray, tokens: Sequence[str], *, title: str = "") -> Figure:
    """Token strip coloured by activation norm per layer: ``[L+1, T]`` (row 0 is the embedding output)."""
    n = np.asarray(norms, dtype=np.float32)
    if n.ndim != 2 or n.shape[1] != len(tokens):
        raise ValueError(f"norms {n.shape} do not match {len(tokens)} tokens")
    heat = {"type": "heatmap", "z": typed(n), "x": axis_labels(tokens),
            "y": ["embeddings"] + [f"after L{layer}" for layer in range(n.shape[0] - 1)],
            "colorscale": "Viridis", "colorbar": {"title": {"text": "‖h‖"}, "thickness": 10},
            "hovertemplate": "%{y}<br>%{x}<br>‖h‖ = %{z:.3g}<extra></extra>"}
    return figure([heat], title=title, height=int(min(600, max(240, 26 * n.shape[0] + 140))),
                  xaxis=_category_axis(None, tickangle=-60), yaxis=_category_axis(None, autorange="reversed"),
                  margin={"t": 45, "b": 80}, meta={"view": "norms"})
