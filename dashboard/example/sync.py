"""Resolve the Example tab's selection against the store and keep the controls in agreement with it.

The page owns the fast part (``dashboard/assets/example.js``): layer, head, query position, raw/rollout and a
model-view click change the ``view-state`` store in the browser, and the page writes the URL from that store.
The server resolves what needs the store: a URL the page does not show yet (load, back/forward, a link: the
page puts it in ``example-url-request``), a run, an example, an attention kind or Reset. It then sets every
control and the ``view-state`` store, which carries, besides the selection, how the page gets the example's
data (``detail``: all layers at once or one at a time, see :mod:`.payload`) and its number of query positions.
The data itself the page fetches as raw bytes (:mod:`.transport`), in parallel with this callback.
"""

from __future__ import annotations

import logging
from typing import Any

import dash
from dash import ClientsideFunction, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.data import current_reader, run_label
from attnviz.dashboard.example import ids
from attnviz.dashboard.example.data import is_causal
from attnviz.dashboard.example.payload import detail_level
from attnviz.dashboard.example.views import kind_label
from attnviz.dashboard.messages import error_text
from attnviz.dashboard.urlstate import MEAN_HEAD, ViewState, parse_state
from attnviz.pipeline.records import ATTENTION_KINDS, KIND_SIDES
from attnviz.pipeline.store import StoreError, StoreReader
from attnviz.pipeline.store.meta import run_meta

log = logging.getLogger(__name__)


def _query_length(reader: StoreReader, run: str, example: int, kind: str) -> int | None:
    table = reader.examples(run)
    if not 0 <= example < len(table):
        return None
    side = KIND_SIDES.get(kind, ("source", "source"))[0]
    return int((table.n_tokens if side == "source" else table.n_target_tokens)[example])


def _clamp_layer_head(state: ViewState, n_layers: int, n_heads: int, messages: list[str]) -> dict[str, int]:
    """Changes that bring the layer and head within the run's bounds (each explained in ``messages``)."""
    changes = {}
    if state.layer >= n_layers:
        changes["layer"] = n_layers - 1
        messages.append(f"layer {state.layer} is out of range (0..{n_layers - 1}): showing layer {n_layers - 1}")
    if state.head is not None and state.head >= n_heads:
        changes["head"] = n_heads - 1
        messages.append(f"head {state.head} is out of range (0..{n_heads - 1}): showing head {n_heads - 1}")
    return changes


def resolve_state(reader: StoreReader, state: ViewState, *, explain: bool) -> tuple[ViewState, list[str]]:
    """Fit a selection to the store: pick the first run when none or an unknown one is asked, clamp layer,
    head and step to the run's bounds. An out-of-range example or a kind the run lacks is kept (the views
    show why there is nothing to draw). ``explain`` adds a message for every adjustment (for URLs)."""
    messages = list(state.errors)
    runs = reader.runs()
    if not runs:
        return state.with_changes(run=None), ["the store has no runs yet: run 'attnviz precompute' first"]
    run = state.run
    if run not in runs:
        if run is not None:
            messages.append(f"run {run!r} is not in this store: showing {runs[0]!r}")
        run = runs[0]
    info = reader.run_info(run)
    shape = info.shape.get(state.kind) or next(iter(info.shape.values()))
    n_layers, n_heads = shape
    if state.kind not in info.kinds:
        messages.append(f"run {run!r} has no {kind_label(state.kind, run_meta(info.meta).family)} "
                        f"(it has {', '.join(info.kinds)})")
    changes: dict[str, Any] = {"run": run, **_clamp_layer_head(state, n_layers, n_heads, messages if explain else [])}
    n = info.num_examples
    if not 0 <= state.example < n:
        messages.append(f"example {state.example} is out of range for run {run!r} (0..{n - 1})")
    elif state.kind in info.kinds:
        tq = _query_length(reader, run, state.example, state.kind)
        if tq is not None and state.step >= tq:
            changes["step"] = max(0, tq - 1)
            if explain:
                messages.append(f"step {state.step} is past the last token: showing step {tq - 1}")
    return state.with_changes(**changes, errors=()), messages


