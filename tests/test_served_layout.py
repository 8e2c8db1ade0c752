"""The layout served for a page's URL (``dashboard/served_layout.py``): it holds what the start-up callbacks would
answer for that URL (compared with the callbacks themselves, called as the browser calls them), the bare layout
where it cannot, and in the browser a page opened at an Example URL asks the server no callback, shows the store's
slice and still resolves a URL it goes back to.

In-process (Flask's test client) on the session's store of three tiny runs; the browser part against a live
``attnviz serve``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_helpers import TIMEOUT, array, settle, wait_figure
from callback_client import callbacks, find, response_props, sync_values
from dash.testing.wait import until
from dashboard_fixtures import BERT_RUN, GPT2_RUN, LiveServer
from selenium.webdriver.support.select import Select

from attnviz.dashboard.app import create_app
from attnviz.pipeline.store import StoreReader

HOST = "localhost"


def components(node: Any, out: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{id: props}`` of every component with a string id in a layout's JSON."""
    out = {} if out is None else out
    if isinstance(node, list):
        for child in node:
            components(child, out)
    elif isinstance(node, dict) and "props" in node:
        props = node["props"]
        if isinstance(props.get("id"), str):
            out[props["id"]] = props
        components(props.get("children"), out)
    return out


def served(client: Any, referrer: str | None) -> dict[str, dict[str, Any]]:
    headers = {"Referer": referrer} if referrer is not None else {}
    resp = client.get("/_dash-layout", headers=headers)
    assert resp.status_code == 200, resp.data[:300]
    return components(resp.get_json())


def answer(client: Any, cbs: list, output: str, values: dict[str, Any], store: str | None = None) -> dict:
    body = find(cbs, output).payload(values, store=store)
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code in (200, 204), resp.data[:300]
    return response_props(resp.data)


def assert_holds(layout: dict[str, dict[str, Any]], props: dict[str, dict[str, Any]]) -> None:
    for cid, values in props.items():
        for prop, value in values.items():
            assert layout[cid].get(prop) == value, f"{cid}.{prop}: layout {layout[cid].get(prop)!r} != {value!r}"


