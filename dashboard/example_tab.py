"""The Example tab: one example of one run, head by head and layer by layer.

Layout and callbacks only; each callback reads the resolved selection from the ``view-state`` store (see
:mod:`attnviz.dashboard.sync`), calls one function of :mod:`attnviz.dashboard.views` and shows a message in place of the figure
when the selection cannot be drawn (never a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from attnviz.dashboard import ids, panels, views
from attnviz.dashboard.data import current_reader
from attnviz.dashboard.figures import image_config, message_figure
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.store import StoreError

log = logging.getLogger(__name__)

MAX_SEARCH_RESULTS = 50
_EXPECTED = (StoreError, views.ViewError)


def _graph(graph_id: str, height: int = 380) -> dcc.Graph:
    return dcc.Graph(id=graph_id, figure=message_figure("loading…", height=height),
                     config=image_config(graph_id), style={"minHeight": f"{height}px"})


def _card(title: str, body: Any, class_name: str = "") -> dbc.Card:
    return dbc.Card([dbc.CardHeader(title, className="py-1 fw-semibold small"), dbc.CardBody(body, className="p-2")],
                    className="mb-3 shadow-sm " + class_name)


def _picker() -> dbc.Card:
    return dbc.Card(dbc.CardBody([
        dbc.Row([
            dbc.Col([
                dbc.Label("Example", html_for=ids.EXAMPLE_INDEX, className="small mb-0"),
                dbc.InputGroup([
                    dbc.Button("‹ prev", id=ids.EXAMPLE_PREV, color="secondary", outline=True, size="sm"),
                    dbc.Input(id=ids.EXAMPLE_INDEX, type="number", min=0, step=1, value=0, size="sm",
                              style={"maxWidth": "6rem"}),
                    dbc.InputGroupText("of 0", id=ids.EXAMPLE_COUNT, className="small"),
                    dbc.Button("next ›", id=ids.EXAMPLE_NEXT, color="secondary", outline=True, size="sm"),
                ], size="sm"),
            ], width="auto"),
            dbc.Col([
                dbc.Label("Search the corpus", html_for=ids.EXAMPLE_SEARCH, className="small mb-0"),
                dbc.Input(id=ids.EXAMPLE_SEARCH, type="search", placeholder="words in a sentence…", debounce=True,
                          size="sm"),
            ], md=3),
            dbc.Col([
                dbc.Label("Matches", html_for=ids.EXAMPLE_SEARCH_RESULTS, className="small mb-0"),
                dbc.Select(id=ids.EXAMPLE_SEARCH_RESULTS, options=[], placeholder="type a search first", size="sm"),
            ]),
        ], className="g-2 align-items-end"),
        html.Div(id=ids.EXAMPLE_TEXT, className="mt-2"),
    ], className="p-2"), className="mb-2 shadow-sm")


def _controls() -> dbc.Card:
    def labelled(label: Any, control: Any, **col: Any) -> dbc.Col:
        return dbc.Col([dbc.Label(label, className="small mb-0"), control], **col)

    return dbc.Card(dbc.CardBody(dbc.Row([
        labelled("Layer", dbc.Select(id=ids.LAYER_SELECT, options=[], size="sm"), width=2),
        labelled("Head", dbc.Select(id=ids.HEAD_SELECT, options=[], size="sm"), width=2),
        labelled(html.Span("query position", id=ids.STEP_LABEL),
                 dbc.Input(id=ids.STEP_INPUT, type="number", min=0, step=1, value=0, size="sm"), width=1),
        labelled("Attention", dbc.Select(id=ids.KIND_SELECT, options=[], size="sm"), width=2),
        labelled("Matrix shows", dbc.RadioItems(
            id=ids.ATTN_MODE, inline=True, value="raw", className="small",
            options=[{"label": "raw", "value": "raw"}, {"label": "rollout", "value": "rollout"}]), width="auto"),
        dbc.Col(dbc.ButtonGroup([
            dbc.Button("Reset", id=ids.RESET, color="secondary", outline=True, size="sm",
                       title="back to layer 0, head 0, step 0, raw self-attention; resets zoom"),
            dbc.Button("Save PNG", id=ids.SAVE_PNG, color="primary", outline=True, size="sm"),
            dbc.Button("Save SVG", id=ids.SAVE_SVG, color="primary", outline=True, size="sm"),
        ]), width="auto", className="ms-auto"),
    ], className="g-2 align-items-end"), className="p-2"), className="mb-2 shadow-sm")


def layout() -> html.Div:
    """The tab's content (ids in :mod:`attnviz.dashboard.ids`)."""
    return html.Div([
        _picker(),
        _controls(),
        dbc.Alert(id=ids.STATE_ALERT, is_open=False, color="warning", className="py-2 small"),
        dcc.Store(id=ids.HEAD_VIEW_PIN),
        dcc.Store(id=ids.SAVE_STATUS),
        dbc.Row([
            dbc.Col(_card("Attention matrix (queries × keys)", _graph(ids.MATRIX, 480)), lg=7),
            dbc.Col(_card("Head view", _graph(ids.HEAD_VIEW, 480)), lg=5),
        ], className="g-3"),
        dbc.Row([
            dbc.Col(_card("Model view (all layers × heads)", _graph(ids.MODEL_VIEW, 400)), lg=7),
            dbc.Col(_card("Time step", [_graph(ids.TIMESTEP_BARS, 300), _graph(ids.TIMESTEP_LAYERS, 260)]), lg=5),
        ], className="g-3"),
        _card("Interpretability: this example's metrics vs the corpus", html.Div(id=ids.METRICS_PANEL)),
        dbc.Row([
            dbc.Col(_card("Debugging: value distributions", _graph(ids.DEBUG_VIEW, 560)), lg=7),
            dbc.Col(_card("Activation norms", _graph(ids.NORMS_VIEW, 300)), lg=5),
        ], className="g-3"),
        _card("Embeddings", _graph(ids.EMBEDDINGS_VIEW, 430)),
    ])