def control_values(reader: StoreReader, state: ViewState) -> dict[str, Any]:
    """Values and options of every control for a resolved state."""
    if state.run is None:
        return {"example_max": 0, "layer_options": [], "head_options": [], "kind_options": [], "step_max": 0,
                "step_label": "query position", "count": "of 0"}
    info = reader.run_info(state.run)
    family = run_meta(info.meta).family
    n_layers, n_heads = info.shape.get(state.kind) or next(iter(info.shape.values()))
    kinds = [k for k in ATTENTION_KINDS if k in info.kinds or k == state.kind]
    kind_options = [{"label": kind_label(k, family) + ("" if k in info.kinds else " — not in this run"),
                     "value": k, "disabled": k not in info.kinds} for k in kinds]
    tq = _query_length(reader, state.run, state.example, state.kind) if state.kind in info.kinds else None
    causal = state.kind in info.kinds and is_causal(reader, state.run, state.kind)
    return {
        "example_max": max(0, info.num_examples - 1),
        "layer_options": [{"label": f"layer {layer}", "value": str(layer)} for layer in range(n_layers)],
        "head_options": [{"label": "mean of all heads", "value": MEAN_HEAD}]
        + [{"label": f"head {h}", "value": str(h)} for h in range(n_heads)],
        "kind_options": kind_options,
        "step_max": max(0, (tq or 1) - 1),
        "step_label": "generation step" if causal else "query position",
        "count": f"of {info.num_examples}",
    }


