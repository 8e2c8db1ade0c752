"""Playground tab: run a model now on typed or random input, predict output words, add the result to a store.

The dashboard process never imports torch: every model job is a Dash background callback whose process asks
the playground's model worker (:mod:`attnviz.pipeline.playground_worker`) to run it; the worker keeps models loaded.
A result comes back as a small summary; its arrays stay in a one-example store in the playground folder that
the Example tab's own views (:mod:`attnviz.dashboard.views`, over :mod:`attnviz.dashboard.figures`) draw from.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, ctx, dcc, html, no_update

from attnviz.dashboard.callback_inputs import InputRefusedError
from attnviz.dashboard.data import data_dir_of, get_reader, requested_store
from attnviz.dashboard.example import figures, views
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.playground_panels import generation_panel, masked_panel, message, result_summary, token_options
from attnviz.dashboard.security import resolve_store
from attnviz.dashboard.urlstate import ViewState, example_href
from attnviz.pipeline import playground_worker
from attnviz.pipeline.models.info import ModelInfo, ModelInfoError, get_model_info, known_models
from attnviz.pipeline.playground_records import (
    DEFAULT_TIMEOUT_S,
    MAX_GENERATION_TOKENS,
    RESULT_RUN,
    TASK_OF_INFO_TASK,
    TASKS,
    PlaygroundError,
    load_result,
    model_defaults,
    result_store_path,
)
from attnviz.pipeline.records import KIND_SIDES
from attnviz.pipeline.store import StoreError, StoreReader
from attnviz.pipeline.token_classes import SPECIAL

#: Flask config keys the app may set (else the environment, else defaults).
CONFIG_DIR_KEY = "ATTNVIZ_PLAYGROUND_DIR"
CONFIG_TIMEOUT_KEY = "ATTNVIZ_PLAYGROUND_TIMEOUT"
CONFIG_STORE_KEY = "ATTNVIZ_STORE"
#: Poll interval of the background callbacks (ms): the 1 s default misses progress steps.
POLL_MS = 250
GRAPH_IDS = ("pg-matrix", "pg-headview", "pg-modelview", "pg-step-bars", "pg-step-layers", "pg-embeddings")
_SESSION_JS = """function(ts, data) {
    if (data) { return window.dash_clientside.no_update; }
    return Math.random().toString(36).slice(2) + Date.now().toString(36);
}"""


class _Config:
    """Where the playground keeps its worker and results, set once by :func:`register_callbacks` (background
    jobs are forked from the server and inherit it)."""

    folder: Path | None = None
    owner_pid: int = 0
    timeout: float = DEFAULT_TIMEOUT_S


CONFIG = _Config()


# --------------------------------------------------------------------------------------------------------
# Model list (model_info files; no torch)
# --------------------------------------------------------------------------------------------------------


def model_infos() -> dict[str, ModelInfo]:
    """Every valid model_info entry by name (invalid files are skipped; the CLI reports them)."""
    out = {}
    for name in known_models():
        try:
            out[name] = get_model_info(name)
        except ModelInfoError:
            continue
    return out


def model_options(infos: dict[str, ModelInfo]) -> list[dict[str, str]]:
    """Dropdown options: every entry, random ones labelled "(random weights)", hub ones "(needs internet)"."""
    return [{"label": info.display_name + (" (needs internet)" if info.source.kind == "hub" else ""), "value": name}
            for name, info in infos.items()]


def default_model(infos: dict[str, ModelInfo]) -> str | None:
    """The model selected at first: a random-weight decoder (it works offline), else the first entry."""
    for name, info in infos.items():
        if info.random_weights and info.family == "decoder":
            return name
    return next(iter(infos), None)


def language_options(infos: dict[str, ModelInfo]) -> tuple[list[str], list[str]]:
    """Source and target languages of the translation entries."""
    src = sorted({i.languages.source for i in infos.values() if i.languages})
    tgt = sorted({i.languages.target for i in infos.values() if i.languages})
    return src, tgt


def translation_model(infos: dict[str, ModelInfo], source: str | None, target: str | None,
                      current: str | None, *, offline: bool) -> str | None:
    """The translation entry matching the languages: the current model if it matches, else one that works
    offline when the hub is unreachable (``offline``), else the first match; None when none matches."""
    matches = [n for n, i in infos.items() if i.languages and "translation" in i.tasks
               and i.languages.source == source and i.languages.target == target]
    if not matches:
        return None
    if current in matches:
        return current
    if offline:
        local = [n for n in matches if infos[n].source.kind != "hub"]
        if local:
            return local[0]
    return matches[0]


def select_model(infos: dict[str, ModelInfo], model: str | None, task: str | None, source: str | None,
                 target: str | None, trigger: str | None) -> tuple[str | None, str, str]:
    """Reconcile the model, task and language selectors after one of them changed: a new model brings its
    default task (unless the current one suits it); the translation task or new languages pick the matching
    translation model. Returns (model, task, warning)."""
    info = infos.get(model or "")
    translation = trigger in ("pg-task", "pg-src-lang", "pg-tgt-lang") and task == "translation"
    if translation and (trigger != "pg-task" or info is None or info.family != "encoder-decoder"):
        match = translation_model(infos, source, target, model, offline=_offline())
        if match is None:
            return model, "translation", (f"no translation model for {source} → {target}: add a model_info entry "
                                          "with those languages")
        return match, "translation", ""
    if info is None:
        return model, task or "single", ""
    allowed = {"encoder": ("single", "pair"), "decoder": ("lm", "single", "pair"),
               "encoder-decoder": ("translation", "single", "lm")}[info.family]
    default = TASK_OF_INFO_TASK[info.tasks[0]]
    if trigger in (None, "pg-model"):
        return model, task if task == "pair" and task in allowed else default, ""
    return model, task if task in allowed or trigger == "pg-task" else default, ""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


# --------------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------------


def _number(id_: str, label: str, value: int | float | None, *, min_: float, max_: float, step: float = 1,
            width: int = 3) -> dbc.Col:
    return dbc.Col([dbc.Label(label, html_for=id_, className="small mb-0"),
                    dbc.Input(id=id_, type="number", value=value, min=min_, max=max_, step=step, size="sm",
                              debounce=True)], width=width)


def _input_panel(infos: dict[str, ModelInfo]) -> dbc.Card:
    model = default_model(infos)
    src_langs, tgt_langs = language_options(infos)
    return dbc.Card(dbc.CardBody([
        html.H5("Run a model now", className="card-title"),
        dbc.Label("Model", html_for="pg-model", className="small mb-0"),
        dcc.Dropdown(id="pg-model", options=model_options(infos), value=model, clearable=False),
        html.Div(id="pg-model-note", className="small text-muted mb-2"),
        html.Div([
            html.Div("Configuration (random-weight models)", className="small fw-semibold"),
            dbc.Row([_number("pg-layers", "layers", None, min_=1, max_=24),
                     _number("pg-heads", "heads", None, min_=1, max_=32),
                     _number("pg-hidden", "hidden size", None, min_=8, max_=2048),
                     _number("pg-model-seed", "seed", None, min_=0, max_=2**31)], className="g-1"),
        ], id="pg-config", className="mb-2"),
        dbc.Label("Task", html_for="pg-task", className="small mb-0"),
        dbc.RadioItems(id="pg-task", options=[{"label": v, "value": k} for k, v in TASKS.items()], value="lm",
                       className="small mb-2"),
        dbc.Row([
            dbc.Col([dbc.Label("source language", className="small mb-0"),
                     dcc.Dropdown(id="pg-src-lang", options=src_langs, value=src_langs[0] if src_langs else None,
                                  clearable=False)]),
            dbc.Col([dbc.Label("target language", className="small mb-0"),
                     dcc.Dropdown(id="pg-tgt-lang", options=tgt_langs, value=tgt_langs[0] if tgt_langs else None,
                                  clearable=False)]),
        ], id="pg-lang-row", className="g-1 mb-2", style={"display": "none"}),
        dbc.Label("Input sequence", html_for="pg-input-kind", className="small mb-0"),
        dbc.RadioItems(id="pg-input-kind", options=[{"label": "typed text", "value": "typed"},
                                                    {"label": "random token sequence", "value": "random"}],
                       value="typed", inline=True, className="small mb-1"),
        html.Div([
            dbc.Textarea(id="pg-text", value="The quick brown fox jumps over the lazy dog.", rows=2,
                         className="mb-1", placeholder="a sentence"),
            html.Div([dbc.Label("second sentence", id="pg-second-label", className="small mb-0"),
                      dbc.Textarea(id="pg-second", value="", rows=2, placeholder="")],
                     id="pg-second-row", style={"display": "none"}),
        ], id="pg-typed-row"),
        dbc.Row([_number("pg-length", "sentence length (tokens)", 12, min_=1, max_=4096, width=6),
                 _number("pg-random-seed", "random seed", 0, min_=0, max_=2**31, width=6)],
                id="pg-random-row", className="g-1", style={"display": "none"}),
        html.Div([
            dbc.Button("Run model", id="pg-run", color="primary", size="sm", className="me-2"),
            dbc.Button("Cancel", id="pg-cancel", color="secondary", outline=True, size="sm", disabled=True),
        ], className="mt-2"),
        dbc.Progress(id="pg-progress", value=0, className="mt-2", style={"height": "6px"}),
        html.Div(id="pg-status", className="small text-muted"),
        html.Div(id="pg-error", className="mt-1"),
        html.Hr(),
        _predict_panel(),
        html.Hr(),
        _add_panel(),
    ]))


def _predict_panel() -> html.Div:
    return html.Div([
        html.H6("Predict output words"),
        html.Div(id="pg-predict-note", className="small text-muted mb-1"),
        html.Div([
            dbc.Row([_number("pg-gen-n", "tokens", 8, min_=1, max_=MAX_GENERATION_TOKENS, width=4),
                     _number("pg-gen-temp", "temperature", 1.0, min_=0.05, max_=5, step=0.05, width=4),
                     _number("pg-gen-seed", "seed", 0, min_=0, max_=2**31, width=4)], className="g-1"),
            dbc.RadioItems(id="pg-gen-mode", options=[{"label": "greedy", "value": "greedy"},
                                                      {"label": "sample", "value": "sample"}],
                           value="greedy", inline=True, className="small"),
        ], id="pg-gen-controls"),
        html.Div([
            dbc.Label("token to mask (or type [MASK] in the text)", className="small mb-0"),
            dcc.Dropdown(id="pg-mask-pos", options=[], value=None, placeholder="run the model first",
                         clearable=True),
        ], id="pg-mask-controls", style={"display": "none"}),
        dbc.Button("Predict output words", id="pg-predict", color="primary", outline=True, size="sm",
                   className="mt-2"),
    ])


def _add_panel() -> html.Div:
    return html.Div([
        html.H6("Add to the store"),
        dbc.InputGroup([dbc.InputGroupText("run", className="small"),
                        dbc.Input(id="pg-run-name", value="", size="sm")], size="sm"),
        dbc.Button("Add this example to the store", id="pg-add", color="success", outline=True, size="sm",
                   className="mt-1", disabled=True),
        html.Div(id="pg-add-status", className="small mt-1"),
    ])


def _graph(id_: str) -> dcc.Graph:
    return dcc.Graph(id=id_, figure=message_figure("Run a model to see its attention.", height=200),
                     config=figures.image_config(id_))


def _result_panel() -> html.Div:
    return html.Div([
        html.Div(id="pg-summary", className="mb-2"),
        html.Div(id="pg-generation", className="mb-2"),
        html.Div(id="pg-masked", className="mb-2"),
        dbc.Row([
            dbc.Col([dbc.Label("attention", className="small mb-0"),
                     dcc.Dropdown(id="pg-kind", options=[], value="self", clearable=False)], width=4),
            dbc.Col([dbc.Label("layer", className="small mb-0"),
                     dcc.Dropdown(id="pg-layer", options=[], value=0, clearable=False)], width=4),
            dbc.Col([dbc.Label("head", className="small mb-0"),
                     dcc.Dropdown(id="pg-head", options=[], value=0, clearable=False)], width=4),
        ], className="g-1 mb-2"),
        dbc.Row([dbc.Col(_graph("pg-matrix"), lg=6), dbc.Col(_graph("pg-headview"), lg=6)]),
        _graph("pg-modelview"),
        html.Div([
            dbc.Label("time step", id="pg-step-label", className="small mb-0"),
            dcc.Slider(id="pg-step", min=0, max=0, step=1, value=0, marks=None,
                       tooltip={"placement": "bottom", "always_visible": False}),
        ], className="mb-1"),
        dbc.Row([dbc.Col(_graph("pg-step-bars"), lg=6), dbc.Col(_graph("pg-step-layers"), lg=6)]),
        _graph("pg-embeddings"),
    ])


def layout() -> html.Div:
    """The tab's content."""
    infos = model_infos()
    return html.Div([
        dcc.Store(id="pg-session", storage_type="session"),
        dcc.Store(id="pg-result", storage_type="memory"),
        dcc.Store(id="pg-add-request", storage_type="memory"),
        dcc.Store(id="pg-added", storage_type="memory"),
        dbc.Row([dbc.Col(_input_panel(infos), lg=4), dbc.Col(_result_panel(), lg=8)], className="g-3"),
    ], id="playground", className="pt-2")


