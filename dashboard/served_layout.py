"""The layout a page gets for its own URL: the Example tab's first screen filled in before Dash starts.

Dash asks for the page's layout (``/_dash-layout``) once per page load. A bare layout makes the page ask the server
in a chain of callbacks before it settles: the URL is resolved (``sync``), which sets the selection, which asks for
the example's text, window line and token list, which ask for the token's neighbours; each round costs a request
and 100-300 ms of Dash's renderer. Here the layout comes with what those callbacks would answer for the page's
URL, computed by the same functions (:func:`.sync.url_outputs`, :func:`.callbacks.example_text`,
:func:`.inputs.window_outputs`, :func:`.neighbours.tokens_shown`, :func:`.neighbours.results_shown`, the Store
menu of :func:`attnviz.dashboard.app.store_menu`), and ``layout-for`` names the URL it was filled for: the page's
gates (``urlRequest`` in example.js, the Store menu's in app.py) then ask the server nothing at load, and the
example's data the page fetches itself (``startEarly`` in example.js).

The page's URL is the request's ``Referer`` (same origin; the app sends ``Referrer-Policy: same-origin``). Without
one, from another origin, for a URL that opens another tab, or when the page's store cannot be read, the bare
layout is served and the callbacks answer as before (they also say what is wrong).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dash.development.base_component import Component

from attnviz.dashboard import ids
from attnviz.dashboard.example import callbacks as example_callbacks
from attnviz.dashboard.example import ids as example_ids
from attnviz.dashboard.example import inputs as example_inputs
from attnviz.dashboard.example import neighbours
from attnviz.dashboard.urlstate import parse_state
from attnviz.pipeline.store import StoreError, StoreReader

log = logging.getLogger(__name__)

#: (component id, property) -> value: what a layout is filled with.
Values = dict[tuple[str, str], Any]


def page_url(referrer: str | None, host: str, page_path: str) -> tuple[str, str | None] | None:
    """The query string and ``store=`` name (None: the app's store) of the page that asks for its layout, from
    the request's ``referrer``; None unless it is this app's page (same ``host``, path ``page_path``)."""
    if not referrer:
        return None
    parts = urlsplit(referrer)
    if parts.netloc != host or (parts.path or "/") != page_path:
        return None
    search = f"?{parts.query}" if parts.query else ""
    store = (parse_qs(parts.query).get("store") or [""])[0]
    return search, store or None


def first_screen(reader: StoreReader, search: str, store: str | None) -> Values:
    """What the page opened at ``search`` on the store named ``store`` shows at once: the sync callback's outputs
    for the URL, the selection's run and example (``example-id``), the example's text and window line, the token
    list and the first token's neighbours (the panel's default ``k``). Raises ``StoreError``."""
    from attnviz.dashboard.example import sync

    values = sync.url_outputs(reader, search)
    state = values.get((ids.VIEW_STATE, "data"))
    if not isinstance(state, dict):
        return values
    selection = {"run": state["run"], "example": state["example"]}  # what fanOut in example.js writes
    opened: Callable[[], StoreReader] = lambda: reader  # noqa: E731
    label, hidden, prev_off, next_off = example_inputs.window_outputs(opened, selection)
    options, token = neighbours.tokens_shown(opened, state)
    values.update({
        (example_ids.EXAMPLE_ID, "data"): selection,
        (example_ids.EXAMPLE_TEXT, "children"): example_callbacks.example_text(opened, selection),
        (example_ids.WINDOW_LABEL, "children"): label, (example_ids.WINDOW_BOX, "hidden"): hidden,
        (example_ids.WINDOW_PREV, "disabled"): prev_off, (example_ids.WINDOW_NEXT, "disabled"): next_off,
        (neighbours.TOKEN, "options"): options, (neighbours.TOKEN, "value"): token,
        (neighbours.RESULTS, "children"): neighbours.results_shown(opened, state, token, neighbours.DEFAULT_K, store),
    })
    return values


def fill(layout: Component, values: Values) -> Component:
    """``layout`` with each ``(id, property)`` of ``values`` set (KeyError for an id the layout lacks)."""
    for (component_id, prop), value in values.items():
        setattr(layout[component_id], prop, value)
    return layout


def layout_for_page(bare: Callable[[], Component], page: tuple[str, str | None] | None,
                    open_store: Callable[[str | None], StoreReader], menu: Callable[[str | None], Values]) -> Component:
    """The layout for ``page`` (its query string and store name, see :func:`page_url`): ``bare()`` filled with
    :func:`first_screen` and the Store ``menu`` of the page's store, and ``layout-for`` set to ``page``; ``bare()``
    as it is when there is no page, it opens another tab, or its store cannot be read (``open_store`` raises)."""
    layout = bare()
    if page is None:
        return layout
    search, store = page
    if parse_state(search).tab != "example":
        return layout
    try:
        values = first_screen(open_store(store), search, store)
    except StoreError as exc:  # the callbacks say what is wrong, as on a bare page
        log.info("layout for %r served bare: %s", search, exc)
        return layout
    values.update(menu(store))
    values[(ids.LAYOUT_FOR, "data")] = {"search": search, "store": store}
    return fill(layout, values)
