"""Figures of the Training tab (pure: arrays in, plotly figure dicts out). Every x axis is the training step,
so a click on any of them names a step (``points[0].x``)."""

from __future__ import annotations

import math

import numpy as np

from attnviz.dashboard.corpus.figures import PATTERN_COLOURS
from attnviz.dashboard.figjson import Figure, figure, grid_domains, typed
from attnviz.dashboard.style import SELECT_COLOUR
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS

#: One colour per head index (plotly's default cycle), the same in every layer's panel.
HEAD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf")
#: Panels per row of the small multiples.
PANELS_PER_ROW = 4


def head_name(layer: int, head: int) -> str:
    """``L0H2``."""
    return f"L{layer}H{head}"


def _step_line(step: int | None, yref: str = "paper") -> list[dict]:
    """A vertical line at the picked step (on every x axis of the figure: ``xref`` is set per panel)."""
    if step is None:
        return []
    return [{"type": "line", "xref": "x", "yref": yref, "x0": step, "x1": step, "y0": 0, "y1": 1,
             "line": {"color": SELECT_COLOUR, "width": 2, "dash": "dot"}}]


def metric_lines_figure(steps: np.ndarray, values: np.ndarray, *, label: str, picked: int | None = None) -> Figure:
    """Small multiples by layer: one panel per layer, one line per head of ``values`` (``[S, L, H]``) against
    the step, coloured by head (the legend toggles a head in every layer). Trace ``l * H + h`` is head ``h`` of
    layer ``l`` (``meta`` says which)."""
    values = np.asarray(values, dtype=np.float64)
    _, n_layers, n_heads = values.shape
    cols = min(PANELS_PER_ROW, n_layers)
    rows = math.ceil(n_layers / cols)
    xdom, ydom = grid_domains(cols, 0.06), grid_domains(rows, 0.18 if rows > 1 else 0.0)
    data, axes, notes, shapes = [], {}, [], []
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    for layer in range(n_layers):
        k = layer + 1
        suffix = "" if k == 1 else str(k)
        r, c = divmod(layer, cols)
        axes[f"xaxis{suffix}"] = {"domain": list(xdom[c]), "anchor": f"y{suffix}", "showgrid": True,
                                  "title": {"text": "step"} if r == rows - 1 else None}
        axes[f"yaxis{suffix}"] = {"domain": list(ydom[rows - 1 - r]), "anchor": f"x{suffix}",
                                  "range": [lo - pad, hi + pad], "matches": "y" if k > 1 else None,
                                  "title": {"text": label} if c == 0 else None}
        notes.append({"text": f"layer {layer}", "xref": f"x{suffix} domain", "yref": f"y{suffix} domain",
                      "x": 0.02, "y": 1.0, "xanchor": "left", "yanchor": "bottom", "showarrow": False,
                      "font": {"size": 11}})
        for head in range(n_heads):
            data.append({"type": "scatter", "mode": "lines+markers", "x": typed(steps, np.float64),
                         "y": typed(values[:, layer, head], np.float64),
                         "name": f"head {head}" if layer == 0 else head_name(layer, head),
                         "meta": {"layer": layer, "head": head},
                         "legendgroup": f"head {head}", "showlegend": layer == 0,
                         "xaxis": f"x{suffix}", "yaxis": f"y{suffix}", "marker": {"size": 5},
                         "line": {"color": HEAD_COLOURS[head % len(HEAD_COLOURS)], "width": 1.5},
                         "hovertemplate": f"{head_name(layer, head)}<br>step %{{x}}<br>{label} %{{y:.4g}}"
                                          "<extra></extra>"})
        if picked is not None:
            shapes.append({**_step_line(picked)[0], "xref": f"x{suffix}", "yref": f"y{suffix} domain"})
    return figure(data, title=f"{label} per head against the training step", height=170 + 190 * rows,
                  annotations=notes, shapes=shapes, legend={"orientation": "h", "y": -0.12 if rows > 1 else -0.25},
                  hovermode="closest", margin={"l": 60, "r": 10, "t": 50, "b": 50}, **axes)


