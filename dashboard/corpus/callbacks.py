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
from dash import ALL, ClientsideFunction, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.corpus import figures as cf
from attnviz.dashboard.corpus import ids
from attnviz.dashboard.corpus.selection import Selection, make_selection
from attnviz.dashboard.corpus.views import (
    analysis_relpos,
    analysis_similarity,
    difference_bundle,
    drill_views,
    filter_controls,
    heatmap_bundle,
    heatmap_views,
    pattern_views,
    profile_view,
    run_choices,
    table_columns,
    table_rows,
    wished_head,
)
from attnviz.dashboard.messages import error_text, message_figure
from attnviz.dashboard.urlstate import corpus_wish
from attnviz.pipeline.statistics.aggregates import AGGREGATES
from attnviz.pipeline.store import StoreError

log = logging.getLogger(__name__)

#: Inputs of every filtered view (keyword names of the callbacks' arguments): what selects the examples and
#: runs. The metric, the aggregate and the picked head are not among them: views that depend on those take them
#: as state, and the browser redraws them from what it already holds (``assets/corpus.js``).
_SEL_INPUTS = {
    "tab": Input(app_ids.TABS, "value"), "run_a": Input(app_ids.RUN_SELECT, "value"),
    "run_b": Input(ids.RUN_B, "value"), "kind": Input(ids.KIND, "value"),
    "length": Input(ids.LENGTH, "value"), "truncated": Input(ids.TRUNCATED, "value"),
    "field_values": Input(ids.field(ALL), "value"),
}
_VIEW_STATES = {"length_min": State(ids.LENGTH, "min"), "length_max": State(ids.LENGTH, "max"),
                "field_ids": State(ids.field(ALL), "id")}
_CHOICE_STATES = {"metric": State(ids.METRIC, "value"), "agg": State(ids.AGG, "value"),
                  "head": State(ids.HEAD, "data")}
#: The bundled views (whose figures for every aggregate the browser keeps) are asked again for a metric the
#: browser lacks through this store.
_NEED_INPUT = {"need": Input(ids.NEED, "data")}
#: The layer × head maps a click on which selects a head.
_HEAD_SOURCES = (ids.HEATMAP_A, ids.HEATMAP_B, ids.DIFF, ids.PATTERNS_A, ids.PATTERNS_B, ids.SIMILARITY_A,
                 ids.SIMILARITY_B)
#: The maps that outline the picked head (the browser moves the outline: ``assets/corpus.js``).
_OUTLINED = _HEAD_SOURCES


def _sel(tab: Any, run_a: Any, run_b: Any, kind: Any, metric: Any, agg: Any, length: Any, truncated: Any,
         field_values: Any, length_min: Any, length_max: Any, field_ids: Any, **_: Any) -> Selection:
    """The selection of a view callback's keyword arguments; nothing is computed while the tab is hidden."""
    if tab != "corpus":
        raise PreventUpdate
    bounds = (length_min, length_max) if length_min is not None and length_max is not None else None
    return make_selection(run_a, run_b, kind, metric, agg, length, bounds, truncated, field_ids or [],
                          field_values or [])


def _key(run_a: Any, run_b: Any, kind: Any, length: Any, truncated: Any, field_values: Any, field_ids: Any,
         **_: Any) -> list[Any]:
    """What the browser keys the bundled views by (``corpusKey`` in ``assets/corpus.js`` builds the same list
    from the controls): the runs, the kind and the filter controls, as the callback received them."""
    names = [i.get("field") if isinstance(i, dict) else None for i in field_ids or []]
    return [run_a, run_b, kind, length, truncated, field_values or [], names]


def _bundle(kw: dict[str, Any], sel: Selection, views: Any) -> dict[str, Any]:
    """A bundled view's store: its figures for every aggregate of ``sel.metric``, keyed as the browser keys it,
    with the aggregate and head the server drew in its own outputs."""
    return {"key": _key(**kw), "metric": sel.metric, "agg": sel.agg, "head": kw.get("head"), "views": views}


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


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""
    _register_controls(app)
    _register_url(app)
    _register_views(app)
    _register_head(app)
    _register_browser(app)


