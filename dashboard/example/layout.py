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
#: Height of the matrix and head view: with the header, both and the tabs under them fit a 1600 x 1000 screen.
MAIN_VIEW_HEIGHT = 640
#: Height of a panel's figure while it shows only a message (a line or two: a panel with nothing to show collapses).
MESSAGE_HEIGHT = 64
#: Characters per line of such a message (the panel is ~1,150 px wide at 1600 px).
MESSAGE_WRAP = 150


def _graph(graph_id: str, figure: Any = None) -> dcc.Graph:
    """A panel's graph (``figure``, else one line tall until its figure comes: a message keeps it one line tall)."""
    return dcc.Graph(id=graph_id, figure=figure if figure is not None else message_figure("loading…",
                                                                                          height=MESSAGE_HEIGHT),
                     config=cast(Any, image_config(graph_id)))


def debug_pane(figure: Any = None) -> dcc.Graph:
    """The Debugging tab's graph (put in the page, drawn, when the tab first asks for it)."""
    return _graph(ids.DEBUG_VIEW, figure)


def embeddings_pane(embeddings: Any = None, norms: Any = None) -> list[dcc.Graph]:
    """The Embeddings tab's graphs (put in the page, drawn, when the tab first asks for them)."""
    return [_graph(ids.EMBEDDINGS_VIEW, embeddings), _graph(ids.NORMS_VIEW, norms)]


def _card(title: str, body: Any, class_name: str = "") -> dbc.Card:
    return dbc.Card([dbc.CardHeader(title, className="py-1 fw-semibold small"), dbc.CardBody(body, className="p-2")],
                    className="mb-3 shadow-sm " + class_name)


def _labelled(label: Any, control: Any, **col: Any) -> dbc.Col:
    return dbc.Col([dbc.Label(label, className="small mb-0"), control], **col)


def _window_stepper() -> html.Div:
    """"window k of n" with buttons to the windows before and after (``--long-inputs window``); hidden for an
    example that is not a window of a longer text."""
    return html.Div(dbc.InputGroup([
        dbc.Button("‹ window", id=ids.WINDOW_PREV, color="secondary", outline=True, size="sm",
                   title="the window before in the same text"),
        dbc.InputGroupText("", id=ids.WINDOW_LABEL, className="small"),
        dbc.Button("window ›", id=ids.WINDOW_NEXT, color="secondary", outline=True, size="sm",
                   title="the window after in the same text"),
    ], size="sm"), id=ids.WINDOW_BOX, hidden=True, className="mt-1")


def _picker() -> dbc.Card:
    """The control panel's input part: which example (index, prev / next, the windows of a long text, search)
    and its text."""
    return dbc.Card(dbc.CardBody([
        dbc.Label("Example", html_for=ids.EXAMPLE_INDEX, className="small mb-0"),
        dbc.InputGroup([
            dbc.Button("‹ prev", id=ids.EXAMPLE_PREV, color="secondary", outline=True, size="sm"),
            dbc.Input(id=ids.EXAMPLE_INDEX, type="number", min=0, step=1, value=0, size="sm",
                      style={"maxWidth": "6rem"}),
            dbc.InputGroupText("of 0", id=ids.EXAMPLE_COUNT, className="small"),
            dbc.Button("next ›", id=ids.EXAMPLE_NEXT, color="secondary", outline=True, size="sm"),
        ], size="sm"),
        _window_stepper(),
        dbc.Row([
            _labelled("Search the corpus", dbc.Input(id=ids.EXAMPLE_SEARCH, type="search", size="sm",
                                                     placeholder="words in a sentence…", debounce=True), width=6),
            _labelled("Matches", dbc.Select(id=ids.EXAMPLE_SEARCH_RESULTS, options=[], size="sm",
                                            placeholder="type a search first"), width=6),
        ], className="g-2 mt-1"),
        html.Div(id=ids.EXAMPLE_TEXT, className="mt-2 small"),
    ], className="p-2"), className="mb-2 shadow-sm")


def _controls() -> dbc.Card:
    """The control panel's view part: layer, head, query position, attention kind, raw / rollout, export. The
    attention kind has a row of its own: its longest label (``cross-attention (decoder → encoder)``) fits."""
    return dbc.Card(dbc.CardBody([
        dbc.Row([
            _labelled("Layer", dbc.Select(id=ids.LAYER_SELECT, options=[], size="sm"), width=4),
            _labelled("Head", dbc.Select(id=ids.HEAD_SELECT, options=[], size="sm"), width=4),
            _labelled(html.Span("query position", id=ids.STEP_LABEL),
                      dbc.Input(id=ids.STEP_INPUT, type="number", min=0, step=1, value=0, size="sm"), width=4),
        ], className="g-2"),
        dbc.Row([
            _labelled("Attention", dbc.Select(id=ids.KIND_SELECT, options=[], size="sm"), width=12),
        ], className="g-2 mt-1"),
        dbc.Row([
            _labelled("Matrix shows", dbc.RadioItems(
                id=ids.ATTN_MODE, inline=True, value="raw", className="small",
                options=[{"label": "raw", "value": "raw"}, {"label": "rollout", "value": "rollout"},
                         {"label": "value-weighted", "value": "value-weighted"}]), width=12),
        ], className="g-2 mt-1"),
        dbc.ButtonGroup([
            dbc.Button("Reset", id=ids.RESET, color="secondary", outline=True, size="sm",
                       title="back to layer 0, head 0, step 0, raw self-attention; resets zoom"),
            dbc.Button("Save PNG", id=ids.SAVE_PNG, color="primary", outline=True, size="sm"),
            dbc.Button("Save SVG", id=ids.SAVE_SVG, color="primary", outline=True, size="sm"),
        ], className="mt-2"),
    ], className="p-2"), className="mb-2 shadow-sm")