# --------------------------------------------------------------------------------------------------------
# Result access in the server process (no torch)
# --------------------------------------------------------------------------------------------------------

_readers: OrderedDict[tuple[int, str], StoreReader] = OrderedDict()
_readers_lock = threading.Lock()


def result_reader(result_id: str) -> StoreReader:
    """A reader of a result's one-example store (a few kept open per process)."""
    if CONFIG.folder is None:
        raise PlaygroundError("the playground is not set up (register_callbacks was not called)")
    path = result_store_path(CONFIG.folder, result_id)
    key = (os.getpid(), str(path))
    with _readers_lock:
        reader = _readers.get(key)
        if reader is not None:
            _readers.move_to_end(key)
            return reader
    if not path.exists():
        raise PlaygroundError("this playground result is no longer available: run the model again")
    reader = StoreReader(path)
    with _readers_lock:
        _readers[key] = reader
        while len(_readers) > 8:
            _, old = _readers.popitem(last=False)
            old.close()
    return reader


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def result_summary_of(data: Any) -> dict[str, Any] | None:
    """The ``pg-result`` store's summary (see ``PlaygroundResult.summary``) as a callback received it: None when
    empty; InputRefusedError (the app answers 400) when it lacks what the callbacks read (the server wrote it,
    so a client crafted it)."""
    if not data:
        return None
    gen = data.get("generation") if isinstance(data, dict) else None
    ok = (isinstance(data, dict) and isinstance(data.get("id"), str) and isinstance(data.get("kinds"), list)
          and bool(data["kinds"]) and all(isinstance(k, str) for k in data["kinds"])
          and _is_int(data.get("n_source")) and _is_int(data.get("n_target"))
          and (gen is None or (isinstance(gen, dict) and isinstance(gen.get("side"), str)
                               and _is_int(gen.get("prompt_length")) and _is_int(gen.get("steps")))))
    if not ok:
        raise InputRefusedError("the playground result is not a result summary")
    return data


