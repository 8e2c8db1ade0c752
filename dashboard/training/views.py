"""The Training tab's views: resolve a selection against the store, and build every view of a series (figures,
label changes, the entropy-collapse alert) from what :mod:`.data` reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from dash import html

from attnviz.dashboard.figjson import Figure
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.training import data, figures
from attnviz.dashboard.training.urlhash import TrainingState
from attnviz.pipeline.metrics import METRICS
from attnviz.pipeline.statistics.training import (
    COLLAPSE_DROP,
    COLLAPSE_ENTROPY,
    CollapseAlert,
    LabelChange,
    collapse_alerts,
    label_changes,
)
from attnviz.pipeline.store import StoreReader

DEFAULT_METRIC = "entropy"
#: Up to this many heads the default view is the small multiples; beyond it, the head × step heatmap.
LINES_MAX_HEADS = 64
#: The label-change list shows at most this many changes (the timeline shows all).
MAX_CHANGES = 60


@dataclass(frozen=True)
class Resolved:
    """A selection fitted to the store, with the choices the controls offer."""

    state: TrainingState
    series_options: list[dict[str, str]]
    metric_options: list[dict[str, str]]
    messages: list[str]


def metric_label(name: str) -> str:
    """``Entropy (nats)``."""
    spec = METRICS.get(name)
    return f"{spec.label} ({spec.unit})" if spec else name


def resolve(reader: StoreReader, asked: TrainingState) -> Resolved:
    """Fit ``asked`` to the store: the first series when none or an unknown one is asked, the default metric
    when the series lacks the one asked, the view that suits the model's size when none is asked. Every
    fallback from something asked is explained in ``messages``."""
    names = data.all_series(reader)
    messages: list[str] = []
    if not names:
        return Resolved(TrainingState(), [], [], ["this store has no training series yet: record one with "
                                                  "AttnvizCallback or 'attnviz train-demo'"])
    series = asked.series
    if series not in names:
        if series:
            messages.append(f"series {series!r} is not in this store: showing {names[0]!r}")
        series = names[0]
    loaded = data.load_series(reader, series)
    metric = asked.metric
    if metric not in loaded.metrics:
        if metric:
            messages.append(f"series {series!r} has no metric {metric!r}: showing {DEFAULT_METRIC}")
        metric = DEFAULT_METRIC if DEFAULT_METRIC in loaded.metrics else loaded.metrics[0]
    view = asked.view or ("lines" if loaded.shape[0] * loaded.shape[1] <= LINES_MAX_HEADS else "heatmap")
    view = view if view in ("layers", "heatmap") else "layers"
    if view == "lines":
        view = "layers"
    options = [{"label": n, "value": n} for n in names]
    metric_options = [{"label": metric_label(m), "value": m} for m in loaded.metrics]
    return Resolved(TrainingState(series, metric, view), options, metric_options, messages)


def _changes_list(changes: list[LabelChange]) -> Any:
    if not changes:
        return html.Div("no head changed its pattern label between checkpoints", className="text-muted small")
    items = [html.Li(c.line()) for c in changes[:MAX_CHANGES]]
    more = len(changes) - MAX_CHANGES
    if more > 0:
        items.append(html.Li(f"… and {more} more (the timeline above shows every one)", className="text-muted"))
    return html.Ul(items, className="small mb-0", style={"maxHeight": "240px", "overflowY": "auto"})


def alert_rule() -> str:
    """The alert's rule in one sentence (also in docs/metrics.md)."""
    return (f"a head's mean entropy over the probe below {COLLAPSE_ENTROPY:g} nats, or a fall of more than "
            f"{COLLAPSE_DROP:.0%} between two consecutive checkpoints")


def alert_view(alerts: list[CollapseAlert]) -> tuple[Any, str]:
    """The entropy-collapse alert's content and colour."""
    if not alerts:
        return [html.Strong("No entropy collapse"), html.Span(f" ({alert_rule()}).")], "success"
    heads = sorted({(a.layer, a.head) for a in alerts})
    return [html.Strong(f"Entropy collapse in {len(heads)} head{'s' if len(heads) != 1 else ''}: "),
            html.Span(f"({alert_rule()})"),
            html.Ul([html.Li(a.line(), className="training-alert-line") for a in alerts], className="mb-0")], "danger"


@dataclass
class SeriesViews:
    """Everything the tab draws for one resolved selection."""

    metric: Figure
    loss: Figure
    timeline: Figure
    changes: Any
    alert: Any
    alert_colour: str
    status: str


def series_views(reader: StoreReader, state: TrainingState, picked: int | None = None) -> SeriesViews:
    """Every view of a resolved selection; ``picked``: the step clicked first (marked on every figure)."""
    if state.series is None or state.metric is None:
        empty = message_figure("no training series in this store")
        return SeriesViews(empty, empty, empty, "", "", "secondary", "")
    s = data.load_series(reader, state.series)
    steps = s.steps
    values = data.metric_means(reader, s, state.metric)
    label = metric_label(state.metric)
    metric_fig = (figures.metric_heatmap_figure if state.view == "heatmap" else figures.metric_lines_figure)(
        steps, values, label=label, picked=picked)
    log_steps, loss, rate = data.loss_rows(s)
    cp_loss = np.array([np.nan if c.loss is None else c.loss for c in s.checkpoints])
    loss_fig = figures.loss_figure(log_steps, loss, rate, steps, cp_loss, picked=picked)
    labels = data.labels(reader, s)
    timeline = figures.timeline_figure(steps, labels, picked=picked)
    entropy = data.metric_means(reader, s, "entropy") if "entropy" in s.metrics else np.zeros((0, 0, 0))
    alert, colour = alert_view(collapse_alerts(steps, entropy))
    layers, heads = s.shape
    status = (f"series {s.name!r}: {len(steps)} checkpoints (steps {steps[0]}–{steps[-1]}), model "
              f"{s.checkpoints[0].model!r}, {layers} layers × {heads} heads, probe "
              f"{s.checkpoints[0].probe_fingerprint}. Click a step, then another, to compare the two checkpoints "
              "in the Corpus tab (A − B).")
    return SeriesViews(metric_fig, loss_fig, timeline, _changes_list(label_changes(steps, labels)), alert, colour,
                       status)
