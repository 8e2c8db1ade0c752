"""Callbacks of the Training tab.

* ``training_sync``: URL fragment ⇄ controls ⇄ ``training-state`` (the fragment is read when the page opens or
  the tab is shown, and written, through ``training-hash``, whenever the selection changes; see :mod:`.urlhash`);
* ``training_draw``: every view of the selection (the metric against the step, the loss, the label timeline
  and its changes, the entropy-collapse alert);
* ``training_pick``: a click on a step of any figure picks it; a click on a second step makes the first step's
  checkpoint the header's run (run A) and the second's the Corpus tab's run B; ``training_compare`` then opens
  the Corpus tab (its A − B comparison), once the Example tab's selection has followed run A (so that the URL
  it writes for the new tab names run A).

A store that cannot be read shows its one-line message in the tab's alert and the figures; nothing raises.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import dash
from dash import Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.corpus import ids as corpus_ids
from attnviz.dashboard.data import current_reader
from attnviz.dashboard.messages import describe_error, message_figure
from attnviz.dashboard.training import data, ids
from attnviz.dashboard.training.urlhash import TrainingState, format_hash, parse_hash
from attnviz.dashboard.training.views import resolve, series_views
from attnviz.pipeline.store import StoreError

log = logging.getLogger(__name__)
TAB = "training"


def _step(click: Any) -> int | None:
    """The step a click on a figure names (every x axis of the tab is the step)."""
    points = click.get("points") if isinstance(click, dict) else None
    if not points or not isinstance(points[0], dict):
        return None
    x = points[0].get("x")
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        return None
    try:
        return int(round(float(x)))
    except ValueError:
        return None


def _picked(pick: Any, state: TrainingState) -> int | None:
    if isinstance(pick, dict) and pick.get("series") == state.series and isinstance(pick.get("step"), int):
        return int(pick["step"])
    return None


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""

    @app.callback(
        Output(ids.SERIES, "options"), Output(ids.SERIES, "value"), Output(ids.METRIC, "options"),
        Output(ids.METRIC, "value"), Output(ids.VIEW, "value"), Output(ids.STATE, "data"),
        Output(ids.HASH, "data"), Output(ids.MESSAGE, "children"), Output(ids.MESSAGE, "is_open"),
        Input(app_ids.TABS, "value"), Input(ids.SERIES, "value"), Input(ids.METRIC, "value"),
        Input(ids.VIEW, "value"), State(app_ids.URL, "hash"), State(ids.STATE, "data"),
    )
    def training_sync(tab, series, metric, view, fragment, current):
        # the fragment is read when the tab opens (a link); an Input would ask the server on every URL write of
        # the other tabs (the Example tab writes its query string at each layer or head change). The tab's
        # controls are put in the page when it is first opened: that first call (no state yet) names the new
        # controls as its trigger, and reads the fragment too. Every output is in the tab's pane: before the
        # pane is filled Dash leaves the callback out (an output outside it, with the pane's inputs missing,
        # made Dash's renderer throw at every tab change), so the page writes the fragment from ``training-hash``.
        if tab != TAB:
            raise PreventUpdate
        trigger = ctx.triggered_id
        from_url = trigger in (None, app_ids.URL, app_ids.TABS) or not current
        if from_url and parse_hash(fragment) != TrainingState():
            asked = parse_hash(fragment)
        elif from_url and current:
            asked = TrainingState.from_dict(current)
        else:
            asked = TrainingState(series if isinstance(series, str) else None,
                                  metric if isinstance(metric, str) else None, view if isinstance(view, str) else None)
        try:
            resolved = resolve(current_reader(), asked)
        except Exception as exc:  # a store that cannot be read: say so, keep the controls
            text = describe_error(exc, (StoreError,), "read the training series", log)
            return (*[dash.no_update] * 7, text, True)
        state = resolved.state
        new_hash = format_hash(state) if state.series else dash.no_update
        return (resolved.series_options, state.series, resolved.metric_options, state.metric, state.view or "layers",
                state.to_dict() if state.to_dict() != current else dash.no_update,
                new_hash if new_hash != fragment else dash.no_update,
                "; ".join(resolved.messages), bool(resolved.messages))

    app.clientside_callback(
        """function (wanted, shown) {
            return wanted && wanted !== shown ? wanted : window.dash_clientside.no_update;
        }""",
        Output(app_ids.URL, "hash", allow_duplicate=True), Input(ids.HASH, "data"), State(app_ids.URL, "hash"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.METRIC_FIGURE, "figure"), Output(ids.LOSS_FIGURE, "figure"), Output(ids.TIMELINE_FIGURE, "figure"),
        Output(ids.CHANGES, "children"), Output(ids.ALERT, "children"), Output(ids.ALERT, "color"),
        Output(ids.STATUS, "children"),
        Input(ids.STATE, "data"), Input(ids.PICK, "data"), State(app_ids.TABS, "value"),
    )
    def training_draw(state_data, pick, tab):
        if tab != TAB or not state_data:
            raise PreventUpdate
        state = TrainingState.from_dict(state_data)
        try:
            v = series_views(current_reader(), state, _picked(pick, state))
        except Exception as exc:
            text = describe_error(exc, (StoreError,), "draw the training series", log)
            fig = message_figure(text)
            return fig, fig, fig, "", text, "warning", ""
        return v.metric, v.loss, v.timeline, v.changes, v.alert, v.alert_colour, v.status

    @app.callback(
        Output(ids.PICK, "data"), Output(ids.PICK_TEXT, "children"), Output(ids.COMPARE, "data"),
        Output(app_ids.RUN_SELECT, "value", allow_duplicate=True),
        *[Input(f, "clickData") for f in ids.STEP_FIGURES], Input(ids.PICK_CLEAR, "n_clicks"),
        State(ids.PICK, "data"), State(ids.STATE, "data"),
        prevent_initial_call=True,
    )
    def training_pick(*args):
        clicks, pick, state_data = args[:len(ids.STEP_FIGURES)], args[-2], args[-1]
        state = TrainingState.from_dict(state_data)
        none = (dash.no_update,) * 2
        if ctx.triggered_id == ids.PICK_CLEAR:
            return None, "", *none
        click = dict(zip(ids.STEP_FIGURES, clicks, strict=True)).get(ctx.triggered_id)
        step = _step(click)
        if step is None or state.series is None:
            raise PreventUpdate
        try:
            series = data.load_series(current_reader(), state.series)
        except StoreError as exc:
            return dash.no_update, str(exc), *none
        run = series.run_at(step)
        if run is None:
            return dash.no_update, f"no checkpoint at step {step}: click a recorded step", *none
        first = _picked(pick, state)
        if first is None or first == step:
            return ({"series": state.series, "step": step},
                    f"step {step} picked (run A): click another step to compare them in the Corpus tab", *none)
        run_a = series.run_at(first)
        if run_a is None:
            return {"series": state.series, "step": step}, f"step {step} picked (run A)", *none
        return (None, f"comparing step {first} (A) with step {step} (B) in the Corpus tab",
                {"a": run_a, "b": run}, run_a)

    # Fires when the selection followed run A, or at once when run A was the header's run already. In the page:
    # the view state changes at every layer or head change of the Example tab, which must not ask the server.
    # The Corpus tab's controls exist only once it has been opened, so the hand-off is two steps: open the tab,
    # then (when its run B choices are there: at once, or once the tab's controls appeared) set run B and clear
    # the request. The second callback's only output is in the Corpus tab's pane, so that Dash leaves it out
    # until the pane is there (with an output outside it, Dash's renderer threw at every change of the Example
    # tab's selection, whose inputs are there while run B's choices are not); the request is cleared with
    # set_props.
    ready = """const ready = compare && typeof compare === "object" && viewState && typeof viewState === "object"
                && viewState.run === compare.a;"""
    app.clientside_callback(
        "function (viewState, compare) {" + ready + """
            return ready ? "corpus" : window.dash_clientside.no_update;
        }""",
        Output(app_ids.TABS, "value", allow_duplicate=True),
        Input(app_ids.VIEW_STATE, "data"), Input(ids.COMPARE, "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        "function (viewState, compare, runBOptions) {" + ready + """
            const nothing = window.dash_clientside.no_update;
            if (!ready || !Array.isArray(runBOptions) || runBOptions.length === 0) { return nothing; }
            window.dash_clientside.set_props(""" + json.dumps(ids.COMPARE) + """, { data: null });
            return runBOptions.some(o => o && o.value === compare.b) ? compare.b : nothing;
        }""",
        Output(corpus_ids.RUN_B, "value", allow_duplicate=True),
        Input(app_ids.VIEW_STATE, "data"), Input(ids.COMPARE, "data"), Input(corpus_ids.RUN_B, "options"),
        prevent_initial_call=True,
    )
