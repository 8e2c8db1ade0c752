"""The Training tab in headless Chromium (dash_duo) inside the app of ``attnviz.dashboard.app.create_app``.

The store holds a series recorded by the real ``AttnvizCallback`` in a real ``transformers.Trainer`` (tiny GPT-2,
steps 0, 2, 4, 6) and two constructed series (``synthetic.write_series``): one whose head L0H1 collapses to a
one-hot previous-token head, one that stays put. Every number drawn is checked against numpy on what
``StoreReader`` returns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, graph, wait_figure
from dash.testing import errors as dash_errors
from dash.testing.wait import until
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from synthetic import write_series
from training_helpers import PROBE, gpt2_tokenizer, make_trainer

from attnviz.pipeline.store import StoreReader
from attnviz.pipeline.training.callback import AttnvizCallback

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]
STEPS = [0, 10, 20, 30]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("training")
    path = folder / "training.h5"
    make_trainer(folder, gpt2_tokenizer(), [AttnvizCallback(path, PROBE, every=2, series="tiny")], steps=6).train()
    collapse = []
    for strength in (0.0, 0.5, 0.9, 0.999):
        s = np.full((2, 2), 0.3)
        s[0, 1] = strength
        collapse.append(s)
    write_series(path, "collapse", STEPS, collapse)
    write_series(path, "stable", STEPS, [np.full((2, 2), 0.3)] * len(STEPS))
    return path


@pytest.fixture(scope="module")
def reader(store: Path) -> StoreReader:
    return StoreReader(store)


@pytest.fixture
def app(dash_duo, store: Path):
    from attnviz.dashboard.app import create_app

    dash_duo.start_server(create_app(store))
    dash_duo.driver.set_window_size(1500, 1300)
    return dash_duo


def open_series(dash_duo, fragment: str) -> None:
    dash_duo.driver.get(dash_duo.server_url + "/?tab=training#" + fragment)
    dash_duo.driver.refresh()  # a new fragment alone is not a page load
    dash_duo.wait_for_element("#training-metric-figure .js-plotly-plot", timeout=TIMEOUT)


def corpus_means(reader: StoreReader, runs: list[str], metric: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmean(reader.metrics(run, metric).astype(np.float64), axis=0) for run in runs])


def tiny_runs(reader: StoreReader) -> list[str]:
    return [f"tiny--step{step:08d}" for step in (0, 2, 4, 6)]


def alert_text(dash_duo) -> str:
    return dash_duo.find_element("#training-collapse").text


def test_figures_equal_the_stores_metrics_and_the_state_is_in_the_url(app, reader: StoreReader) -> None:
    open_series(app, "series=tiny&metric=mass_prev&view=layers")
    want = corpus_means(reader, tiny_runs(reader), "mass_prev")  # [S, L, H]

    def lines_match(fig: dict) -> bool:
        traces = [t for t in fig["data"] if t.get("meta")]
        if len(traces) != 4:
            return False
        for t in traces:
            layer, head = t["meta"]["layer"], t["meta"]["head"]
            np.testing.assert_allclose(array(t["x"]), [0, 2, 4, 6])
            np.testing.assert_allclose(array(t["y"]), want[:, layer, head], rtol=1e-5)
        return True

    wait_figure(app, "training-metric-figure", lines_match, "mass_prev per head, as stored")
    loss = wait_figure(app, "training-loss", lambda f: len(f["data"]) >= 2, "loss figure")
    losses = [reader.run_info(r).meta["series"]["loss"] for r in tiny_runs(reader)[1:]]
    np.testing.assert_allclose(array(loss["data"][1]["y"])[1:], losses, rtol=1e-6)
    assert "metric=mass_prev" in app.driver.execute_script("return window.location.hash")

    # the head x step map of another metric: the URL fragment follows the controls
    app.find_element("#training-view input[value='heatmap']").click()
    until(lambda: "view=heatmap" in app.driver.execute_script("return window.location.hash"), timeout=TIMEOUT)
    entropy = corpus_means(reader, tiny_runs(reader), "entropy")
    app.driver.get(app.server_url + "/?tab=training#series=tiny&metric=entropy&view=heatmap")
    app.driver.refresh()
    heat = wait_figure(app, "training-metric-figure",
                       lambda f: f["data"][0]["type"] == "heatmap" and "Entropy" in f["layout"]["title"]["text"],
                       "entropy heatmap")
    z = array(heat["data"][0]["z"]).reshape(4, 4)  # rows L0H0, L0H1, L1H0, L1H1; columns steps
    np.testing.assert_allclose(z, entropy.reshape(4, 4).T, rtol=1e-5)
    assert app.find_element("#training-series").text.startswith("tiny")


def test_collapse_alert_fires_on_a_collapsing_series_and_not_on_a_stable_one(app) -> None:
    open_series(app, "series=collapse&metric=entropy")
    until(lambda: "Entropy collapse in 1 head" in alert_text(app), timeout=TIMEOUT)
    text = alert_text(app)
    assert "L0H1" in text and "L1H0" not in text and "L0H0" not in text
    assert "alert-danger" in app.find_element("#training-collapse").get_attribute("class")
    timeline = wait_figure(app, "training-timeline", lambda f: f["data"], "label timeline")
    assert "L0H1" in timeline["data"][0]["y"]

    open_series(app, "series=stable&metric=entropy")
    until(lambda: alert_text(app).startswith("No entropy collapse"), timeout=TIMEOUT)
    assert "alert-success" in app.find_element("#training-collapse").get_attribute("class")


def click_timeline(dash_duo, step: int, head_row: int = 0) -> None:
    """A real mouse click on the label timeline at ``step`` (row ``head_row``)."""
    x, y = dash_duo.driver.execute_script("""
        const gd = document.querySelector('#training-timeline .js-plotly-plot');
        gd.scrollIntoView({block: 'center'});
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const fl = gd._fullLayout;
        return [r.left + fl.xaxis.l2p(arguments[0]), r.top + fl.yaxis.l2p(arguments[1])];
    """, step, head_row)
    action = ActionBuilder(dash_duo.driver)
    action.pointer_action.move_to_location(int(x), int(y)).click()
    action.perform()


def run_b_text(dash_duo) -> str:
    return dash_duo.driver.find_element(By.CSS_SELECTOR, "#corpus-run-b").text


def pick(dash_duo, step: int) -> None:
    """Click ``step`` on the timeline until the page says it is picked (the figures may still be redrawn under
    the pointer right after the page settles)."""
    for _ in range(10):
        click_timeline(dash_duo, step)
        try:
            until(lambda: f"step {step} picked" in dash_duo.find_element("#training-pick-text").text, timeout=3)
            return
        except dash_errors.TestingTimeoutError:
            continue
    raise AssertionError(f"step {step} was never picked: {dash_duo.find_element('#training-pick-text').text!r}")


def test_two_clicked_steps_open_the_corpus_comparison_of_their_checkpoints(app) -> None:
    open_series(app, "series=tiny&metric=entropy&view=layers")
    wait_figure(app, "training-timeline", lambda f: len(array(f["data"][0]["x"])) == 4, "timeline of 4 steps")
    pick(app, 2)
    click_timeline(app, 6, head_row=3)
    until(lambda: app.find_element("#tabs .tab--selected").text == "Corpus", timeout=TIMEOUT)
    until(lambda: app.find_element("#run-select").get_attribute("value") == "tiny--step00000002", timeout=TIMEOUT)
    until(lambda: "tiny--step00000006" in run_b_text(app), timeout=TIMEOUT)
    diff = wait_figure(app, "corpus-diff", lambda f: f["data"] and f["data"][0]["type"] == "heatmap", "A − B drawn")
    assert graph(app, "corpus-diff") is not None and diff["data"][0]["type"] == "heatmap"
    assert "tab=corpus" in app.driver.execute_script("return window.location.search")

    # back to the series: run A is the header's run already; steps 2 and 4 open their comparison
    app.find_element("#tabs .tab:nth-child(4)").click()
    until(lambda: app.find_element("#tabs .tab--selected").text == "Training", timeout=TIMEOUT)
    pick(app, 2)
    click_timeline(app, 4, head_row=1)
    until(lambda: app.find_element("#tabs .tab--selected").text == "Corpus", timeout=TIMEOUT)
    until(lambda: "tiny--step00000004" in run_b_text(app), timeout=TIMEOUT)
    assert app.find_element("#run-select").get_attribute("value") == "tiny--step00000002"