def _register_controls(app: dash.Dash) -> None:
    """Run B / kind / metric / aggregate / truncation / picked head choices and the example filters. The URL
    fragment's Corpus entries (a copied link) are read here, where the controls get their options; the page
    writes the fragment back from the controls (:func:`_register_url`)."""
    @app.callback(
        Output(ids.RUN_B, "options"), Output(ids.RUN_B, "value"), Output(ids.KIND, "options"),
        Output(ids.KIND, "value"), Output(ids.METRIC, "options"), Output(ids.METRIC, "value"),
        Output(ids.AGG, "value"), Output(ids.TRUNCATED, "value"), Output(ids.HEAD, "data", allow_duplicate=True),
        _error_output("runs"),
        Input(app_ids.RUN_SELECT, "value"), State(ids.RUN_B, "value"), State(ids.KIND, "value"),
        State(ids.METRIC, "value"), State(ids.HEAD, "data"), State(app_ids.URL, "hash"),
        # not at page load (the tab's controls are put in the page when it is first opened): when they appear,
        # with the run set and the URL fragment as they are then, and again when the run changes
        prevent_initial_call="initial_duplicate",
    )
    def corpus_runs(run_a, run_b, kind, metric, head, fragment):
        wish = corpus_wish(fragment if isinstance(fragment, str) else None)
        notes: list[str] = []

        def build() -> list[Any]:
            choice = run_choices(run_a, run_b, kind, metric, wish)
            notes.append(choice.note)
            agg = wish.agg if wish.agg in AGGREGATES else ("mean" if wish.present else dash.no_update)
            truncated = wish.truncated or ("any" if wish.present else dash.no_update)
            picked = wished_head(wish, run_a, choice.kind) if wish.present else dash.no_update
            if picked == head:
                picked = dash.no_update
            return [choice.run_b_options, choice.run_b, choice.kind_options, choice.kind, choice.metric_options,
                    choice.metric, agg, truncated, picked]

        out = _guard("runs", build, lambda _: [dash.no_update] * 9)
        # a run B the link names but the store lacks is said in the tab's alert (through the runs' error slot)
        return (*out[:-1], out[-1] or (notes[0] if notes else ""))

    @app.callback(
        Output(ids.LENGTH, "min"), Output(ids.LENGTH, "max"), Output(ids.LENGTH, "value"),
        Output(ids.LENGTH, "marks"),
        Output(ids.FIELDS, "children"), _error_output("filters"),
        Input(app_ids.TABS, "value"), Input(app_ids.RUN_SELECT, "value"), Input(ids.RUN_B, "value"),
        State(ids.field(ALL), "value"), State(ids.field(ALL), "id"), State(app_ids.URL, "hash"),
    )
    def corpus_filters(tab, run_a, run_b, values, field_ids, fragment):
        if tab != "corpus":
            raise PreventUpdate
        wish = corpus_wish(fragment if isinstance(fragment, str) else None)
        return _guard("filters", lambda: filter_controls(run_a, run_b, values or [], field_ids or [], wish),
                      lambda _: [dash.no_update] * 5)


def _register_url(app: dash.Dash) -> None:
    """The page writes the tab's state into the URL fragment (``assets/state.js``: ``corpus.*`` entries)."""
    app.clientside_callback(
        ClientsideFunction("attnviz_state", "corpus"), Output(app_ids.URL, "hash", allow_duplicate=True),
        Input(ids.RUN_B, "value"), Input(ids.KIND, "value"), Input(ids.METRIC, "value"), Input(ids.AGG, "value"),
        Input(ids.LENGTH, "value"), Input(ids.TRUNCATED, "value"), Input(ids.field(ALL), "value"),
        Input(ids.HEAD, "data"), State(app_ids.TABS, "value"), State(ids.LENGTH, "min"), State(ids.LENGTH, "max"),
        State(ids.field(ALL), "id"), prevent_initial_call=True)


