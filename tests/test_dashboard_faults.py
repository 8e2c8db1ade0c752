"""Dashboard bad input and faults: every URL parameter malformed or out of range, crafted callback bodies, and a
store that disappears, is replaced (by another store, by garbage) or loses a run while the app runs.

Each case asserts a clear one-line message in the page (the alert, the example payload's error, or a panel's
message) and that the server keeps serving real data afterwards. The Example tab's attention views are drawn in the
page from one example's data (the ``example-payload`` callback), so "the views show the store's data" means that
payload holds exactly the stored attention. Callbacks are called through Flask's test client with the body the
browser sends (``tests/callback_client.py``); a browser test drives the same faults through Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from callback_client import (
    PAYLOAD,
    PAYLOAD_KEY,
    URL_REQUEST,
    Callback,
    callbacks,
    find,
    message_of,
    payload_key,
    response_props,
    sync_values,
)
from dashboard_fixtures import (
    BERT_RUN,
    GPT2_RUN,
    start_live_server,
)

from attnviz.dashboard import data
from attnviz.dashboard.app import create_app
from attnviz.dashboard.example.payload import decode
from attnviz.dashboard.figjson import decode as decode_figure_array
from attnviz.dashboard.observability import APP_ALERT
from attnviz.pipeline.store import StoreReader, StoreWriter

TIMEOUT = 30


# ---- helpers ---------------------------------------------------------------------------------------------------


class Page:
    """One app and its test client, with the calls a page makes."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.app = create_app(store)
        self.client = self.app.server.test_client()
        self.cbs = callbacks(self.client.get("/_dash-dependencies").json)
        self.sync = find(self.cbs, "view-state.data")
        self.payload = find(self.cbs, PAYLOAD)

    def post(self, cb: Callback, values: dict, changed: list[str] | None = None, store: str | None = None):
        return self.client.post("/_dash-update-component", json=cb.payload(values, changed, store))

    def open(self, search: str, store: str | None = None) -> tuple[dict | None, str, bool]:
        """Open the page at ``search``: (view-state sent to the views, alert text, alert shown)."""
        resp = self.post(self.sync, sync_values(search), [URL_REQUEST], store)
        assert resp.status_code == 200, resp.data[:300]
        props = response_props(resp.data)
        alert = props.get("state-alert", {})
        return props.get("view-state", {}).get("data"), str(alert.get("children") or ""), bool(alert.get("is_open"))

    def draw(self, output: str, view_state: object) -> dict:
        """The first figure (or children) a panel callback returns for ``view_state`` (sent as its input: the
        page's ``metrics-state``/``debug-state``/``embeddings-state``, the open panel's part of the view state)."""
        cb = find(self.cbs, output)
        first = f"{cb.inputs[0]['id']}.{cb.inputs[0]['property']}"
        resp = self.post(cb, {first: view_state})
        assert resp.status_code == 200, resp.data[:300]
        props = response_props(resp.data)
        cid, prop = output.rsplit(".", 1)
        return props[cid][prop]

    def payload_of(self, view_state: dict) -> dict:
        """The example data the page asks for to draw ``view_state`` (its attention views)."""
        return self.ask(payload_key(view_state))

    def ask(self, key: object) -> dict:
        """The ``example-payload`` answer for a payload ``key``."""
        resp = self.post(self.payload, {PAYLOAD_KEY: key})
        assert resp.status_code == 200, resp.data[:300]
        return response_props(resp.data)["example-payload"]["data"]

    def serves(self, run: str = BERT_RUN, example: int = 1, layer: int = 1, head: int = 2) -> None:
        """The app still serves the page, its health, and exactly the stored attention of a valid selection."""
        assert self.client.get("/").status_code == 200
        assert self.client.get("/healthz").status_code == 200
        state, alert, shown = self.open(f"?run={run}&example={example}&layer={layer}&head={head}")
        assert not shown, alert
        assert (state["run"], state["example"], state["layer"], state["head"]) == (run, example, layer, head)
        payload = self.payload_of(state)
        assert payload["error"] is None, payload["error"]
        np.testing.assert_array_equal(attention_of(payload), StoreReader(self.store).attention(run, example))


