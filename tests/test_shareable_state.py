"""Shareable state and first impressions (issue 15) in headless Chromium: the Corpus tab's and the Playground's state
in the URL (a copied URL opened in a *second, fresh browser* shows the same view), the messages of empty and odd
states, decoded GPT-2 tokens, the default run, the Run selector on the Playground and the disabled masked-word
button.

The Corpus store holds constructed runs (``tests/synthetic.py``): pair-a and pair-b share their inputs, narrow has 3
heads per layer. The Playground runs tiny random-weight models in its model worker.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, fresh_chrome, graph, message, prop, settle, wait_figure
from dash.testing.wait import until
from dashboard_fixtures import playground_folder
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta

from attnviz.dashboard.example.tokens import display_tokens
from attnviz.dashboard.urlstate import corpus_wish, parse_state, playground_wish
from attnviz.pipeline.precompute.analyze import analyze
from attnviz.pipeline.store import StoreReader, StoreWriter

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]
REPO = Path(__file__).resolve().parent.parent
PATTERNS_A = [["previous", "broad", "heterogeneous", "first"], ["sep", "heterogeneous", "broad", "heterogeneous"]]
PATTERNS_B = [["previous", "broad", "heterogeneous", "first"], ["sep", "heterogeneous", "previous", "heterogeneous"]]
NARROW = [["previous", "broad", "heterogeneous"], ["sep", "heterogeneous", "broad"]]
N = 40
JOB_TIMEOUT = 150  # the first playground job starts the worker and imports torch
TEXT = "Le café naïve ’quoted’ 🙂 über \ufeffafter a byte-order mark"  # (one at a file's start is dropped)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("share") / "share.h5"
    writer = StoreWriter(path)
    for run, patterns in (("pair-a", PATTERNS_A), ("pair-b", PATTERNS_B), ("narrow", NARROW)):
        writer.begin_run(run, synthetic_meta(2, len(patterns[0]), N), fingerprint_keys=[])
        write_shard(writer, run, 0, synthetic_examples(patterns, N, seed=1))
        analyze(path, run, max_offset=4, workers=0)
    return path


@pytest.fixture
def page(dash_duo, store: Path):
    from attnviz.dashboard.app import create_app
    from attnviz.dashboard.corpus import data as corpus_data

    corpus_data.clear_caches()
    dash_duo.start_server(create_app(store))
    dash_duo.driver.set_window_size(1500, 1200)
    return dash_duo


@pytest.fixture
def second() -> Iterator[SimpleNamespace]:
    """Another browser (its own profile), wrapped like dash_duo for the figure helpers."""
    driver = fresh_chrome()
    try:
        yield SimpleNamespace(driver=driver)
    finally:
        driver.quit()


def nan_agg(values: np.ndarray, how: str) -> np.ndarray:
    fn = {"mean": np.nanmean, "median": np.nanmedian,
          "p90": lambda x, axis: np.nanpercentile(x, 90, axis=axis)}[how]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(values, axis=0).astype(np.float32)


def z_close(expected: np.ndarray):
    def check(fig: dict) -> bool:
        z = array(fig["data"][0]["z"])
        return z.shape == expected.shape and np.allclose(z, expected, rtol=1e-5, atol=1e-6, equal_nan=True)

    return check


def field_id(name: str) -> dict:
    return {"type": "corpus-field", "field": name}


def set_props(driver, component_id: str | dict, **props: object) -> None:
    """Set a control's value as its own component does (dash_clientside.set_props), e.g. a range slider."""
    driver.execute_script("window.dash_clientside.set_props(arguments[0], arguments[1])", component_id, props)


# ---- the Corpus tab -----------------------------------------------------------------------------------------


