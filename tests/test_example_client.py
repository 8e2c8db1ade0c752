"""The Example tab's views drawn in the page (``dashboard/assets/example.js``) equal the Python figure builders on
the store's slices: after client-side switches of head, layer, query position, pinned token and raw/rollout, for
self-, decoder- and cross-attention, for examples sent whole and one layer at a time, and for a URL opened fresh.

Headless Chromium (dash_duo) against ``attnviz serve`` on the session's store made by the real pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from browser_helpers import BELOW_FIRST_SCREEN, TIMEOUT
from dash.testing import errors as dash_errors
from dash.testing.wait import until
from dashboard_fixtures import BERT_RUN, GPT2_RUN, SEQ2SEQ_RUN, LiveServer, start_live_server
from selenium.webdriver.support.select import Select

from attnviz.dashboard.example import views
from attnviz.dashboard.example.payload import BUDGET_ENV
from attnviz.dashboard.figjson import decode
from attnviz.dashboard.urlstate import parse_state
from attnviz.pipeline.store import StoreReader

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]

GRAPHS = ("attn-matrix", "head-view", "model-view", "timestep-bars", "timestep-layers")

# The figure a graph shows (data, title, shapes, meta), typed arrays as lists.
_FIGURE_JS = """
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
const title = gd.layout.title && (gd.layout.title.text !== undefined ? gd.layout.title.text : gd.layout.title);
done(JSON.stringify({data: gd.data, title: title || '', shapes: gd.layout.shapes || [],
                     meta: gd.layout.meta || null},
                    (k, v) => ArrayBuffer.isView(v) ? Array.from(v) : (Number.isNaN(v) ? 'NaN' : v)));
});
"""




@pytest.fixture(scope="module")
def layer_server(dashboard_store: Path) -> Iterator[LiveServer]:
    """A server that sends every example one layer at a time (a budget of one byte)."""
    server = start_live_server(dashboard_store, env={BUDGET_ENV: "1"})
    yield server
    server.process.terminate()
    server.process.wait(10)


def shown(dash_duo, graph_id: str) -> dict | None:
    raw = dash_duo.driver.execute_async_script(_FIGURE_JS, graph_id, graph_id in BELOW_FIRST_SCREEN)
    return json.loads(raw) if raw else None


def numbers(value: object) -> np.ndarray:
    """A trace array as float64 with NaN (from the page's lists or a Python typed-array spec)."""
    if isinstance(value, dict):
        return decode(value).astype(np.float64)
    return np.array([[np.nan if v == "NaN" else v for v in row] if isinstance(row, list) else
                     (np.nan if row == "NaN" else row) for row in value], dtype=np.float64)


def python_figures(reader: StoreReader, search: str, pin: tuple[str, int] | None) -> dict[str, dict]:
    """The five attention views as the Python builders draw them for the URL's selection."""
    state = parse_state(search)
    bars, layers = views.timestep_view(reader, state)
    matrix = views.matrix_view(reader, state)[0]
    return {"attn-matrix": matrix, "head-view": views.head_view(reader, state, pin),
            "model-view": views.model_view(reader, state), "timestep-bars": bars, "timestep-layers": layers}


def same_figure(page: dict, expected: dict, graph_id: str) -> list[str]:
    """Differences between a figure in the page and the Python one (empty: the same)."""
    problems = []
    title = expected["layout"]["title"]["text"]
    if page["title"] != title:
        problems.append(f"{graph_id} title {page['title']!r} != {title!r}")
    if len(page["data"]) != len(expected["data"]):
        return [*problems, f"{graph_id}: {len(page['data'])} traces != {len(expected['data'])}"]
    exact = not (graph_id != "model-view" and "mean" in title)
    for n, (got, want) in enumerate(zip(page["data"], expected["data"], strict=True)):
        for field in ("x", "y", "z"):
            if field not in want or (field != "z" and want["type"] == "heatmap"):
                continue
            if want["type"] == "bar" and field == "x":
                continue
            a, b = numbers(got[field]), numbers(want[field])
            ok = a.shape == b.shape and (np.array_equal(a, b, equal_nan=True) if exact else
                                         np.allclose(a, b, atol=1e-6, equal_nan=True))
            if not ok:
                problems.append(f"{graph_id} trace {n} {field} differs")
        for field in ("opacity", "meta", "name", "hovertext"):
            if want.get(field) != got.get(field):
                problems.append(f"{graph_id} trace {n} {field}: {got.get(field)!r} != {want.get(field)!r}")
        colour = want.get("marker", {}).get("color")
        if isinstance(colour, dict) and not np.array_equal(numbers(got["marker"]["color"]), numbers(colour)):
            problems.append(f"{graph_id} trace {n} highlight differs")
    if page["shapes"] != expected["layout"].get("shapes", []):
        problems.append(f"{graph_id} shapes {page['shapes']} != {expected['layout'].get('shapes')}")
    return problems


def url_search(dash_duo) -> str:
    return urlsplit(dash_duo.driver.current_url).query


def check_views(dash_duo, reader: StoreReader, pin: tuple[str, int] | None = None) -> dict[str, dict]:
    """Wait until every attention view in the page equals the Python figure of the URL's selection."""
    last: dict[str, list[str]] = {}

    def equal() -> bool:
        expected = python_figures(reader, url_search(dash_duo), pin)
        last.clear()
        for gid in GRAPHS:
            page = shown(dash_duo, gid)
            last[gid] = ["not drawn"] if page is None else same_figure(page, expected[gid], gid)
        return not any(last.values())

    try:
        until(equal, timeout=TIMEOUT)
    except dash_errors.TestingTimeoutError as exc:  # the message names what differed at the last try
        raise AssertionError(f"views differ for {url_search(dash_duo)}: {last}") from exc
    return {gid: shown(dash_duo, gid) for gid in GRAPHS}


def open_url(dash_duo, server: LiveServer, **query: object) -> None:
    dash_duo.server_url = server.url
    dash_duo.driver.set_window_size(1600, 1000)  # the screen the layout is made for (views below drawn on scroll)
    dash_duo.driver.get(f"{server.url}/?{urlencode(query)}")
    dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)