def _register_views(app: dash.Dash) -> None:
    """The views of the whole selection: heatmaps, A − B, per-layer profile, head table, patterns. The first four
    also send their figures for every aggregate of the metric (a bundle), which the browser keeps."""

    def _bundle_output(view: str) -> Output:
        return Output(ids.bundle(view), "data")

    @app.callback(output=[Output(ids.HEATMAP_A, "figure"), Output(ids.HEATMAP_B, "figure"),
                          Output(ids.STATUS, "children"), _bundle_output("heatmaps"), _error_output("heatmaps")],
                  inputs={**_SEL_INPUTS, **_NEED_INPUT}, state={**_CHOICE_STATES, **_VIEW_STATES})
    def corpus_heatmaps(**kw):
        def build() -> list[Any]:
            sel, head = _sel(**kw), _head(kw["head"])
            bundle = heatmap_bundle(sel, head)
            status = heatmap_views(sel, head)[2]
            return [*bundle[sel.agg], status, _bundle(kw, sel, bundle)]

        return _guard("heatmaps", build, lambda text: [*_figures(2)(text), dash.no_update, None])

    @app.callback(output=[Output(ids.DIFF, "figure"), _bundle_output("difference"), _error_output("difference")],
                  inputs={**_SEL_INPUTS, **_NEED_INPUT}, state={**_CHOICE_STATES, **_VIEW_STATES})
    def corpus_difference(**kw):
        def build() -> list[Any]:
            sel = _sel(**kw)
            bundle = difference_bundle(sel, _head(kw["head"]))
            return [bundle[sel.agg], _bundle(kw, sel, bundle)]

        return _guard("difference", build, lambda text: [message_figure(text, title="A − B"), None])

    @app.callback(output=[Output(ids.PROFILE, "figure"), _bundle_output("profile"), _error_output("profile")],
                  inputs={**_SEL_INPUTS, **_NEED_INPUT}, state={**_CHOICE_STATES, **_VIEW_STATES})
    def corpus_profile(**kw):
        def build() -> list[Any]:
            sel = _sel(**kw)
            fig = profile_view(sel)
            return [fig, _bundle(kw, sel, fig)]

        return _guard("profile", build, lambda text: [message_figure(text, title="Per layer"), None])

    @app.callback(output=[Output(ids.TABLE, "rowData"), Output(ids.TABLE, "columnDefs"), _bundle_output("table"),
                          _error_output("table")],
                  inputs={**_SEL_INPUTS, **_NEED_INPUT}, state={**_CHOICE_STATES, **_VIEW_STATES})
    def corpus_table(**kw):
        def build() -> list[Any]:
            sel = _sel(**kw)
            rows, columns = table_rows(sel), table_columns(sel)
            return [rows, columns[sel.agg], _bundle(kw, sel, {"rows": rows, "columns": columns})]

        return _guard("table", build, lambda _: ([], [], None))

    @app.callback(output=[Output(ids.PATTERNS_A, "figure"), Output(ids.PATTERNS_B, "figure"),
                          _error_output("patterns")],
                  inputs=_SEL_INPUTS, state={**_CHOICE_STATES, **_VIEW_STATES})
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
                  inputs={**_SEL_INPUTS, "metric": Input(ids.METRIC, "value"), "head": Input(ids.HEAD, "data")},
                  state={"agg": State(ids.AGG, "value"), **_VIEW_STATES})
    def corpus_drill(**kw):
        if kw["head"] is None and ctx.triggered_id == ids.METRIC and kw["tab"] == "corpus":
            raise PreventUpdate  # no head picked: the drill-down's hint does not depend on the metric
        return _guard("drill", lambda: drill_views(_sel(**kw), _head(kw["head"])),
                      lambda text: ("", message_figure(text), ""))

    @app.callback(Output(ids.SIMILARITY_A, "figure"), Output(ids.SIMILARITY_B, "figure"), _error_output("analysis"),
                  Input(app_ids.TABS, "value"), Input(app_ids.RUN_SELECT, "value"), Input(ids.RUN_B, "value"),
                  Input(ids.KIND, "value"), State(ids.HEAD, "data"))
    def corpus_analysis(tab, run_a, run_b, kind, head_data):
        if tab != "corpus":
            raise PreventUpdate
        head = _head(head_data)
        return _guard("analysis", lambda: analysis_similarity(run_a, run_b, kind, head),
                      _figures(2, "Head similarity"))

    @app.callback(Output(ids.RELPOS, "figure"), _error_output("relpos"),
                  Input(app_ids.TABS, "value"), Input(app_ids.RUN_SELECT, "value"), Input(ids.RUN_B, "value"),
                  Input(ids.KIND, "value"), Input(ids.HEAD, "data"))
    def corpus_relpos(tab, run_a, run_b, kind, head_data):
        if tab != "corpus":
            raise PreventUpdate
        head = _head(head_data)
        return _guard("relpos", lambda: [analysis_relpos(run_a, run_b, kind, head)],
                      _figures(1, "Relative position"))

    @app.callback(Output(ids.TABLE, "exportDataAsCsv"), Input(ids.EXPORT, "n_clicks"), prevent_initial_call=True)
    def corpus_export(n_clicks):
        return bool(n_clicks)


def _register_browser(app: dash.Dash) -> None:
    """What the browser does without the server (``assets/corpus.js``): ask for a metric's bundles only when it
    lacks them (``need``); and (``draw``) redraw the bundled views when the metric or aggregate changes, move the
    picked head's outline, and show the first message of the views' error slots in the tab's alert. (Two
    client-side callbacks: ``need`` feeds the server, whose bundles feed ``draw``, so they cannot be one.)"""
    controls = [State(app_ids.RUN_SELECT, "value"), State(ids.RUN_B, "value"), State(ids.KIND, "value"),
                State(ids.LENGTH, "value"), State(ids.TRUNCATED, "value"), State(ids.field(ALL), "value"),
                State(ids.field(ALL), "id")]
    app.clientside_callback(ClientsideFunction("corpus", "need"), Output(ids.NEED, "data"),
                            Input(ids.METRIC, "value"), State(app_ids.TABS, "value"), *controls,
                            prevent_initial_call=True)
    drawn = (ids.HEATMAP_A, ids.HEATMAP_B, ids.DIFF)
    outlined_only = tuple(source for source in _OUTLINED if source not in drawn)
    app.clientside_callback(
        ClientsideFunction("corpus", "draw"),
        *[Output(cid, "figure", allow_duplicate=True) for cid in (*drawn, ids.PROFILE, *outlined_only)],
        Output(ids.TABLE, "rowData", allow_duplicate=True), Output(ids.TABLE, "columnDefs", allow_duplicate=True),
        Output(ids.ALERT, "children"), Output(ids.ALERT, "is_open"),
        Input(ids.METRIC, "value"), Input(ids.AGG, "value"), Input(ids.bundle(ALL), "data"),
        Input(ids.HEAD, "data"), Input(ids.error_slot(ALL), "data"),
        State(ids.bundle(ALL), "id"), *[State(cid, "figure") for cid in (*drawn, *outlined_only)], *controls,
        prevent_initial_call=True)


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
