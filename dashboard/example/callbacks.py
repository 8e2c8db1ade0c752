"""Callbacks of the Example tab.

The attention views (matrix, head view, model view, time step) are drawn in the page
(``dashboard/assets/example.js``; the head view on a canvas, the views below the first screen when they scroll
into view) from one example's data, which the page fetches as raw bytes once per run, example, kind and
raw/rollout (:mod:`.payload`, :mod:`.transport`; a long example a layer at a time, the neighbours in advance);
changing the layer, head, query position or pinned token asks the server nothing.
The panels in the tabs below (metrics, debugging, embeddings) are drawn by the server, and only while their tab
is open. A
selection that cannot be drawn shows a message in place of the figure (never a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dash
from dash import ClientsideFunction, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.callback_inputs import InputRefusedError
from attnviz.dashboard.data import current_reader
from attnviz.dashboard.example import ids, panels, views
from attnviz.dashboard.example.data import MAX_SEARCH_RESULTS, example_summary, search_examples
from attnviz.dashboard.example.layout import MESSAGE_HEIGHT, MESSAGE_WRAP, debug_pane, embeddings_pane
from attnviz.dashboard.example.payload import example_payload
from attnviz.dashboard.messages import describe_error, error_text, message, message_figure
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.store import StoreError, StoreReader

log = logging.getLogger(__name__)

_EXPECTED = (StoreError, views.ViewError)


def _state(data: dict | None) -> ViewState | None:
    return ViewState.from_dict(data) if data else None


def _copies(fig: Any, n: int) -> Any:
    return fig if n == 1 else tuple(fig for _ in range(n))


def _line(text: str) -> Any:
    """A panel's message figure, a line or two tall (a panel with nothing to show collapses to it)."""
    return message_figure(text, height=MESSAGE_HEIGHT, wrap=MESSAGE_WRAP)


def _safe_figure(draw: Callable[[], Any], n: int = 1) -> Any:
    """Run ``draw``; on an error, the message (one per output) instead of a traceback."""
    try:
        return draw()
    except Exception as exc:  # never a traceback in the page; the server log has it
        return _copies(_line(describe_error(exc, _EXPECTED, "draw this view", log)), n)


def _no_selection(n: int = 1) -> Any:
    return _copies(_line("no selection yet"), n)


def _search_placeholder(n: int) -> str:
    return (f"{n} match" + ("es" if n != 1 else "")
            + (f" (first {MAX_SEARCH_RESULTS})" if n == MAX_SEARCH_RESULTS else ""))


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""
    _register_attention(app)
    _register_details(app)
    _register_picker(app)


def load_payload(key: Any) -> dict:
    """The example data the page asked for (:func:`.payload.example_payload`); a store that cannot be read is a
    payload with the one-line message."""
    if not isinstance(key, dict):
        raise InputRefusedError(f"the example key must be an object, not {type(key).__name__}")
    try:
        out = example_payload(current_reader(), key)
    except Exception as exc:  # never a traceback in the page; the server log has unexpected ones
        out = {"key": key, "error": describe_error(exc, _EXPECTED, "read this example", log)}
    out["message_template"] = message_figure("")
    return out


def _register_attention(app: dash.Dash) -> None:
    """The attention views: the page asks for an example's data (payload key), the server sends it, the page
    draws every view from it (and the pinned token)."""
    client = "attnviz_example"
    app.clientside_callback(
        ClientsideFunction(client, "fanOut"), Output(app_ids.URL, "search"),
        Output(ids.EXAMPLE_ID, "data"), Output(ids.METRICS_STATE, "data"), Output(ids.DEBUG_STATE, "data"),
        Output(ids.EMBEDDINGS_STATE, "data"),
        Input(app_ids.VIEW_STATE, "data"), Input(app_ids.TABS, "value"), Input(ids.DETAILS, "active_tab"),
        State(ids.EXAMPLE_ID, "data"), State(ids.METRICS_STATE, "data"),
        State(ids.DEBUG_STATE, "data"), State(ids.EMBEDDINGS_STATE, "data"))
    # the page fetches an example's data as raw bytes (transport.py); this callback answers the same question as
    # JSON for other clients (the tests call it through Dash's API)
    app.callback(Output(ids.PAYLOAD, "data"), Input(ids.PAYLOAD_KEY, "data"),
                 prevent_initial_call=True)(load_payload)
    app.clientside_callback(
        ClientsideFunction(client, "draw"), Output(ids.HEAD_VIEW_PIN, "data"),
        Input(app_ids.VIEW_STATE, "data"), Input(ids.HEAD_VIEW_CLICK, "data"), Input(app_ids.TABS, "value"),
        State(ids.HEAD_VIEW_PIN, "data"))