def added_of(data: Any) -> dict[str, Any] | None:
    """The ``pg-added`` store (what the add job returned) as a callback received it: None when empty, else an
    object (InputRefusedError otherwise)."""
    if not data:
        return None
    if not isinstance(data, dict):
        raise InputRefusedError("the added-example note must be an object")
    return data


def step_range(summary: dict, kind: str) -> tuple[int, int, dict[int, str], int]:
    """(min, max, marks, default) of the time-step slider: every query position of ``kind``, or for a generated
    result the query positions that predicted each generated token (marked with the step number)."""
    q_side = KIND_SIDES.get(kind, ("source", "source"))[0]
    n = summary["n_target"] if q_side == "target" else summary["n_source"]
    gen = summary.get("generation")
    if gen and gen["side"] == q_side and gen["steps"]:
        lo = gen["prompt_length"] - 1
        hi = lo + gen["steps"] - 1
        marks = {lo + k: str(k + 1) for k in range(gen["steps"])}
        return lo, hi, marks, lo
    return 0, max(0, n - 1), {}, 0


def view_state(kind: str, layer: Any, head: Any, step: Any) -> ViewState:
    """The Example tab's selection for a playground result (run ``playground``, example 0)."""
    return ViewState(tab="playground", run=RESULT_RUN, example=0, layer=_int(layer, 0) or 0,
                     head=None if head in (None, "mean") else _int(head, 0), step=_int(step, 0) or 0, kind=kind)


