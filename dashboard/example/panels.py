"""HTML panels of the Example tab (pure functions: data in, Dash components out)."""

from __future__ import annotations

import math

import dash_bootstrap_components as dbc
from dash import html

from attnviz.dashboard.example import ids
from attnviz.dashboard.example.data import ExampleSummary
from attnviz.dashboard.example.views import MetricsTable, head_label
from attnviz.pipeline.metrics import METRICS
from attnviz.pipeline.store import ExampleWindows


def fmt_value(value: float, unit: str = "") -> str:
    """A metric value for a table cell (``–`` when undefined)."""
    if value is None or not math.isfinite(value):
        return "–"
    if unit in ("keys", "tokens"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def fmt_percentile(p: float) -> str:
    """``p87`` style percentile (``–`` when undefined)."""
    return "–" if p is None or not math.isfinite(p) else f"p{p:.0f}"


def metrics_panel(table: MetricsTable, layer: int) -> html.Div:
    """The selected head's metrics with corpus percentiles, then every head of the layer as a small table."""
    head = table.head
    units = [METRICS[n].unit if n in METRICS else "" for n in table.names]
    if head is None:
        vals, pcts, who = table.mean_values, table.mean_percentiles, "mean of all heads"
    else:
        vals, pcts, who = table.values[:, head], table.percentiles[:, head], head_label(head)
    summary_rows = [
        html.Tr([html.Td(label, title=desc), html.Td(fmt_value(float(v), u), className="text-end"),
                 html.Td(fmt_percentile(float(p)), className="text-end text-muted")])
        for label, desc, v, p, u in zip(table.labels, table.descriptions, vals, pcts, units, strict=True)
    ]
    summary = dbc.Table(
        [html.Thead(html.Tr([html.Th("metric"), html.Th("value", className="text-end"),
                             html.Th("percentile", className="text-end")])), html.Tbody(summary_rows)],
        size="sm", bordered=False, striped=True, className="mb-2 small", id=ids.METRICS_SUMMARY)
    n_heads = table.values.shape[1]
    head_cells = [html.Th(f"H{h}", className="text-end" + (" table-primary" if h == head else ""))
                  for h in range(n_heads)]
    rows = []
    for m, (label, desc, u) in enumerate(zip(table.labels, table.descriptions, units, strict=True)):
        cells = [html.Td(label, title=desc, className="text-nowrap")]
        for h in range(n_heads):
            p = float(table.percentiles[m, h])
            cells.append(html.Td(
                [fmt_value(float(table.values[m, h]), u), " ", html.Span(fmt_percentile(p), className="text-muted")],
                className="text-end text-nowrap" + (" table-primary" if h == head else ""),
                title=f"{label}, head {h}: percentile {fmt_percentile(p)} of the run"))
        rows.append(html.Tr(cells))
    heads_table = dbc.Table([html.Thead(html.Tr([html.Th("metric"), *head_cells])), html.Tbody(rows)],
                            size="sm", bordered=True, className="small mb-0", responsive=True,
                            id=ids.METRICS_HEADS, style={"fontSize": "0.75rem"})
    note = (f"value and percentile: rank of this example's value among the {table.n_examples} examples of the "
            "run, for the same layer and head.")
    return dbc.Row([
        dbc.Col([html.H6(f"Layer {layer}, {who}", className="mb-1"), summary], lg=3),
        dbc.Col([html.H6(f"All heads of layer {layer}", className="mb-1"), heads_table,
                 html.Div(note, className="text-muted small mt-1")], lg=9),
    ])


def example_summary(summary: ExampleSummary) -> html.Div:
    """The example's text (and target text), its token counts and flags (random weights, rounded storage)."""
    table, i, mantissa_bits = summary.table, summary.index, summary.mantissa_bits
    badges = [dbc.Badge(f"{summary.n_tokens} tokens", color="secondary", className="me-1")]
    if summary.n_target_tokens:
        badges.append(dbc.Badge(f"{summary.n_target_tokens} target tokens", color="secondary", className="me-1"))
    if bool(table.truncated[i]):
        badges.append(dbc.Badge("truncated", color="warning", className="me-1"))
    if table.label[i]:
        badges.append(dbc.Badge(f"label: {table.label[i]}", color="info", className="me-1"))
    if summary.random_weights:
        badges.append(dbc.Badge("random weights", color="danger", className="me-1"))
    if mantissa_bits:
        badges.append(dbc.Badge(f"attention stored with {mantissa_bits} mantissa bits "
                                f"(≤ {100 * 2.0 ** -(mantissa_bits + 1):.2g}% error)", color="warning",
                                className="me-1"))
    scroll = {"maxHeight": "4.6em", "overflowY": "auto"}  # long (512-token) examples scroll in place
    parts = [html.Div(table.text[i], className="fw-semibold", style=scroll)]
    if table.target_text[i]:
        parts.append(html.Div(["→ ", table.target_text[i]], className="text-muted", style=scroll))
    parts.append(html.Div(badges, className="mt-1"))
    return html.Div(parts)


def window_line(windows: ExampleWindows) -> tuple[str, bool, bool, bool]:
    """The picker's window line for an example: (label ``window k of n``, hidden, previous disabled, next
    disabled); hidden for an example that is no window of a longer text."""
    if not windows.windowed:
        return "", True, True, True
    label = f"window {windows.position + 1} of {windows.total}"
    if len(windows.examples) < windows.total:
        label += f" ({len(windows.examples)} written)"
    return label, False, windows.previous() is None, windows.next() is None


def _token_chips(shown: list[str], raw: list[str]) -> html.Div:
    """Tokens as small chips ``position shown``, each with its raw token as the tooltip."""
    return html.Div([html.Span([html.Span(str(i), className="text-muted me-1"), label],
                               title=f"token {i}: raw {r}", className="attnviz-token border rounded px-1 me-1 mb-1 "
                                                                      "d-inline-block")
                     for i, (label, r) in enumerate(zip(shown, raw, strict=True))], className="small")


def input_panel(summary: ExampleSummary, tokens: dict[str, tuple[list[str], list[str]]],
                windows: ExampleWindows) -> html.Div:
    """The Input tab: the example's whole text (and target text), where it lies in a longer text when it is a
    window of one, and its tokens per side as the views label them, the raw token in each tooltip.
    ``tokens`` maps a side (``source``, ``target``) to its (display labels, raw labels)."""
    table, i = summary.table, summary.index
    parts: list = [html.Div(table.text[i], className="fw-semibold", style={"whiteSpace": "pre-wrap"})]
    if table.target_text[i]:
        parts.append(html.Div(["→ ", table.target_text[i]], className="text-muted", style={"whiteSpace": "pre-wrap"}))
    if windows.windowed:
        start = windows.token_starts[windows.position]
        parts.append(html.Div(f"Window {windows.position + 1} of {windows.total} of input text "
                              f"{windows.input_index}: its first token is token {start} of the text.",
                              className="small text-muted mt-1"))
    if bool(table.truncated[i]):
        parts.append(html.Div("The text was cut to the model's length (--long-inputs truncate).",
                              className="small text-muted mt-1"))
    for side, (shown, raw) in tokens.items():
        if not shown:
            continue
        parts.append(html.H6(f"{side.capitalize()} tokens ({len(shown)}); hover a token for its raw form",
                             className="mt-2 mb-1 small fw-semibold"))
        parts.append(_token_chips(shown, raw))
    return html.Div(parts, style={"maxHeight": "420px", "overflowY": "auto"})
