"""Layout of the Corpus tab (ids in :mod:`attnviz.dashboard.corpus.ids`)."""

from __future__ import annotations

from typing import Any

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import dcc, html

from attnviz.dashboard.corpus import ids, qk_space
from attnviz.dashboard.messages import message_figure
from attnviz.pipeline.statistics.aggregates import AGGREGATES

#: A view whose callback is still running after this many ms shows a spinner over its last state.
LOADING_DELAY_MS = 300


def _loading(component: Any) -> dcc.Loading:
    """``component`` under a spinner shown only while its callback takes longer than :data:`LOADING_DELAY_MS`."""
    return dcc.Loading(component, delay_show=LOADING_DELAY_MS, show_initially=False, type="circle",
                       overlay_style={"visibility": "visible", "opacity": 0.6})


def _graph(cid: str, **style: Any) -> dcc.Loading:
    return _loading(dcc.Graph(id=cid, figure=message_figure("loading…"), config={"displaylogo": False},
                              style=style or None))


def _control(label: str, component: Any, width: int | None = None) -> dbc.Col:
    return dbc.Col([dbc.Label(label, className="small fw-semibold mb-0"), component],
                   width=width, className="mb-2")


def layout() -> html.Div:
    """The tab's content."""
    controls = dbc.Row([
        _control("Attention", dbc.Select(id=ids.KIND, options=[], size="sm"), 2),
        _control("Metric", dcc.Dropdown(id=ids.METRIC, options=[], clearable=False), 3),
        _control("Aggregate over examples", dbc.RadioItems(
            id=ids.AGG, options=[{"label": v, "value": k} for k, v in AGGREGATES.items()], value="mean",
            inline=True, className="small"), 4),
        _control("Compare with run B", dcc.Dropdown(id=ids.RUN_B, options=[], placeholder="(none)"), 3),
    ], className="g-2")
    filters = dbc.Row([
        _control("Sentence length (tokens)", dcc.RangeSlider(id=ids.LENGTH, min=0, max=1, value=[0, 1], step=1,
                                                             allowCross=False,
                                                             tooltip={"placement": "bottom"}), 4),
        _control("Truncated", dbc.RadioItems(
            id=ids.TRUNCATED, value="any", inline=True, className="small",
            options=[{"label": "any", "value": "any"}, {"label": "truncated", "value": "yes"},
                     {"label": "not truncated", "value": "no"}]), 3),
        dbc.Col(html.Div(id=ids.FIELDS, className="d-flex flex-wrap gap-2"), width=5),
    ], className="g-2 align-items-end")
    heatmaps = dbc.Row([
        dbc.Col(_graph(ids.HEATMAP_A), md=4),
        dbc.Col(_graph(ids.HEATMAP_B), md=4),
        dbc.Col(_graph(ids.DIFF), md=4),
    ], className="g-1")
    drill = dbc.Row([
        dbc.Col(_graph(ids.PROFILE), md=4),
        dbc.Col([html.Div(id=ids.HEAD_TITLE, className="fw-semibold small"), _graph(ids.HEAD_DIST)], md=4),
        dbc.Col(_loading(html.Div(id=ids.HEAD_EXAMPLES, className="small",
                                  style={"maxHeight": "330px", "overflowY": "auto"})), md=4),
    ], className="g-1")
    patterns = dbc.Row([
        dbc.Col(_graph(ids.PATTERNS_A), md=4),
        dbc.Col(_graph(ids.PATTERNS_B), md=4),
        dbc.Col(_graph(ids.RELPOS), md=4),
    ], className="g-1")
    similarity = dbc.Row([dbc.Col(_graph(ids.SIMILARITY_A), md=6), dbc.Col(_graph(ids.SIMILARITY_B), md=6)],
                         className="g-1")
    table = html.Div([
        html.Div([html.Span("Heads", className="fw-semibold me-3"),
                  dbc.Button("Export CSV", id=ids.EXPORT, size="sm", color="secondary", outline=True)],
                 className="d-flex align-items-center mb-1"),
        _loading(dag.AgGrid(
            id=ids.TABLE, rowData=[], columnDefs=[], className="ag-theme-alpine",
            defaultColDef={"sortable": True, "filter": True, "resizable": True, "minWidth": 90},
            dashGridOptions={"animateRows": False, "suppressColumnVirtualisation": True},
            csvExportParams={"fileName": "attnviz-heads.csv"}, style={"height": "420px"})),
    ], className="mt-2")
    return html.Div([
        dcc.Store(id=ids.HEAD),
        dcc.Store(id=ids.NEED),
        *[dcc.Store(id=ids.bundle(view)) for view in ids.BUNDLED],
        *[dcc.Store(id=ids.error_slot(view), data="") for view in ids.VIEWS],
        dbc.Card(dbc.CardBody([controls, filters]), className="mb-2"),
        dbc.Alert(id=ids.ALERT, is_open=False, color="warning", className="py-2 small mb-1"),
        html.Div(id=ids.STATUS, className="small text-muted mb-1"),
        heatmaps, drill, patterns, similarity, table, qk_space.panel(),
    ])