@pytest.fixture(scope="module")
def data_dir(dashboard_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(dashboard_store, folder / "demo.h5")
    shutil.copytree(dashboard_store.parent / f"{dashboard_store.name}.d", folder / "demo.h5.d")
    shutil.copy(folder / "demo.h5", folder / "second.h5")
    shutil.copytree(folder / "demo.h5.d", folder / "second.h5.d")
    return folder


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Any:
    return create_app(data_dir / "demo.h5").server.test_client()


@pytest.mark.parametrize("search", [
    f"?run={BERT_RUN}&example=2&layer=1&head=3&step=2",
    f"?run={GPT2_RUN}&example=1&layer=99&head=mean",  # clamped, with the URL's message in the alert
    "",  # no run named: the store's first run
    f"?run={BERT_RUN}&example=999",  # out of range: the message, no example
    f"?store=second.h5&run={BERT_RUN}&example=3",
])
def test_the_layout_holds_what_the_start_up_callbacks_answer(client: Any, search: str) -> None:
    cbs = callbacks(client.get("/_dash-dependencies").get_json())
    store = "second.h5" if "store=second.h5" in search else None
    layout = served(client, f"http://{HOST}/{search}")
    assert layout["layout-for"]["data"] == {"search": search, "store": store}

    synced = answer(client, cbs, "view-state.data", sync_values(search), store)
    assert synced["view-state"]["data"] is not None or "out of range" not in search
    assert_holds(layout, synced)
    state = synced["view-state"]["data"]
    selection = {"run": state["run"], "example": state["example"]}
    assert layout["example-id"]["data"] == selection
    for output in ("example-text.children", "example-window-label.children", "neighbours-token.options"):
        assert_holds(layout, answer(client, cbs, output, {"example-id.data": selection}, store))
    neighbours = answer(client, cbs, "neighbours-results.children", {
        "neighbours-token.value": layout["neighbours-token"]["value"], "neighbours-k.value": "10",
        "view-state.data": state}, store)
    assert_holds(layout, neighbours)
    menu = answer(client, cbs, "store-select.options", {"store-menu-request.data": {"pathname": "/"}}, store)
    assert_holds(layout, {"store-path": menu["store-path"], "store-select": {
        "options": menu["store-select"]["options"], **({"value": menu["store-select"]["value"]}
                                                       if "value" in menu["store-select"] else {})}})
    assert layout["store-select"]["value"] == (store or "demo.h5")


def test_a_layout_with_the_examples_data_shows_the_stored_selection(client: Any, data_dir: Path) -> None:
    layout = served(client, f"http://{HOST}/?store=second.h5&run={BERT_RUN}&example=3&layer=1&head=mean")
    state = layout["view-state"]["data"]
    assert {k: state[k] for k in ("run", "example", "layer", "head", "kind", "attn")} == {
        "run": BERT_RUN, "example": 3, "layer": 1, "head": None, "kind": "self", "attn": "raw"}
    reader = StoreReader(data_dir / "second.h5")
    assert layout["layer-select"]["options"] == [{"label": f"layer {i}", "value": str(i)}
                                                 for i in range(reader.attention(BERT_RUN, 3).shape[0])]
    assert layout["store-path"]["children"] == str((data_dir / "second.h5").resolve())


@pytest.mark.parametrize("referrer", [
    None,  # no Referer (a privacy setting): the callbacks resolve the URL as before
    f"http://elsewhere.example/?run={BERT_RUN}",  # another origin
    f"http://{HOST}/other/?run={BERT_RUN}",  # not this app's page
    f"http://{HOST}/?tab=corpus&run={BERT_RUN}",  # another tab: its pane comes when the tab opens
    f"http://{HOST}/?store=..%2Fsecret.h5&run={BERT_RUN}",  # a store outside the data directory
    f"http://{HOST}/?store=missing.h5",
])
def test_the_bare_layout_where_it_cannot_be_filled(client: Any, referrer: str | None) -> None:
    layout = served(client, referrer)
    assert layout["view-state"].get("data") is None and layout["layout-for"].get("data") is None
    assert layout["layer-select"]["options"] == [] and layout["example-id"].get("data") is None


# ---- in the browser -----------------------------------------------------------------------------------------------

_CALLBACK_REQUESTS_JS = ("return performance.getEntriesByType('resource')"
                         ".filter(e => e.name.indexOf('_dash-update-component') >= 0).length;")


@pytest.mark.browser
@pytest.mark.usefixtures("headless")
def test_a_page_opened_at_an_example_url_asks_no_callback(dash_duo, live_server: LiveServer,
                                                          reader: StoreReader) -> None:
    dash_duo.server_url = live_server.url
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.driver.get(f"{live_server.url}/?run={BERT_RUN}&example=2&layer=1&head=3")
    expected = reader.attention(BERT_RUN, 2, 1, 3)
    wait_figure(dash_duo, "attn-matrix", lambda f: np.array_equal(array(f["data"][0]["z"]), expected), "L1 H3")
    settle(dash_duo.driver)
    assert dash_duo.driver.execute_script(_CALLBACK_REQUESTS_JS) == 0
    assert Select(dash_duo.find_element("#head-select")).first_selected_option.get_attribute("value") == "3"
    assert dash_duo.find_element("#example-text").text.strip()  # the example's text came with the page

    # another head, then back: the URL the page was opened at is resolved again (by the server, as any URL)
    Select(dash_duo.find_element("#head-select")).select_by_value("0")
    wait_figure(dash_duo, "attn-matrix",
                lambda f: np.array_equal(array(f["data"][0]["z"]), reader.attention(BERT_RUN, 2, 1, 0)), "H0")
    until(lambda: "head=0" in dash_duo.driver.current_url, timeout=TIMEOUT)
    dash_duo.driver.back()
    until(lambda: "head=3" in dash_duo.driver.current_url, timeout=TIMEOUT)
    wait_figure(dash_duo, "attn-matrix", lambda f: np.array_equal(array(f["data"][0]["z"]), expected), "back to H3")
    until(lambda: Select(dash_duo.find_element("#head-select")).first_selected_option.get_attribute("value") == "3",
          timeout=TIMEOUT)
