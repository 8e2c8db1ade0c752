"""The Example tab in headless Chromium (dash_duo) against ``attnviz serve`` on a store made by the real pipeline.

Run with ``pytest --headless`` (``make test`` passes it; this module also forces it so it runs alone). The
server is a separate process (``python -m attnviz.pipeline.cli serve``), so the test can check that the dashboard
process never loads torch.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, message, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import (
    BERT_RUN,
    GPT2_RUN,
    SEQ2SEQ_RUN,
    LiveServer,
)
from selenium.webdriver.support.select import Select

from attnviz.dashboard.urlstate import parse_state
from attnviz.pipeline.store import StoreReader

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]




def open_page(dash_duo, server: LiveServer, **query: object) -> None:
    dash_duo.server_url = server.url  # waits for the page
    dash_duo.driver.get(f"{server.url}/?{urlencode(query)}" if query else server.url + "/")
    dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)




def open_panel(dash_duo, title: str) -> None:
    """Open one of the tabs under the attention views (the server's panels draw only while their tab is open)."""
    link = dash_duo.driver.find_element(
        "xpath", f"//*[@id='example-details']//a[contains(@class, 'nav-link')][normalize-space()='{title}']")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", link)


def z_equals(expected: np.ndarray):
    return lambda fig: np.array_equal(array(fig["data"][0]["z"]), expected)


def url_state(dash_duo):
    return parse_state(urlsplit(dash_duo.driver.current_url).query)


def select(dash_duo, select_id: str, value: str) -> None:
    Select(dash_duo.find_element(f"#{select_id}")).select_by_value(value)


def type_number(dash_duo, input_id: str, value: int) -> None:
    el = dash_duo.find_element(f"#{input_id}")
    dash_duo.clear_input(el)
    el.send_keys(str(value))


def test_controls_drive_views_that_show_the_store(dash_duo, live_server: LiveServer,
                                                  reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN)
    wait_figure(dash_duo, "attn-matrix", z_equals(reader.attention(BERT_RUN, 0, 0, 0)), "example 0 L0 H0")
    options = [o.text for o in Select(dash_duo.find_element("#run-select")).options if o.get_attribute("value")]
    assert len(options) == 3 and all("(random weights)" in label for label in options)

    # text search over the corpus picks an example
    word = max(reader.examples(BERT_RUN).text[5].split(), key=len)
    dash_duo.find_element("#example-search").send_keys(word + "\n")
    until(lambda: "5" in [o.get_attribute("value") for o in Select(
        dash_duo.find_element("#example-search-results")).options], timeout=TIMEOUT)
    select(dash_duo, "example-search-results", "5")
    until(lambda: url_state(dash_duo).example == 5, timeout=TIMEOUT)
    wait_figure(dash_duo, "attn-matrix", z_equals(reader.attention(BERT_RUN, 5, 0, 0)), "example 5 from search")
    type_number(dash_duo, "example-index", 0)

    select(dash_duo, "layer-select", "1")
    select(dash_duo, "head-select", "2")
    wait_figure(dash_duo, "attn-matrix", z_equals(reader.attention(BERT_RUN, 0, 1, 2)), "L1 H2")
    dash_duo.find_element("#example-next").click()
    expected = reader.attention(BERT_RUN, 1, 1, 2)
    fig = wait_figure(dash_duo, "attn-matrix", z_equals(expected), "example 1 after next")
    assert fig["data"][0]["z"] and len(fig["data"][0]["y"]) == len(reader.tokens(BERT_RUN, 1))
    type_number(dash_duo, "step-input", 3)
    wait_figure(dash_duo, "timestep-bars", lambda f: np.array_equal(array(f["data"][0]["y"]), expected[3]),
                "bars of step 3")
    until(lambda: url_state(dash_duo).step == 3, timeout=TIMEOUT)
    state = url_state(dash_duo)
    assert (state.run, state.example, state.layer, state.head, state.step) == (BERT_RUN, 1, 1, 2, 3)

    # head view: one line per weight above the first bin edge, taken from the same slice
    hv = wait_figure(dash_duo, "head-view", lambda f: "head 2" in f["layout"]["title"]["text"], "head view H2")
    edge = hv["layout"]["meta"]["edges"][0]
    assert sum(t["meta"]["segments"] for t in hv["data"][2:]) == int((expected >= edge).sum())

    # model view: clicking a cell selects that layer/head everywhere
    model = wait_figure(dash_duo, "model-view", lambda f: f["layout"]["meta"]["view"] == "model", "model view")
    tile = model["layout"]["meta"]["tile"][0]
    x, y = model["data"][0]["x"][3 * (tile + 1)], model["data"][0]["y"][0]
    dash_duo.driver.execute_script(
        "const gd = document.querySelector('#model-view .js-plotly-plot');"
        "gd.emit('plotly_click', {points: [{curveNumber: 0, x: arguments[0], y: arguments[1], z: 0}]});", x, y)
    wait_figure(dash_duo, "attn-matrix", z_equals(reader.attention(BERT_RUN, 1, 0, 3)), "L0 H3 from the click")
    until(lambda: dash_duo.find_element("#head-select").get_attribute("value") == "3", timeout=TIMEOUT)

    # encoder-decoder run: cross-attention is decoder tokens x encoder tokens
    select(dash_duo, "run-select", SEQ2SEQ_RUN)
    until(lambda: "cross" in [o.get_attribute("value") for o in Select(
        dash_duo.find_element("#kind-select")).options], timeout=TIMEOUT)
    select(dash_duo, "kind-select", "cross")
    until(lambda: url_state(dash_duo).kind == "cross", timeout=TIMEOUT)
    state = url_state(dash_duo)
    cross = reader.attention(SEQ2SEQ_RUN, state.example, state.layer, state.head, "cross")
    assert cross.shape[0] != cross.shape[1]
    wait_figure(dash_duo, "attn-matrix", z_equals(cross), "cross-attention")

    # rollout toggle
    dash_duo.driver.find_element("xpath", "//*[@id='attn-mode']//label[normalize-space()='rollout']").click()
    until(lambda: url_state(dash_duo).attn == "rollout", timeout=TIMEOUT)
    wait_figure(dash_duo, "attn-matrix", lambda f: "self-attention only" in message(f), "rollout message for cross")


def test_url_round_trip(dash_duo, live_server: LiveServer, reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=SEQ2SEQ_RUN, example=1, layer=1, head="mean", step=2, kind="cross")
    expected = reader.attention(SEQ2SEQ_RUN, 1, 1, kind="cross").mean(axis=0)
    wait_figure(dash_duo, "attn-matrix", lambda f: np.allclose(array(f["data"][0]["z"]), expected, atol=1e-6),
                "mean cross-attention from the URL")
    values = {cid: dash_duo.find_element(f"#{cid}").get_attribute("value")
              for cid in ("run-select", "example-index", "layer-select", "head-select", "step-input", "kind-select")}
    assert values == {"run-select": SEQ2SEQ_RUN, "example-index": "1", "layer-select": "1", "head-select": "mean",
                      "step-input": "2", "kind-select": "cross"}

    select(dash_duo, "head-select", "3")
    until(lambda: url_state(dash_duo).head == 3, timeout=TIMEOUT)
    state = url_state(dash_duo)
    assert (state.run, state.example, state.layer, state.step, state.kind) == (SEQ2SEQ_RUN, 1, 1, 2, "cross")

    dash_duo.driver.get(dash_duo.driver.current_url)  # reload the shared URL
    wait_figure(dash_duo, "attn-matrix", z_equals(reader.attention(SEQ2SEQ_RUN, 1, 1, 3, "cross")), "after reload")
    # the views may be drawn from the URL before the server's answer fills the controls (first load)
    until(lambda: dash_duo.find_element("#head-select").get_attribute("value") == "3", timeout=TIMEOUT)

    dash_duo.find_element("#reset-view").click()
    until(lambda: (url_state(dash_duo).layer, url_state(dash_duo).head, url_state(dash_duo).kind) == (0, 0, "self"),
          timeout=TIMEOUT)
    assert url_state(dash_duo).example == 1

    # the tab is part of the URL too
    dash_duo.driver.find_element("xpath", "//*[@id='tabs']//*[normalize-space()='Corpus']").click()
    until(lambda: url_state(dash_duo).tab == "corpus", timeout=TIMEOUT)
    dash_duo.driver.get(dash_duo.driver.current_url)
    until(lambda: "Corpus" in dash_duo.find_element("#tabs .tab--selected").text, timeout=TIMEOUT)


def test_save_image_downloads_png_and_svg(dash_duo, live_server: LiveServer,
                                          reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=2, layer=1, head=0)
    wait_figure(dash_duo, "attn-matrix", z_equals(reader.attention(BERT_RUN, 2, 1, 0)), "L1 H0")
    folder = Path(dash_duo.download_path)
    stem = f"{BERT_RUN}_ex2_L1_H0"
    dash_duo.find_element("#save-png").click()
    until(lambda: (folder / f"{stem}.png").exists() and (folder / f"{stem}.png").stat().st_size > 1000,
          timeout=TIMEOUT, msg=f"no {stem}.png in {list(folder.iterdir())}")
    time.sleep(0.3)
    assert (folder / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dash_duo.find_element("#save-svg").click()
    until(lambda: (folder / f"{stem}.svg").exists() and (folder / f"{stem}.svg").stat().st_size > 1000,
          timeout=TIMEOUT, msg=f"no {stem}.svg in {list(folder.iterdir())}")
    time.sleep(0.3)
    assert b"<svg" in (folder / f"{stem}.svg").read_bytes()[:500]


def test_bad_urls_show_messages_not_tracebacks(dash_duo, live_server: LiveServer,
                                               reader: StoreReader) -> None:
    open_page(dash_duo, live_server, run=BERT_RUN, example=99999)
    wait_figure(dash_duo, "attn-matrix", lambda f: "example 99999 is out of range" in message(f), "out of range")
    until(lambda: "example 99999 is out of range" in dash_duo.find_element("#state-alert").text, timeout=TIMEOUT)

    open_page(dash_duo, live_server, run=BERT_RUN, layer="abc")
    until(lambda: "layer 'abc' is not a whole number" in dash_duo.find_element("#state-alert").text,
          timeout=TIMEOUT)
    wait_figure(dash_duo, "attn-matrix", z_equals(reader.attention(BERT_RUN, 0, 0, 0)), "layer 0 fallback")

    open_page(dash_duo, live_server, run=BERT_RUN, kind="cross")
    wait_figure(dash_duo, "attn-matrix", lambda f: "no 'cross' attention" in message(f), "no cross-attention")

    open_page(dash_duo, live_server, run=GPT2_RUN)
    open_panel(dash_duo, "Debugging")
    wait_figure(dash_duo, "debug-view", lambda f: "did not capture Q/K/V" in message(f), "missing qkv")
    open_panel(dash_duo, "Embeddings")
    wait_figure(dash_duo, "norms-view", lambda f: "did not capture hidden states" in message(f), "missing hidden")
    body = dash_duo.find_element("body").text
    assert "Traceback" not in body and "Error" not in body


def test_server_process_never_loads_torch(live_server: LiveServer) -> None:
    import urllib.request

    urllib.request.urlopen(live_server.url + "/_dash-layout", timeout=10).read()
    maps = Path(f"/proc/{live_server.process.pid}/maps").read_text()
    assert "libtorch" not in maps and "/torch/" not in maps