def top(dash_duo) -> None:
    """Back to the controls, as a person would after looking at the views below."""
    dash_duo.driver.execute_script(
        "document.getElementById('example-next').scrollIntoView({block: 'center', behavior: 'instant'});")


def select(dash_duo, select_id: str, value: str) -> None:
    Select(dash_duo.find_element(f"#{select_id}")).select_by_value(value)
    until(lambda: dash_duo.find_element(f"#{select_id}").get_attribute("value") == value, timeout=TIMEOUT)


def set_step(dash_duo, step: int) -> None:
    el = dash_duo.find_element("#step-input")
    dash_duo.clear_input(el)
    el.send_keys(str(step))
    until(lambda: parse_state(url_search(dash_duo)).step == step, timeout=TIMEOUT)


def pin(dash_duo, side: str, index: int) -> None:
    assert dash_duo.driver.execute_script(
        "return window.dash_clientside.attnviz_example._internal.clickHeadViewToken(arguments[0], arguments[1]);",
        side, index)


def walk(dash_duo, server: LiveServer, reader: StoreReader, run: str, kind: str = "self") -> None:
    """Switch head, layer, step, mean, pin and rollout in the page; every view equals Python's each time; the
    final URL opened fresh shows the same figures."""
    open_url(dash_duo, server, run=run, example=1, layer=0, head=0, kind=kind)
    check_views(dash_duo, reader)
    select(dash_duo, "head-select", "2")
    check_views(dash_duo, reader)
    select(dash_duo, "layer-select", "1")
    check_views(dash_duo, reader)
    set_step(dash_duo, 2)
    check_views(dash_duo, reader)
    pin(dash_duo, "key", 1)
    check_views(dash_duo, reader, ("key", 1))
    pin(dash_duo, "key", 1)  # the same token again: unpinned
    check_views(dash_duo, reader)
    pin(dash_duo, "query", 2)
    check_views(dash_duo, reader, ("query", 2))
    select(dash_duo, "head-select", "mean")  # the pin stays for another head of the same example
    check_views(dash_duo, reader, ("query", 2))
    top(dash_duo)
    dash_duo.find_element("#example-next").click()  # a new example clears it
    until(lambda: parse_state(url_search(dash_duo)).example == 2, timeout=TIMEOUT)
    check_views(dash_duo, reader)
    if kind != "cross":
        top(dash_duo)
        dash_duo.driver.find_element("xpath", "//*[@id='attn-mode']//label[normalize-space()='rollout']").click()
        until(lambda: parse_state(url_search(dash_duo)).attn == "rollout", timeout=TIMEOUT)
        check_views(dash_duo, reader)
    before = {gid: shown(dash_duo, gid) for gid in GRAPHS}
    dash_duo.driver.get(dash_duo.driver.current_url)  # the URL opened fresh
    dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)
    after = check_views(dash_duo, reader)
    assert after == before


