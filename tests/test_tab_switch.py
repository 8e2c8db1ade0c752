"""Switching tabs in the browser, as a person reviewing a model does all day.

The tabs take the Example tab's content out of the page while another tab shows and put new, empty elements
back when it returns; the attention views, which the page draws itself (``dashboard/assets/example.js``), must be
drawn again in them (they stayed "loading…" before). No tab change or Example-tab step may make Dash's renderer
throw (``tests/test_callback_wiring.py`` checks the wiring; here the browser's console is read).

Headless Chromium (dash_duo) against ``attnviz serve`` on the session's store made by the real pipeline.
"""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, message, settle, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import BERT_RUN, LiveServer
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from attnviz.pipeline.store import StoreReader

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]

#: Each tab's place in the tab bar and what shows once its content is in the page.
TABS = {"example": (1, "#attn-matrix"), "corpus": (2, "#corpus-head-table .ag-row"), "playground": (3, "#pg-run"),
        "training": (4, "#training-pane .dash-graph, #training-pane .alert")}
_CELLS_JS = "return !!document.querySelector('#attn-matrix canvas.attnviz-cells');"


def open_page(dash_duo, server: LiveServer, **query: object) -> None:
    dash_duo.server_url = server.url
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.driver.get(f"{server.url}/?{urlencode(query)}")
    dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)


def open_tab(dash_duo, tab: str) -> None:
    nth, ready = TABS[tab]
    dash_duo.find_element(f"#tabs .tab:nth-child({nth})").click()
    dash_duo.wait_for_element(ready, timeout=TIMEOUT)


def console_errors(dash_duo) -> list[str]:
    """The browser console's errors since the last read."""
    return [e["message"] for e in dash_duo.driver.get_log("browser") if e["level"] == "SEVERE"]


def matrix_is(dash_duo, expected: np.ndarray, what: str) -> None:
    wait_figure(dash_duo, "attn-matrix", lambda f: np.array_equal(array(f["data"][0]["z"]), expected), what)
    until(lambda: dash_duo.driver.execute_script(_CELLS_JS), timeout=TIMEOUT, msg=f"{what}: no cells drawn")


def test_the_example_views_are_drawn_again_when_the_tab_is_shown_again(
        dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=1, layer=1, head=2)
    expected = reader.attention(BERT_RUN, 1, 1, 2)
    matrix_is(dash_duo, expected, "first load")
    tokens = wait_figure(dash_duo, "head-view", lambda f: f["data"], "head view")["data"]
    for other in ("corpus", "playground", "training"):
        open_tab(dash_duo, other)
        assert not dash_duo.driver.find_elements(By.ID, "attn-matrix")  # the tabs took the views out
        open_tab(dash_duo, "example")
        matrix_is(dash_duo, expected, f"back from the {other} tab")
        # the head view's figure model is read from its (new) element: drawn again, the same tokens
        assert wait_figure(dash_duo, "head-view", lambda f: f["data"], f"head view after {other}")["data"] == tokens
        model = wait_figure(dash_duo, "model-view", lambda f: f["data"] and not message(f),
                            f"model view after {other}")
        assert model["data"], model
    # the page goes on drawing from there: another layer, then the next example
    Select(dash_duo.find_element("#layer-select")).select_by_value("0")
    matrix_is(dash_duo, reader.attention(BERT_RUN, 1, 0, 2), "layer 0 after the tab changes")
    dash_duo.find_element("#example-next").click()
    matrix_is(dash_duo, reader.attention(BERT_RUN, 2, 0, 2), "the next example after the tab changes")


def test_no_tab_change_or_example_step_makes_dash_throw(dash_duo, live_server: LiveServer) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=0)
    seen: dict[str, list[str]] = {"first load": console_errors(dash_duo)}
    steps = ["next", "corpus", "example", "next", "training", "example", "next", "playground", "corpus",
             "training", "example", "next"]
    for n, step in enumerate(steps):
        if step == "next":
            before = dash_duo.find_element("#example-index").get_attribute("value")
            dash_duo.find_element("#example-next").click()
            until(lambda b=before: dash_duo.find_element("#example-index").get_attribute("value") != b,
                  timeout=TIMEOUT)
            dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)
        else:
            open_tab(dash_duo, step)
        settle(dash_duo.driver)
        seen[f"{n}: {step}"] = console_errors(dash_duo)
    assert {k: v for k, v in seen.items() if v} == {}