def draw(summary: dict, state: ViewState) -> list[Any]:
    """The six figures of a result, drawn by the Example tab's views (matrix, head view, model view, time step
    bars and layers, embeddings); a view that cannot draw shows why in its place."""
    reader = result_reader(summary["id"])

    def attempt(build: Any, n: int = 1) -> list[Any]:
        try:
            value = build()
        except (views.ViewError, StoreError, ValueError) as exc:
            return [message_figure(str(exc))] * n
        return list(value) if n > 1 else [value]

    return [*attempt(lambda: views.matrix_view(reader, state)[0]), *attempt(lambda: views.head_view(reader, state)),
            *attempt(lambda: views.model_view(reader, state)), *attempt(lambda: views.timestep_view(reader, state), 2),
            *attempt(lambda: views.embeddings_view(reader, state))]


# --------------------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------------------


def _setting(app: dash.Dash, key: str, default: Any) -> Any:
    return app.server.config.get(key) or os.environ.get(key) or default


def _manager(app: dash.Dash, folder: Path) -> Any:
    existing = getattr(app, "_background_manager", None)
    if existing is not None:
        return existing
    import diskcache  # only when the app did not provide a manager

    return dash.DiskcacheManager(diskcache.Cache(str(folder / "dash-cache")))


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _call(op: str, args: dict[str, Any], session: str | None, progress: Callable[[float, str], None] | None = None
          ) -> Any:
    """Run one job on the model worker (from a background job's process)."""
    return playground_worker.call(op, args, folder=CONFIG.folder, session=session or "", timeout=CONFIG.timeout,
                                  owner_pid=CONFIG.owner_pid, progress=progress)


