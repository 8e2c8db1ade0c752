"""Callbacks of the Playground tab: run a model now on typed or random input, predict output words, add the
result to a store.

The dashboard process never imports torch nor unpickles: every model job asks the playground's model worker
through :mod:`attnviz.pipeline.playground.client` (JSON requests); the worker keeps models loaded. A job the
worker can answer at once (its model loaded, the job expected to take at most :data:`FAST_JOB_S`) runs in a
plain callback; any other (starting the worker, loading a model, a long generation) is handed to a Dash
background callback with progress and Cancel. A result comes back as a small summary; its records are arrays +
JSON (:mod:`.data`), and its arrays also lie in a one-example store in the playground folder that the Example
tab's own views draw from (:mod:`.figures`). One callback draws everything a result shows, so each figure is
built once per change. Each callback body is a module-level function; ``register_callbacks`` only wires them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.data import get_reader, requested_store
from attnviz.dashboard.example import figures, views
from attnviz.dashboard.messages import message
from attnviz.dashboard.playground import data, ids
from attnviz.dashboard.playground import figures as pg_figures
from attnviz.dashboard.playground.controls import (
    JOB_KEYS,
    added_of,
    as_int,
    choice_args,
    head_options,
    layer_options,
    model_infos,
    pending_of,
    predict_block,
    restore_request,
    restored_view,
    result_summary_of,
    select_model,
    step_range,
    view_state,
)
from attnviz.dashboard.playground.panels import generation_panel, masked_panel, result_summary, token_options
from attnviz.dashboard.urlstate import example_href, playground_wish
from attnviz.pipeline.models.info import ModelInfoError, get_model_info
from attnviz.pipeline.playground.records import DEFAULT_TIMEOUT_S, PlaygroundError, SlowJobError, model_defaults
from attnviz.pipeline.store import StoreError
from attnviz.pipeline.token_classes import SPECIAL

#: Poll interval of the background callbacks (ms): the 1 s default misses progress steps.
POLL_MS = 250
_SESSION_JS = """function(ts, data) {
    if (data) { return window.dash_clientside.no_update; }
    return Math.random().toString(36).slice(2) + Date.now().toString(36);
}"""
_SHOWN, _HIDDEN, _BLOCK = {"display": "flex"}, {"display": "none"}, {"display": "block"}
_NO_RESULT: tuple[Any, ...] = ([], "self", [], 0, [], 0, None, None, None, [])


# --------------------------------------------------------------------------------------------------------
# Controls
# --------------------------------------------------------------------------------------------------------


def selection_outputs(model: str | None, task: str | None, source: str | None, target: str | None,
                      trigger: str | None, config: list[Any] | None = None) -> tuple:
    """Model, task and languages reconciled; the configuration fields of the model (fixed for trained ones):
    its defaults, or ``config`` (layers, heads, hidden size, seed: a copied link's) for a random-weight model."""
    infos = model_infos()
    model, task, note = select_model(infos, model, task, source, target, trigger)
    info = infos.get(model or "")
    if info is None:
        return (model, task, None, None, None, None, True, True, True, True, note, "")
    d = model_defaults(info)
    fixed = not info.random_weights
    values = [d["layers"], d["heads"], d["hidden"], d["seed"]]
    if config is not None and not fixed:
        values = [as_int(v, default) for v, default in zip(config, values, strict=True)]
    text = info.description or info.display_name
    if fixed:
        text += " · configuration fixed (trained weights)"
    notes = html.Div([text, html.Div(note, className="text-danger", id=ids.MODEL_WARNING) if note else None])
    return (model, task, *values, fixed, fixed, fixed, fixed, notes, f"playground-{info.name}")


def on_selection(model: str | None, task: str | None, source: str | None, target: str | None,
                 pending: Any) -> tuple:
    """:func:`selection_outputs` after the model, task or a language changed; when the model just became a copied
    link's (``pending``, set by :func:`on_restore`), the link's configuration is kept."""
    job = pending_of(pending)
    config = None
    if job is not None and job["values"][0] == model and ids.MODEL in _triggered():
        config = job["values"][1:5]
    return selection_outputs(model, task, source, target, ctx.triggered_id, config)


#: The job controls' (component id, property) after the model's (the first 12 outputs of pg_restore are
#: :func:`selection_outputs`'), in ``controls.JOB_KEYS`` order from "input".
_RESTORED_CONTROLS = (ids.INPUT_KIND, ids.TEXT, ids.SECOND, ids.LENGTH, ids.RANDOM_SEED, ids.GEN_N, ids.GEN_MODE,
                      ids.GEN_TEMP, ids.GEN_SEED, ids.MASK_POS)


def on_restore(fragment: Any, restored: Any) -> tuple:
    """Once per page, when the page knows its URL fragment: the Playground's controls from a copied link's
    ``pg.*`` entries (or the defaults), and the link's job (``pg-pending``: run again, its view shown) if it
    showed a result (``pg-autorun`` starts it). Returns selection_outputs, the languages, the other job controls,
    pending, autorun, restored, note."""
    if restored or not isinstance(fragment, str):
        raise PreventUpdate
    request = restore_request(playground_wish(fragment), model_infos())
    values = request["values"]
    model, task = values[0], values[JOB_KEYS.index("task")]
    src, tgt = request["src"], request["tgt"]
    selection = selection_outputs(model, task, src, tgt, "restore", values[1:5])
    rest = [values[JOB_KEYS.index("input") + k] for k in range(len(_RESTORED_CONTROLS))]
    linked = bool(playground_wish(fragment)) and not request["note"]
    note = message(request["note"], "warning") if request["note"] else no_update
    autorun = {"op": request["op"]} if linked and request["op"] else no_update
    return (*selection, src or no_update, tgt or no_update, *rest, request if linked else no_update, autorun, True,
            note)


def on_task(task: str | None) -> tuple:
    """The language row and the second text box for the task."""
    if task == "translation":
        return _SHOWN, _BLOCK, "target text (optional; the decoder reads it)"
    if task == "pair":
        return _HIDDEN, _BLOCK, "second sentence"
    return _HIDDEN, _HIDDEN, ""


def on_input_kind(kind: str | None) -> tuple:
    """Typed text or the random sequence's length and seed."""
    if kind == "random":
        return _HIDDEN, _SHOWN
    return _BLOCK, _HIDDEN


def _predict_note(info: Any, summary: dict | None) -> str:
    if info.family == "encoder":
        note = ("Encoder-only models do not generate text: pick a token to mask (or type [MASK]) and see the "
                "model's predictions for it.")
        if summary and summary.get("model") == info.name and not summary.get("has_lm_head"):
            return (f"{info.name} has no masked-language-model head (its checkpoint holds only the encoder), "
                    "so it cannot predict words.")
    else:
        note = "Generate the next tokens; each step shows the chosen token's probability and the alternatives."
    if info.random_weights:
        note += " Random weights: the predictions are meaningless."
    return note


def on_predict_mode(model: str | None, summary: dict | None, _error: Any = None) -> tuple:
    """Generation controls for causal and encoder-decoder models, masked-token controls for encoders; the
    button disabled, with the reason beside it, for a model that cannot predict words (known from its
    checkpoint before it runs: :func:`~attnviz.dashboard.playground.controls.predict_block`). Also after each
    job (its error line), since a running job re-enables the button when it ends."""
    summary = result_summary_of(summary)
    # Enabling is left to the jobs' "running" state (a job may be running now), except after another model
    # was chosen.
    enable = False if ctx.triggered_id == ids.MODEL else no_update
    try:
        info = get_model_info(model or "")
    except ModelInfoError:
        return _HIDDEN, _HIDDEN, "", "Predict output words", enable
    blocked = predict_block(model, summary)
    label = "Predict masked word" if info.family == "encoder" else "Predict output words"
    if blocked:
        note: Any = html.Span(blocked, id=ids.PREDICT_BLOCKED, className="text-danger")
        return _HIDDEN, _HIDDEN, note, label, True
    if info.family == "encoder":
        return _HIDDEN, _BLOCK, _predict_note(info, summary), label, enable
    return _BLOCK, _HIDDEN, _predict_note(info, summary), label, enable


# --------------------------------------------------------------------------------------------------------
# Jobs: a plain callback runs what the worker can answer at once (its model loaded, the job short); anything
# else (starting the worker, loading a model, a long generation) goes to a background callback with progress
# and Cancel.
# --------------------------------------------------------------------------------------------------------

#: The states a job reads, in the order of :func:`submit_job`'s parameters after the two buttons.
JOB_STATES = (ids.MODEL, ids.LAYERS, ids.HEADS, ids.HIDDEN, ids.MODEL_SEED, ids.TASK, ids.INPUT_KIND, ids.TEXT,
              ids.SECOND, ids.LENGTH, ids.RANDOM_SEED, ids.GEN_N, ids.GEN_MODE, ids.GEN_TEMP, ids.GEN_SEED,
              ids.MASK_POS)
#: Seconds of model work the plain callback waits for; longer jobs run in the background (progress, Cancel).
FAST_JOB_S = 1.5


def _predict_args(model: str, gen_n: Any, gen_mode: str | None, gen_temp: Any, gen_seed: Any,
                  mask_pos: Any) -> tuple[str, dict[str, Any]]:
    """The operation and its extra arguments for "Predict output words" (ModelInfoError for an unknown model)."""
    if get_model_info(model).family == "encoder":
        return "mask", {"mask": {"position": as_int(mask_pos)}}
    try:
        temperature = float(gen_temp) if gen_temp not in (None, "") else 1.0
    except (TypeError, ValueError):
        raise PlaygroundError("the temperature must be a number") from None
    return "generate", {"generate": {"n_tokens": as_int(gen_n, 0), "greedy": gen_mode != "sample",
                                     "temperature": temperature, "seed": as_int(gen_seed, 0)}}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def job_request(predict: bool, values: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    """The worker operation and its arguments for the page's controls (``values`` in :data:`JOB_STATES` order);
    PlaygroundError or ModelInfoError for what the page should show as an error."""
    (model, layers, heads, hidden, mseed, task, input_kind, text, second, length, rseed, gen_n, gen_mode, gen_temp,
     gen_seed, mask_pos) = values
    if not isinstance(model, str) or not model:
        raise PlaygroundError("choose a model")
    args: dict[str, Any] = {
        "choice": choice_args(model, layers, heads, hidden, mseed),
        "input": {"task": task if isinstance(task, str) and task else "single", "text": _text(text),
                  "second": _text(second), "random": input_kind == "random", "length": as_int(length, 0),
                  "seed": as_int(rseed, 0)}}
    op = "run"
    if predict:
        op, extra = _predict_args(model, gen_n, gen_mode if isinstance(gen_mode, str) else None, gen_temp,
                                  gen_seed, mask_pos)
        args.update(extra)
    return op, args


def submit_job(run: int | None, predict: int | None, autorun: Any, *rest: Any) -> tuple:
    """Run the model (or predict words) now when the worker can answer quickly; else hand the job to the
    background callback (``pg-job``). A copied link's job (``autorun``, once per page) runs with the link's values
    (``pg-pending``), whatever the controls show while they are being restored. Returns (result summary, error
    line, background request)."""
    *values, pending, session = rest
    is_predict = ctx.triggered_id == ids.PREDICT
    if ctx.triggered_id == ids.AUTORUN:
        job = pending_of(pending)
        if job is None or not job.get("op"):
            raise PreventUpdate
        values, is_predict = list(job["values"]), job["op"] == "predict"
    try:
        op, args = job_request(is_predict, tuple(values))
    except (ModelInfoError, PlaygroundError) as exc:
        return no_update, message(str(exc), "danger", ids.ERROR_TEXT), no_update
    try:
        summary = data.call(op, args, session if isinstance(session, str) else None, fast=FAST_JOB_S)
    except SlowJobError:
        return no_update, None, {"predict": is_predict, "values": list(values), "clicks": [run, predict]}
    except PlaygroundError as exc:
        return no_update, message(str(exc), "danger", ids.ERROR_TEXT), no_update
    return summary, None, no_update


def run_job(set_progress: Callable[[tuple], None], request: dict | None, session: str | None) -> Any:
    """The background job: run what :func:`submit_job` handed over on the worker (starting it and loading the
    model if needed), with progress; the summary goes to ``pg-result`` with set_props, the callback's own output
    is the error line."""
    def progress(fraction: float, text_: str) -> None:
        set_progress((round(100 * fraction), text_))

    values = request.get("values") if isinstance(request, dict) else None
    if not isinstance(values, list) or len(values) != len(JOB_STATES):
        return no_update
    try:
        op, args = job_request(bool(request.get("predict")), tuple(values))  # type: ignore[union-attr]
        summary = data.call(op, args, session, progress)
    except (ModelInfoError, PlaygroundError) as exc:
        return message(str(exc), "danger", ids.ERROR_TEXT)
    dash.set_props(ids.RESULT, {"data": summary})
    return None


def on_add_click(clicks: int | None, summary: dict | None, run_name: str | None) -> dict:
    """Note which store the page shows (its ``?store=`` name travels with this request only)."""
    summary = result_summary_of(summary)
    return {"clicks": clicks, "result_id": (summary or {}).get("id"), "run": (run_name or "").strip(),
            "store_name": requested_store()}


def add_job(config: Any, request: dict | None, session: str | None) -> tuple:
    """Add the result to the page's store (``config`` is the Flask config) on the worker."""
    if not request or not request.get("result_id"):
        return message("run the model first"), no_update
    try:
        store = data.target_store(config, request.get("store_name"))
        added = data.call("add", {"result_id": request["result_id"], "store": str(store), "run": request["run"]},
                          session)
    except (PlaygroundError, StoreError) as exc:
        return message(str(exc), "danger", ids.ADD_ERROR), no_update
    href = example_href(added["run"], added["index"], store=request.get("store_name") or None)
    return dbc.Alert([f"Added as example {added['index']} of run {added['run']!r} in {store.name} "
                      f"({added['examples']} examples). ", dcc.Link("Open it in the Example tab", href=href)],
                     color="success", className="mb-0 py-2 small", id=ids.ADD_DONE), added


def on_added(added: dict | None) -> None:
    """Re-read the store index now, so that the Example tab lists the new example at once."""
    added = added_of(added)
    if added and isinstance(added.get("store"), str):
        with contextlib.suppress(StoreError):
            get_reader(added["store"]).refresh()


def on_result_add(summary: dict | None) -> bool:
    """"Add to the store" is enabled once there is a result."""
    return not summary


# --------------------------------------------------------------------------------------------------------
# The result and its views
# --------------------------------------------------------------------------------------------------------


def _panels(summary: dict) -> tuple:
    """A new result's panels and selection: (kind options, kind, layer options, layer, head options, head,
    summary, generation, masked predictions, mask options)."""
    try:
        result = data.read_result(summary["id"])
    except PlaygroundError as exc:
        return ([], "self", [], 0, [], 0, message(str(exc)), None, None, [])
    kinds = list(result.example.attention)
    kind_opts = [{"label": views.kind_label(k, result.family), "value": k} for k in kinds]
    kind = "cross" if result.generation is not None and "cross" in kinds else kinds[0]
    layers, heads = result.shape[kind]
    gen = masked = None
    if result.generation is not None:
        side = result.example.target if result.generation.side == "target" else result.example.source
        gen = generation_panel(result.generation, side.strings if side else [], result.random_weights)
    if result.masked is not None:
        masked = masked_panel(result.masked, result.example.source.strings)
    src = result.example.source
    special = [(int(f) & SPECIAL) != 0 for f in src.flags]
    return (kind_opts, kind, layer_options(layers), 0, head_options(heads), 0, result_summary(result), gen,
            masked, token_options(src.strings, special))


def _step_slider(summary: dict, kind: str) -> tuple:
    """(min, max, marks, value, label) of the time-step slider for ``kind`` (generation steps marked)."""
    lo, hi, marks, value = step_range(summary, kind)
    label = "generation step (query that predicted each generated token)" if marks else "time step (query)"
    return lo, hi, marks or None, value, label


def _figures(summary: dict, kind: Any, layer: Any, head: Any, step: Any) -> list:
    if kind not in summary.get("kinds", []):
        kind = summary["kinds"][0]
    try:
        return pg_figures.draw(data.result_reader(summary["id"]), view_state(str(kind), layer, head, step))
    except PlaygroundError as exc:
        return pg_figures.messages(str(exc))


#: How many values :func:`on_views` returns before the figures: the panels and selection (10), the slider (5).
_PANEL_OUTPUTS, _SLIDER_OUTPUTS = 10, 5


def on_views(summary: dict | None, kind: str | None, layer: Any, head: Any, step: Any, pending: Any = None
             ) -> tuple:
    """Everything the result shows, in one response: on a new result its panels, the kind, layer, head and mask
    options and the selection, the time-step slider and the six figures; on a new kind the slider and the
    figures; on a new layer, head or time step the figures. Each figure is built once per change. The first
    result after a copied link opened shows the link's view (``pending``, then cleared: the last output)."""
    summary = result_summary_of(summary)
    keep = (no_update,) * (_PANEL_OUTPUTS + _SLIDER_OUTPUTS)
    if not summary:
        if ids.RESULT in _triggered():
            return (*_NO_RESULT, 0, 0, {}, 0, "time step", *[pg_figures.empty()] * len(ids.GRAPHS), no_update)
        return (*keep, *[pg_figures.empty()] * len(ids.GRAPHS), no_update)
    triggered = _triggered()
    if ids.RESULT in triggered:
        panels = list(_panels(summary))
        job = pending_of(pending)
        view = job.get("view") if job is not None else None
        wanted: dict[str, Any] = {}
        if view:
            kinds = [o["value"] for o in panels[0]]
            shape = {k: tuple(v) for k, v in summary.get("shape", {}).items()}
            shown = view.get("kind") if view.get("kind") in kinds else str(panels[1])
            wanted = restored_view(view, kinds, shape, step_range(summary, shown)[:2])
            panels[1] = wanted.get("kind", panels[1])
            panels[3] = wanted.get("layer", panels[3])
            panels[5] = wanted.get("head", panels[5])
        kind, layer, head = panels[1], panels[3], panels[5]
        slider = list(_step_slider(summary, str(kind)))
        if view and "step" in wanted:
            slider[3] = wanted["step"]
        return (*panels, *slider, *_figures(summary, kind, layer, head, slider[3]),
                None if job is not None else no_update)
    if ids.KIND in triggered and isinstance(kind, str) and kind in summary["kinds"]:
        new_slider = _step_slider(summary, kind)
        return (*keep[:_PANEL_OUTPUTS], *new_slider, *_figures(summary, kind, layer, head, new_slider[3]),
                no_update)
    return (*keep, *_figures(summary, kind, layer, head, step), no_update)


def _triggered() -> set[str]:
    """Ids of the components whose change fired the running callback."""
    return {str(p).split(".")[0] for p in (ctx.triggered_prop_ids or {})}


def on_model_view_click(click: dict | None) -> tuple:
    """A click on the model view selects its layer and head."""
    points = (click or {}).get("points") or []
    hit = figures.parse_model_view_click(points[0]) if points else None
    return (hit[0], hit[1]) if hit else (no_update, no_update)


# --------------------------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------------------------


def _setting(app: dash.Dash, key: str, default: Any) -> Any:
    return app.server.config.get(key) or os.environ.get(key) or default


def _manager(app: dash.Dash, folder: Path) -> Any:
    existing = getattr(app, "_background_manager", None)
    if existing is not None:
        return existing
    import diskcache  # only when the app did not provide a manager

    return dash.DiskcacheManager(diskcache.Cache(str(folder / "dash-cache")))


def _register_controls(app: dash.Dash) -> None:
    app.clientside_callback(_SESSION_JS, Output(ids.SESSION, "data"), Input(ids.SESSION, "modified_timestamp"),
                            State(ids.SESSION, "data"))
    selection = (
        Output(ids.MODEL, "value"), Output(ids.TASK, "value"), Output(ids.LAYERS, "value"),
        Output(ids.HEADS, "value"), Output(ids.HIDDEN, "value"), Output(ids.MODEL_SEED, "value"),
        Output(ids.LAYERS, "disabled"), Output(ids.HEADS, "disabled"), Output(ids.HIDDEN, "disabled"),
        Output(ids.MODEL_SEED, "disabled"), Output(ids.MODEL_NOTE, "children"), Output(ids.RUN_NAME, "value"))
    # The page's first selection comes from on_restore (the link's, or the defaults), then on_selection follows
    # the controls.
    app.callback(*selection, Input(ids.MODEL, "value"), Input(ids.TASK, "value"), Input(ids.SRC_LANG, "value"),
                 Input(ids.TGT_LANG, "value"), State(ids.PENDING, "data"), prevent_initial_call=True)(on_selection)
    app.callback(
        *[Output(o.component_id, o.component_property, allow_duplicate=True) for o in selection],
        Output(ids.SRC_LANG, "value"), Output(ids.TGT_LANG, "value"),
        *[Output(c, "value") for c in _RESTORED_CONTROLS], Output(ids.PENDING, "data"), Output(ids.AUTORUN, "data"),
        Output(ids.RESTORED, "data"), Output(ids.ERROR, "children", allow_duplicate=True),
        Input(app_ids.URL, "hash"), State(ids.RESTORED, "data"),
        prevent_initial_call="initial_duplicate")(on_restore)
    app.callback(Output(ids.LANG_ROW, "style"), Output(ids.SECOND_ROW, "style"),
                 Output(ids.SECOND_LABEL, "children"), Input(ids.TASK, "value"))(on_task)
    app.callback(Output(ids.TYPED_ROW, "style"), Output(ids.RANDOM_ROW, "style"),
                 Input(ids.INPUT_KIND, "value"))(on_input_kind)
    app.callback(Output(ids.GEN_CONTROLS, "style"), Output(ids.MASK_CONTROLS, "style"),
                 Output(ids.PREDICT_NOTE, "children"), Output(ids.PREDICT, "children"),
                 Output(ids.PREDICT, "disabled", allow_duplicate=True),
                 Input(ids.MODEL, "value"), Input(ids.RESULT, "data"), Input(ids.ERROR, "children"),
                 prevent_initial_call="initial_duplicate")(on_predict_mode)
    app.clientside_callback(
        ClientsideFunction("attnviz_state", "playground"), Output(app_ids.URL, "hash", allow_duplicate=True),
        *[Input(c, "value") for c in (ids.MODEL, ids.LAYERS, ids.HEADS, ids.HIDDEN, ids.MODEL_SEED, ids.TASK,
                                      ids.SRC_LANG, ids.TGT_LANG, ids.INPUT_KIND, ids.TEXT, ids.SECOND, ids.LENGTH,
                                      ids.RANDOM_SEED, ids.GEN_N, ids.GEN_MODE, ids.GEN_TEMP, ids.GEN_SEED,
                                      ids.MASK_POS)],
        Input(ids.RESULT, "data"), *[Input(c, "value") for c in (ids.KIND, ids.LAYER, ids.HEAD, ids.STEP)],
        State(app_ids.TABS, "value"), State(ids.LAYERS, "disabled"), prevent_initial_call=True)


def _register_jobs(app: dash.Dash, manager: Any) -> None:
    busy = [(Output(ids.RUN, "disabled"), True, False), (Output(ids.PREDICT, "disabled"), True, False)]
    app.callback(
        Output(ids.RESULT, "data"), Output(ids.ERROR, "children"), Output(ids.JOB, "data"),
        Input(ids.RUN, "n_clicks"), Input(ids.PREDICT, "n_clicks"), Input(ids.AUTORUN, "data"),
        *[State(i, "value") for i in JOB_STATES], State(ids.PENDING, "data"), State(ids.SESSION, "data"),
        running=busy, prevent_initial_call=True,
    )(submit_job)
    # The background job's only declared output is the error line: Dash holds every callback downstream of a
    # running callback's outputs, so the result is handed over with set_props, and the views of the previous
    # result stay interactive while a job runs.
    app.callback(
        Output(ids.ERROR, "children", allow_duplicate=True),
        Input(ids.JOB, "data"), State(ids.SESSION, "data"),
        background=True, manager=manager, interval=POLL_MS,
        progress=[Output(ids.PROGRESS, "value"), Output(ids.STATUS, "children")],
        progress_default=[0, ""],
        running=[*busy, (Output(ids.ADD, "disabled"), True, False), (Output(ids.CANCEL, "disabled"), False, True),
                 (Output(ids.PROGRESS, "animated"), True, False), (Output(ids.PROGRESS, "striped"), True, False)],
        cancel=[Input(ids.CANCEL, "n_clicks")],
        prevent_initial_call=True,
    )(run_job)
    app.callback(Output(ids.ADD_REQUEST, "data"), Input(ids.ADD, "n_clicks"), State(ids.RESULT, "data"),
                 State(ids.RUN_NAME, "value"), prevent_initial_call=True)(on_add_click)
    config = app.server.config  # inherited by the background jobs (forked)

    @app.callback(
        Output(ids.ADD_STATUS, "children"), Output(ids.ADDED, "data"),
        Input(ids.ADD_REQUEST, "data"), State(ids.SESSION, "data"),
        background=True, manager=manager, interval=POLL_MS,
        running=[(Output(ids.ADD, "disabled"), True, False)],
        prevent_initial_call=True,
    )
    def add(request: dict | None, session: str | None) -> tuple:
        return add_job(config, request, session)

    app.callback(Input(ids.ADDED, "data"), prevent_initial_call=True)(on_added)
    app.callback(Output(ids.ADD, "disabled", allow_duplicate=True), Input(ids.RESULT, "data"),
                 prevent_initial_call=True)(on_result_add)


def _register_views(app: dash.Dash) -> None:
    app.callback(
        Output(ids.KIND, "options"), Output(ids.KIND, "value"), Output(ids.LAYER, "options"),
        Output(ids.LAYER, "value"), Output(ids.HEAD, "options"), Output(ids.HEAD, "value"),
        Output(ids.SUMMARY, "children"), Output(ids.GENERATION, "children"), Output(ids.MASKED, "children"),
        Output(ids.MASK_POS, "options"),
        Output(ids.STEP, "min"), Output(ids.STEP, "max"), Output(ids.STEP, "marks"), Output(ids.STEP, "value"),
        Output(ids.STEP_LABEL, "children"),
        *[Output(g, "figure") for g in ids.GRAPHS], Output(ids.PENDING, "data", allow_duplicate=True),
        Input(ids.RESULT, "data"), Input(ids.KIND, "value"), Input(ids.LAYER, "value"), Input(ids.HEAD, "value"),
        Input(ids.STEP, "value"), State(ids.PENDING, "data"), prevent_initial_call=True)(on_views)
    app.callback(Output(ids.LAYER, "value", allow_duplicate=True), Output(ids.HEAD, "value", allow_duplicate=True),
                 Input(ids.MODEL_VIEW, "clickData"), prevent_initial_call=True)(on_model_view_click)


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app`` (and set up the playground folder and background manager).

    The folder and time limit come from the Flask config or the environment (``ATTNVIZ_PLAYGROUND_DIR``,
    ``ATTNVIZ_PLAYGROUND_TIMEOUT``); they are process-wide (the last app registered wins).
    """
    folder = data.configure(_setting(app, data.CONFIG_DIR_KEY, data.default_folder()),
                            float(_setting(app, data.CONFIG_TIMEOUT_KEY, DEFAULT_TIMEOUT_S)))
    _register_controls(app)
    _register_jobs(app, _manager(app, folder))
    _register_views(app)
