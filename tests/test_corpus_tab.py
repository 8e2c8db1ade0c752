"""The Corpus tab in headless Chromium (dash_duo) inside the app of ``attnviz.dashboard.app.create_app``.

Run with ``pytest --headless`` (this module also forces it). The store holds constructed runs written with
``synthetic.synthetic_examples`` (tests/synthetic.py): pair-a and pair-b share their inputs and differ in one head
(layer 1, head 2); narrow has the same inputs with 3 heads per layer. Every number on screen is checked
against numpy on what ``StoreReader`` returns.
"""

from __future__ import annotations

import csv
import json
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, message, wait_figure
from dash.testing.wait import until
from selenium.common.exceptions import ElementClickInterceptedException
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta

from attnviz.dashboard.urlstate import parse_state
from attnviz.pipeline.precompute.analyze import analyze
from attnviz.pipeline.store import StoreReader, StoreWriter

pytestmark = pytest.mark.browser
PATTERNS_A = [["previous", "broad", "heterogeneous", "first"],
              ["sep", "heterogeneous", "broad", "heterogeneous"]]
PATTERNS_B = [["previous", "broad", "heterogeneous", "first"],
              ["sep", "heterogeneous", "previous", "heterogeneous"]]
NARROW = [["previous", "broad", "heterogeneous"], ["sep", "heterogeneous", "broad"]]
N = 60


