"""Callbacks of the Example tab: each reads the resolved selection from the ``view-state`` store (see
:mod:`attnviz.dashboard.example.sync`), calls one function of :mod:`attnviz.dashboard.example.views` and shows a
message in place of the figure when the selection cannot be drawn (never a traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dash
from dash import Input, Output, State

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.data import current_reader
from attnviz.dashboard.example import ids, panels, views
from attnviz.dashboard.example.data import MAX_SEARCH_RESULTS, example_summary, search_examples
from attnviz.dashboard.example.figures import image_config
from attnviz.dashboard.example.sync import next_pin, pin_key
from attnviz.dashboard.messages import describe_error, error_text, message, message_figure
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.store import StoreError

log = logging.getLogger(__name__)

_EXPECTED = (StoreError, views.ViewError)


def _state(data: dict | None) -> ViewState | None:
    return ViewState.from_dict(data) if data else None


def _copies(fig: Any, n: int) -> Any:
    return fig if n == 1 else tuple(fig for _ in range(n))


def _safe_figure(draw: Callable[[], Any], n: int = 1) -> Any:
    """Run ``draw``; on an error, the message figure (one per output) instead of a traceback."""
    try:
        return draw()
    except Exception as exc:  # never a traceback in the page; the server log has it
        return _copies(message_figure(describe_error(exc, _EXPECTED, "draw this view", log)), n)


def _no_selection(n: int = 1) -> Any:
    return _copies(message_figure("no selection yet"), n)


def _search_placeholder(n: int) -> str:
    return (f"{n} match" + ("es" if n != 1 else "")
            + (f" (first {MAX_SEARCH_RESULTS})" if n == MAX_SEARCH_RESULTS else ""))


#: Saves the matrix as PNG or SVG in the browser (plotly.js), named by the matrix graph's image config.
_SAVE_JS = f"""
function(nPng, nSvg, config) {{
    const trig = (dash_clientside.callback_context.triggered || [])[0];
    if (!trig) {{ return dash_clientside.no_update; }}
    const format = trig.prop_id.indexOf('{ids.SAVE_SVG}') === 0 ? 'svg' : 'png';
    const gd = document.querySelector('#{ids.MATRIX} .js-plotly-plot');
    const opts = (config && config.toImageButtonOptions) || {{}};
    const filename = opts.filename || 'attention';
    if (!gd || !window.Plotly) {{ return 'no graph'; }}
    window.Plotly.downloadImage(gd, {{format: format, filename: filename,
                                     width: gd._fullLayout.width, height: gd._fullLayout.height}});
    return format + ':' + filename;
}}
"""


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""
    _register_attention(app)
    _register_details(app)
    _register_picker(app)


def _register_attention(app: dash.Dash) -> None:
    """The attention views: matrix, head view (and its pinned token), model view, time step."""

    @app.callback(Output(ids.MATRIX, "figure"), Output(ids.MATRIX, "config"), Input(app_ids.VIEW_STATE, "data"))
    def draw_matrix(data):
        state = _state(data)
        if state is None:
            return _no_selection(), dash.no_update
        result = _safe_figure(lambda: views.matrix_view(current_reader(), state))
        if isinstance(result, tuple):
            return result
        return result, image_config(views.file_stem(state))

    @app.callback(Output(ids.HEAD_VIEW_PIN, "data"), Input(ids.HEAD_VIEW, "clickData"),
                  Input(app_ids.VIEW_STATE, "data"), State(ids.HEAD_VIEW_PIN, "data"))
    def pin_token(click, data, pin):
        state = _state(data)
        if state is None:
            return None
        return next_pin(pin, state, click, dash.ctx.triggered_id)

    @app.callback(Output(ids.HEAD_VIEW, "figure"), Output(ids.HEAD_VIEW, "config"),
                  Input(app_ids.VIEW_STATE, "data"), Input(ids.HEAD_VIEW_PIN, "data"))
    def draw_head_view(data, pin):
        state = _state(data)
        if state is None:
            return _no_selection(), dash.no_update
        selected = (pin["side"], int(pin["index"])) if pin and pin.get("key") == pin_key(state) else None
        fig = _safe_figure(lambda: views.head_view(current_reader(), state, selected))
        return fig, image_config(views.file_stem(state, "headview"))

    @app.callback(Output(ids.MODEL_VIEW, "figure"), Output(ids.MODEL_VIEW, "config"),
                  Input(app_ids.VIEW_STATE, "data"))
    def draw_model_view(data):
        state = _state(data)
        if state is None:
            return _no_selection(), dash.no_update
        fig = _safe_figure(lambda: views.model_view(current_reader(), state))
        return fig, image_config(views.file_stem(state, "modelview"))

    @app.callback(Output(ids.TIMESTEP_BARS, "figure"), Output(ids.TIMESTEP_LAYERS, "figure"),
                  Input(app_ids.VIEW_STATE, "data"))
    def draw_timestep(data):
        state = _state(data)
        if state is None:
            return _no_selection(2)
        return _safe_figure(lambda: views.timestep_view(current_reader(), state), n=2)


def _register_details(app: dash.Dash) -> None:
    """The metrics panel, value distributions, embeddings and norms."""

    @app.callback(Output(ids.METRICS_PANEL, "children"), Input(app_ids.VIEW_STATE, "data"))
    def draw_metrics(data):
        state = _state(data)
        if state is None:
            return message("no selection yet")
        try:
            return panels.metrics_panel(views.metrics_table(current_reader(), state), state.layer)
        except Exception as exc:
            return message(describe_error(exc, _EXPECTED, "compute the metrics", log))

    @app.callback(Output(ids.DEBUG_VIEW, "figure"), Input(app_ids.VIEW_STATE, "data"))
    def draw_debug(data):
        state = _state(data)
        if state is None:
            return _no_selection()
        return _safe_figure(lambda: views.debug_view(current_reader(), state))

    @app.callback(Output(ids.EMBEDDINGS_VIEW, "figure"), Output(ids.NORMS_VIEW, "figure"),
                  Input(app_ids.VIEW_STATE, "data"))
    def draw_embeddings(data):
        state = _state(data)
        if state is None:
            return _no_selection(2)
        reader = current_reader()
        return (_safe_figure(lambda: views.embeddings_view(reader, state)),
                _safe_figure(lambda: views.norms_view(reader, state)))


def _register_picker(app: dash.Dash) -> None:
    """The example's text, the corpus search and the matrix's image export."""

    @app.callback(Output(ids.EXAMPLE_TEXT, "children"), Input(app_ids.VIEW_STATE, "data"))
    def show_example(data):
        state = _state(data)
        if state is None or state.run is None:
            return ""
        try:
            summary = example_summary(current_reader(), state.run, state.example)
        except StoreError as exc:
            return message(error_text(exc))
        return message(summary) if isinstance(summary, str) else panels.example_summary(summary)

    @app.callback(Output(ids.EXAMPLE_SEARCH_RESULTS, "options"), Output(ids.EXAMPLE_SEARCH_RESULTS, "placeholder"),
                  Input(ids.EXAMPLE_SEARCH, "value"), Input(app_ids.RUN_SELECT, "value"))
    def search(text, run):
        if not text or not run:
            return [], "type a search first"
        try:
            hits = search_examples(current_reader().examples(run), text)
        except StoreError as exc:
            return [], error_text(exc)
        options = [{"label": f"{i}: {label}", "value": str(i)} for i, label in hits]
        return options, _search_placeholder(len(options))

    app.clientside_callback(
        _SAVE_JS, Output(ids.SAVE_STATUS, "data"), Input(ids.SAVE_PNG, "n_clicks"), Input(ids.SAVE_SVG, "n_clicks"),
        State(ids.MATRIX, "config"), prevent_initial_call=True,
    )
