"""Callbacks of the Corpus tab: each parses the controls into a selection, calls one view of
:mod:`attnviz.dashboard.corpus.views` and returns its outputs.

A store that cannot be read (a missing or damaged shard, a vanished index: :class:`attnviz.pipeline.store.StoreError`)
never fails a callback: each view shows the message in its place and puts it in its own error slot, and the tab's
alert shows the slots' messages as one line (the rest of the page keeps working).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.corpus import figures as cf
from attnviz.dashboard.corpus import ids
from attnviz.dashboard.corpus.selection import Selection, make_selection
from attnviz.dashboard.corpus.views import (
    analysis_views,
    difference_view,
    drill_views,
    filter_controls,
    heatmap_views,
    pattern_views,
    profile_view,
    run_choices,
    table_view,
)
from attnviz.dashboard.messages import error_text, message_figure
from attnviz.pipeline.store import StoreError

log = logging.getLogger(__name__)

#: Inputs of every filtered view (keyword names of the callbacks' arguments).
_VIEW_INPUTS = {
    "tab": Input(app_ids.TABS, "value"), "run_a": Input(app_ids.RUN_SELECT, "value"),
    "run_b": Input(ids.RUN_B, "value"),
    "kind": Input(ids.KIND, "value"), "metric": Input(ids.METRIC, "value"), "agg": Input(ids.AGG, "value"),
    "length": Input(ids.LENGTH, "value"), "truncated": Input(ids.TRUNCATED, "value"),
    "field_values": Input(ids.field(ALL), "value"),
}
_VIEW_STATES = {"length_min": State(ids.LENGTH, "min"), "length_max": State(ids.LENGTH, "max"),
                "field_ids": State(ids.field(ALL), "id")}
_HEAD_INPUT = {"head": Input(ids.HEAD, "data")}
#: The layer × head maps a click on which selects a head.
_HEAD_SOURCES = (ids.HEATMAP_A, ids.HEATMAP_B, ids.DIFF, ids.PATTERNS_A, ids.PATTERNS_B, ids.SIMILARITY_A,
                 ids.SIMILARITY_B)


def _sel(tab: Any, run_a: Any, run_b: Any, kind: Any, metric: Any, agg: Any, length: Any, truncated: Any,
         field_values: Any, length_min: Any, length_max: Any, field_ids: Any, **_: Any) -> Selection:
    """The selection of a view callback's keyword arguments; nothing is computed while the tab is hidden."""
    if tab != "corpus":
        raise PreventUpdate
    bounds = (length_min, length_max) if length_min is not None and length_max is not None else None
    return make_selection(run_a, run_b, kind, metric, agg, length, bounds, truncated, field_ids or [],
                          field_values or [])


def _head(data: Any) -> tuple[int, int] | None:
    if isinstance(data, dict) and isinstance(data.get("layer"), int) and isinstance(data.get("head"), int):
        return data["layer"], data["head"]
    return None


def _error_output(view: str) -> Output:
    return Output(ids.error_slot(view), "data")


def _guard(view: str, build: Callable[[], Sequence[Any]], fallback: Callable[[str], Sequence[Any]]
           ) -> tuple[Any, ...]:
    """``build()``'s outputs plus ``""`` for the view's error slot; when the store cannot be read
    (:class:`StoreError`), ``fallback(message)``'s outputs plus the one-line message. ``PreventUpdate`` and
    unexpected errors pass (the app's error handler reports those)."""
    try:
        return (*build(), "")
    except StoreError as exc:
        text = error_text(exc)
        log.warning("corpus %s: %s", view, text)
        return (*fallback(text), text)


def _figures(n: int, title: str = "") -> Callable[[str], list[dict]]:
    """A fallback of ``n`` message figures."""
    return lambda text: [message_figure(text, title=title)] * n


#: Shows the first distinct message of the views' error slots (and how many others) in the tab's alert.
_ALERT_JS = """
function(messages) {
    const seen = [];
    for (const m of messages || []) { if (m && !seen.includes(m)) { seen.push(m); } }
    if (!seen.length) { return ["", false]; }
    const more = seen.length > 1 ? " (and " + (seen.length - 1) + " more)" : "";
    return [seen[0] + more, true];
}
"""


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""
    _register_controls(app)
    _register_views(app)
    _register_head(app)