def metric_heatmap_figure(steps: np.ndarray, values: np.ndarray, *, label: str, picked: int | None = None
                          ) -> Figure:
    """Head × step heatmap of ``values`` (``[S, L, H]``): row ``l * H + h`` is head ``L<l>H<h>``."""
    values = np.asarray(values, dtype=np.float32)
    n_steps, n_layers, n_heads = values.shape
    z = values.reshape(n_steps, n_layers * n_heads).T  # [heads, steps]
    names = [head_name(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    trace = {"type": "heatmap", "z": typed(z), "x": typed(steps, np.float64), "y": names, "colorscale": "Viridis",
             "colorbar": {"title": {"text": label, "side": "right"}, "thickness": 12},
             "hovertemplate": "%{y}<br>step %{x}<br>" + label + " %{z:.4g}<extra></extra>"}
    return figure([trace], title=f"{label} per head against the training step",
                  height=int(min(900, max(260, 90 + 14 * len(names)))), shapes=_step_line(picked),
                  xaxis={"title": {"text": "step"}}, yaxis={"autorange": "reversed", "type": "category"},
                  margin={"l": 60, "r": 10, "t": 50, "b": 45})


def loss_figure(log_steps: np.ndarray, loss: np.ndarray, rate: np.ndarray, steps: np.ndarray,
                checkpoint_loss: np.ndarray, *, picked: int | None = None) -> Figure:
    """The training loss as logged (line), the loss at each recorded checkpoint (markers) and the learning
    rate (dotted, right axis)."""
    data = [
        {"type": "scatter", "mode": "lines", "x": typed(log_steps, np.float64), "y": typed(loss, np.float64),
         "name": "training loss (logged)", "line": {"color": "#333", "width": 1.5},
         "hovertemplate": "step %{x}<br>loss %{y:.4g}<extra></extra>"},
        {"type": "scatter", "mode": "markers", "x": typed(steps, np.float64), "y": typed(checkpoint_loss, np.float64),
         "name": "recorded checkpoints", "marker": {"color": "#1f77b4", "size": 8, "symbol": "diamond"},
         "hovertemplate": "checkpoint at step %{x}<br>loss %{y:.4g}<extra></extra>"},
    ]
    if np.isfinite(rate).any():
        data.append({"type": "scatter", "mode": "lines", "x": typed(log_steps, np.float64),
                     "y": typed(rate, np.float64), "name": "learning rate", "yaxis": "y2",
                     "line": {"color": "#888", "dash": "dot", "width": 1},
                     "hovertemplate": "step %{x}<br>learning rate %{y:.3g}<extra></extra>"})
    return figure(data, title="Training loss", height=300, shapes=_step_line(picked),
                  xaxis={"title": {"text": "step"}}, yaxis={"title": {"text": "loss"}},
                  yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "title": {"text": "learning rate"}},
                  legend={"orientation": "h", "y": -0.3}, margin={"l": 60, "r": 60, "t": 50, "b": 50})


def timeline_figure(steps: np.ndarray, labels: np.ndarray, *, picked: int | None = None) -> Figure:
    """Each head's pattern label at each checkpoint (``[S, L, H]`` keys of ``PATTERN_LABELS``): a head × step map
    coloured by label, so the step at which a head's label changes is where its colour changes."""
    labels = np.asarray(labels, dtype=object)
    n_steps, n_layers, n_heads = labels.shape
    keys = list(PATTERN_LABELS)
    k = len(keys)
    flat = labels.reshape(n_steps, n_layers * n_heads).T
    codes = np.array([[keys.index(v) if v in keys else np.nan for v in row] for row in flat], dtype=np.float32)
    scale = []
    for i, key in enumerate(keys):
        scale += [[i / k, PATTERN_COLOURS[key]], [(i + 1) / k, PATTERN_COLOURS[key]]]
    names = [head_name(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    text = [[PATTERN_LABELS.get(v, "undefined") for v in row] for row in flat]
    trace = {"type": "heatmap", "z": typed(codes), "x": typed(steps, np.float64), "y": names, "zmin": -0.5,
             "zmax": k - 0.5, "colorscale": scale, "customdata": text, "xgap": 1, "ygap": 1,
             "colorbar": {"tickvals": list(range(k)), "ticktext": [PATTERN_LABELS[x] for x in keys],
                          "thickness": 12, "len": 1.0},
             "hovertemplate": "%{y} at step %{x}<br>%{customdata}<extra></extra>"}
    return figure([trace], title="Pattern label of each head at each checkpoint",
                  height=int(min(900, max(240, 90 + 16 * len(names)))), shapes=_step_line(picked),
                  xaxis={"title": {"text": "step"}}, yaxis={"autorange": "reversed", "type": "category"},
                  margin={"l": 60, "r": 10, "t": 50, "b": 45})