def test_corpus_url_reopens_the_same_view_in_a_fresh_browser(page, second, store: Path) -> None:
    reader = StoreReader(store)
    a, b = reader.metrics("pair-a", "mass_prev"), reader.metrics("pair-b", "mass_prev")
    table = reader.examples("pair-a")
    page.driver.get(page.server_url + "/?tab=corpus&run=pair-a")
    wait_figure(page, "corpus-heatmap-a", lambda f: f["data"][0]["type"] == "heatmap", "A heatmap")
    # run B, metric, aggregate, truncation, a metadata filter, a length range and a picked head, as a person sets them
    page.select_dcc_dropdown("#corpus-run-b", value="pair-b")
    page.select_dcc_dropdown("#corpus-metric", value="Mass on previous (weight)")
    page.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    page.driver.find_element(By.CSS_SELECTOR, "#corpus-agg input[value='median']").click()
    page.driver.find_element(By.CSS_SELECTOR, "#corpus-truncated input[value='no']").click()
    until(lambda: prop(page.driver, field_id("source"), "options"), timeout=TIMEOUT)
    set_props(page.driver, field_id("source"), value=["alpha"])
    lo, hi = prop(page.driver, "corpus-length", "min"), prop(page.driver, "corpus-length", "max")
    set_props(page.driver, "corpus-length", value=[lo + 1, hi])
    set_props(page.driver, "corpus-head", data={"layer": 1, "head": 2})
    keep = (np.array([m["source"] == "alpha" for m in table.meta]) & ~table.truncated
            & (table.n_tokens >= lo + 1))
    assert 0 < keep.sum() < N
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(a[keep], "median")), "A, every setting")
    wait_figure(page, "corpus-heatmap-b", z_close(nan_agg(b[keep], "median")), "B, every setting")
    until(lambda: "Layer 1, head 2" in page.find_element("#corpus-head-title").text, timeout=TIMEOUT)
    settle(page.driver)
    url = page.driver.current_url
    wish = corpus_wish(urlsplit(url).fragment)
    assert (wish.run_b, wish.metric, wish.agg, wish.truncated, wish.head) == ("pair-b", "mass_prev", "median", "no",
                                                                              (1, 2))
    assert wish.field_values() == {"source": ["alpha"]} and wish.length == (lo + 1, hi)
    assert parse_state(urlsplit(url).query).run == "pair-a"

    second.driver.get(url)  # another browser: nothing but the URL carries the view
    wait_figure(second, "corpus-heatmap-a", z_close(nan_agg(a[keep], "median")), "A in the second browser")
    wait_figure(second, "corpus-heatmap-b", z_close(nan_agg(b[keep], "median")), "B in the second browser")
    diff = wait_figure(second, "corpus-diff", z_close(nan_agg(a[keep], "median") - nan_agg(b[keep], "median")),
                       "A − B in the second browser")
    assert diff["layout"]["title"]["text"].startswith("A − B (median)")
    until(lambda: "Layer 1, head 2" in second.driver.find_element(By.ID, "corpus-head-title").text, timeout=TIMEOUT)
    until(lambda: f"{keep.sum()} of {N} examples" in second.driver.find_element(By.ID, "corpus-status").text,
          timeout=TIMEOUT)
    assert prop(second.driver, "corpus-run-b", "value") == "pair-b"
    assert prop(second.driver, "corpus-metric", "value") == "mass_prev"
    assert prop(second.driver, "corpus-agg", "value") == "median"
    assert prop(second.driver, "corpus-truncated", "value") == "no"
    assert prop(second.driver, "corpus-length", "value") == [lo + 1, hi]
    assert prop(second.driver, field_id("source"), "value") == ["alpha"]
    assert prop(second.driver, "corpus-head", "data") == {"layer": 1, "head": 2}
    settle(second.driver)
    assert corpus_wish(urlsplit(second.driver.current_url).fragment) == wish  # and it keeps the URL as it came


