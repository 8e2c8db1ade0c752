"""Layout of the Training tab (ids in :mod:`attnviz.dashboard.training.ids`)."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.training import ids

#: A view whose callback is still running after this many ms shows a spinner over its last state.
LOADING_DELAY_MS = 300


def _graph(cid: str) -> dcc.Loading:
    return dcc.Loading(dcc.Graph(id=cid, figure=message_figure("loading…"), config={"displaylogo": False}),
                       delay_show=LOADING_DELAY_MS, show_initially=False, type="circle",
                       overlay_style={"visibility": "visible", "opacity": 0.6})


def _control(label: str, component: Any, width: int) -> dbc.Col:
    return dbc.Col([dbc.Label(label, className="small fw-semibold mb-0"), component], width=width, className="mb-2")


def page_stores() -> list[dcc.Store]:
    """The tab's stores that live in the page beside the header's state, whether or not the tab has been opened
    (the hand-off to the Corpus tab listens to them together with the Example tab's selection)."""
    return [dcc.Store(id=ids.COMPARE)]


def layout() -> html.Div:
    """The tab's content (put in the page when the tab is first opened)."""
    controls = dbc.Row([
        _control("Series", dcc.Dropdown(id=ids.SERIES, options=[], clearable=False), 3),
        _control("Metric", dcc.Dropdown(id=ids.METRIC, options=[], clearable=False), 3),
        _control("View", dbc.RadioItems(id=ids.VIEW, value="layers", inline=True, className="small", options=[
            {"label": "per layer (one line per head)", "value": "layers"},
            {"label": "head × step map", "value": "heatmap"}]), 4),
        dbc.Col([html.Div(id=ids.PICK_TEXT, className="small text-muted"),
                 dbc.Button("Clear pick", id=ids.PICK_CLEAR, size="sm", color="secondary", outline=True,
                            className="mt-1")], width=2),
    ], className="g-2 align-items-end")
    return html.Div([
        dcc.Store(id=ids.STATE),
        dcc.Store(id=ids.PICK),
        dcc.Store(id=ids.HASH),
        dbc.Card(dbc.CardBody(controls), className="mb-2"),
        dbc.Alert(id=ids.MESSAGE, is_open=False, color="warning", className="py-2 small mb-1"),
        html.Div(id=ids.STATUS, className="small text-muted mb-1"),
        dbc.Alert(id=ids.ALERT, color="secondary", className="py-2 small mb-2"),
        dbc.Row([dbc.Col(_graph(ids.METRIC_FIGURE), md=12)], className="g-1"),
        dbc.Row([dbc.Col(_graph(ids.LOSS_FIGURE), md=5), dbc.Col(_graph(ids.TIMELINE_FIGURE), md=7)],
                className="g-1"),
        html.Div([html.Div("Pattern label changes", className="fw-semibold small"),
                  html.Div(id=ids.CHANGES)], className="mt-2"),
    ])
