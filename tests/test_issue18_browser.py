"""Issue 18's views in headless Chromium against ``attnviz serve`` on a store made by the real pipeline: the
Example tab's value-weighted matrix (``--capture norms``), the token-neighbours panel and the Corpus tab's
query–key space (both built by ``attnviz analyze``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, message, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import LiveServer, start_live_server

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