def test_a_filter_that_matches_nothing_says_so(page) -> None:
    # short sentences (<= 8 tokens) of 9 tokens or more: none
    page.driver.get(page.server_url + "/?tab=corpus&run=pair-a#corpus.b=pair-b&corpus.length=9-12"
                    "&corpus.f.length_bucket=short")
    for graph_id in ("corpus-heatmap-a", "corpus-heatmap-b", "corpus-diff", "corpus-profile", "corpus-patterns-a"):
        fig = wait_figure(page, graph_id, lambda f: "matches this filter" in message(f), f"{graph_id}: message")
        assert not fig["data"], graph_id  # no empty axes: a message figure
        assert "widen it" in message(fig) and "length_bucket in {short}" in message(fig)
    until(lambda: "0 of 40 examples" in page.find_element("#corpus-status").text, timeout=TIMEOUT)


def test_a_minus_b_of_runs_with_other_head_counts_is_a_message(page) -> None:
    page.driver.get(page.server_url + "/?tab=corpus&run=pair-a#corpus.b=narrow")
    fig = wait_figure(page, "corpus-diff", lambda f: "do not correspond" in message(f), "A − B message")
    assert not fig["data"]
    assert "A has 2 layers × 4 heads and B 2 × 3" in message(fig)
    # the per-layer profile still compares them
    prof = wait_figure(page, "corpus-profile", lambda f: len(f["data"]) == 6, "A and B profiles")
    assert prof["data"][5]["name"] == "B: narrow"


def test_titles_clear_the_toolbar_and_the_similarity_map_has_its_dendrogram(page) -> None:
    page.driver.get(page.server_url + "/?tab=corpus&run=pair-a#corpus.b=pair-b&corpus.head=1.2")
    sim = wait_figure(page, "corpus-similarity-a", lambda f: len(f["data"]) == 2, "similarity with its tree")
    assert sim["data"][1]["xaxis"] == "x2" and sim["data"][1]["mode"] == "lines"
    wait_figure(page, "corpus-relpos", lambda f: len(f["data"]) == 2, "relative position")
    wait_figure(page, "corpus-patterns-a", lambda f: f["data"][0]["type"] == "heatmap", "patterns")
    settle(page.driver)
    for graph_id in ("corpus-heatmap-a", "corpus-diff", "corpus-patterns-a", "corpus-similarity-a",
                     "corpus-relpos", "corpus-profile"):
        boxes = page.driver.execute_script("""
            const root = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
            root.scrollIntoView({block: 'center'});
            const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
            const title = root.querySelector('.gtitle');
            const bar = root.querySelector('.modebar-container .modebar');
            return {title: title ? rect(title) : null, bar: bar ? rect(bar) : null,
                    plot: rect(root.querySelector('.nsewdrag') || root)};""", graph_id)
        title, bar = boxes["title"], boxes["bar"]
        assert title is not None, graph_id
        if bar is not None and bar[2] > bar[0]:  # the toolbar (shown on hover) lies above the title: no overlap
            assert title[1] >= bar[3] - 1 or title[2] <= bar[0], (graph_id, title, bar)
        assert title[3] <= boxes["plot"][1] + 1, (graph_id, title, boxes["plot"])  # above the plot
    # the dendrogram's leaves sit over the map's columns
    columns = page.driver.execute_script("""
        const gd = document.querySelector('#corpus-similarity-a .js-plotly-plot');
        const fl = gd._fullLayout, n = gd.data[0].x.length;
        return [[fl.xaxis._offset + fl.xaxis.l2p(0), fl.xaxis2._offset + fl.xaxis2.l2p(0)],
                [fl.xaxis._offset + fl.xaxis.l2p(n - 1), fl.xaxis2._offset + fl.xaxis2.l2p(n - 1)]];""")
    for heat_x, tree_x in columns:
        assert abs(heat_x - tree_x) < 1.0
    # pattern cells: one or two characters (never two labels running together)
    pat = graph(page, "corpus-patterns-a")
    assert max(len(t) for row in pat["data"][0]["text"] for t in row) <= 3