@pytest.fixture(autouse=True, scope="module")
def _headless(pytestconfig: pytest.Config) -> None:
    """dash_duo reads --headless from the command line; there is no display here, so force it."""
    pytestconfig.option.headless = True


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.h5"
    writer = StoreWriter(path)
    for run, patterns in (("pair-a", PATTERNS_A), ("pair-b", PATTERNS_B), ("narrow", NARROW)):
        writer.begin_run(run, synthetic_meta(2, len(patterns[0]), N), fingerprint_keys=[])
        for start in (0, N // 2):
            write_shard(writer, run, start, synthetic_examples(patterns, N // 2, start=start, seed=1))
    for run in ("pair-a", "pair-b", "narrow"):
        analyze(path, run, max_offset=4, workers=0)
    return path


@pytest.fixture(scope="module")
def reader(store: Path) -> StoreReader:
    return StoreReader(store)


@pytest.fixture
def page(dash_duo, store: Path):
    from attnviz.dashboard.app import create_app
    from attnviz.dashboard.corpus import data as corpus_data

    corpus_data.clear_caches()
    dash_duo.start_server(create_app(store))
    dash_duo.driver.set_window_size(1500, 1200)
    dash_duo.driver.get(dash_duo.server_url + "/?tab=corpus&run=pair-a")
    dash_duo.wait_for_element("#corpus-heatmap-a .js-plotly-plot", timeout=TIMEOUT)
    return dash_duo


# ---- helpers ---------------------------------------------------------------------------------------------



def z_close(expected: np.ndarray):
    def check(fig: dict) -> bool:
        z = array(fig["data"][0]["z"])
        return z.shape == expected.shape and np.allclose(z, expected, rtol=1e-5, atol=1e-6, equal_nan=True)

    return check


def nan_agg(values: np.ndarray, how: str) -> np.ndarray:
    fn = {"mean": np.nanmean, "median": np.nanmedian, "std": np.nanstd,
          "p90": lambda x, axis: np.nanpercentile(x, 90, axis=axis)}[how]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(values, axis=0).astype(np.float32)


def field_dropdown(dash_duo, name: str):
    cid = json.dumps({"field": name, "type": "corpus-field"}, separators=(",", ":"))
    return dash_duo.driver.execute_script("return document.getElementById(arguments[0])", cid)


def click_radio(dash_duo, radio_id: str, value: str) -> None:
    dash_duo.driver.find_element(By.CSS_SELECTOR, f"#{radio_id} input[value='{value}']").click()


def click_cell(dash_duo, graph_id: str, layer: int, head: int) -> None:
    """A real mouse click on cell (layer, head) of a heatmap."""
    x, y = dash_duo.driver.execute_script("""
        const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
        gd.scrollIntoView({block: 'center'});
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const fl = gd._fullLayout;
        return [r.left + fl.xaxis.l2p(arguments[2]), r.top + fl.yaxis.l2p(arguments[1])];
    """, graph_id, layer, head)
    action = ActionBuilder(dash_duo.driver)
    action.pointer_action.move_to_location(int(x), int(y)).click()
    action.perform()


def click(dash_duo, element) -> None:
    """Scroll an element to the middle of the window, then click it (retrying while figures still render
    and move the page under the pointer)."""
    for _ in range(20):
        dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        try:
            element.click()
            return
        except ElementClickInterceptedException as exc:
            print(f"click intercepted, retrying: {exc.msg.splitlines()[0]}")
            time.sleep(0.5)
    # Still moving after 10 s (figures above it keep resizing on a busy machine): click it from script, which
    # fires the same click event on the element.
    dash_duo.driver.execute_script("arguments[0].click();", element)


def status(dash_duo) -> str:
    return dash_duo.find_element("#corpus-status").text


# ---- tests -----------------------------------------------------------------------------------------------


def test_metric_aggregate_run_b_and_filters_update_the_heatmaps(page, reader: StoreReader) -> None:
    a = {m: reader.metrics("pair-a", m) for m in ("entropy", "mass_prev")}
    b = {m: reader.metrics("pair-b", m) for m in ("entropy", "mass_prev")}
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(a["entropy"], "mean")), "A entropy mean")

    page.select_dcc_dropdown("#corpus-metric", value="Mass on previous (weight)")
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(a["mass_prev"], "mean")), "A mass_prev mean")
    click_radio(page, "corpus-agg", "median")
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(a["mass_prev"], "median")), "A mass_prev median")

    page.select_dcc_dropdown("#corpus-run-b", value="pair-b")
    za, zb = nan_agg(a["mass_prev"], "median"), nan_agg(b["mass_prev"], "median")
    wait_figure(page, "corpus-heatmap-b", z_close(zb), "B mass_prev median")
    diff = wait_figure(page, "corpus-diff", z_close(za - zb), "A - B")
    assert diff["data"][0]["z"] is not None and (za - zb)[1, 2] < 0
    marks = diff["data"][1]
    assert array(marks["x"]).tolist() == [2.0] and array(marks["y"]).tolist() == [1.0]  # the changed head

    table = reader.examples("pair-a")
    alpha = np.array([m["source"] == "alpha" for m in table.meta])
    page.select_dcc_dropdown(field_dropdown(page, "source"), value="alpha")
    page.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(a["mass_prev"][alpha], "median")), "A source=alpha")
    wait_figure(page, "corpus-heatmap-b", z_close(nan_agg(b["mass_prev"][alpha], "median")), "B source=alpha")

    click_radio(page, "corpus-truncated", "no")
    keep = alpha & ~table.truncated
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(a["mass_prev"][keep], "median")), "A not truncated")
    click_radio(page, "corpus-agg", "p90")
    wait_figure(page, "corpus-heatmap-b", z_close(nan_agg(b["mass_prev"][keep], "p90")), "B p90")
    until(lambda: f"{keep.sum()} of {N} examples" in status(page), timeout=TIMEOUT)

    # the per-layer profile shows both runs: mean over heads per example, then over the examples
    prof = wait_figure(page, "corpus-profile", lambda f: len(f["data"]) == 6, "A and B profiles")
    np.testing.assert_allclose(array(prof["data"][2]["y"]),
                               np.nanmean(a["mass_prev"][keep], axis=2).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(array(prof["data"][5]["y"]),
                               np.nanmean(b["mass_prev"][keep], axis=2).mean(axis=0), rtol=1e-5)


def test_cell_click_drills_down_and_example_link_opens_example_tab(page, reader: StoreReader) -> None:
    entropy = reader.metrics("pair-a", "entropy")
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(entropy, "mean")), "A entropy mean")
    page.select_dcc_dropdown("#corpus-run-b", value="pair-b")
    wait_figure(page, "corpus-heatmap-b", lambda f: f["data"][0]["type"] == "heatmap", "B heatmap")

    click_cell(page, "corpus-heatmap-a", 1, 2)
    until(lambda: "Layer 1, head 2" in page.find_element("#corpus-head-title").text, timeout=TIMEOUT)
    dist = wait_figure(page, "corpus-head-dist", lambda f: len(f["data"]) == 2, "A and B histograms")
    assert dist["data"][0]["name"] == f"A: pair-a (n={N})"
    rel = wait_figure(page, "corpus-relpos", lambda f: len(f["data"]) == 2, "relative position A and B")
    assert array(rel["data"][1]["y"]).argmax() == 3  # B's head (1, 2) attends to the previous token: -1

    top = int(np.argmax(entropy[:, 1, 2]))
    links = page.driver.find_elements(By.CSS_SELECTOR, "#corpus-head-examples a")
    assert len(links) == 20
    assert links[0].text == f"#{top}"
    click(page, links[0])
    until(lambda: parse_state(urlsplit(page.driver.current_url).query).tab == "example", timeout=TIMEOUT)
    state = parse_state(urlsplit(page.driver.current_url).query)
    assert (state.run, state.example, state.layer, state.head, state.kind) == ("pair-a", top, 1, 2, "self")
    until(lambda: page.find_element("#tabs .tab--selected").text == "Example", timeout=TIMEOUT)