def test_encoder_views_in_the_page_equal_python(dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    walk(dash_duo, live_server, reader, BERT_RUN)
    assert dash_duo.get_logs() == [] or all(e["level"] != "SEVERE" for e in dash_duo.get_logs())


def test_cross_and_decoder_views_in_the_page_equal_python(dash_duo, live_server: LiveServer,
                                                         reader: StoreReader) -> None:
    walk(dash_duo, live_server, reader, SEQ2SEQ_RUN, kind="cross")
    walk(dash_duo, live_server, reader, GPT2_RUN)


def test_examples_sent_one_layer_at_a_time_draw_the_same(dash_duo, layer_server: LiveServer,
                                                         reader: StoreReader) -> None:
    walk(dash_duo, layer_server, reader, BERT_RUN)
    detail = dash_duo.driver.execute_script(
        "return window.store.getState().layout && JSON.stringify(window.dash_clientside.attnviz_example"
        "._internal.keyOf({run: 'r', example: 0, kind: 'self', attn: 'raw', detail: 'layer', layer: 1, step: 2}))")
    assert json.loads(detail) == {"run": "r", "example": 0, "kind": "self", "attn": "raw", "detail": "layer",
                                  "layer": 1}  # the rows of a query position come on their own


def test_a_layer_switch_asks_the_server_nothing(dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    """Head, layer, step and pin changes are answered in the page: no request to the server (neither a callback
    nor a data fetch)."""
    open_url(dash_duo, live_server, run=BERT_RUN, example=3)
    check_views(dash_duo, reader)
    count_js = ("return performance.getEntriesByType('resource').filter(e => "
                "e.name.indexOf('_dash-update-component') >= 0 || e.name.indexOf('/_attnviz/example') >= 0).length")
    settled: list[int] = []

    def quiet() -> bool:  # the page's own start-up requests (every tab's) are over: the count stays for 1 s
        settled.append(dash_duo.driver.execute_script(count_js))
        return len(settled) > 10 and len(set(settled[-10:])) == 1

    until(quiet, timeout=TIMEOUT, poll=0.1)
    before = dash_duo.driver.execute_script(count_js)
    select(dash_duo, "layer-select", "1")
    select(dash_duo, "head-select", "3")
    set_step(dash_duo, 1)
    pin(dash_duo, "key", 0)
    check_views(dash_duo, reader, ("key", 0))
    assert dash_duo.driver.execute_script(count_js) == before


def test_a_layer_picked_while_the_server_answers_is_kept(dash_duo, live_server: LiveServer,
                                                         reader: StoreReader) -> None:
    """Next example (the server resolves it) and, before its answer, a layer and head (the page): both stay."""
    open_url(dash_duo, live_server, run=BERT_RUN, example=0, layer=0, head=0)
    check_views(dash_duo, reader)
    dash_duo.driver.execute_script("""
        document.querySelector('#example-next').click();
        const set = Object.getOwnPropertyDescriptor(HTMLSelectElement.prototype, 'value').set;
        for (const [id, v] of [['#layer-select', '1'], ['#head-select', '3']]) {
            const el = document.querySelector(id);
            set.call(el, v);
            el.dispatchEvent(new Event('change', {bubbles: true}));
        }""")
    until(lambda: parse_state(url_search(dash_duo)).example == 1, timeout=TIMEOUT)
    check_views(dash_duo, reader)
    state = parse_state(url_search(dash_duo))
    assert (state.example, state.layer, state.head) == (1, 1, 3)
    assert dash_duo.find_element("#layer-select").get_attribute("value") == "1"


# Dispatch a person's input in the page and read the matrix's title in the same turn of the event loop: the title
# of the figure drawn by the event itself (from data the page fetched in advance), before any server answer.
_SYNC_TITLE_JS = """
const [selector, value] = arguments;
const el = document.querySelector(selector);
if (value === null) { el.click(); } else {
  Object.getOwnPropertyDescriptor(HTMLSelectElement.prototype, 'value').set.call(el, value);
  el.dispatchEvent(new Event('change', {bubbles: true}));
}
const gd = document.querySelector('#attn-matrix .js-plotly-plot');
return gd.layout.title.text;
"""

_KEPT_JS = ("return [...window.dash_clientside.attnviz_example._internal.kept.values()]"
            ".map(e => e.payload && e.payload.key)")


def kept_keys(dash_duo) -> list[dict]:
    """The keys of the payloads the page holds (fetched, or fetched in advance)."""
    return [k for k in dash_duo.driver.execute_script(_KEPT_JS) if k]


def test_next_example_and_next_layer_are_drawn_by_the_click_itself(dash_duo, live_server: LiveServer,
                                                                    layer_server: LiveServer,
                                                                    reader: StoreReader) -> None:
    """The neighbours (next / previous example; a long example's adjacent layers) are fetched in advance, so the
    click draws them at once; the server's answer that follows leaves views equal to the store's slices."""
    open_url(dash_duo, live_server, run=BERT_RUN, example=1, layer=0, head=0)
    check_views(dash_duo, reader)
    until(lambda: {k["example"] for k in kept_keys(dash_duo)} >= {0, 1, 2}, timeout=TIMEOUT)
    title = dash_duo.driver.execute_script(_SYNC_TITLE_JS, "#example-next", None)
    expected = views.matrix_view(reader, parse_state(f"?run={BERT_RUN}&example=2&layer=0&head=0"))[0]
    assert title == expected["layout"]["title"]["text"]
    until(lambda: parse_state(url_search(dash_duo)).example == 2, timeout=TIMEOUT)
    check_views(dash_duo, reader)

    open_url(dash_duo, layer_server, run=BERT_RUN, example=1, layer=0, head=0)
    check_views(dash_duo, reader)
    until(lambda: any(k["example"] == 1 and k.get("layer") == 1 for k in kept_keys(dash_duo)), timeout=TIMEOUT)
    title = dash_duo.driver.execute_script(_SYNC_TITLE_JS, "#layer-select", "1")
    assert title.startswith("Layer 1, head 0"), title
    until(lambda: parse_state(url_search(dash_duo)).layer == 1, timeout=TIMEOUT)
    check_views(dash_duo, reader)
