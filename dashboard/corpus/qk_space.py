"""The Corpus tab's query–key space panel (AttentionViz's view, for any stored run): one head's queries (●) and keys
(✕) of a sample of the run's tokens in one 2-D space, coloured by position or token class; a click on a point
opens its example in the Example tab. The projection is precomputed by ``attnviz analyze``
(``pipeline/precompute/qk_space.py``); this module only reads and draws it.

Layout (:func:`panel`), the pure figure (:func:`qk_space_figure`) and the callbacks (:func:`register_callbacks`)
live here; the tab's layout only places the panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dash
import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, dcc
from dash.exceptions import PreventUpdate

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.corpus import ids as corpus_ids
from attnviz.dashboard.data import current_reader, current_store_path, requested_store
from attnviz.dashboard.example.tokens import display_tokens
from attnviz.dashboard.figjson import Figure, clear_of_toolbar, typed
from attnviz.dashboard.figjson import figure as _figure
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.urlstate import example_href
from attnviz.pipeline import token_classes as tc
from attnviz.pipeline.store import StoreError
from attnviz.pipeline.store.qk_space import QKSpace, load_qk_space

GRAPH = "qk-space"
LAYER = "qk-layer"
HEAD = "qk-head"
COLOUR = "qk-colour"
NAV = "qk-nav"  #: the clicked point's example link (the page then opens it)
NAV_DONE = "qk-nav-done"  #: output of the page's navigation (nothing to show)
#: Opens the link the server made for a click (a whole page load: the Example tab reads its state from the URL).
OPEN_JS = """function (href) {
    if (href) { window.location.assign(href); }
    return window.dash_clientside.no_update;
}"""
COLOURINGS = {"position": "position", "class": "token class"}
#: Token classes the class colouring tells apart (first match wins), with their colours.
CLASS_COLOURS = {"[CLS]/BOS": "#d62728", "[SEP]/EOS": "#ff7f0e", "punctuation": "#8c564b", "other": "#1f77b4"}


def token_class_names(flags: np.ndarray) -> list[str]:
    """Each token's class for the colouring: [CLS]/BOS, [SEP]/EOS, punctuation or other."""
    out = []
    for f in np.asarray(flags, dtype=np.uint8).tolist():
        if f & tc.CLS_OR_BOS:
            out.append("[CLS]/BOS")
        elif f & tc.SEP_OR_EOS:
            out.append("[SEP]/EOS")
        elif f & tc.PUNCTUATION:
            out.append("punctuation")
        else:
            out.append("other")
    return out


def qk_space_figure(queries: np.ndarray, keys: np.ndarray, tokens: Sequence[str], example: np.ndarray,
                    position: np.ndarray, flags: np.ndarray, *, colour: str = "position", title: str = "") -> Figure:
    """Queries (circles) and keys (crosses) ``[S, 2]`` of the same tokens, coloured by position (one colour scale)
    or token class (a trace per class and role). ``customdata`` is ``[example, position]`` for a click."""
    custom = np.stack([example, position], axis=1).astype(np.int64).tolist()
    hover = [f"{t} (example {e}, token {p})" for t, e, p in zip(tokens, example.tolist(), position.tolist(),
                                                                  strict=True)]
    traces: list[dict[str, Any]] = []
    if colour == "class":
        names = np.asarray(token_class_names(flags))
        for role, points, symbol in (("query", queries, "circle"), ("key", keys, "x")):
            for name, col in CLASS_COLOURS.items():
                rows = np.flatnonzero(names == name)
                if rows.size == 0:
                    continue
                traces.append({"type": "scatter", "mode": "markers", "name": f"{role}: {name}",
                               "x": typed(points[rows, 0]), "y": typed(points[rows, 1]),
                               "marker": {"symbol": symbol, "size": 6, "color": col, "opacity": 0.7},
                               "customdata": [custom[r] for r in rows.tolist()],
                               "text": [hover[r] for r in rows.tolist()],
                               "hovertemplate": f"{role}: %{{text}}<extra></extra>"})
    else:
        for role, points, symbol in (("queries", queries, "circle"), ("keys", keys, "x")):
            traces.append({"type": "scatter", "mode": "markers", "name": role,
                           "x": typed(points[:, 0]), "y": typed(points[:, 1]), "customdata": custom, "text": hover,
                           "marker": {"symbol": symbol, "size": 6, "color": typed(position), "colorscale": "Viridis",
                                      "opacity": 0.7, "showscale": role == "queries",
                                      "colorbar": {"title": {"text": "position"}, "thickness": 12}},
                           "hovertemplate": f"{role[:-1]}: %{{text}}<extra></extra>"})
    return clear_of_toolbar(_figure(traces, title=title, height=520,
                                    xaxis={"title": {"text": "axis 1"}, "zeroline": False},
                                    yaxis={"title": {"text": "axis 2"}, "zeroline": False, "scaleanchor": "x"},
                                    legend={"orientation": "h", "y": -0.15},
                                    meta={"view": "qk-space", "points": int(queries.shape[0])}))


