"""Issue 18's views in headless Chromium against ``attnviz serve`` on a store made by the real pipeline: the
Example tab's value-weighted matrix (``--capture norms``), the token-neighbours panel and the Corpus tab's
query–key space (both built by ``attnviz analyze``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, message, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import LiveServer, start_live_server
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.select import Select

from attnviz.pipeline.store import StoreReader

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]

REPO = Path(__file__).resolve().parents[1]
RUN = "bert-random--demo"
OVERRIDES = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    path = tmp_path_factory.mktemp("issue18") / "issue18.h5"
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=path, limit=24,
                                 threads=1, capture="attention,qkv,hidden,norms", overrides=OVERRIDES))
    return path


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[LiveServer]:
    live = start_live_server(store)
    try:
        yield live
    finally:
        live.process.terminate()
        try:
            live.process.wait(10)
        except subprocess.TimeoutExpired:
            live.process.kill()


def open_page(dash_duo, server: LiveServer, **query: object) -> None:
    dash_duo.server_url = server.url
    dash_duo.driver.get(f"{server.url}/?{urlencode(query)}")
    dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)


def test_value_weighted_matrix(dash_duo, server: LiveServer, store: Path) -> None:
    reader = StoreReader(store)
    open_page(dash_duo, server, run=RUN, example=2, layer=1, head=3)
    wait_figure(dash_duo, "attn-matrix", lambda f: np.allclose(array(f["data"][0]["z"]),
                                                                reader.attention(RUN, 2, 1, 3), atol=1e-3), "raw")
    dash_duo.driver.find_element("xpath", "//*[@id='attn-mode']//label[normalize-space()='value-weighted']").click()
    expected = reader.value_norms(RUN, 2, 1, 3)
    fig = wait_figure(dash_duo, "attn-matrix",
                      lambda f: "value-weighted" in str(f["layout"]["title"]) and
                      np.allclose(array(f["data"][0]["z"]), expected, rtol=2e-3, atol=1e-4), "value-weighted matrix")
    assert not message(fig)
    until(lambda: "attn=value-weighted" in dash_duo.driver.current_url, timeout=TIMEOUT)
    # the mean of the heads, drawn by the page from the same payload
    dash_duo.driver.get(dash_duo.driver.current_url.replace("head=3", "head=mean"))
    wait_figure(dash_duo, "attn-matrix",
                lambda f: np.allclose(array(f["data"][0]["z"]), reader.value_norms(RUN, 2, 1).mean(axis=0),
                                      rtol=2e-3, atol=1e-4), "value-weighted mean of heads")


def test_token_neighbours_panel_lists_and_links(dash_duo, server: LiveServer, store: Path) -> None:
    reader = StoreReader(store)
    expected = reader.neighbours(RUN, 3, 1, k=5)  # the first token after [CLS] is picked first
    open_page(dash_duo, server, run=RUN, example=3, layer=0, head=1, step=2)
    driver = dash_duo.driver
    panel = dash_duo.wait_for_element("#neighbours-panel", timeout=TIMEOUT)
    driver.execute_script("arguments[0].scrollIntoView();", panel)
    Select(dash_duo.find_element("#neighbours-k")).select_by_value("5")

    def listed() -> list[tuple[str, str]]:
        try:  # the list is redrawn while the page settles
            items = driver.find_elements("css selector", "#neighbours-results li")
            return [(li.find_element("css selector", "a").get_attribute("href"), li.text) for li in items]
        except StaleElementReferenceException:
            return []

    until(lambda: len(listed()) == 5 and f"example={expected[0].example}" in listed()[0][0], timeout=TIMEOUT)
    time.sleep(0.5)
    until(lambda: len(listed()) == 5, timeout=TIMEOUT)
    rows = listed()
    assert f"'{reader.tokens(RUN, 3)[1]}'" in dash_duo.find_element("#neighbours-results").text
    for (href, text), n in zip(rows, expected, strict=True):
        assert f"example={n.example}" in href and f"example {n.example}" in text
        assert n.text in text and f"{n.score:.3f}" in text
    # a link opens that example in the Example tab
    first = expected[0]
    driver.find_element("css selector", "#neighbours-results li a").click()
    until(lambda: f"example={first.example}" in driver.current_url, timeout=TIMEOUT)
    until(lambda: first.text in dash_duo.find_element("#example-text").text, timeout=TIMEOUT)


def test_query_key_space_panel_and_click(dash_duo, server: LiveServer, store: Path) -> None:
    from attnviz.pipeline.store.qk_space import load_qk_space

    space = load_qk_space(store, RUN)
    assert space is not None
    dash_duo.server_url = server.url
    dash_duo.driver.get(f"{server.url}/?tab=corpus&run={RUN}")
    fig = wait_figure(dash_duo, "qk-space", lambda f: (f["layout"].get("meta") or {}).get("view") == "qk-space",
                      "query–key space")
    assert fig["layout"]["meta"]["points"] == space.example.size
    np.testing.assert_allclose(array(fig["data"][0]["x"]), space.queries[0, 0, :, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(array(fig["data"][1]["y"]), space.keys[0, 0, :, 1], rtol=1e-5, atol=1e-5)
    Select(dash_duo.find_element("#qk-head")).select_by_value("2")
    Select(dash_duo.find_element("#qk-layer")).select_by_value("1")
    fig = wait_figure(dash_duo, "qk-space", lambda f: "Layer 1, head 2" in str(f["layout"]["title"]), "L1 H2")
    np.testing.assert_allclose(array(fig["data"][0]["x"]), space.queries[1, 2, :, 0], rtol=1e-5, atol=1e-5)
    dash_duo.find_element("#qk-colour input[value='class']").click()
    wait_figure(dash_duo, "qk-space", lambda f: any("[CLS]" in str(t.get("name")) for t in f["data"]),
                "coloured by token class")
    dash_duo.find_element("#qk-colour input[value='position']").click()
    wait_figure(dash_duo, "qk-space", lambda f: f["data"][0]["name"] == "queries", "coloured by position")
    # a click on a point opens its example (Dash reads the point's customdata from the trace)
    row = 17
    example = int(space.example[row])
    dash_duo.driver.execute_script(
        "const gd = document.querySelector('#qk-space .js-plotly-plot');"
        "gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: arguments[0], customdata: []}]});", row)
    until(lambda: f"example={example}&" in dash_duo.driver.current_url + "&" and "tab=corpus" not in
          dash_duo.driver.current_url, timeout=TIMEOUT)
    text = StoreReader(store).examples(RUN).text[example]
    until(lambda: text in dash_duo.find_element("#example-text").text, timeout=TIMEOUT)
