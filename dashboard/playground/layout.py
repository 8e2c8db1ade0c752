"""Layout of the Playground tab (pure: model_info entries in, Dash components out)."""

from __future__ import annotations

from typing import Any, cast

import dash_bootstrap_components as dbc
from dash import dcc, html

from attnviz.dashboard.example import figures
from attnviz.dashboard.playground import figures as pg_figures
from attnviz.dashboard.playground import ids
from attnviz.dashboard.playground.controls import default_model, language_options, model_infos, model_options
from attnviz.pipeline.models.info import ModelInfo
from attnviz.pipeline.playground.records import MAX_GENERATION_TOKENS, TASKS

#: Milliseconds a job or a redraw may take before the page shows that it is working.
LOADING_DELAY_MS = 300


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
        dbc.Label("Model", html_for=ids.MODEL, className="small mb-0"),
        dcc.Dropdown(id=ids.MODEL, options=model_options(infos), value=model, clearable=False),
        html.Div(id=ids.MODEL_NOTE, className="small text-muted mb-2"),
        html.Div([
            html.Div("Configuration (random-weight models)", className="small fw-semibold"),
            dbc.Row([_number(ids.LAYERS, "layers", None, min_=1, max_=24),
                     _number(ids.HEADS, "heads", None, min_=1, max_=32),
                     _number(ids.HIDDEN, "hidden size", None, min_=8, max_=2048),
                     _number(ids.MODEL_SEED, "seed", None, min_=0, max_=2**31)], className="g-1"),
        ], id=ids.CONFIG, className="mb-2"),
        dbc.Label("Task", html_for=ids.TASK, className="small mb-0"),
        dbc.RadioItems(id=ids.TASK, options=[{"label": v, "value": k} for k, v in TASKS.items()], value="lm",
                       className="small mb-2"),
        dbc.Row([
            dbc.Col([dbc.Label("source language", className="small mb-0"),
                     dcc.Dropdown(id=ids.SRC_LANG, options=src_langs, value=src_langs[0] if src_langs else None,
                                  clearable=False)]),
            dbc.Col([dbc.Label("target language", className="small mb-0"),
                     dcc.Dropdown(id=ids.TGT_LANG, options=tgt_langs, value=tgt_langs[0] if tgt_langs else None,
                                  clearable=False)]),
        ], id=ids.LANG_ROW, className="g-1 mb-2", style={"display": "none"}),
        dbc.Label("Input sequence", html_for=ids.INPUT_KIND, className="small mb-0"),
        dbc.RadioItems(id=ids.INPUT_KIND, options=[{"label": "typed text", "value": "typed"},
                                                    {"label": "random token sequence", "value": "random"}],
                       value="typed", inline=True, className="small mb-1"),
        html.Div([
            dbc.Textarea(id=ids.TEXT, value="The quick brown fox jumps over the lazy dog.", rows=2,
                         className="mb-1", placeholder="a sentence"),
            html.Div([dbc.Label("second sentence", id=ids.SECOND_LABEL, className="small mb-0"),
                      dbc.Textarea(id=ids.SECOND, value="", rows=2, placeholder="")],
                     id=ids.SECOND_ROW, style={"display": "none"}),
        ], id=ids.TYPED_ROW),
        dbc.Row([_number(ids.LENGTH, "sentence length (tokens)", 12, min_=1, max_=4096, width=6),
                 _number(ids.RANDOM_SEED, "random seed", 0, min_=0, max_=2**31, width=6)],
                id=ids.RANDOM_ROW, className="g-1", style={"display": "none"}),
        html.Div([
            dbc.Button("Run model", id=ids.RUN, color="primary", size="sm", className="me-2"),
            dbc.Button("Cancel", id=ids.CANCEL, color="secondary", outline=True, size="sm", disabled=True),
        ], className="mt-2"),
        dbc.Progress(id=ids.PROGRESS, value=0, className="mt-2", style={"height": "6px"}),
        html.Div(id=ids.STATUS, className="small text-muted"),
        dcc.Loading(html.Div(id=ids.ERROR, className="mt-1", style={"minHeight": "1.5em"}), id=ids.JOB_LOADING,
                    delay_show=LOADING_DELAY_MS, show_initially=False, overlay_style={"visibility": "visible"},
                    custom_spinner=html.Div([dbc.Spinner(size="sm", spinner_class_name="me-1"), "running the model…"],
                                            className="small text-muted")),
        html.Hr(),
        _predict_panel(),
        html.Hr(),
        _add_panel(),
    ]))