def _register_details(app: dash.Dash) -> None:
    """The metrics panel, value distributions, embeddings and norms: each drawn while its panel is open (the
    page sets its selection store then, see ``fanOut`` in example.js)."""

    @app.callback(Output(ids.METRICS_PANEL, "children"), Input(ids.METRICS_STATE, "data"),
                  prevent_initial_call=True)
    def draw_metrics(data):
        state = _state(data)
        if state is None:
            return message("no selection yet")
        try:
            return panels.metrics_panel(views.metrics_table(current_reader(), state), state.layer)
        except Exception as exc:
            return message(describe_error(exc, _EXPECTED, "compute the metrics", log))

    @app.callback(Output(ids.DEBUG_BOX, "children"), Input(ids.DEBUG_STATE, "data"), State(ids.DEBUG_BOX, "children"),
                  prevent_initial_call=True)
    def fill_debug(data, filled):
        """The Debugging graph, drawn, put in the page when its tab first asks for it (then ``draw_debug``)."""
        if filled:
            raise PreventUpdate
        return debug_pane(_debug_figure(data))

    @app.callback(Output(ids.EMBEDDINGS_BOX, "children"), Input(ids.EMBEDDINGS_STATE, "data"),
                  State(ids.EMBEDDINGS_BOX, "children"), prevent_initial_call=True)
    def fill_embeddings(data, filled):
        """The Embeddings graphs, drawn, put in the page when their tab first asks for them (then
        ``draw_embeddings``)."""
        if filled:
            raise PreventUpdate
        return embeddings_pane(*_embeddings_figures(data))

    @app.callback(Output(ids.DEBUG_VIEW, "figure"), Input(ids.DEBUG_STATE, "data"), prevent_initial_call=True)
    def draw_debug(data):
        return _debug_figure(data)

    @app.callback(Output(ids.EMBEDDINGS_VIEW, "figure"), Output(ids.NORMS_VIEW, "figure"),
                  Input(ids.EMBEDDINGS_STATE, "data"), prevent_initial_call=True)
    def draw_embeddings(data):
        return _embeddings_figures(data)


def _debug_figure(data: Any) -> Any:
    """The Debugging figure of the selection ``data`` (a message without one)."""
    state = _state(data)
    if state is None:
        return _no_selection()
    return _safe_figure(lambda: views.debug_view(current_reader(), state))


def _embeddings_figures(data: Any) -> tuple[Any, Any]:
    """The embeddings and norms figures of the selection ``data`` (messages without one)."""
    state = _state(data)
    if state is None:
        return _no_selection(2)
    reader = current_reader()
    return (_safe_figure(lambda: views.embeddings_view(reader, state)),
            _safe_figure(lambda: views.norms_view(reader, state)))


def example_text(reader: Callable[[], StoreReader], data: Any) -> Any:
    """The picker's text of the selection ``data`` (run and example): the example's summary, a message when it
    cannot be shown, nothing without a selection. ``reader`` opens the page's store (only when needed)."""
    state = _state(data)
    if state is None or state.run is None:
        return ""
    try:
        summary = example_summary(reader(), state.run, state.example)
    except StoreError as exc:
        return message(error_text(exc))
    return message(summary) if isinstance(summary, str) else panels.example_summary(summary)


def _register_picker(app: dash.Dash) -> None:
    """The example's text, the corpus search and the matrix's image export."""

    @app.callback(Output(ids.EXAMPLE_TEXT, "children"), Input(ids.EXAMPLE_ID, "data"), prevent_initial_call=True)
    def show_example(data):
        return example_text(current_reader, data)

    @app.callback(Output(ids.EXAMPLE_SEARCH_RESULTS, "options"), Output(ids.EXAMPLE_SEARCH_RESULTS, "placeholder"),
                  Input(ids.EXAMPLE_SEARCH, "value"), Input(app_ids.RUN_SELECT, "value"), prevent_initial_call=True)
    def search(text, run):
        if not text and ctx.triggered_id != ids.EXAMPLE_SEARCH:
            raise PreventUpdate  # no search typed (a page load, another run): the list is empty already
        if not text or not run:
            return [], "type a search first"
        try:
            hits = search_examples(current_reader().examples(run), text)
        except StoreError as exc:
            return [], error_text(exc)
        options = [{"label": f"{i}: {label}", "value": str(i)} for i, label in hits]
        return options, _search_placeholder(len(options))

    app.clientside_callback(
        ClientsideFunction("attnviz_example", "save"), Output(ids.SAVE_STATUS, "data"),
        Input(ids.SAVE_PNG, "n_clicks"), Input(ids.SAVE_SVG, "n_clicks"), State(app_ids.VIEW_STATE, "data"),
        prevent_initial_call=True,
    )