def test_csv_export_downloads_the_head_table(page, reader: StoreReader) -> None:
    entropy = reader.metrics("pair-a", "entropy")
    page.wait_for_element("#corpus-head-table .ag-row", timeout=TIMEOUT)
    click(page, page.find_element("#corpus-export"))
    target = Path(page.download_path) / "attnviz-heads.csv"
    until(lambda: target.exists() and target.stat().st_size > 0, timeout=TIMEOUT)
    time.sleep(0.2)
    with open(target, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    # every column has a readable name: the metrics' labels and units, not their internal names
    expected = {"Layer", "Head", "Pattern", "A Entropy (mean)", "A Entropy (p90)", "Mean Mass on previous (weight)"}
    assert expected <= set(rows[0])
    assert not any("_" in name for name in rows[0]), sorted(rows[0])
    got = np.array([[float(r["A Entropy (mean)"]) for r in rows if int(r["Layer"]) == layer]
                    for layer in (0, 1)])
    np.testing.assert_allclose(got, nan_agg(entropy, "mean"), rtol=1e-4)
    patterns = {(int(r["Layer"]), int(r["Head"])): r["Pattern"] for r in rows}
    assert patterns[(0, 0)] == "previous token" and patterns[(0, 3)] == "first token / [CLS] sink"


def test_different_head_grids_say_why_there_is_no_a_minus_b_and_compare_per_layer(page, reader: StoreReader) -> None:
    page.select_dcc_dropdown("#corpus-run-b", value="narrow")
    a = np.nanmean(reader.metrics("pair-a", "entropy"), axis=2)
    b = np.nanmean(reader.metrics("narrow", "entropy"), axis=2)
    fig = wait_figure(page, "corpus-diff", lambda f: "do not correspond" in message(f), "no A − B per head")
    assert not fig["data"] and "per-layer profile" in message(fig)
    prof = wait_figure(page, "corpus-profile", lambda f: len(f["data"]) == 6, "A and B profiles")
    np.testing.assert_allclose(array(prof["data"][2]["y"]), a.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(array(prof["data"][5]["y"]), b.mean(axis=0), rtol=1e-5)
    sim = wait_figure(page, "corpus-similarity-b", lambda f: f["data"][0]["type"] == "heatmap",
                      "B similarity")
    assert len(sim["data"][0]["x"]) == 6
    patterns = wait_figure(page, "corpus-patterns-a", lambda f: f["data"][0]["type"] == "heatmap", "patterns")
    assert patterns["data"][0]["customdata"][0][0] == "previous token"


# ---- what the browser redraws without the server --------------------------------------------------------

_SHAPES_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
return gd && gd.layout ? JSON.stringify(gd.layout.shapes || []) : null;
"""


@pytest.fixture
def counted_page(dash_duo, store: Path):
    """The page, with a count of the server's callback requests by the output they ask for."""
    from flask import request

    from attnviz.dashboard.app import create_app
    from attnviz.dashboard.corpus import data as corpus_data

    corpus_data.clear_caches()
    app = create_app(store)
    asked: list[str] = []

    @app.server.before_request
    def _count() -> None:
        if request.method == "POST" and request.path.endswith("/_dash-update-component"):
            asked.append(str((request.get_json(silent=True) or {}).get("output", "")))

    dash_duo.start_server(app)
    dash_duo.driver.set_window_size(1500, 1200)
    dash_duo.driver.get(dash_duo.server_url + "/?tab=corpus&run=pair-a")
    dash_duo.wait_for_element("#corpus-heatmap-a .js-plotly-plot", timeout=TIMEOUT)
    return dash_duo, asked


def heatmap_requests(asked: list[str]) -> int:
    return sum("corpus-heatmap-a.figure" in key for key in asked)


def test_metric_and_aggregate_switches_are_drawn_in_the_browser_from_the_servers_numbers(
        counted_page, reader: StoreReader) -> None:
    from attnviz.dashboard.corpus.figures import _selected_shape

    page, asked = counted_page
    a = {m: reader.metrics("pair-a", m) for m in ("entropy", "mass_prev")}
    b = {m: reader.metrics("pair-b", m) for m in ("entropy", "mass_prev")}
    page.select_dcc_dropdown("#corpus-run-b", value="pair-b")
    wait_figure(page, "corpus-heatmap-b", z_close(nan_agg(b["entropy"], "mean")), "B entropy mean")
    until(lambda: page.driver.execute_script("return !document.querySelector('[data-dash-is-loading=\"true\"]')"),
          timeout=TIMEOUT)
    time.sleep(0.5)

    # a new aggregate: no request; A, B and A − B redrawn from what the browser holds, equal to numpy's
    before = heatmap_requests(asked)
    click_radio(page, "corpus-agg", "p90")
    za, zb = nan_agg(a["entropy"], "p90"), nan_agg(b["entropy"], "p90")
    wait_figure(page, "corpus-heatmap-a", z_close(za), "A entropy p90 (browser)")
    wait_figure(page, "corpus-heatmap-b", z_close(zb), "B entropy p90 (browser)")
    wait_figure(page, "corpus-diff", z_close(za - zb), "A - B p90 (browser)")
    until(lambda: any(c.get("headerName") == "B Entropy (p90)" for c in page.driver.execute_script(
        "return document.querySelector('#corpus-head-table') && "
        "[...document.querySelectorAll('#corpus-head-table .ag-header-cell')].map("
        "c => ({headerName: c.innerText.trim()}))") or []), timeout=TIMEOUT)
    assert heatmap_requests(asked) == before

    # a metric the browser lacks is asked for once; switching back to one it holds asks nothing
    page.select_dcc_dropdown("#corpus-metric", value="Mass on previous (weight)")
    page.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait_figure(page, "corpus-heatmap-a", z_close(nan_agg(a["mass_prev"], "p90")), "A mass_prev p90")
    until(lambda: heatmap_requests(asked) == before + 1, timeout=TIMEOUT)
    # (as the dropdown sets it: its first option sits under its search box once the list has scrolled)
    page.driver.execute_script("window.dash_clientside.set_props('corpus-metric', {value: 'entropy'})")
    wait_figure(page, "corpus-heatmap-a", z_close(za), "A entropy p90 again (browser)")
    click_radio(page, "corpus-agg", "median")
    wait_figure(page, "corpus-heatmap-b", z_close(nan_agg(b["entropy"], "median")), "B entropy median (browser)")
    time.sleep(0.5)
    assert heatmap_requests(asked) == before + 1

    # a picked head is outlined by the browser exactly as the server outlines it
    click_cell(page, "corpus-heatmap-a", 1, 2)
    until(lambda: "Layer 1, head 2" in page.find_element("#corpus-head-title").text, timeout=TIMEOUT)
    expected = _selected_shape((1, 2), 2, 4)
    for graph_id in ("corpus-heatmap-a", "corpus-heatmap-b", "corpus-diff", "corpus-patterns-a"):
        until(lambda graph_id=graph_id: json.loads(page.driver.execute_script(_SHAPES_JS, graph_id) or "[]")
              == expected, timeout=TIMEOUT, msg=f"{graph_id}: outline of head (1, 2)")
    assert heatmap_requests(asked) == before + 1