def _predict_panel() -> html.Div:
    return html.Div([
        html.H6("Predict output words"),
        html.Div(id=ids.PREDICT_NOTE, className="small text-muted mb-1"),
        html.Div([
            dbc.Row([_number(ids.GEN_N, "tokens", 8, min_=1, max_=MAX_GENERATION_TOKENS, width=4),
                     _number(ids.GEN_TEMP, "temperature", 1.0, min_=0.05, max_=5, step=0.05, width=4),
                     _number(ids.GEN_SEED, "seed", 0, min_=0, max_=2**31, width=4)], className="g-1"),
            dbc.RadioItems(id=ids.GEN_MODE, options=[{"label": "greedy", "value": "greedy"},
                                                      {"label": "sample", "value": "sample"}],
                           value="greedy", inline=True, className="small"),
        ], id=ids.GEN_CONTROLS),
        html.Div([
            dbc.Label("token to mask (or type [MASK] in the text)", className="small mb-0"),
            dcc.Dropdown(id=ids.MASK_POS, options=[], value=None, placeholder="run the model first",
                         clearable=True),
        ], id=ids.MASK_CONTROLS, style={"display": "none"}),
        dbc.Button("Predict output words", id=ids.PREDICT, color="primary", outline=True, size="sm",
                   className="mt-2"),
    ])


def _add_panel() -> html.Div:
    return html.Div([
        html.H6("Add to the store"),
        dbc.InputGroup([dbc.InputGroupText("run", className="small"),
                        dbc.Input(id=ids.RUN_NAME, value="", size="sm")], size="sm"),
        dbc.Button("Add this example to the store", id=ids.ADD, color="success", outline=True, size="sm",
                   className="mt-1", disabled=True),
        html.Div(id=ids.ADD_STATUS, className="small mt-1"),
    ])


def _graph(id_: str) -> dcc.Graph:
    return dcc.Graph(id=id_, figure=pg_figures.empty(),
                     config=cast(Any, figures.image_config(id_)))


def _result_panel() -> dcc.Loading:
    return dcc.Loading(html.Div([
        html.Div(id=ids.SUMMARY, className="mb-2"),
        html.Div(id=ids.GENERATION, className="mb-2"),
        html.Div(id=ids.MASKED, className="mb-2"),
        dbc.Row([  # the kind's names are long ("cross-attention (decoder → encoder)"): its column is widest
            dbc.Col([dbc.Label("attention", className="small mb-0"),
                     dcc.Dropdown(id=ids.KIND, options=[], value="self", clearable=False, optionHeight=40,
                                  style={"minWidth": "17rem"})], md=6),
            dbc.Col([dbc.Label("layer", className="small mb-0"),
                     dcc.Dropdown(id=ids.LAYER, options=[], value=0, clearable=False)], md=3),
            dbc.Col([dbc.Label("head", className="small mb-0"),
                     dcc.Dropdown(id=ids.HEAD, options=[], value=0, clearable=False)], md=3),
        ], className="g-1 mb-2"),
        dbc.Row([dbc.Col(_graph(ids.MATRIX), lg=6), dbc.Col(_graph(ids.HEAD_VIEW), lg=6)]),
        _graph(ids.MODEL_VIEW),
        html.Div([
            dbc.Label("time step", id=ids.STEP_LABEL, className="small mb-0"),
            dcc.Slider(id=ids.STEP, min=0, max=0, step=1, value=0, marks=None,
                       tooltip={"placement": "bottom", "always_visible": False}),
        ], className="mb-1"),
        dbc.Row([dbc.Col(_graph(ids.STEP_BARS), lg=6), dbc.Col(_graph(ids.STEP_LAYERS), lg=6)]),
        _graph(ids.EMBEDDINGS),
    ]), id=ids.VIEWS_LOADING, type="circle", delay_show=LOADING_DELAY_MS, show_initially=False,
        overlay_style={"visibility": "visible", "opacity": 0.6})


def layout() -> html.Div:
    """The tab's content."""
    infos = model_infos()
    return html.Div([
        dcc.Store(id=ids.SESSION, storage_type="session"),
        dcc.Store(id=ids.RESULT, storage_type="memory"),
        dcc.Store(id=ids.ADD_REQUEST, storage_type="memory"),
        dcc.Store(id=ids.ADDED, storage_type="memory"),
        dcc.Store(id=ids.JOB, storage_type="memory"),
        dcc.Store(id=ids.PENDING, storage_type="memory"),
        dcc.Store(id=ids.AUTORUN, storage_type="memory"),
        dcc.Store(id=ids.RESTORED, storage_type="memory", data=False),
        dbc.Row([dbc.Col(_input_panel(infos), lg=4), dbc.Col(_result_panel(), lg=8)], className="g-3"),
    ], id=ids.TAB, className="pt-2")