def _as_int(value: Any, fallback: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return fallback


def state_from_controls(previous: ViewState, tab: Any, run: Any, example: Any, layer: Any, head: Any,
                        step: Any, kind: Any, attn: Any) -> ViewState:
    """The selection the controls show (empty or malformed inputs keep the previous value)."""
    return ViewState(
        tab=tab or previous.tab, run=run or previous.run, example=_as_int(example, previous.example),
        layer=_as_int(layer, previous.layer),
        head=None if head == MEAN_HEAD else _as_int(head, previous.head if previous.head is not None else 0),
        step=_as_int(step, previous.step), kind=kind or previous.kind, attn=attn or previous.attn)


def apply_trigger(state: ViewState, trigger: str | None, *, n_examples: int, run_changed: bool,
                  search_pick: Any = None) -> ViewState:
    """Adjust a selection for the control that fired: prev/next, a search pick, reset."""
    if trigger == ids.EXAMPLE_PREV:
        return state.with_changes(example=max(0, min(state.example, n_examples) - 1))
    if trigger == ids.EXAMPLE_NEXT:
        return state.with_changes(example=min(max(0, n_examples - 1), state.example + 1))
    if trigger == ids.EXAMPLE_SEARCH_RESULTS and search_pick is not None:
        return state.with_changes(example=_as_int(search_pick, state.example))
    if trigger == ids.RESET:
        return ViewState(tab=state.tab, run=state.run, example=state.example)
    if run_changed and not 0 <= state.example < n_examples:
        return state.with_changes(example=0)
    return state


#: (component id, property) of every output of the sync callback, in order.
SYNC_OUTPUTS: tuple[tuple[str, str], ...] = (
    (app_ids.TABS, "value"), (app_ids.RUN_SELECT, "value"), (app_ids.RUN_SELECT, "options"),
    (ids.EXAMPLE_INDEX, "value"), (ids.EXAMPLE_INDEX, "max"), (ids.EXAMPLE_COUNT, "children"),
    (ids.LAYER_SELECT, "value"), (ids.LAYER_SELECT, "options"), (ids.HEAD_SELECT, "value"),
    (ids.HEAD_SELECT, "options"), (ids.STEP_INPUT, "value"), (ids.STEP_INPUT, "max"), (ids.STEP_LABEL, "children"),
    (ids.KIND_SELECT, "value"), (ids.KIND_SELECT, "options"), (ids.ATTN_MODE, "value"),
    (ids.EXAMPLE_SEARCH_RESULTS, "value"), (app_ids.VIEW_STATE, "data"), (ids.STATE_ALERT, "children"),
    (ids.STATE_ALERT, "is_open"),
)


def run_options(reader: StoreReader) -> list[dict[str, str]]:
    """Run selector options; random-weight models are labelled as such."""
    return [{"label": run_label(reader, run), "value": run} for run in reader.runs()]


def register_callbacks(app: dash.Dash) -> None:
    """Attach the selection callbacks to ``app``: the server's (URL requests, run, example, kind, reset) and
    the page's (the other controls, the URL)."""
    app.clientside_callback(
        ClientsideFunction("attnviz_example", "urlRequest"), Output(ids.URL_REQUEST, "data"),
        Input(app_ids.URL, "search"), State(app_ids.VIEW_STATE, "data"), State(app_ids.TABS, "value"),
        State(app_ids.LAYOUT_FOR, "data"))
    app.clientside_callback(
        ClientsideFunction("attnviz_example", "controls"),
        Output(app_ids.VIEW_STATE, "data", allow_duplicate=True),
        Output(ids.LAYER_SELECT, "value", allow_duplicate=True), Output(ids.HEAD_SELECT, "value", allow_duplicate=True),
        Output(ids.STEP_INPUT, "value", allow_duplicate=True),
        Input(ids.LAYER_SELECT, "value"), Input(ids.HEAD_SELECT, "value"), Input(ids.STEP_INPUT, "value"),
        Input(ids.ATTN_MODE, "value"), Input(ids.MODEL_VIEW_CLICK, "data"), Input(app_ids.VIEW_STATE, "data"),
        prevent_initial_call=True)

    @app.callback(
        *[Output(cid, prop) for cid, prop in SYNC_OUTPUTS],
        Input(ids.URL_REQUEST, "data"), Input(app_ids.RUN_SELECT, "value"),
        Input(ids.EXAMPLE_INDEX, "value"), Input(ids.EXAMPLE_PREV, "n_clicks"), Input(ids.EXAMPLE_NEXT, "n_clicks"),
        Input(ids.EXAMPLE_SEARCH_RESULTS, "value"), Input(ids.KIND_SELECT, "value"), Input(ids.RESET, "n_clicks"),
        Input(ids.WINDOW_PREV, "n_clicks"), Input(ids.WINDOW_NEXT, "n_clicks"),
        State(app_ids.TABS, "value"), State(ids.LAYER_SELECT, "value"), State(ids.HEAD_SELECT, "value"),
        State(ids.STEP_INPUT, "value"), State(ids.ATTN_MODE, "value"), State(app_ids.VIEW_STATE, "data"),
        State(app_ids.RUN_SELECT, "options"), prevent_initial_call=True,
    )
    def sync(request, run, example, _prev, _next, search_pick, kind, reset_clicks, _window_prev, _window_next, tab,
             layer, head, step, attn, current, shown_runs):
        trigger = ctx.triggered_id
        if trigger == ids.EXAMPLE_INDEX and example is None:
            raise PreventUpdate  # a number field being retyped: wait for a number, don't refill it
        if trigger is None and not request:
            raise PreventUpdate  # the page asks with the URL it was opened at
        from_url = trigger is None or trigger == ids.URL_REQUEST
        previous = ViewState.from_dict(current)
        out: dict[tuple[str, str], Any] = dict.fromkeys(SYNC_OUTPUTS, dash.no_update)
        try:
            reader = current_reader()
            if from_url:
                asked = parse_state(_requested_search(request))
            else:
                asked = state_from_controls(previous, tab, run, example, layer, head, step, kind, attn)
                asked = _apply_control(reader, asked, previous, trigger, search_pick)
            reset = trigger == ids.RESET
            out.update(_resolved_outputs(reader, asked, from_url=from_url, reset=reset, current=current, tab=tab,
                                         run=run, shown_runs=shown_runs,
                                         redraw=reset_clicks if isinstance(reset_clicks, int) else 0))
        except StoreError as exc:
            log.warning("cannot resolve the selection: %s", exc)
            out[(app_ids.VIEW_STATE, "data")] = None
            out[(ids.STATE_ALERT, "children")] = error_text(exc)
            out[(ids.STATE_ALERT, "is_open")] = True
        # the example's data is not sent here: the page fetches it as raw bytes (transport.py), often before this
        # answer arrives (first load, a neighbour fetched in advance)
        return tuple(out.values())


def url_outputs(reader: StoreReader, search: str) -> dict[tuple[str, str], Any]:
    """What the sync callback sets for a page opened at the query string ``search``: every control's value and
    options, the view state and the URL's messages (the page's layout can hold them from the start, see
    :mod:`attnviz.dashboard.served_layout`). Raises ``StoreError`` when the store cannot be read."""
    out = _resolved_outputs(reader, parse_state(search), from_url=True, reset=False, current=None,
                            tab="example", run=None, shown_runs=None, redraw=0)
    return {output: value for output, value in out.items() if value is not dash.no_update}


def _resolved_outputs(reader: StoreReader, asked: ViewState, *, from_url: bool, reset: bool, current: Any, tab: Any,
                      run: Any, shown_runs: Any, redraw: int) -> dict[tuple[str, str], Any]:
    """The sync callback's outputs for the selection ``asked`` (from a URL, or from the controls)."""
    state, messages = resolve_state(reader, asked, explain=from_url)
    controls = control_values(reader, state)
    options = run_options(reader)
    # Reset also redraws every view (which resets their zoom): its click count goes into the state
    extra = {"detail": detail_level(reader, state), "steps": controls["step_max"] + 1, "redraw": redraw}
    owns = set(CLIENT_FIELDS) if from_url or reset else {
        f for f in CLIENT_FIELDS if getattr(state, f) != getattr(asked, f)}
    out = _state_outputs(state, controls, messages, {**extra, "owns": sorted(owns)}, current=current,
                         reset=reset, set_tab=from_url and state.tab != tab)
    # an output set to the value it has still fires the callbacks that listen to it (the Corpus tab's)
    out[(app_ids.RUN_SELECT, "options")] = dash.no_update if options == shown_runs else options
    if state.run == run:
        out[(app_ids.RUN_SELECT, "value")] = dash.no_update
    return out


#: Fields of the selection the page sets by itself (``controls`` in example.js). The server's answer names those
#: it sets (``owns``: all of them for a URL or Reset, else those it had to change, e.g. a layer the new run lacks);
#: the page keeps its own value of the others, which may have changed while the server was answering.
CLIENT_FIELDS: tuple[str, ...] = ("layer", "head", "step", "attn")


def _requested_search(request: Any) -> str:
    """The query string of a URL request from the page (anything else: the default selection)."""
    if isinstance(request, dict) and isinstance(request.get("search"), str):
        return request["search"]
    return ""


def _apply_control(reader: StoreReader, state: ViewState, previous: ViewState, trigger: str | None,
                   search_pick: Any) -> ViewState:
    """The selection after a control changed: a window button goes to the linked window
    (:func:`step_window`), a new run falls back to self-attention when it lacks the kind, then
    :func:`apply_trigger`."""
    if trigger in (ids.WINDOW_PREV, ids.WINDOW_NEXT):
        return step_window(reader, state, forward=trigger == ids.WINDOW_NEXT)
    runs = reader.runs()
    run_changed = trigger == app_ids.RUN_SELECT and state.run != previous.run
    n = reader.num_examples(state.run) if state.run in runs else 0
    if run_changed and state.run in runs and state.kind not in reader.run_info(state.run).kinds:
        state = state.with_changes(kind="self")
    return apply_trigger(state, trigger, n_examples=n, run_changed=run_changed, search_pick=search_pick)


def step_window(reader: StoreReader, state: ViewState, *, forward: bool) -> ViewState:
    """The selection on the window after (``forward``) or before the example's, in the same long text
    (``StoreReader.windows``); unchanged at either end, for an example that is no window, or without a run."""
    if state.run not in reader.runs() or not 0 <= state.example < reader.num_examples(state.run):
        return state
    windows = reader.windows(state.run, state.example)
    target = windows.next() if forward else windows.previous()
    return state if target is None else state.with_changes(example=target)


def _state_outputs(state: ViewState, controls: dict[str, Any], messages: list[str], extra: dict[str, Any], *,
                   current: Any, reset: bool, set_tab: bool) -> dict[tuple[str, str], Any]:
    """The sync callback's outputs for a resolved selection; ``extra`` goes into the view state beside it. The
    controls the page owns (:data:`CLIENT_FIELDS`) are set only where ``extra["owns"]`` names them."""
    data = {**{k: v for k, v in state.to_dict().items() if k != "tab"}, **extra}  # switching tabs redraws nothing
    owned = {(ids.LAYER_SELECT, "value"): "layer", (ids.HEAD_SELECT, "value"): "head",
             (ids.STEP_INPUT, "value"): "step", (ids.ATTN_MODE, "value"): "attn"}
    values = {
        (app_ids.TABS, "value"): state.tab if set_tab else dash.no_update, (app_ids.RUN_SELECT, "value"): state.run,
        (ids.EXAMPLE_INDEX, "value"): state.example, (ids.EXAMPLE_INDEX, "max"): controls["example_max"],
        (ids.EXAMPLE_COUNT, "children"): controls["count"],
        (ids.LAYER_SELECT, "value"): str(state.layer), (ids.LAYER_SELECT, "options"): controls["layer_options"],
        (ids.HEAD_SELECT, "value"): MEAN_HEAD if state.head is None else str(state.head),
        (ids.HEAD_SELECT, "options"): controls["head_options"],
        (ids.STEP_INPUT, "value"): state.step, (ids.STEP_INPUT, "max"): controls["step_max"],
        (ids.STEP_LABEL, "children"): controls["step_label"],
        (ids.KIND_SELECT, "value"): state.kind, (ids.KIND_SELECT, "options"): controls["kind_options"],
        (ids.ATTN_MODE, "value"): state.attn, (ids.EXAMPLE_SEARCH_RESULTS, "value"): None,
        # unchanged: no redraw; Reset always redraws, which also resets the zoom
        (app_ids.VIEW_STATE, "data"): dash.no_update if data == current and not reset else data,
        (ids.STATE_ALERT, "children"): "; ".join(messages), (ids.STATE_ALERT, "is_open"): bool(messages),
    }
    for output, field in owned.items():
        if field not in extra["owns"]:
            values[output] = dash.no_update
    return values