def _register_controls(app: dash.Dash) -> None:
    """The alert, run B / kind / metric choices and the example filters."""
    app.clientside_callback(_ALERT_JS, Output(ids.ALERT, "children"), Output(ids.ALERT, "is_open"),
                            Input(ids.error_slot(ALL), "data"))

    @app.callback(
        Output(ids.RUN_B, "options"), Output(ids.RUN_B, "value"), Output(ids.KIND, "options"),
        Output(ids.KIND, "value"),
        Output(ids.METRIC, "options"), Output(ids.METRIC, "value"), _error_output("runs"),
        Input(app_ids.RUN_SELECT, "value"), State(ids.RUN_B, "value"), State(ids.KIND, "value"),
        State(ids.METRIC, "value"),
    )
    def corpus_runs(run_a, run_b, kind, metric):
        return _guard("runs", lambda: run_choices(run_a, run_b, kind, metric), lambda _: [dash.no_update] * 6)

    @app.callback(
        Output(ids.LENGTH, "min"), Output(ids.LENGTH, "max"), Output(ids.LENGTH, "value"),
        Output(ids.LENGTH, "marks"),
        Output(ids.FIELDS, "children"), _error_output("filters"),
        Input(app_ids.TABS, "value"), Input(app_ids.RUN_SELECT, "value"), Input(ids.RUN_B, "value"),
        State(ids.field(ALL), "value"), State(ids.field(ALL), "id"),
    )
    def corpus_filters(tab, run_a, run_b, values, field_ids):
        if tab != "corpus":
            raise PreventUpdate
        return _guard("filters", lambda: filter_controls(run_a, run_b, values or [], field_ids or []),
                      lambda _: [dash.no_update] * 5)


def _register_views(app: dash.Dash) -> None:
    """The views of the whole selection: heatmaps, A − B, per-layer profile, head table, patterns."""

    @app.callback(output=[Output(ids.HEATMAP_A, "figure"), Output(ids.HEATMAP_B, "figure"),
                          Output(ids.STATUS, "children"), _error_output("heatmaps")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_heatmaps(**kw):
        return _guard("heatmaps", lambda: heatmap_views(_sel(**kw), _head(kw["head"])),
                      lambda text: [*_figures(2)(text), dash.no_update])

    @app.callback(output=[Output(ids.DIFF, "figure"), _error_output("difference")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_difference(**kw):
        return _guard("difference", lambda: [difference_view(_sel(**kw), _head(kw["head"]))],
                      _figures(1, "A − B"))

    @app.callback(output=[Output(ids.PROFILE, "figure"), _error_output("profile")], inputs=_VIEW_INPUTS,
                  state=_VIEW_STATES)
    def corpus_profile(**kw):
        return _guard("profile", lambda: [profile_view(_sel(**kw))], _figures(1, "Per layer"))

    @app.callback(output=[Output(ids.TABLE, "rowData"), Output(ids.TABLE, "columnDefs"), _error_output("table")],
                  inputs=_VIEW_INPUTS, state=_VIEW_STATES)
    def corpus_table(**kw):
        return _guard("table", lambda: table_view(_sel(**kw)), lambda _: ([], []))

    @app.callback(output=[Output(ids.PATTERNS_A, "figure"), Output(ids.PATTERNS_B, "figure"),
                          _error_output("patterns")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_patterns(**kw):
        return _guard("patterns", lambda: pattern_views(_sel(**kw), _head(kw["head"])),
                      _figures(2, "Head patterns"))


def _register_head(app: dash.Dash) -> None:
    """Picking a head by a click, its drill-down, its similarity and relative-position views, the CSV export."""

    @app.callback(Output(ids.HEAD, "data"),
                  *[Input(source, "clickData") for source in _HEAD_SOURCES], prevent_initial_call=True)
    def corpus_pick_head(*clicks):
        click = dict(zip(_HEAD_SOURCES, clicks, strict=True)).get(ctx.triggered_id)
        picked = _clicked_head(click)
        if picked is None:
            raise PreventUpdate
        return {"layer": picked[0], "head": picked[1]}

    @app.callback(output=[Output(ids.HEAD_TITLE, "children"), Output(ids.HEAD_DIST, "figure"),
                          Output(ids.HEAD_EXAMPLES, "children"), _error_output("drill")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_drill(**kw):
        return _guard("drill", lambda: drill_views(_sel(**kw), _head(kw["head"])),
                      lambda text: ("", message_figure(text), ""))

    @app.callback(Output(ids.SIMILARITY_A, "figure"), Output(ids.SIMILARITY_B, "figure"),
                  Output(ids.RELPOS, "figure"), _error_output("analysis"),
                  Input(app_ids.TABS, "value"), Input(app_ids.RUN_SELECT, "value"), Input(ids.RUN_B, "value"),
                  Input(ids.KIND, "value"), Input(ids.HEAD, "data"))
    def corpus_analysis(tab, run_a, run_b, kind, head_data):
        if tab != "corpus":
            raise PreventUpdate
        head = _head(head_data)
        return _guard("analysis", lambda: analysis_views(run_a, run_b, kind, head), _figures(3, "Head similarity"))

    @app.callback(Output(ids.TABLE, "exportDataAsCsv"), Input(ids.EXPORT, "n_clicks"), prevent_initial_call=True)
    def corpus_export(n_clicks):
        return bool(n_clicks)


def _clicked_head(click: Any) -> tuple[int, int] | None:
    """(layer, head) of a click on a layer × head map (x = head, y = layer) or the similarity map."""
    if not click or not click.get("points"):
        return None
    point = click["points"][0]
    x, y = point.get("x"), point.get("y")
    if isinstance(x, str):
        return cf.parse_head_name(y if isinstance(y, str) else x)
    try:
        return int(round(float(y))), int(round(float(x)))
    except (TypeError, ValueError):
        return None
