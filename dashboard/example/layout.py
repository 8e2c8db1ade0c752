"""Layout of the Example tab (ids in :mod:`attnviz.dashboard.example.ids`); the graphs start with a "loading…"
message until their callbacks draw them."""

from __future__ import annotations

from typing import Any, cast

import dash_bootstrap_components as dbc
from dash import dcc, html

from attnviz.dashboard.example import ids, neighbours
from attnviz.dashboard.example.figures import image_config
from attnviz.dashboard.messages import message_figure

#: A view that takes longer than this shows a spinner (shorter waits would only flicker).
LOADING_DELAY_MS = 300
#: Height of the matrix and head view: with the header, both fit a 1600 x 1000 screen.
MAIN_VIEW_HEIGHT = 680


def _graph(graph_id: str, height: int = 380) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=message_figure("loading…", height=height),
                     config=cast(Any, image_config(graph_id)), style={"minHeight": f"{height}px"})


def _card(title: str, body: Any, class_name: str = "") -> dbc.Card:
    return dbc.Card([dbc.CardHeader(title, className="py-1 fw-semibold small"), dbc.CardBody(body, className="p-2")],
                    className="mb-3 shadow-sm " + class_name)


def _labelled(label: Any, control: Any, **col: Any) -> dbc.Col:
    return dbc.Col([dbc.Label(label, className="small mb-0"), control], **col)


def _picker() -> dbc.Card:
    """The control panel's input part: which example (index, prev / next, search) and its text."""
    return dbc.Card(dbc.CardBody([
        dbc.Label("Example", html_for=ids.EXAMPLE_INDEX, className="small mb-0"),
        dbc.InputGroup([
            dbc.Button("‹ prev", id=ids.EXAMPLE_PREV, color="secondary", outline=True, size="sm"),
            dbc.Input(id=ids.EXAMPLE_INDEX, type="number", min=0, step=1, value=0, size="sm",
                      style={"maxWidth": "6rem"}),
            dbc.InputGroupText("of 0", id=ids.EXAMPLE_COUNT, className="small"),
            dbc.Button("next ›", id=ids.EXAMPLE_NEXT, color="secondary", outline=True, size="sm"),
        ], size="sm"),
        dbc.Row([
            _labelled("Search the corpus", dbc.Input(id=ids.EXAMPLE_SEARCH, type="search", size="sm",
                                                     placeholder="words in a sentence…", debounce=True), width=6),
            _labelled("Matches", dbc.Select(id=ids.EXAMPLE_SEARCH_RESULTS, options=[], size="sm",
                                            placeholder="type a search first"), width=6),
        ], className="g-2 mt-1"),
        html.Div(id=ids.EXAMPLE_TEXT, className="mt-2 small"),
    ], className="p-2"), className="mb-2 shadow-sm")


def _controls() -> dbc.Card:
    """The control panel's view part: layer, head, query position, attention kind, raw / rollout, export."""
    return dbc.Card(dbc.CardBody([
        dbc.Row([
            _labelled("Layer", dbc.Select(id=ids.LAYER_SELECT, options=[], size="sm"), width=4),
            _labelled("Head", dbc.Select(id=ids.HEAD_SELECT, options=[], size="sm"), width=4),
            _labelled(html.Span("query position", id=ids.STEP_LABEL),
                      dbc.Input(id=ids.STEP_INPUT, type="number", min=0, step=1, value=0, size="sm"), width=4),
        ], className="g-2"),
        dbc.Row([
            _labelled("Attention", dbc.Select(id=ids.KIND_SELECT, options=[], size="sm"), width=7),
            _labelled("Matrix shows", dbc.RadioItems(
                id=ids.ATTN_MODE, inline=True, value="raw", className="small",
                options=[{"label": "raw", "value": "raw"}, {"label": "rollout", "value": "rollout"},
                         {"label": "value-weighted", "value": "value-weighted"}]), width=5),
        ], className="g-2 mt-1"),
        dbc.ButtonGroup([
            dbc.Button("Reset", id=ids.RESET, color="secondary", outline=True, size="sm",
                       title="back to layer 0, head 0, step 0, raw self-attention; resets zoom"),
            dbc.Button("Save PNG", id=ids.SAVE_PNG, color="primary", outline=True, size="sm"),
            dbc.Button("Save SVG", id=ids.SAVE_SVG, color="primary", outline=True, size="sm"),
        ], className="mt-2"),
    ], className="p-2"), className="mb-2 shadow-sm")


