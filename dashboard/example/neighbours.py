"""The Example tab's token-neighbours panel: pick a token of the example, see the k most similar tokens of the
corpus (cosine similarity of their hidden states, the index ``attnviz analyze`` builds:
``StoreReader.neighbours``), each with its sentence and a link that opens its example.

Layout (:func:`panel`) and callbacks (:func:`register_callbacks`) live here; the tab's layout only places the
panel. The token list is the current example's (it follows ``example-id``, not every view change); links keep the
selected layer and head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html

from attnviz.dashboard import ids as app_ids
from attnviz.dashboard.data import current_reader, requested_store
from attnviz.dashboard.example import data
from attnviz.dashboard.example import ids as example_ids
from attnviz.dashboard.messages import describe_error, message
from attnviz.dashboard.urlstate import ViewState, example_href
from attnviz.pipeline.store import StoreError, StoreReader

log = logging.getLogger(__name__)

PANEL = "neighbours-panel"
TOKEN = "neighbours-token"
COUNT = "neighbours-k"
RESULTS = "neighbours-results"
K_CHOICES = (5, 10, 20)
DEFAULT_K = "10"  #: the panel's k when a page opens
_EXPECTED = (StoreError, ValueError)


def panel() -> dbc.Card:
    """The panel: a token picker, how many neighbours, and the list."""
    return dbc.Card([
        dbc.CardHeader("Token neighbours in the corpus (hidden states, cosine similarity)", className="py-1 small"),
        dbc.CardBody([
            dbc.Row([
                dbc.Col(dcc.Dropdown(id=TOKEN, options=[], value=None, clearable=False, placeholder="token…"), md=6),
                dbc.Col(dbc.Select(id=COUNT, options=[{"label": f"{k} nearest", "value": str(k)} for k in K_CHOICES],
                                   value=DEFAULT_K, size="sm"), md=3),
            ], className="g-2 mb-2"),
            dcc.Loading(html.Div(id=RESULTS, className="small"), type="dot"),
        ], className="py-2"),
    ], id=PANEL, className="mb-3 shadow-sm")


def _state(value: Any) -> ViewState | None:
    return ViewState.from_dict(value) if value else None


def token_options(reader: StoreReader, state: ViewState | None) -> tuple[list[dict[str, Any]], int | None]:
    """The example's tokens as dropdown options (value: position) and the one picked first: the first token after
    [CLS] (position 1), or position 0 in a one-token example."""
    if state is None or state.run is None:
        return [], None
    tokens = data.tokens_for(reader, state.run, state.example, "source")
    options = [{"label": f"{i}: {t}", "value": i} for i, t in enumerate(tokens)]
    return options, min(1, len(tokens) - 1) if tokens else None


def results(reader: StoreReader, state: ViewState, position: int, k: int, store: str | None) -> html.Div:
    """The neighbours of token ``position`` as a list: token, similarity, the sentence and a link to its example
    (on the page's store ``store``, None: the app's)."""
    run = state.run or ""
    found = reader.neighbours(run, state.example, position, k=k)
    rows = []
    for n in found:
        tokens = data.tokens_for(reader, run, n.example, "source")
        rows.append(html.Li([
            html.A(f"example {n.example}", href=example_href(run, n.example, state.layer, state.head, store=store),
                   className="neighbour-link me-2"),
            html.Strong(tokens[n.position] if n.position < len(tokens) else n.token, className="me-2"),
            html.Span(f"{n.score:.3f}", className="text-muted me-2", title="cosine similarity"),
            html.Span(n.text, className="neighbour-text"),
        ], className="mb-1"))
    token = data.tokens_for(reader, run, state.example, "source")[position]
    return html.Div([html.Div(f"nearest to '{token}' (token {position} of example {state.example})",
                              className="text-muted mb-1"), html.Ol(rows, className="mb-0 ps-3")])


def register_callbacks(app: dash.Dash) -> None:
    """The token list follows the selected run and example (``example-id``, which the page sets only when they
    change: a layer, head or position change asks the server nothing); a token or k change searches."""

    @app.callback(Output(TOKEN, "options"), Output(TOKEN, "value"), Input(example_ids.EXAMPLE_ID, "data"),
                  State(TOKEN, "value"), prevent_initial_call=True)
    def neighbour_tokens(view: Any, _current: Any) -> tuple:
        return tokens_shown(current_reader, view)

    @app.callback(Output(RESULTS, "children"), Input(TOKEN, "value"), Input(COUNT, "value"),
                  State(app_ids.VIEW_STATE, "data"), prevent_initial_call=True)
    def neighbour_results(position: Any, k: Any, view: Any) -> Any:
        page_store = requested_store()
        return results_shown(current_reader, view, position, k, page_store if isinstance(page_store, str) else None)


def tokens_shown(reader: Callable[[], StoreReader], view: Any) -> tuple[list[dict[str, Any]], int | None]:
    """The token picker's options and value for the selection ``view`` (:func:`token_options`; none when the
    store cannot be read). ``reader`` opens the page's store."""
    try:
        return token_options(reader(), _state(view))
    except _EXPECTED:
        return [], None


def results_shown(reader: Callable[[], StoreReader], view: Any, position: Any, k: Any, store: str | None) -> Any:
    """The panel's list for the selection ``view``, token ``position`` and ``k`` as the page sent them
    (:func:`results`), or the message that says why there is none."""
    state = _state(view)
    if state is None or state.run is None or position is None:
        return message("pick a token", color="secondary")
    try:
        count = int(k) if str(k).isdigit() and int(k) in K_CHOICES else 10
        return results(reader(), state, int(position), count, store)
    except Exception as exc:
        return message(describe_error(exc, _EXPECTED, "find token neighbours", log))
