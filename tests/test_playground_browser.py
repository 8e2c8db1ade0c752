"""The playground in a real headless browser (dash_duo): run models, predict words, add to the store.

Run with ``pytest --headless -m browser tests/test_playground_browser.py``. The background callbacks use a
DiskcacheManager in a temp folder (``ATTNVIZ_PLAYGROUND_DIR``); the model worker is shared by the tests of this
module and shut down at its end.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_fixtures import playground_folder

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]

if not (shutil.which("chromedriver") and (shutil.which("chromium") or shutil.which("google-chrome"))):
    pytest.skip("chromium and chromedriver are needed for browser tests", allow_module_level=True)

JOB_TIMEOUT = 120  # the first job starts the worker and imports torch


@pytest.fixture(scope="module")
def playground_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with one small run, and a playground folder for the worker and Dash's job cache."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    root = tmp_path_factory.mktemp("pg-browser")
    store = root / "store.h5"
    precompute(PrecomputeOptions(model="bert-random", input="random:length=4,count=2,seed=0", store=store,
                                 run="existing",
                                 overrides={"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 32},
                                 capture="attention"))
    folder = root / "playground"
    with playground_folder(folder):
        yield store


@pytest.fixture
def pg(dash_duo, playground_env: Path):  # the dash_duo composite, on the Playground tab
    from attnviz.dashboard.app import create_app

    app = create_app(playground_env)
    dash_duo.start_server(app)
    dash_duo.driver.set_window_size(1600, 1400)
    dash_duo.driver.get(dash_duo.server_url + "/?tab=playground")
    dash_duo.wait_for_element("#pg-run", timeout=30)
    _settle(dash_duo)
    dash_duo.wait_for_element("#pg-model", timeout=10)
    return dash_duo


def _settle(duo, timeout: float = 30) -> None:
    """Wait until the page has no callback in flight (the first callbacks of a page load)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.5)
    while time.monotonic() < deadline and duo.redux_state_rqs:
        time.sleep(0.2)


def _set(duo, selector: str, value: object) -> None:
    el = duo.find_element(selector)
    duo.clear_input(el)
    el.send_keys(str(value))
    el.send_keys("\t")  # debounced inputs commit on blur


def _click(duo, selector: str) -> None:
    """Click through JavaScript (a plotly hover label may lie over the element in a small headless window)."""
    duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();",
                              duo.find_element(selector))


def _pick(duo, selector: str, label: str) -> None:
    """Pick a dropdown option; retried because a progress bar appearing can move the dropdown mid-click."""
    from selenium.common.exceptions import ElementClickInterceptedException

    for attempt in range(4):
        duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", duo.wait_for_element(selector))
        time.sleep(0.2)
        try:
            duo.select_dcc_dropdown(selector, value=label)
            return
        except ElementClickInterceptedException:
            if attempt == 3:
                raise


def _tiny(duo, layers: int = 2) -> None:
    _set(duo, "#pg-layers", layers)
    _set(duo, "#pg-heads", 4)
    _set(duo, "#pg-hidden", 64)


def _run_and_wait(duo, button: str = "#pg-run", *, expect: str = "#pg-summary-text") -> None:
    """Click a job button and wait for the job to finish (the button is re-enabled) and ``expect`` to show."""
    before = duo.driver.execute_script("return document.querySelector('#pg-result') ? Date.now() : 0")
    _click(duo, button)
    deadline = time.monotonic() + JOB_TIMEOUT
    time.sleep(0.5)
    while time.monotonic() < deadline:
        disabled = duo.find_element(button).get_attribute("disabled")
        if not disabled and duo.driver.find_elements("css selector", expect + ", #pg-error-text"):
            break
        time.sleep(0.25)
    else:
        raise AssertionError(f"job did not finish within {JOB_TIMEOUT} s (started {before})")
    time.sleep(0.5)  # let the view callbacks redraw