def _details() -> dbc.Accordion:
    """Panels drawn by the server only while open (closed, a change of selection costs them nothing)."""
    def item(title: str, body: Any, item_id: str) -> dbc.AccordionItem:
        return dbc.AccordionItem(dcc.Loading(body, delay_show=LOADING_DELAY_MS, type="dot"), title=title,
                                 item_id=item_id)

    return dbc.Accordion([
        item("Interpretability: this example's metrics vs the corpus", html.Div(id=ids.METRICS_PANEL),
             ids.DETAIL_METRICS),
        item("Debugging: value distributions", _graph(ids.DEBUG_VIEW, 560), ids.DETAIL_DEBUG),
        item("Embeddings and activation norms", [_graph(ids.EMBEDDINGS_VIEW, 430), _graph(ids.NORMS_VIEW, 300)],
             ids.DETAIL_EMBEDDINGS),
    ], id=ids.DETAILS, always_open=True, start_collapsed=True, active_item=[], className="mb-3 shadow-sm")


def _view(view_id: str, height: int, fill: bool = False) -> html.Div:
    """A view's box: example.js draws its figure in it with Plotly (no Dash round trip per change), at the box's
    height when ``fill``. It shows "loading…" until then."""
    return html.Div(html.Div("loading…", className="text-muted small p-2"), id=view_id,
                    className="attnviz-fill" if fill else "", style={"height" if fill else "minHeight": f"{height}px"})


def _head_view() -> html.Div:
    """The head view's box: example.js draws it on a canvas (its title, legend and a scrolling token list)."""
    return html.Div(id=ids.HEAD_VIEW, className="attnviz-head-view", style={"height": f"{MAIN_VIEW_HEIGHT}px"})


def layout() -> html.Div:
    """The tab's content: the example's views on the left (matrix and head view on the first screen, model view
    and time step below, drawn when they scroll into view), the example and view controls on the right."""
    views = dcc.Loading([
        dcc.Store(id=ids.PAYLOAD),
        dbc.Row([
            dbc.Col(_card("Attention matrix (queries × keys)", _view(ids.MATRIX, MAIN_VIEW_HEIGHT, fill=True)), lg=7),
            dbc.Col(_card("Head view", _head_view()), lg=5),
        ], className="g-3"),
        dbc.Row([
            dbc.Col(_card("Model view (all layers × heads)", _view(ids.MODEL_VIEW, 400)), lg=7),
            dbc.Col(_card("Time step", [_view(ids.TIMESTEP_BARS, 300), _view(ids.TIMESTEP_LAYERS, 260)]), lg=5),
        ], className="g-3"),
    ], target_components=cast(Any, {ids.PAYLOAD: "data"}), delay_show=LOADING_DELAY_MS, type="circle",
        overlay_style={"visibility": "visible", "opacity": 0.6})
    stores = [dcc.Store(id=cid) for cid in (ids.HEAD_VIEW_PIN, ids.HEAD_VIEW_CLICK, ids.MODEL_VIEW_CLICK,
                                            ids.SAVE_STATUS, ids.PAYLOAD_KEY, ids.URL_REQUEST, ids.EXAMPLE_ID,
                                            ids.METRICS_STATE, ids.DEBUG_STATE, ids.EMBEDDINGS_STATE)]
    return html.Div([
        *stores,
        dbc.Row([
            dbc.Col([views, _details(), neighbours.panel()], lg=9),
            dbc.Col([_picker(), _controls(),
                     dbc.Alert(id=ids.STATE_ALERT, is_open=False, color="warning", className="py-2 small")],
                    lg=3, className="attnviz-controls"),
        ], className="g-3"),
    ])
