"""Reading Plotly figures out of the page in browser tests (dash_duo): shared by the Example and Corpus tab tests."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from dash.testing.wait import until

from attnviz.dashboard.figjson import decode

TIMEOUT = 30
#: Example-tab views drawn when they scroll into view (dashboard/assets/example.js).
BELOW_FIRST_SCREEN = ("model-view", "timestep-bars", "timestep-layers")

# A Plotly graph's figure, or the figure model of a view the page draws itself (the head view's canvas:
# ``element.__figure``); a view below the first screen is scrolled into view first (it is drawn when shown).
_GRAPH_JS = """
const done = arguments[arguments.length - 1];
const el = document.getElementById(arguments[0]);
// a view in a tab under the first screen (dashboard/example/layout.py): its tab is opened first
const pane = el && el.closest('.tab-pane');
const opened = pane && !pane.classList.contains('active');
if (opened) { pane.closest('.tab-content').previousElementSibling.querySelectorAll('.nav-link')[
    Array.prototype.indexOf.call(pane.parentElement.children, pane)].click(); }
if (el && arguments[1]) { el.scrollIntoView({block: 'center', behavior: 'instant'}); }
// a person looks for a moment: the page sees the view come into view (two frames) before it is read
const pause = opened ? 200 : 20;
const wait = el && arguments[1] ? (f) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(f, pause)))
                                : (f) => f();
wait(() => {
const gd = (el && el.__figure) || document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
if (!gd || !gd.data || !gd.layout) { done(null); return; }
done(JSON.stringify({data: gd.data, layout: {meta: gd.layout.meta || null, title: gd.layout.title || null,
                                             annotations: gd.layout.annotations || []}},
                    (k, v) => ArrayBuffer.isView(v) ? Array.from(v) : v));
});
"""


def graph(dash_duo, graph_id: str) -> dict | None:
    """The figure a graph shows right now (data and a few layout fields), as plain JSON."""
    raw = dash_duo.driver.execute_async_script(_GRAPH_JS, graph_id, graph_id in BELOW_FIRST_SCREEN)
    return json.loads(raw) if raw else None


def array(value: object) -> np.ndarray:
    """A trace array as float32, whether the page holds a base64 typed array (dict) or a plain list."""
    return decode(value).astype(np.float32) if isinstance(value, dict) else np.asarray(value, dtype=np.float32)


def message(fig: dict | None) -> str:
    """The message a message figure carries in ``layout.meta`` ("" for other figures)."""
    if not fig or not fig["layout"]["meta"]:
        return ""
    return fig["layout"]["meta"].get("message", "") if isinstance(fig["layout"]["meta"], dict) else ""


def wait_figure(dash_duo, graph_id: str, check: Callable[[dict], object], what: str) -> dict:
    """Wait until ``check(figure)`` is true for the graph; return that figure."""
    found: dict = {}

    def ready() -> bool:
        fig = graph(dash_duo, graph_id)
        try:
            ok = fig is not None and bool(check(fig))
        except (KeyError, IndexError, TypeError, ValueError):
            ok = False
        if ok:
            found["fig"] = fig
        return ok

    until(ready, timeout=TIMEOUT, msg=f"{graph_id}: {what}; last message: {message(graph(dash_duo, graph_id))!r}")
    return found["fig"]


_PROP_JS = """
const state = window.store && window.store.getState();
if (!state) { return null; }
const id = arguments[0];
let path = null;
if (typeof id === 'string') {
    path = state.paths.strs[id];
} else {
    const keys = Object.keys(id).sort();
    for (const entry of state.paths.objs[keys.join(',')] || []) {
        if (keys.every((k, i) => entry.values[i] === id[k])) { path = entry.path; }
    }
}
if (!path) { return null; }
let node = state.layout;
for (const k of path) { node = node[k]; }
const value = node.props[arguments[1]];
return value === undefined ? null : JSON.stringify(value);
"""


def prop(driver, component_id: str | dict, name: str) -> object:
    """A component property as the page's Dash store holds it now (None when absent), read from the renderer."""
    raw = driver.execute_script(_PROP_JS, component_id, name)
    return json.loads(raw) if raw is not None else None


def fresh_chrome():
    """A second, separate headless Chromium (its own profile: no storage, cache or history of the first), for
    opening a copied URL as another person would. The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1500,1200"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options)


def settle(driver, timeout: float = TIMEOUT, quiet: float = 0.6) -> None:
    """Wait until the page has had no callback in flight for ``quiet`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    calm_since = None
    while time.monotonic() < deadline:
        busy = driver.execute_script(
            "const s = window.store && window.store.getState(); if (!s) { return true; }"
            "const c = Object.assign({}, s.callbacks); delete c.stored; delete c.completed;"
            "return [].concat(...Object.values(c)).length > 0 || "
            "!!document.querySelector('[data-dash-is-loading=\"true\"]');")
        if busy:
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return
        time.sleep(0.1)
    raise AssertionError("the page kept running callbacks")
