"""An example whose raw attention the run did not keep (``--attention every:5``), in the browser: the Example tab
says so in one line with a link to the nearest example that has it (followed in the page, no reload) and one to
the Playground, which runs the example again on the same model (random weights of the same size and seed) and
draws the attention the run would have stored (checked against a run that kept every example).

Headless Chromium (dash_duo) against the app of ``create_app``, a real store written by the pipeline and the
Playground's real model worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, message, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import playground_folder
from selenium.webdriver.common.by import By

from attnviz.pipeline.store import StoreReader

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]

#: A small random-weights BERT the Playground can build again (its layers, heads and hidden size are settings).
SIZE = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}
N = 12
JOB_TIMEOUT = 150  # the first Playground job starts the model worker and imports torch


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the sampled store: run ``e`` keeps every 5th example; the reference: run ``r`` keeps all), and a
    Playground folder for the worker."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    root = tmp_path_factory.mktemp("keep-browser")
    lines = (Path(__file__).resolve().parents[1] / "data" / "english_sentences.txt").read_text().splitlines()
    text = root / "sentences.txt"
    text.write_text("\n".join(lines[:N]) + "\n", encoding="utf-8")
    paths = root / "sampled.h5", root / "all.h5"
    for path, run, attention in ((paths[0], "e", "every:5"), (paths[1], "r", "all")):
        precompute(PrecomputeOptions(model="bert-random", input=str(text), store=path, run=run, threads=1,
                                     overrides=dict(SIZE), capture="attention", attention=attention))
    folder = root / "playground"
    with playground_folder(folder):
        yield paths


def test_a_dropped_example_links_to_the_nearest_kept_one_and_to_the_playground(
        dash_duo, stores: tuple[Path, Path]) -> None:
    from attnviz.dashboard.app import create_app

    sampled, reference = stores
    dash_duo.start_server(create_app(sampled))
    driver = dash_duo.driver
    driver.set_window_size(1600, 1000)
    driver.get(dash_duo.server_url + "/?run=e&example=7&layer=1&head=2")
    note = dash_duo.wait_for_element("#example-attention-note a.attnviz-nearest", timeout=TIMEOUT)
    fig = wait_figure(dash_duo, "attn-matrix", message, "the matrix's message")
    assert message(fig) == ("Example 7 has metrics but no raw attention (run 'e' kept attention for --attention "
                            "every:5): the nearest example with attention is 5.")
    assert note.text == "open example 5, the nearest with attention"
    recompute = driver.find_element(By.CSS_SELECTOR, "#example-attention-note a.attnviz-recompute")
    assert recompute.get_attribute("target") == "_blank"
    href = recompute.get_attribute("href")

    # the nearest example opens in the page (no reload), on the same layer and head
    driver.execute_script("window.__samePage = true;")
    note.click()
    with StoreReader(sampled) as reader:
        kept = reader.attention("e", 5, 1, 2)
    wait_figure(dash_duo, "attn-matrix", lambda f: np.array_equal(array(f["data"][0]["z"]), kept), "example 5")
    assert driver.execute_script("return window.__samePage === true;")
    assert "example=5" in driver.current_url
    until(lambda: driver.find_element(By.ID, "example-attention-note").text == "", timeout=TIMEOUT)

    # the Playground runs example 7 again: the attention the run would have stored
    driver.get(href)
    until(lambda: driver.find_elements(By.ID, "pg-summary-text") or driver.find_elements(By.ID, "pg-error-text"),
          timeout=JOB_TIMEOUT)
    assert not driver.find_elements(By.ID, "pg-error-text"), driver.find_element(By.ID, "pg-error-text").text
    with StoreReader(reference) as ref:
        want = ref.attention("r", 7, 1, 2).astype(np.float32)
        sentence = ref.examples("r").text[7]
    assert driver.find_element(By.ID, "pg-text").get_attribute("value") == sentence
    got = wait_figure(dash_duo, "pg-matrix", lambda f: "Layer 1, head 2" in f["layout"]["title"]["text"],
                      "the Playground's matrix at layer 1, head 2")
    np.testing.assert_allclose(array(got["data"][0]["z"]), want, atol=2e-3)