def _state(data: dict | None) -> ViewState | None:
    return ViewState.from_dict(data) if data else None


def _safe_figure(draw: Callable[[], Any], n: int = 1) -> Any:
    """Run ``draw``; on an error, the message figure (one per output) instead of a traceback."""
    try:
        return draw()
    except _EXPECTED as exc:
        fig = message_figure(str(exc))
    except Exception as exc:  # never a traceback in the page; the server log has it
        log.exception("view failed")
        fig = message_figure(f"could not draw this view ({type(exc).__name__}: {exc})")
    return fig if n == 1 else tuple(fig for _ in range(n))


def _no_selection(n: int = 1) -> Any:
    fig = message_figure("no selection yet")
    return fig if n == 1 else tuple(fig for _ in range(n))


def _pin_key(state: ViewState) -> list:
    return [state.run, state.example, state.kind]


def next_pin(pin: dict | None, state: ViewState, click: dict | None, triggered: str | None) -> dict | None:
    """The head view's pinned token after a click (toggles) or a selection change (cleared on a new example)."""
    key = _pin_key(state)
    if triggered != ids.HEAD_VIEW:
        return pin if pin and pin.get("key") == key else None
    points = (click or {}).get("points") or []
    if not points or points[0].get("curveNumber") not in (0, 1):
        return pin
    side = "query" if points[0]["curveNumber"] == 0 else "key"
    index = int(points[0].get("pointIndex", points[0].get("pointNumber", 0)))
    if pin and pin.get("key") == key and pin.get("side") == side and pin.get("index") == index:
        return None
    return {"key": key, "side": side, "index": index}


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""

    @app.callback(Output(ids.MATRIX, "figure"), Output(ids.MATRIX, "config"), Input(ids.VIEW_STATE, "data"))
    def draw_matrix(data):
        state = _state(data)
        if state is None:
            return _no_selection(), dash.no_update
        result = _safe_figure(lambda: views.matrix_view(current_reader(), state))
        if isinstance(result, tuple):
            return result
        return result, image_config(views.file_stem(state))

    @app.callback(Output(ids.HEAD_VIEW_PIN, "data"), Input(ids.HEAD_VIEW, "clickData"),
                  Input(ids.VIEW_STATE, "data"), State(ids.HEAD_VIEW_PIN, "data"))
    def pin_token(click, data, pin):
        state = _state(data)
        if state is None:
            return None
        return next_pin(pin, state, click, dash.ctx.triggered_id)

    @app.callback(Output(ids.HEAD_VIEW, "figure"), Output(ids.HEAD_VIEW, "config"),
                  Input(ids.VIEW_STATE, "data"), Input(ids.HEAD_VIEW_PIN, "data"))
    def draw_head_view(data, pin):
        state = _state(data)
        if state is None:
            return _no_selection(), dash.no_update
        selected = (pin["side"], int(pin["index"])) if pin and pin.get("key") == _pin_key(state) else None
        fig = _safe_figure(lambda: views.head_view(current_reader(), state, selected))
        return fig, image_config(views.file_stem(state, "headview"))

    @app.callback(Output(ids.MODEL_VIEW, "figure"), Output(ids.MODEL_VIEW, "config"),
                  Input(ids.VIEW_STATE, "data"))
    def draw_model_view(data):
        state = _state(data)
        if state is None:
            return _no_selection(), dash.no_update
        fig = _safe_figure(lambda: views.model_view(current_reader(), state))
        return fig, image_config(views.file_stem(state, "modelview"))

    @app.callback(Output(ids.TIMESTEP_BARS, "figure"), Output(ids.TIMESTEP_LAYERS, "figure"),
                  Input(ids.VIEW_STATE, "data"))
    def draw_timestep(data):
        state = _state(data)
        if state is None:
            return _no_selection(2)
        return _safe_figure(lambda: views.timestep_view(current_reader(), state), n=2)

    @app.callback(Output(ids.METRICS_PANEL, "children"), Input(ids.VIEW_STATE, "data"))
    def draw_metrics(data):
        state = _state(data)
        if state is None:
            return panels.message("no selection yet")
        try:
            return panels.metrics_panel(views.metrics_table(current_reader(), state), state.layer)
        except _EXPECTED as exc:
            return panels.message(str(exc))
        except Exception as exc:
            log.exception("metrics panel failed")
            return panels.message(f"could not compute the metrics ({type(exc).__name__}: {exc})")

    @app.callback(Output(ids.DEBUG_VIEW, "figure"), Input(ids.VIEW_STATE, "data"))
    def draw_debug(data):
        state = _state(data)
        if state is None:
            return _no_selection()
        return _safe_figure(lambda: views.debug_view(current_reader(), state))

    @app.callback(Output(ids.EMBEDDINGS_VIEW, "figure"), Output(ids.NORMS_VIEW, "figure"),
                  Input(ids.VIEW_STATE, "data"))
    def draw_embeddings(data):
        state = _state(data)
        if state is None:
            return _no_selection(2)
        reader = current_reader()
        return (_safe_figure(lambda: views.embeddings_view(reader, state)),
                _safe_figure(lambda: views.norms_view(reader, state)))

    @app.callback(Output(ids.EXAMPLE_TEXT, "children"), Input(ids.VIEW_STATE, "data"))
    def show_example(data):
        state = _state(data)
        if state is None or state.run is None:
            return ""
        try:
            reader = current_reader()
            table = reader.examples(state.run)
            if not 0 <= state.example < len(table):
                return panels.message(f"example {state.example} is out of range for run {state.run!r} "
                                      f"(0..{len(table) - 1})")
            meta = reader.run_info(state.run).meta
            return panels.example_summary(
                table, state.example, random_weights=bool(meta.get("random_weights")),
                mantissa_bits=meta.get("mantissa_bits"), n_tokens=int(table.n_tokens[state.example]),
                n_target_tokens=int(table.n_target_tokens[state.example]))
        except StoreError as exc:
            return panels.message(str(exc))

    @app.callback(Output(ids.EXAMPLE_SEARCH_RESULTS, "options"), Output(ids.EXAMPLE_SEARCH_RESULTS, "placeholder"),
                  Input(ids.EXAMPLE_SEARCH, "value"), Input(ids.RUN_SELECT, "value"))
    def search(text, run):
        if not text or not run:
            return [], "type a search first"
        try:
            hits = search_examples(current_reader().examples(run), text)
        except StoreError as exc:
            return [], str(exc)
        options = [{"label": f"{i}: {label}", "value": str(i)} for i, label in hits]
        return options, (f"{len(options)} match" + ("es" if len(options) != 1 else "")
                         + (f" (first {MAX_SEARCH_RESULTS})" if len(options) == MAX_SEARCH_RESULTS else ""))

    app.clientside_callback(
        """
        function(nPng, nSvg, config) {
            const trig = (dash_clientside.callback_context.triggered || [])[0];
            if (!trig) { return dash_clientside.no_update; }
            const format = trig.prop_id.indexOf('save-svg') === 0 ? 'svg' : 'png';
            const gd = document.querySelector('#attn-matrix .js-plotly-plot');
            const opts = (config && config.toImageButtonOptions) || {};
            const filename = opts.filename || 'attention';
            if (!gd || !window.Plotly) { return 'no graph'; }
            window.Plotly.downloadImage(gd, {format: format, filename: filename,
                                             width: gd._fullLayout.width, height: gd._fullLayout.height});
            return format + ':' + filename;
        }
        """,
        Output(ids.SAVE_STATUS, "data"), Input(ids.SAVE_PNG, "n_clicks"), Input(ids.SAVE_SVG, "n_clicks"),
        State(ids.MATRIX, "config"), prevent_initial_call=True,
    )


def search_examples(table: Any, text: str, limit: int = MAX_SEARCH_RESULTS) -> list[tuple[int, str]]:
    """Examples whose text (or target text) contains every word of ``text`` (case-insensitive):
    ``(index, shortened text)`` pairs, at most ``limit``."""
    words = [w for w in text.lower().split() if w]
    hits: list[tuple[int, str]] = []
    for i, (src, tgt) in enumerate(zip(table.text, table.target_text, strict=True)):
        hay = f"{src}\n{tgt}".lower()
        if all(w in hay for w in words):
            hits.append((i, src if len(src) <= 100 else src[:97] + "…"))
            if len(hits) >= limit:
                break
    return hits