def space_view(space: QKSpace, layer: int, head: int, colour: str) -> Figure:
    """The figure of one head of a run's stored query–key space."""
    n_layers, n_heads = space.queries.shape[:2]
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        return message_figure(f"layer {layer}, head {head} is not in this run ({n_layers} × {n_heads})")
    share = space.explained[layer, head]
    how = (f"PCA, {100 * float(share.sum()):.0f}% of the variance" if space.method == "pca" and np.isfinite(share).all()
           else space.method.upper())
    title = (f"Layer {layer}, head {head}: queries ● and keys ✕ of {space.example.size} tokens from "
             f"{np.unique(space.example).size} examples ({how}) · click a point to open its example")
    return qk_space_figure(space.queries[layer, head], space.keys[layer, head], display_tokens(space.token),
                           space.example, space.position, space.flags, colour=colour, title=title)


def panel() -> dbc.Card:
    """The panel: layer, head, colouring, the figure, and the link a click makes."""
    return dbc.Card([
        dbc.CardHeader("Query–key space (one head's queries and keys projected together)", className="py-1 small"),
        dbc.CardBody([
            dcc.Store(id=NAV), dcc.Store(id=NAV_DONE),
            dbc.Row([
                dbc.Col(dbc.Select(id=LAYER, options=[], value="0", size="sm"), md=2),
                dbc.Col(dbc.Select(id=HEAD, options=[], value="0", size="sm"), md=2),
                dbc.Col(dbc.RadioItems(id=COLOUR, value="position", inline=True, className="small",
                                       options=[{"label": v, "value": k} for k, v in COLOURINGS.items()]), md=6),
            ], className="g-2 mb-1"),
            dcc.Loading(dcc.Graph(id=GRAPH, figure=message_figure("loading…"), config={"displaylogo": False}),
                        type="circle"),
        ], className="py-2"),
    ], className="mt-2 shadow-sm")


def _int(value: Any, default: int = 0) -> int:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else default


def register_callbacks(app: dash.Dash) -> None:
    """Layer/head choices follow the run (and the Corpus tab's picked head); the figure follows them; a click
    opens the point's example."""

    @app.callback(Output(LAYER, "options"), Output(HEAD, "options"), Output(LAYER, "value"), Output(HEAD, "value"),
                  Input(app_ids.TABS, "value"), Input(app_ids.RUN_SELECT, "value"), Input(corpus_ids.HEAD, "data"),
                  State(LAYER, "value"), State(HEAD, "value"))
    def qk_choices(tab: Any, run: Any, picked: Any, layer: Any, head: Any) -> tuple:
        if tab != "corpus" or not isinstance(run, str):
            raise PreventUpdate
        reader = current_reader()
        if run not in reader.runs() or "self" not in reader.run_info(run).shape:
            return [], [], "0", "0"
        n_layers, n_heads = reader.run_info(run).shape["self"]
        if isinstance(picked, dict):
            layer, head = picked.get("layer", layer), picked.get("head", head)
        layer, head = min(_int(layer), n_layers - 1), min(_int(head), n_heads - 1)
        return ([{"label": f"layer {i}", "value": str(i)} for i in range(n_layers)],
                [{"label": f"head {i}", "value": str(i)} for i in range(n_heads)], str(layer), str(head))

    @app.callback(Output(GRAPH, "figure"), Input(LAYER, "value"), Input(HEAD, "value"), Input(COLOUR, "value"),
                  State(app_ids.TABS, "value"), State(app_ids.RUN_SELECT, "value"), prevent_initial_call=True)
    def qk_figure(layer: Any, head: Any, colour: Any, tab: Any, run: Any) -> Figure:
        if tab != "corpus" or not isinstance(run, str):
            raise PreventUpdate
        try:
            space = load_qk_space(current_store_path(), run)
            info = current_reader().run_info(run)
        except StoreError as exc:
            return message_figure(str(exc))
        if space is None:
            return message_figure(f"run {run!r} has no query–key space: it needs Q/K (precompute --capture "
                                  "attention,qkv), then attnviz analyze")
        if space.is_stale(info):
            return message_figure(f"the query–key space of run {run!r} is older than its shards: run attnviz "
                                  "analyze again")
        return space_view(space, _int(layer), _int(head), colour if colour in COLOURINGS else "position")

    app.clientside_callback(OPEN_JS, Output(NAV_DONE, "data"), Input(NAV, "data"), prevent_initial_call=True)

    @app.callback(Output(NAV, "data"), Input(GRAPH, "clickData"), State(app_ids.RUN_SELECT, "value"),
                  State(LAYER, "value"), State(HEAD, "value"), prevent_initial_call=True)
    def qk_open(click: Any, run: Any, layer: Any, head: Any) -> str:
        try:
            example = int(click["points"][0]["customdata"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise PreventUpdate from None
        if not isinstance(run, str):
            raise PreventUpdate
        page_store = requested_store()
        return example_href(run, example, _int(layer), _int(head),
                            store=page_store if isinstance(page_store, str) else None)