def _figure(duo, graph_id: str) -> dict:
    """The drawn plotly figure of a dcc.Graph: trace types, trace count, layout meta and title."""
    return duo.driver.execute_script(
        """const g = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        if (!g || !g.data) { return null; }
        const t = g.layout.title;
        return {types: g.data.map(d => d.type || 'scatter'), n: g.data.length, meta: g.layout.meta || null,
                title: (t && t.text !== undefined) ? t.text : (t || ''),
                z: g._fullData && g._fullData[0] && g._fullData[0].z ? g._fullData[0].z.length : 0};""", graph_id)


def _wait_figure(duo, graph_id: str, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    fig = None
    while time.monotonic() < deadline:
        fig = _figure(duo, graph_id)
        if fig and predicate(fig):
            return fig
        time.sleep(0.25)
    raise AssertionError(f"{graph_id} never matched; last figure: {fig}")


def _no_error(duo) -> None:
    errors = duo.driver.find_elements("css selector", "#pg-error-text")
    assert not errors, errors[0].text


def test_typed_sentence_then_one_layer_and_a_failing_model(pg) -> None:
    _tiny(pg, layers=2)
    _set(pg, "#pg-text", "The cat sat on the mat.")
    _run_and_wait(pg)
    _no_error(pg)
    pg.wait_for_text_to_equal("#pg-summary-text", "The cat sat on the mat.")
    matrix = _wait_figure(pg, "pg-matrix", lambda f: f["types"] == ["heatmap"])
    assert matrix["meta"]["view"] == "matrix" and matrix["z"] == 7  # 7 GPT-2 tokens
    head = _wait_figure(pg, "pg-headview", lambda f: f["meta"] and f["meta"]["view"] == "head")
    assert head["n"] > 2  # query tokens, key tokens, then the lines
    model = _wait_figure(pg, "pg-modelview", lambda f: f["meta"] and f["meta"]["view"] == "model")
    assert (model["meta"]["layers"], model["meta"]["heads"]) == (2, 4)

    _set(pg, "#pg-layers", 1)
    _run_and_wait(pg)
    model = _wait_figure(pg, "pg-modelview", lambda f: f["meta"] and f["meta"].get("layers") == 1)
    assert model["meta"]["heads"] == 4
    assert "layers=1" in pg.find_element("#pg-summary-model").text

    _pick(pg, "#pg-model", "gpt2 (needs internet)")
    pg.wait_for_element("#pg-layers[disabled]", timeout=10)  # trained weights: configuration fixed
    _run_and_wait(pg, expect="#pg-error-text")
    assert "Hugging Face hub" in pg.find_element("#pg-error-text").text
    _pick(pg, "#pg-model", "gpt2-random (random weights)")
    pg.wait_for_element("#pg-layers:not([disabled])", timeout=10)
    _tiny(pg, layers=1)
    _run_and_wait(pg)
    _no_error(pg)  # the app keeps working after a model that cannot load


def _tokens_shown(duo) -> str:
    return duo.find_element("#pg-summary-text").text


def test_random_sequence_with_a_fixed_seed_gives_the_same_tokens(pg) -> None:
    _tiny(pg, layers=1)
    _click(pg, "label[for='_dbcprivate_radioitems_pg-input-kind_input_random']")
    _set(pg, "#pg-length", 6)
    _set(pg, "#pg-random-seed", 3)
    _run_and_wait(pg)
    first = _tokens_shown(pg)
    _run_and_wait(pg)
    assert _tokens_shown(pg) == first and first
    _set(pg, "#pg-random-seed", 4)
    _run_and_wait(pg)
    assert _tokens_shown(pg) != first


def test_translation_input_shows_cross_attention(pg) -> None:
    _click(pg, "label[for='_dbcprivate_radioitems_pg-task_input_translation']")
    pg.wait_for_contains_text("#pg-model", "seq2seq-random", timeout=10)  # picked by the language selectors
    _tiny(pg, layers=1)
    _set(pg, "#pg-text", "The house is big.")
    _set(pg, "#pg-second", "La casa es grande.")
    _run_and_wait(pg)
    _no_error(pg)
    _pick(pg, "#pg-kind", "cross-attention (decoder → encoder)")
    matrix = _wait_figure(pg, "pg-matrix", lambda f: "cross-attention" in str(f["title"]))
    assert matrix["types"] == ["heatmap"]


def test_predicted_words_are_reproducible_and_match_a_direct_forward(pg) -> None:
    import torch

    from attnviz.pipeline.playground import engine as playground
    from attnviz.pipeline.playground.records import ModelChoice

    _tiny(pg, layers=2)
    _set(pg, "#pg-text", "Once upon a time")
    _click(pg, "label[for='_dbcprivate_radioitems_pg-gen-mode_input_sample']")
    _set(pg, "#pg-gen-n", 5)
    _set(pg, "#pg-gen-seed", 7)
    _run_and_wait(pg, "#pg-predict", expect="#pg-steps-table")
    _no_error(pg)
    text = pg.find_element("#pg-generated-raw").get_attribute("textContent")
    probs = [float(td.get_attribute("title")) for td in
             pg.driver.find_elements("css selector", "#pg-steps-table td.pg-step-prob")]
    ids = [int(td.get_attribute("data-token")) for td in
           pg.driver.find_elements("css selector", "#pg-steps-table td.pg-step-token")]
    assert len(probs) == len(ids) == 5
    _run_and_wait(pg, "#pg-predict", expect="#pg-steps-table")
    assert pg.find_element("#pg-generated-raw").get_attribute("textContent") == text

    lm = playground.get_model(ModelChoice("gpt2-random", layers=2, heads=4, hidden=64))
    seq = lm.tokenizer("Once upon a time")["input_ids"]
    for token, prob in zip(ids, probs, strict=True):
        with torch.inference_mode():
            p = torch.softmax(lm.model(input_ids=torch.tensor([seq])).logits[0, -1], dim=-1)
        assert prob == pytest.approx(float(p[token]), rel=1e-4)
        seq.append(token)
    bars = _wait_figure(pg, "pg-step-bars", lambda f: "Generation step" in str(f["title"]))
    assert bars["types"] == ["bar"]
    handle = pg.find_element("#pg-step [role='slider']")  # the slider runs over the 5 generation steps
    assert (handle.get_attribute("aria-valuemin"), handle.get_attribute("aria-valuemax")) == (str(len(seq) - 6),
                                                                                            str(len(seq) - 2))


def test_add_to_store_then_the_example_tab_shows_it(pg) -> None:
    _tiny(pg, layers=1)
    _set(pg, "#pg-text", "Stored from the playground.")
    _run_and_wait(pg)
    _no_error(pg)
    _click(pg, "#pg-add")
    pg.wait_for_element("#pg-add-done", timeout=JOB_TIMEOUT)
    assert "run 'playground-gpt2-random'" in pg.find_element("#pg-add-done").text
    _click(pg, "#pg-add-done a")
    pg.wait_for_contains_text("#example-text", "Stored from the playground.", timeout=20)
    assert pg.find_element("#run-select").get_attribute("value") == "playground-gpt2-random"


def test_masked_word_prediction_for_an_encoder(pg) -> None:
    _pick(pg, "#pg-model", "bert-random (random weights)")
    pg.wait_for_text_to_equal("#pg-predict", "Predict masked word", timeout=10)
    pg.wait_for_contains_text("#pg-model-note", "BERT architecture", timeout=10)
    _tiny(pg, layers=1)
    _set(pg, "#pg-text", "The cat [MASK] on the mat.")
    _run_and_wait(pg, "#pg-predict", expect="#pg-masked-panel")
    _no_error(pg)
    panel = pg.find_element("#pg-masked-panel").text
    assert "position 3" in panel and "random weights" in panel


def test_cancel_stops_a_long_job_and_the_page_stays_responsive(pg) -> None:
    _tiny(pg, layers=1)
    _set(pg, "#pg-text", "A first result to look at.")
    _run_and_wait(pg)
    _no_error(pg)
    _set(pg, "#pg-layers", 6)  # the model_info size, on a long random input: each generated token takes a while
    _set(pg, "#pg-heads", 8)
    _set(pg, "#pg-hidden", 256)
    _click(pg, "label[for='_dbcprivate_radioitems_pg-input-kind_input_random']")
    _set(pg, "#pg-length", 900)
    _set(pg, "#pg-gen-n", 64)
    _click(pg, "#pg-predict")
    pg.wait_for_element("#pg-cancel:not([disabled])", timeout=10)
    _pick(pg, "#pg-head", "head 1")  # other callbacks still answer while the job runs
    _wait_figure(pg, "pg-matrix", lambda f: "head 1" in str(f["title"]))
    assert pg.find_element("#pg-predict").get_attribute("disabled")  # still running
    _click(pg, "#pg-cancel")
    pg.wait_for_element("#pg-predict:not([disabled])", timeout=10)
    _click(pg, "label[for='_dbcprivate_radioitems_pg-input-kind_input_typed']")
    _tiny(pg, layers=1)
    _set(pg, "#pg-text", "After the cancel.")
    t0 = time.monotonic()
    _run_and_wait(pg)
    _no_error(pg)  # the worker was freed: no "already running" refusal
    pg.wait_for_text_to_equal("#pg-summary-text", "After the cancel.")
    assert time.monotonic() - t0 < 30


def test_run_draws_the_models_attention_and_a_loading_indicator_wraps_the_job_and_views(pg) -> None:
    """The matrix shows exactly the attention of the model (a direct run in this process), at the first
    selection and after picking another layer and head; the job line and the result views sit in loading
    indicators (shown after 300 ms); a second run of the loaded model answers without the background job."""
    import numpy as np
    from browser_helpers import array, graph

    from attnviz.pipeline.playground import engine as playground
    from attnviz.pipeline.playground.records import InputRequest, ModelChoice

    wrapped = """const l = document.querySelector(arguments[0]);
                 return Boolean(l && l.parentElement.querySelector(arguments[1]));"""  # dcc.Loading's id: a sibling
    assert pg.driver.execute_script(wrapped, "#pg-views-loading", "#pg-matrix")
    assert pg.driver.execute_script(wrapped, "#pg-views-loading", "#pg-embeddings")
    assert pg.driver.execute_script(wrapped, "#pg-job-loading", "#pg-error")
    assert not pg.driver.execute_script(wrapped, "#pg-job-loading", "#pg-matrix")
    _tiny(pg, layers=2)
    text = "Attention equals the model."
    _set(pg, "#pg-text", text)
    _run_and_wait(pg)
    _no_error(pg)
    expected = playground.run_input(ModelChoice("gpt2-random", layers=2, heads=4, hidden=64),
                                    InputRequest(task="lm", text=text)).example.attention["self"]

    def z_equals(layer: int, head: int) -> None:
        deadline = time.monotonic() + 20
        while True:
            fig = graph(pg, "pg-matrix")
            z = array(fig["data"][0]["z"]) if fig and fig["data"] and "z" in fig["data"][0] else None
            if z is not None and z.shape == expected.shape[2:] and np.allclose(z, expected[layer, head], atol=1e-6):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"pg-matrix never showed layer {layer} head {head}: {z}")
            time.sleep(0.25)

    z_equals(0, 0)
    _pick(pg, "#pg-layer", "layer 1")
    _pick(pg, "#pg-head", "head 2")
    z_equals(1, 2)

    _set(pg, "#pg-text", "A second sentence, model loaded.")
    progress_before = pg.find_element("#pg-progress").get_attribute("innerHTML")
    _run_and_wait(pg)
    pg.wait_for_text_to_equal("#pg-summary-text", "A second sentence, model loaded.")
    assert pg.find_element("#pg-progress").get_attribute("innerHTML") == progress_before  # no background job