def _details() -> dbc.Tabs:
    """The panels under the views, one tab each: model view and time step (drawn by the page when their tab
    shows them), the example's input, and the server's panels (metrics, debugging, embeddings: drawn only while
    their tab is open, so a change of selection costs a closed one nothing). The Debugging and Embeddings graphs
    enter the page, drawn, when their tab first asks for them (``fill_debug``, ``fill_embeddings`` in
    callbacks.py): a mounted ``dcc.Graph`` draws its "loading…" figure with Plotly at start-up even in a hidden
    tab."""
    def loading(body: Any) -> dcc.Loading:
        return dcc.Loading(body, delay_show=LOADING_DELAY_MS, type="dot")

    def tab(label: str, body: Any, tab_id: str) -> dbc.Tab:
        return dbc.Tab(html.Div(body, className="pt-2"), label=label, tab_id=tab_id, id=f"{ids.DETAILS}-{tab_id}",
                       label_class_name="py-1 px-3 small")

    return dbc.Tabs([
        tab("Model view", _view(ids.MODEL_VIEW, 400), ids.DETAIL_MODEL),
        tab("Time step", dbc.Row([dbc.Col(_view(ids.TIMESTEP_BARS, 300), lg=6),
                                  dbc.Col(_view(ids.TIMESTEP_LAYERS, 300), lg=6)], className="g-2"),
            ids.DETAIL_TIMESTEP),
        tab("Input", loading(html.Div(id=ids.INPUT_PANEL)), ids.DETAIL_INPUT),
        tab("Interpretability", loading(html.Div(id=ids.METRICS_PANEL)), ids.DETAIL_METRICS),
        tab("Debugging", loading(html.Div(id=ids.DEBUG_BOX)), ids.DETAIL_DEBUG),
        tab("Embeddings", loading(html.Div(id=ids.EMBEDDINGS_BOX)), ids.DETAIL_EMBEDDINGS),
    ], id=ids.DETAILS, active_tab=ids.DETAIL_MODEL, className="mb-1")


def _view(view_id: str, height: int, fill: bool = False) -> html.Div:
    """A view's box: example.js draws its figure in it with Plotly (no Dash round trip per change), at the box's
    height when ``fill``. It shows "loading…" until then."""
    return html.Div(html.Div("loading…", className="text-muted small p-2"), id=view_id,
                    className="attnviz-fill" if fill else "", style={"height" if fill else "minHeight": f"{height}px"})


def _head_view() -> html.Div:
    """The head view's box: example.js draws it on a canvas (its title, legend and a scrolling token list)."""
    return html.Div(id=ids.HEAD_VIEW, className="attnviz-head-view", style={"height": f"{MAIN_VIEW_HEIGHT}px"})


def layout() -> html.Div:
    """The tab's content: the example's views on the left (matrix and head view on the first screen, the other
    panels as tabs under them), the example and view controls on the right."""
    views = dcc.Loading([
        dcc.Store(id=ids.PAYLOAD),
        dbc.Row([
            dbc.Col(_card("Attention matrix (queries × keys)", _view(ids.MATRIX, MAIN_VIEW_HEIGHT, fill=True)), lg=7),
            dbc.Col(_card("Head view", _head_view()), lg=5),
        ], className="g-3"),
    ], target_components=cast(Any, {ids.PAYLOAD: "data"}), delay_show=LOADING_DELAY_MS, type="circle",
        overlay_style={"visibility": "visible", "opacity": 0.6})
    stores = [dcc.Store(id=cid) for cid in (ids.HEAD_VIEW_PIN, ids.HEAD_VIEW_CLICK, ids.MODEL_VIEW_CLICK,
                                            ids.SAVE_STATUS, ids.PAYLOAD_KEY, ids.URL_REQUEST, ids.EXAMPLE_ID,
                                            ids.METRICS_STATE, ids.DEBUG_STATE, ids.EMBEDDINGS_STATE,
                                            ids.INPUT_STATE)]
    return html.Div([
        *stores,
        dbc.Row([
            dbc.Col([html.Div(id=ids.ATTENTION_NOTE, className="small mb-2"), views, _details(),
                     neighbours.panel()], lg=9),
            dbc.Col([_picker(), _controls(),
                     dbc.Alert(id=ids.STATE_ALERT, is_open=False, color="warning", className="py-2 small")],
                    lg=3, className="attnviz-controls"),
        ], className="g-3"),
    ])