# ---- the Playground ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playground_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with a random-weight run and a trained one (MiniLM), and a playground folder for the worker."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    root = tmp_path_factory.mktemp("share-pg")
    path = root / "store.h5"
    text = root / "bytes.txt"
    text.write_text(f"{TEXT}\nA plain sentence.\n", encoding="utf-8")
    precompute(PrecomputeOptions(model="gpt2-random", input=str(text), store=path, run="a-gpt2", threads=1,
                                 overrides={"n_layer": 1, "n_head": 2, "n_embd": 32}, capture="attention"))
    precompute(PrecomputeOptions(model="minilm", input=str(text), store=path, run="b-minilm", threads=1,
                                 capture="attention"))
    folder = root / "playground"
    with playground_folder(folder):
        yield path


@pytest.fixture
def pg(dash_duo, playground_store: Path):
    from attnviz.dashboard.app import create_app

    dash_duo.start_server(create_app(playground_store))
    dash_duo.driver.set_window_size(1600, 1300)
    return dash_duo


def _choose(driver, selector: str, label: str) -> None:
    """Pick a dropdown option as a person does in a long list: open it, type into its search box, click it."""
    driver.find_element(By.CSS_SELECTOR, selector).click()
    search = driver.find_element(By.CSS_SELECTOR, ".dash-dropdown-search")
    search.send_keys(label.split(" ")[0])
    until(lambda: any(o.text == label for o in driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")),
          timeout=TIMEOUT)
    next(o for o in driver.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option") if o.text == label).click()


def _type(driver, selector: str, value: object) -> None:
    """Replace a field's text as a person does (select all, type), then leave it (debounced inputs commit on blur)."""
    el = driver.find_element(By.CSS_SELECTOR, selector)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(Keys.DELETE)
    el.send_keys(str(value))
    el.send_keys("\t")


def _wait_result(driver, timeout: float = JOB_TIMEOUT) -> None:
    until(lambda: driver.find_elements(By.ID, "pg-summary-text") or driver.find_elements(By.ID, "pg-error-text"),
          timeout=timeout)
    assert not driver.find_elements(By.ID, "pg-error-text"), driver.find_element(By.ID, "pg-error-text").text


def test_default_run_has_trained_weights_and_the_playground_hides_the_run_selector(pg) -> None:
    pg.driver.get(pg.server_url + "/")
    until(lambda: "run=b-minilm" in pg.driver.current_url, timeout=TIMEOUT)  # not the first run, a-gpt2 (random)
    until(lambda: prop(pg.driver, "run-select", "value") == "b-minilm", timeout=TIMEOUT)
    assert pg.driver.find_element(By.ID, "run-box").is_displayed()
    pg.driver.find_element(By.CSS_SELECTOR, "#tabs .tab:nth-child(3)").click()
    until(lambda: not pg.driver.find_element(By.ID, "run-box").is_displayed(), timeout=TIMEOUT)
    pg.driver.find_element(By.CSS_SELECTOR, "#tabs .tab:nth-child(2)").click()
    until(lambda: pg.driver.find_element(By.ID, "run-box").is_displayed(), timeout=TIMEOUT)
    settle(pg.driver)  # the Corpus tab's callbacks answered before the server stops (else a request thread dies)


def test_predict_masked_word_is_disabled_with_the_reason_for_a_model_without_its_head(pg) -> None:
    pg.driver.get(pg.server_url + "/?tab=playground")
    pg.wait_for_element("#pg-model", timeout=TIMEOUT)
    settle(pg.driver)
    _choose(pg.driver, "#pg-model", "minilm")
    until(lambda: pg.driver.find_element(By.ID, "pg-predict").get_attribute("disabled"), timeout=TIMEOUT)
    reason = pg.driver.find_element(By.ID, "pg-predict-blocked").text
    assert "no masked-language-model head" in reason and "minilm" in reason
    assert pg.driver.find_element(By.ID, "pg-predict").text == "Predict masked word"
    _choose(pg.driver, "#pg-model", "bert-random (random weights)")  # random weights: it has the head
    until(lambda: not pg.driver.find_element(By.ID, "pg-predict").get_attribute("disabled"), timeout=TIMEOUT)
    assert not pg.driver.find_elements(By.ID, "pg-predict-blocked")


def test_gpt2_tokens_are_shown_as_text_in_the_example_tab(pg, playground_store: Path) -> None:
    reader = StoreReader(playground_store)
    raw = reader.tokens("a-gpt2", 0)
    shown = display_tokens(raw)
    assert any("Ã" in t or "Ġ" in t for t in raw)  # the store keeps the tokenizer's byte-level strings
    pg.driver.get(pg.server_url + "/?tab=example&run=a-gpt2&example=0")
    fig = wait_figure(pg, "attn-matrix", lambda f: len(f["data"][0]["y"]) == len(raw), "the matrix")
    labels = [label.split(" ", 1)[1] for label in fig["data"][0]["y"]]
    assert labels == shown
    joined = "".join(labels)
    assert "⟨BOM⟩" in joined and "·café" in joined and "·naïve" in joined and "’" in joined
    assert not any(stand_in in joined for stand_in in ("Ã", "Ġ", "âĢ", "ï»", "ðŁ")) and "\\x" not in joined


def test_playground_url_reopens_inputs_settings_and_result_in_a_fresh_browser(pg, second) -> None:
    pg.driver.get(pg.server_url + "/?tab=playground")
    pg.wait_for_element("#pg-text", timeout=TIMEOUT)
    until(lambda: prop(pg.driver, "pg-model", "value") == "gpt2-random", timeout=TIMEOUT)
    settle(pg.driver)
    _type(pg.driver, "#pg-layers", 2)
    _type(pg.driver, "#pg-heads", 4)
    _type(pg.driver, "#pg-hidden", 64)
    _type(pg.driver, "#pg-model-seed", 3)
    _type(pg.driver, "#pg-text", "Le café naïve über")
    settle(pg.driver)
    pg.driver.execute_script("document.getElementById('pg-run').click()")
    _wait_result(pg.driver)
    settle(pg.driver)
    set_props(pg.driver, "pg-layer", value=1)
    set_props(pg.driver, "pg-head", value=3)
    set_props(pg.driver, "pg-step", value=2)
    first = wait_figure(pg, "pg-matrix", lambda f: "Layer 1, head 3" in f["layout"]["title"]["text"], "view")
    settle(pg.driver)
    url = pg.driver.current_url
    wish = playground_wish(urlsplit(url).fragment)
    assert {k: wish.get(k) for k in ("model", "layers", "heads", "hidden", "seed", "text", "result", "layer", "head",
                                     "step")} == {
        "model": "gpt2-random", "layers": "2", "heads": "4", "hidden": "64", "seed": "3",
        "text": "Le café naïve über", "result": "run", "layer": "1", "head": "3", "step": "2"}
    labels = [label.split(" ", 1)[1] for label in first["data"][0]["y"]]
    assert "·café" in labels and "·naïve" in labels and not any("Ã" in t for t in labels)

    second.driver.get(url)  # another browser: the inputs come back and the model runs again
    _wait_result(second.driver)
    again = wait_figure(second, "pg-matrix", lambda f: "Layer 1, head 3" in f["layout"]["title"]["text"],
                        "the same view in the second browser")
    np.testing.assert_array_equal(array(again["data"][0]["z"]), array(first["data"][0]["z"]))  # seeded weights
    assert again["data"][0]["y"] == first["data"][0]["y"]
    for cid, value in (("pg-model", "gpt2-random"), ("pg-layers", 2), ("pg-heads", 4), ("pg-hidden", 64),
                       ("pg-model-seed", 3), ("pg-text", "Le café naïve über"), ("pg-layer", 1), ("pg-head", 3),
                       ("pg-step", 2)):
        assert prop(second.driver, cid, "value") == value, cid
    assert not second.driver.find_element(By.ID, "run-box").is_displayed()
    time.sleep(0.5)
    assert playground_wish(urlsplit(second.driver.current_url).fragment) == wish
