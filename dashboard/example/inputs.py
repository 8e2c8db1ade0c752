"""Callbacks of the Example tab's input side: the picker's window line (``window k of n`` of a long text cut with
``--long-inputs window``; its buttons go through the sync callback, :func:`.sync.step_window`) and the Input tab
(the example's text and tokens, drawn only while that tab is open). Both follow the run and example the page
shows (``example-id``, written by ``fanOut`` in example.js)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dash
from dash import Input, Output, State

from attnviz.dashboard.data import current_reader
from attnviz.dashboard.example import ids, panels
from attnviz.dashboard.example.data import example_summary, raw_tokens_for, tokens_for
from attnviz.dashboard.messages import describe_error, message
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.store import StoreError, StoreReader

log = logging.getLogger(__name__)

#: The Input tab's selection (run and example) while that tab is open: set in the page, so that switching the
#: other tabs asks the server nothing.
INPUT_GATE_JS = """
function (exampleId, activeTab, shown) {
    const noUpdate = window.dash_clientside.no_update;
    if (activeTab !== "DETAIL_INPUT" || !exampleId) { return noUpdate; }
    return JSON.stringify(exampleId) === JSON.stringify(shown) ? noUpdate : exampleId;
}
""".replace("DETAIL_INPUT", ids.DETAIL_INPUT)

#: What the window line shows for no selection: nothing (hidden, both buttons off).
_NO_WINDOW = ("", True, True, True)


def _selection(data: Any) -> ViewState | None:
    state = ViewState.from_dict(data) if isinstance(data, dict) else None
    return state if state is not None and state.run is not None else None


def window_outputs(reader: Callable[[], StoreReader], data: Any) -> tuple[str, bool, bool, bool]:
    """The window line of the selection ``data`` (run and example): its label, whether it is hidden, whether each
    button is off (:func:`.panels.window_line`); nothing for no selection or an example that is no window.
    ``reader`` opens the page's store (only when needed)."""
    state = _selection(data)
    if state is None or state.run is None:
        return _NO_WINDOW
    try:
        store = reader()
        if not 0 <= state.example < store.num_examples(state.run):
            return _NO_WINDOW
        return panels.window_line(store.windows(state.run, state.example))
    except StoreError as exc:
        log.warning("cannot read the windows of example %s: %s", state.example, exc)
        return _NO_WINDOW


def register_callbacks(app: dash.Dash) -> None:
    """Attach the window line and the Input tab to ``app``."""

    @app.callback(Output(ids.WINDOW_LABEL, "children"), Output(ids.WINDOW_BOX, "hidden"),
                  Output(ids.WINDOW_PREV, "disabled"), Output(ids.WINDOW_NEXT, "disabled"),
                  Input(ids.EXAMPLE_ID, "data"), prevent_initial_call=True)
    def show_window(data):
        return window_outputs(current_reader, data)

    app.clientside_callback(INPUT_GATE_JS, Output(ids.INPUT_STATE, "data"), Input(ids.EXAMPLE_ID, "data"),
                            Input(ids.DETAILS, "active_tab"), State(ids.INPUT_STATE, "data"))

    @app.callback(Output(ids.INPUT_PANEL, "children"), Input(ids.INPUT_STATE, "data"), prevent_initial_call=True)
    def show_input(data):
        state = _selection(data)
        if state is None or state.run is None:
            return message("no selection yet")
        try:
            reader = current_reader()
            summary = example_summary(reader, state.run, state.example)
            if isinstance(summary, str):
                return message(summary)
            sides = {"source": summary.n_tokens, "target": summary.n_target_tokens}
            tokens = {side: (tokens_for(reader, state.run, state.example, side),
                             raw_tokens_for(reader, state.run, state.example, side))
                      for side, n in sides.items() if n}
            return panels.input_panel(summary, tokens, reader.windows(state.run, state.example))
        except Exception as exc:  # never a traceback in the page; the server log has unexpected ones
            return message(describe_error(exc, (StoreError,), "show this example's input", log))