def target_store(config: Any, store_name: Any) -> Path:
    """The store to add to: the page's ``?store=`` name resolved inside the data directory (refused outside
    it), or the app's store."""
    if store_name is None:
        return Path(str(config[CONFIG_STORE_KEY]))
    return resolve_store(data_dir_of(config), store_name)


def choice_args(model: str, layers: Any, heads: Any, hidden: Any, seed: Any) -> dict[str, Any]:
    """The ModelChoice fields for the worker; the configuration only for random-weight models (a trained
    model's fields are disabled in the page and ignored here)."""
    try:
        random_weights = get_model_info(model or "").random_weights
    except ModelInfoError:
        random_weights = False
    if not random_weights:
        return {"name": model}
    return {"name": model, "layers": _int(layers), "heads": _int(heads), "hidden": _int(hidden),
            "seed": _int(seed)}


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app`` (and set up the playground folder and background manager).

    The folder and time limit come from the Flask config or the environment (``ATTNVIZ_PLAYGROUND_DIR``,
    ``ATTNVIZ_PLAYGROUND_TIMEOUT``); they are process-wide (the last app registered wins).
    """
    folder = Path(_setting(app, CONFIG_DIR_KEY, playground_worker.playground_dir()))
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    CONFIG.folder = folder
    CONFIG.owner_pid = os.getpid()
    CONFIG.timeout = float(_setting(app, CONFIG_TIMEOUT_KEY, DEFAULT_TIMEOUT_S))
    manager = _manager(app, folder)
    server = app.server  # its config is inherited by the background jobs (forked)

    app.clientside_callback(_SESSION_JS, Output("pg-session", "data"), Input("pg-session", "modified_timestamp"),
                            State("pg-session", "data"))

    @app.callback(
        Output("pg-model", "value"), Output("pg-task", "value"), Output("pg-layers", "value"),
        Output("pg-heads", "value"), Output("pg-hidden", "value"), Output("pg-model-seed", "value"),
        Output("pg-layers", "disabled"), Output("pg-heads", "disabled"), Output("pg-hidden", "disabled"),
        Output("pg-model-seed", "disabled"), Output("pg-model-note", "children"), Output("pg-run-name", "value"),
        Input("pg-model", "value"), Input("pg-task", "value"), Input("pg-src-lang", "value"),
        Input("pg-tgt-lang", "value"))
    def on_selection(model: str | None, task: str | None, source: str | None, target: str | None) -> tuple:
        infos = model_infos()
        model, task, note = select_model(infos, model, task, source, target, ctx.triggered_id)
        info = infos.get(model or "")
        if info is None:
            return (model, task, None, None, None, None, True, True, True, True, note, "")
        d = model_defaults(info)
        fixed = not info.random_weights
        text = info.description or info.display_name
        if fixed:
            text += " · configuration fixed (trained weights)"
        notes = html.Div([text, html.Div(note, className="text-danger", id="pg-model-warning") if note else None])
        return (model, task, d["layers"], d["heads"], d["hidden"], d["seed"], fixed, fixed, fixed, fixed, notes,
                f"playground-{info.name}")

    @app.callback(Output("pg-lang-row", "style"), Output("pg-second-row", "style"),
                  Output("pg-second-label", "children"), Input("pg-task", "value"))
    def on_task(task: str | None) -> tuple:
        shown, hidden = {"display": "flex"}, {"display": "none"}
        if task == "translation":
            return shown, {"display": "block"}, "target text (optional; the decoder reads it)"
        if task == "pair":
            return hidden, {"display": "block"}, "second sentence"
        return hidden, hidden, ""

    @app.callback(Output("pg-typed-row", "style"), Output("pg-random-row", "style"),
                  Input("pg-input-kind", "value"))
    def on_input_kind(kind: str | None) -> tuple:
        if kind == "random":
            return {"display": "none"}, {"display": "flex"}
        return {"display": "block"}, {"display": "none"}

    @app.callback(Output("pg-gen-controls", "style"), Output("pg-mask-controls", "style"),
                  Output("pg-predict-note", "children"), Output("pg-predict", "children"),
                  Input("pg-model", "value"), Input("pg-result", "data"))
    def on_predict_mode(model: str | None, summary: dict | None) -> tuple:
        try:
            info = get_model_info(model or "")
        except ModelInfoError:
            return {"display": "none"}, {"display": "none"}, "", "Predict output words"
        if info.family == "encoder":
            note = ("Encoder-only models do not generate text: pick a token to mask (or type [MASK]) and see the "
                    "model's predictions for it.")
            if summary and summary.get("model") == info.name and not summary.get("has_lm_head"):
                note = (f"{info.name} has no masked-language-model head (its checkpoint holds only the encoder), "
                        "so it cannot predict words.")
            elif info.random_weights:
                note += " Random weights: the predictions are meaningless."
            return {"display": "none"}, {"display": "block"}, note, "Predict masked word"
        note = "Generate the next tokens; each step shows the chosen token's probability and the alternatives."
        if info.random_weights:
            note += " Random weights: the predictions are meaningless."
        return {"display": "block"}, {"display": "none"}, note, "Predict output words"

    job_states = [State("pg-model", "value"), State("pg-layers", "value"), State("pg-heads", "value"),
                  State("pg-hidden", "value"), State("pg-model-seed", "value"), State("pg-task", "value"),
                  State("pg-input-kind", "value"), State("pg-text", "value"), State("pg-second", "value"),
                  State("pg-length", "value"), State("pg-random-seed", "value"), State("pg-gen-n", "value"),
                  State("pg-gen-mode", "value"), State("pg-gen-temp", "value"), State("pg-gen-seed", "value"),
                  State("pg-mask-pos", "value"), State("pg-session", "data")]

    # The job's only declared output is the error line: Dash holds every callback downstream of a running
    # callback's outputs, so the result is handed over with set_props, and the views of the previous result
    # stay interactive while a job runs.
    @app.callback(
        Output("pg-error", "children"),
        Input("pg-run", "n_clicks"), Input("pg-predict", "n_clicks"), *job_states,
        background=True, manager=manager, interval=POLL_MS,
        progress=[Output("pg-progress", "value"), Output("pg-status", "children")],
        progress_default=[0, ""],
        running=[(Output("pg-run", "disabled"), True, False), (Output("pg-predict", "disabled"), True, False),
                 (Output("pg-add", "disabled"), True, False), (Output("pg-cancel", "disabled"), False, True),
                 (Output("pg-progress", "animated"), True, False), (Output("pg-progress", "striped"), True, False)],
        cancel=[Input("pg-cancel", "n_clicks")],
        prevent_initial_call=True,
    )
    def run_job(set_progress: Callable[[tuple], None], _run: int | None, _predict: int | None, model: str,
                layers: Any, heads: Any, hidden: Any, mseed: Any, task: str | None, input_kind: str | None,
                text: str | None, second: str | None, length: Any, rseed: Any, gen_n: Any, gen_mode: str | None,
                gen_temp: Any, gen_seed: Any, mask_pos: Any, session: str | None) -> Any:
        def progress(fraction: float, text_: str) -> None:
            set_progress((round(100 * fraction), text_))

        args: dict[str, Any] = {
            "choice": choice_args(model, layers, heads, hidden, mseed),
            "input": {"task": task or "single", "text": text or "", "second": second or "",
                      "random": input_kind == "random", "length": _int(length, 0), "seed": _int(rseed, 0)}}
        op = "run"
        if ctx.triggered_id == "pg-predict":
            try:
                family = get_model_info(model).family
            except ModelInfoError as exc:
                return message(str(exc), "danger", "pg-error-text")
            if family == "encoder":
                op, args["mask"] = "mask", {"position": _int(mask_pos)}
            else:
                op = "generate"
                args["generate"] = {"n_tokens": _int(gen_n, 0), "greedy": gen_mode != "sample",
                                    "temperature": float(gen_temp or 1.0), "seed": _int(gen_seed, 0)}
        try:
            summary = _call(op, args, session, progress)
        except PlaygroundError as exc:
            return message(str(exc), "danger", "pg-error-text")
        dash.set_props("pg-result", {"data": summary})
        return None

    @app.callback(Output("pg-add-request", "data"), Input("pg-add", "n_clicks"), State("pg-result", "data"),
                  State("pg-run-name", "value"), prevent_initial_call=True)
    def on_add_click(clicks: int | None, summary: dict | None, run_name: str | None) -> dict:
        """Note which store the page shows (its ``?store=`` name travels with this request only)."""
        summary = result_summary_of(summary)
        return {"clicks": clicks, "result_id": (summary or {}).get("id"), "run": (run_name or "").strip(),
                "store_name": requested_store()}

    @app.callback(
        Output("pg-add-status", "children"), Output("pg-added", "data"),
        Input("pg-add-request", "data"), State("pg-session", "data"),
        background=True, manager=manager, interval=POLL_MS,
        running=[(Output("pg-add", "disabled"), True, False)],
        prevent_initial_call=True,
    )
    def add_job(request: dict | None, session: str | None) -> tuple:
        if not request or not request.get("result_id"):
            return message("run the model first"), no_update
        try:
            store = target_store(server.config, request.get("store_name"))
            added = _call("add", {"result_id": request["result_id"], "store": str(store), "run": request["run"]},
                          session)
        except (PlaygroundError, StoreError) as exc:
            return message(str(exc), "danger", "pg-add-error"), no_update
        href = example_href(added["run"], added["index"], store=request.get("store_name") or None)
        return dbc.Alert([f"Added as example {added['index']} of run {added['run']!r} in {store.name} "
                          f"({added['examples']} examples). ", dcc.Link("Open it in the Example tab", href=href)],
                         color="success", className="mb-0 py-2 small", id="pg-add-done"), added

    @app.callback(Input("pg-added", "data"), prevent_initial_call=True)
    def on_added(added: dict | None) -> None:
        """Re-read the store index now, so that the Example tab lists the new example at once."""
        added = added_of(added)
        if added and isinstance(added.get("store"), str):
            with contextlib.suppress(StoreError):
                get_reader(added["store"]).refresh()

    @app.callback(Output("pg-add", "disabled", allow_duplicate=True), Input("pg-result", "data"),
                  prevent_initial_call=True)
    def on_result_add(summary: dict | None) -> bool:
        return not summary

    @app.callback(
        Output("pg-kind", "options"), Output("pg-kind", "value"), Output("pg-layer", "options"),
        Output("pg-layer", "value"), Output("pg-head", "options"), Output("pg-head", "value"),
        Output("pg-summary", "children"), Output("pg-generation", "children"), Output("pg-masked", "children"),
        Output("pg-mask-pos", "options"),
        Input("pg-result", "data"), prevent_initial_call=True)
    def on_result(summary: dict | None) -> tuple:
        summary = result_summary_of(summary)
        if not summary:
            return ([], "self", [], 0, [], 0, None, None, None, [])
        try:
            result = load_result(CONFIG.folder, summary["id"])
        except PlaygroundError as exc:
            return ([], "self", [], 0, [], 0, message(str(exc)), None, None, [])
        kinds = list(result.example.attention)
        family = result.family
        kind_opts = [{"label": views.kind_label(k, family), "value": k} for k in kinds]
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
        return (kind_opts, kind, _layer_options(layers), 0, _head_options(heads), 0, result_summary(result), gen,
                masked, token_options(src.strings, special))

    @app.callback(Output("pg-step", "min"), Output("pg-step", "max"), Output("pg-step", "marks"),
                  Output("pg-step", "value"), Output("pg-step-label", "children"),
                  Input("pg-kind", "value"), Input("pg-result", "data"), prevent_initial_call=True)
    def on_kind(kind: str | None, summary: dict | None) -> tuple:
        summary = result_summary_of(summary)
        if not summary or not kind:
            return 0, 0, {}, 0, "time step"
        lo, hi, marks, value = step_range(summary, kind)
        label = "generation step (query that predicted each generated token)" if marks else "time step (query)"
        return lo, hi, marks or None, value, label

    @app.callback(Output("pg-layer", "value", allow_duplicate=True), Output("pg-head", "value", allow_duplicate=True),
                  Input("pg-modelview", "clickData"), prevent_initial_call=True)
    def on_model_view_click(click: dict | None) -> tuple:
        points = (click or {}).get("points") or []
        hit = figures.parse_model_view_click(points[0]) if points else None
        return (hit[0], hit[1]) if hit else (no_update, no_update)

    @app.callback([Output(g, "figure") for g in GRAPH_IDS],
                  Input("pg-result", "data"), Input("pg-kind", "value"), Input("pg-layer", "value"),
                  Input("pg-head", "value"), Input("pg-step", "value"), prevent_initial_call=True)
    def on_view(summary: dict | None, kind: str | None, layer: Any, head: Any, step: Any) -> list:
        summary = result_summary_of(summary)
        if not summary:
            return [message_figure("Run a model to see its attention.", height=200)] * len(GRAPH_IDS)
        if kind not in summary.get("kinds", []):
            kind = summary["kinds"][0]
        try:
            return draw(summary, view_state(kind, layer, head, step))
        except PlaygroundError as exc:
            return [message_figure(str(exc))] * len(GRAPH_IDS)



def _layer_options(n: int) -> list[dict]:
    return [{"label": f"layer {i}", "value": i} for i in range(n)]


def _head_options(n: int) -> list[dict]:
    return [{"label": "mean of all heads", "value": "mean"}] + [{"label": f"head {h}", "value": h}
                                                                 for h in range(n)]