def attention_of(payload: dict) -> np.ndarray:
    """A payload's attention as float32 [L, H, Tq, Tk] (the store's float16 values, exact)."""
    return decode(payload["attention"]).astype(np.float32)


def copy_store(src: Path, folder: Path) -> Path:
    """A private copy of a store (index and shard folder) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    shutil.copy2(src, dst)
    shutil.copytree(f"{src}.d", f"{dst}.d")
    return dst


@pytest.fixture(scope="module")
def page(dashboard_store: Path) -> Page:
    return Page(dashboard_store)


@pytest.fixture
def own_page(dashboard_store: Path, tmp_path: Path) -> Page:
    """A page on a private copy of the store (the test may break it)."""
    return Page(copy_store(dashboard_store, tmp_path / "data"))


# ---- URL parameters: one case each ----------------------------------------------------------------------------

HUGE = "9" * 40
URL_CASES = [
    # (query string, text the alert must contain)
    ("run=nope&example=0", "run 'nope' is not in this store"),
    ("run=" + "r" * 5000, "is not in this store"),
    ("run=%E3%83%A9%E3%83%B3%F0%9F%98%80", "run 'ラン😀' is not in this store"),
    ("run=..%2F..%2Fetc%2Fpasswd", "run '../../etc/passwd' is not in this store"),
    ("run=%00", "is not in this store"),
    (f"run={BERT_RUN}&example=-1", "example -1 is negative"),
    (f"run={BERT_RUN}&example=abc", "example 'abc' is not a whole number"),
    (f"run={BERT_RUN}&example=1.5", "example '1.5' is not a whole number"),
    (f"run={BERT_RUN}&example={HUGE}", f"example {HUGE} is out of range"),
    (f"run={BERT_RUN}&example=%D9%A1%D9%A2", "example 12 is out of range"),  # Arabic-Indic digits "١٢" = 12
    (f"run={BERT_RUN}&layer=-3", "layer -3 is negative"),
    (f"run={BERT_RUN}&layer=x", "layer 'x' is not a whole number"),
    (f"run={BERT_RUN}&layer={HUGE}", f"layer {HUGE} is out of range (0..1): showing layer 1"),
    (f"run={BERT_RUN}&head=-1", "head -1 is negative"),
    (f"run={BERT_RUN}&head=NaN", "head 'NaN' is not a whole number"),
    (f"run={BERT_RUN}&head=999", "head 999 is out of range (0..3): showing head 3"),
    (f"run={BERT_RUN}&step=-2", "step -2 is negative"),
    (f"run={BERT_RUN}&step=1e9", "step '1e9' is not a whole number"),
    (f"run={BERT_RUN}&step={HUGE}", "is past the last token"),
    (f"run={BERT_RUN}&kind=bogus", "unknown attention kind 'bogus'"),
    (f"run={BERT_RUN}&kind=cross", "has no cross-attention"),
    (f"run={GPT2_RUN}&kind=decoder", "has no decoder self-attention"),
    ("tab=admin", "unknown tab 'admin'"),
    ("tab=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "unknown tab '<script>alert(1)</script>'"),
    (f"run={BERT_RUN}&attn=softmax", "unknown attn mode 'softmax'"),
    (f"run={BERT_RUN}&example=1&example=zz", None),  # repeated key: the first one counts, no message
    ("%%%&&&===&layer=%ZZ", "layer '%ZZ' is not a whole number"),
    ("layer=" + "7" * 100_000, "is not a whole number"),  # Python refuses int() of > 4,300 digits
]


@pytest.mark.parametrize(("query", "expected"), URL_CASES, ids=[f"url{i}" for i in range(len(URL_CASES))])
def test_bad_url_parameter_shows_a_message_and_the_server_keeps_serving(page: Page, query: str,
                                                                        expected: str | None) -> None:
    state, alert, shown = page.open("?" + query)
    if expected is None:
        assert not shown and state["example"] == 1
    else:
        assert shown and expected in alert, alert[:300]
        assert "Traceback" not in alert and "\n" not in alert
    assert state is not None  # the page still shows something: the fallback selection
    payload = page.payload_of(state)  # the views draw the fallback, or say why they cannot
    if payload["error"]:
        assert "out of range" in payload["error"] or "has no" in payload["error"], payload["error"]
        assert "Traceback" not in payload["error"] and "\n" not in payload["error"]
    else:
        assert attention_of(payload).shape == (payload["n_layers"], payload["n_heads"], len(payload["q_tokens"]),
                                               len(payload["k_tokens"]))
    page.serves()


def test_out_of_range_example_reaches_every_view_as_a_message(page: Page) -> None:
    state, alert, _ = page.open(f"?run={BERT_RUN}&example=500")
    assert "example 500 is out of range for run" in alert
    payload = page.payload_of(state)  # the matrix, head, model and time-step views show its error
    assert "example 500 is out of range for run" in payload["error"] and "attention" not in payload
    for output in ("debug-view.figure", "embeddings-view.figure", "norms-view.figure"):
        assert "out of range" in message_of(page.draw(output, state)), output
    metrics = page.draw("metrics-panel.children", state)
    assert "out of range" in json.dumps(metrics)
    page.serves()


# ---- crafted callback bodies -----------------------------------------------------------------------------------

REFUSED = "refused"  #: a 400 with one line (see tests/test_security.py for the log side)
#: (payload key, text of the payload's error: None for drawn data) -- the page computes the key from its view state
CRAFTED_KEYS = [
    ({"run": BERT_RUN, "example": "abc"}, None),  # coerced back to a valid selection
    ({"run": BERT_RUN, "layer": -5, "head": "x", "step": None}, None),
    ({"run": BERT_RUN, "detail": "layer", "layer": 10**9, "step": -4}, None),  # one layer, clamped to the run
    ({"run": BERT_RUN, "detail": "everything", "attn": "rollout"}, None),  # an unknown detail: all layers
    ({"run": BERT_RUN, "example": 10**30}, "out of range"),
    ({"run": "../../etc/passwd"}, "is not in"),
    ({"run": BERT_RUN, "kind": "cross"}, "no 'cross' attention"),
    ({}, None),  # nothing named: the defaults, which name no run
    ([1, 2, 3], REFUSED),  # not an object: the page never sends one, a client crafted it
    ("a string", REFUSED),
    (12345, REFUSED),
]


@pytest.mark.parametrize(("key", "expected"), CRAFTED_KEYS, ids=[f"key{i}" for i in range(len(CRAFTED_KEYS))])
def test_crafted_payload_key_gives_a_message_not_a_500(page: Page, key: object, expected: str | None) -> None:
    resp = page.post(page.payload, {PAYLOAD_KEY: key})
    if expected == REFUSED:
        assert resp.status_code == 400 and "example key must be an object" in resp.json["error"], resp.data[:300]
        page.serves()
        return
    assert resp.status_code == 200, resp.data[:300]
    props = response_props(resp.data)
    assert not props.get(APP_ALERT, {}).get("is_open"), props.get(APP_ALERT)
    payload = props["example-payload"]["data"]
    assert payload["key"] == key  # the page matches an answer to its question by the key
    if expected is None and key:
        assert payload["error"] is None, payload["error"]
        attention = attention_of(payload)
        expected_data = StoreReader(page.store).attention(payload["run"], payload["example"], kind=payload["kind"])
        if payload["detail"] == "layer":
            assert payload["layers"] == [expected_data.shape[0] - 1] and payload["step"] == 0
            np.testing.assert_array_equal(attention, expected_data[-1:])
        else:
            np.testing.assert_array_equal(attention, expected_data)
        if payload["key"].get("attn") == "rollout":
            assert decode(payload["rollout"]).shape == (expected_data.shape[0], *expected_data.shape[2:])
    elif expected is None:
        assert payload["error"] and "\n" not in payload["error"]
    else:
        assert expected in payload["error"] and "Traceback" not in payload["error"], payload["error"]
        assert "attention" not in payload
    page.serves()


CRAFTED_VIEW_STATES = [
    ({"run": BERT_RUN, "example": "abc"}, None),
    ({"run": BERT_RUN, "layer": -5, "head": "x", "step": None}, None),
    ({"run": BERT_RUN, "example": 10**30}, "out of range"),
    ({"run": "../../etc/passwd"}, "is not in"),
    ([1, 2, 3], REFUSED),
    ("a string", REFUSED),
    (12345, REFUSED),
]


@pytest.mark.parametrize(("view_state", "expected"), CRAFTED_VIEW_STATES,
                         ids=[f"state{i}" for i in range(len(CRAFTED_VIEW_STATES))])
@pytest.mark.parametrize("output", ["metrics-panel.children", "debug-view.figure", "embeddings-view.figure"])
def test_crafted_panel_state_gives_a_message_not_a_500(page: Page, output: str, view_state: object,
                                                       expected: str | None) -> None:
    """The panels' inputs (``metrics-state`` etc., a copy of the view state the page makes while a panel is
    open) crafted: a message in the panel, or a 400 for a value that is not an object."""
    cb = find(page.cbs, output)
    first = f"{cb.inputs[0]['id']}.{cb.inputs[0]['property']}"
    resp = page.post(cb, {first: view_state})
    if expected == REFUSED:
        assert resp.status_code == 400 and "view state must be an object" in resp.json["error"], resp.data[:300]
        page.serves()
        return
    assert resp.status_code == 200, resp.data[:300]
    props = response_props(resp.data)
    assert not props.get(APP_ALERT, {}).get("is_open"), props.get(APP_ALERT)
    cid, prop = output.rsplit(".", 1)
    shown = props[cid][prop]
    text = message_of(shown) if prop == "figure" else json.dumps(shown)
    if expected is None:
        assert "Traceback" not in text and "could not" not in text, text[:300]
        if prop == "figure":
            assert text == "" and shown["data"], text
    else:
        assert expected in text and "Traceback" not in text, text[:300]
    page.serves()


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"inputs": []}', b'{"output": 3, "inputs": {}}',
                                  b'{"output": "example-payload.data", "inputs": [], "state": "x"}'])
def test_malformed_callback_body_is_a_400_with_one_line(page: Page, body: bytes) -> None:
    resp = page.client.post("/_dash-update-component", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert "not a Dash callback request" in resp.json["error"]
    page.serves()


def test_cross_site_simple_post_is_refused(page: Page) -> None:
    """A page on another site can POST ``text/plain`` without a CORS preflight (and the browser would add the
    user's basic-auth credentials): a valid callback body sent that way must not run the callback."""
    body = json.dumps(page.payload.payload({PAYLOAD_KEY: {"run": BERT_RUN, "example": 1}}))
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        resp = page.client.post("/_dash-update-component", data=body, content_type=content_type)
        assert resp.status_code == 400 and b"example-payload" not in resp.data and b"bdata" not in resp.data, \
            content_type
    page.serves()


def test_oversized_callback_body_is_refused(page: Page) -> None:
    payload = page.sync.payload(sync_values("?run=" + "x" * (5 << 20)), [URL_REQUEST])
    resp = page.client.post("/_dash-update-component", json=payload)
    assert resp.status_code == 413
    page.serves()


def test_unknown_callback_output_is_not_a_500(page: Page) -> None:
    payload = page.payload.payload({PAYLOAD_KEY: None})
    payload["output"] = "no-such-graph.figure"
    resp = page.client.post("/_dash-update-component", json=payload)
    assert resp.status_code == 400 and "unknown callback" in resp.json["error"], resp.status_code
    page.serves()


# ---- the store changes under the running app -------------------------------------------------------------------


def test_store_renamed_away_then_back(own_page: Page) -> None:
    page = own_page
    state, _, _ = page.open(f"?run={BERT_RUN}&example=2")
    assert page.payload_of(state)["error"] is None  # shard opened and cached
    moved = page.store.with_name("moved.h5")
    os.replace(page.store, moved)

    _, alert, shown = page.open(f"?run={BERT_RUN}&example=2")
    assert shown and "does not exist (moved or deleted?)" in alert
    assert "does not exist" in page.payload_of(state)["error"]
    health = page.client.get("/healthz")
    assert health.status_code == 503 and "does not exist" in health.json["reason"]
    assert page.client.get("/").status_code == 200

    os.replace(moved, page.store)
    page.serves()


def test_store_replaced_by_garbage_then_restored(own_page: Page) -> None:
    page = own_page
    state, _, _ = page.open(f"?run={BERT_RUN}")
    assert page.payload_of(state)["error"] is None
    saved = page.store.with_name("saved.h5")
    os.replace(page.store, saved)
    garbage = page.store.with_name("garbage.tmp")
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    os.replace(garbage, page.store)

    _, alert, shown = page.open(f"?run={BERT_RUN}")
    assert shown and "is not a readable HDF5 file" in alert
    assert "not a readable HDF5 file" in page.payload_of(state)["error"]
    assert page.client.get("/healthz").status_code == 503

    page.store.write_text("")  # an empty file: the same one-line message
    _, alert, _ = page.open(f"?run={BERT_RUN}")
    assert "is not a readable HDF5 file" in alert

    os.replace(saved, page.store)
    page.serves()


@pytest.fixture(scope="module")
def other_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different store holding a run named like the dashboard store's BERT run, with the same shard names
    (12 examples, one shard) but other sentences."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    path = tmp_path_factory.mktemp("other") / "demo.h5"
    precompute(PrecomputeOptions(model="bert-random", input="random:length=9,count=12,seed=7", store=path, run=BERT_RUN,
                                 threads=1, capture="attention,qkv,hidden,embeddings",
                                 overrides={"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
                                            "intermediate_size": 128}))
    return path


def test_store_replaced_by_another_store_serves_the_new_data(own_page: Page, other_store: Path) -> None:
    page = own_page
    state, _, _ = page.open(f"?run={BERT_RUN}&example=3&layer=1&head=1")
    old = attention_of(page.payload_of(state))  # the old shard is now open in this process
    with StoreReader(other_store) as other:
        assert other.run_info(BERT_RUN).shards[0].file == StoreReader(page.store).run_info(BERT_RUN).shards[0].file
        expected = other.attention(BERT_RUN, 3)
    assert old.shape != expected.shape or not np.array_equal(old, expected)

    # what an operator does: move the new shard folder and index into place
    shutil.rmtree(f"{page.store}.d")
    shutil.copytree(f"{other_store}.d", f"{page.store}.d")
    shutil.copy2(other_store, page.store.with_name("incoming.tmp"))
    os.replace(page.store.with_name("incoming.tmp"), page.store)

    state, alert, shown = page.open(f"?run={GPT2_RUN}")
    assert shown and f"run '{GPT2_RUN}' is not in this store: showing '{BERT_RUN}'" in alert
    state, alert, shown = page.open(f"?run={BERT_RUN}&example=3&layer=1&head=1")
    assert not shown, alert
    np.testing.assert_array_equal(attention_of(page.payload_of(state)), expected)
    assert page.client.get("/healthz").json["runs"] == 1


def test_run_deleted_under_the_app_then_restored(own_page: Page, dashboard_store: Path) -> None:
    page = own_page
    state, _, _ = page.open(f"?run={BERT_RUN}&example=4")
    assert page.payload_of(state)["error"] is None
    StoreWriter(page.store).delete_run(BERT_RUN)

    payload = page.payload_of(state)  # a page still showing the deleted run
    assert f"run '{BERT_RUN}' is not in" in payload["error"] and "attention" not in payload
    metrics = page.draw("metrics-panel.children", state)  # and its open panels
    assert f"run '{BERT_RUN}' is not in" in json.dumps(metrics)
    _, alert, shown = page.open(f"?run={BERT_RUN}&example=4")
    assert shown and f"run '{BERT_RUN}' is not in this store: showing" in alert
    corpus = find(page.cbs, "corpus-run-b.options")  # other tabs too: no 500
    assert page.post(corpus, {"run-select.value": BERT_RUN}).status_code in (200, 204)
    assert page.client.get("/healthz").json["runs"] == 2

    # the run comes back (restored from a backup): the same URL shows it again
    shutil.copytree(f"{dashboard_store}.d/{BERT_RUN}", f"{page.store}.d/{BERT_RUN}")
    shutil.copy2(dashboard_store, page.store.with_name("restore.tmp"))
    os.replace(page.store.with_name("restore.tmp"), page.store)
    page.serves(example=4)


def test_playground_added_store_outside_the_data_dir_is_never_opened(
        own_page: Page, dashboard_store: Path, tmp_path: Path) -> None:
    """``pg-added`` data comes back from the browser; its ``store`` must not open a file outside the data dir."""
    page = own_page
    outside = copy_store(dashboard_store, tmp_path / "elsewhere")  # a real store, outside the data directory
    cb = next(c for c in page.cbs if any(i["id"] == "pg-added" for i in c.inputs) and not c.outputs)
    resp = page.post(cb, {"pg-added.data": {"store": str(outside), "run": BERT_RUN, "index": 0}})
    assert resp.status_code in (200, 204)
    assert (os.getpid(), str(outside.resolve())) not in data._readers
    page.serves()


# ---- the same faults in a browser ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.usefixtures("headless")  # before dash_duo starts its browser
def test_browser_store_vanishes_and_returns(dash_duo, dashboard_store: Path,
                                            tmp_path: Path) -> None:
    from dash.testing.wait import until
    from selenium.webdriver.support.select import Select

    store = copy_store(dashboard_store, tmp_path / "data")
    server = start_live_server(store)
    try:
        dash_duo.server_url = server.url
        dash_duo.driver.get(f"{server.url}/?run={BERT_RUN}&example=1")
        dash_duo.wait_for_element("#attn-matrix .js-plotly-plot", timeout=TIMEOUT)
        until(lambda: dash_duo.find_element("#head-select").get_attribute("value") == "0", timeout=TIMEOUT)
        reader = StoreReader(store)

        def selected() -> tuple[int, int, int]:
            return tuple(int(dash_duo.find_element(f"#{cid}").get_attribute("value"))
                         for cid in ("example-index", "layer-select", "head-select"))

        def shows_data() -> bool:
            """The matrix shows exactly the stored weights of the example, layer and head the controls show."""
            raw = dash_duo.driver.execute_script(
                "const gd = document.querySelector('#attn-matrix .js-plotly-plot');"
                "return gd && gd.data && gd.data[0] ? JSON.stringify(gd.data[0].z, "
                "(k, v) => ArrayBuffer.isView(v) ? Array.from(v) : v) : null;")
            if not raw:
                return False
            z = json.loads(raw)
            z = decode_figure_array(z) if isinstance(z, dict) else np.asarray(z, dtype=np.float32)
            expected = reader.attention(BERT_RUN, *selected())
            return z.shape == expected.shape and np.array_equal(z, expected)

        def alert_text() -> str:  # the alert is re-rendered as it opens and closes: read it by id each time
            return dash_duo.driver.execute_script(
                "const e = document.getElementById('state-alert'); return e ? e.textContent : '';") or ""

        Select(dash_duo.find_element("#layer-select")).select_by_value("1")  # drawn in the page: no request
        until(shows_data, timeout=TIMEOUT, msg="layer 1 was not drawn")
        moved = store.with_name("away.h5")
        os.replace(store, moved)
        dash_duo.find_element("#example-next").click()  # another example: the server resolves it, and cannot
        until(lambda: "does not exist (moved or deleted?)" in alert_text(), timeout=TIMEOUT)
        os.replace(moved, store)
        Select(dash_duo.find_element("#head-select")).select_by_value("2")
        dash_duo.find_element("#example-prev").click()  # the server again: the store is back
        until(lambda: "does not exist" not in alert_text(), timeout=TIMEOUT,
              msg="the alert stayed after the store returned")
        until(shows_data, timeout=TIMEOUT, msg="the matrix did not come back after the store returned")
        assert selected()[1:] == (1, 2), selected()  # the layer and head chosen meanwhile were kept
        assert "Traceback" not in dash_duo.find_element("body").text
        assert server.process.poll() is None
    finally:
        server.process.terminate()
        server.process.wait(10)

