"""HTML panels of the Corpus tab (pure functions: data in, Dash components out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dash_bootstrap_components as dbc
from dash import dcc, html

from attnviz.dashboard.corpus import ids


@dataclass(frozen=True)
class RankedExample:
    """One row of a head's top/bottom examples: which end, the value, the example, its link and text."""

    which: str
    value: float
    example: int
    href: str
    text: str


def examples_table(tag: str, run_name: str, metric: str, k: int, rows: Sequence[RankedExample]) -> html.Div:
    """A run's highest and lowest ``k`` examples of a head, each linked to the Example tab."""
    if k == 0:
        return html.Div(f"{tag}: no defined value", className="text-muted")
    body = [html.Tr([
        html.Td(row.which, className="text-muted"), html.Td(f"{row.value:.4g}"),
        html.Td(dcc.Link(f"#{row.example}", href=row.href, id=ids.example_link(tag, row.example))),
        html.Td(row.text if len(row.text) <= 110 else row.text[:107] + "…"),
    ]) for row in rows]
    return html.Div([
        html.Div(f"{tag}: {run_name} — highest and lowest {k}", className="fw-semibold mt-1"),
        html.Table([html.Thead(html.Tr([html.Th(""), html.Th(metric), html.Th("example"),
                                        html.Th("text")])),
                    html.Tbody(body)], className="table table-sm mb-1"),
    ])


def field_filters(options: Mapping[str, set[str]], chosen: Mapping[str, Sequence[str] | None]) -> list[html.Div]:
    """One multi-select per metadata field (its values sorted), keeping the chosen values it still offers."""
    return [html.Div([
        dbc.Label(name, className="small fw-semibold mb-0"),
        dcc.Dropdown(id=ids.field(name), options=sorted(vals), multi=True,
                     value=[v for v in chosen.get(name) or [] if v in vals], placeholder="any",
                     style={"minWidth": "10rem"}),
    ]) for name, vals in sorted(options.items())]
