"""The Example tab's data route (``/_attnviz/example``, :mod:`attnviz.dashboard.example.transport`): the bytes the
page fetches are the store's values exactly (float16 as stored), a one-layer payload's layer and a query position's
rows are the store's slices, a page URL is resolved as the sync callback resolves it, and nothing outside the data
directory or without credentials is served.

Real store (the session's, made by the real pipeline), the app's own Flask server through its test client.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pytest
from dashboard_fixtures import BERT_RUN, GPT2_RUN, SEQ2SEQ_RUN

from attnviz.dashboard.app import create_app
from attnviz.dashboard.example.payload import BUDGET_ENV
from attnviz.dashboard.example.transport import ALIGN, ROUTE, unpack
from attnviz.dashboard.security import AuthConfig
from attnviz.pipeline.store import StoreReader


@pytest.fixture(scope="module")
def client(dashboard_store: Path):
    return create_app(dashboard_store).server.test_client()


def fetch(client, **query: object) -> dict:
    resp = client.get(ROUTE + "?" + urlencode(query))
    assert resp.status_code == 200, resp.data[:300]
    assert resp.mimetype == "application/octet-stream" and resp.headers["Cache-Control"] == "no-store"
    body = resp.data
    assert int.from_bytes(body[:4], "little") < len(body)
    return unpack(body)


@pytest.mark.parametrize(("run", "kind"), [(BERT_RUN, "self"), (GPT2_RUN, "self"), (SEQ2SEQ_RUN, "cross"),
                                           (SEQ2SEQ_RUN, "decoder")])
def test_all_layers_are_the_stored_halves_exactly(client, reader: StoreReader, run: str, kind: str) -> None:
    got = fetch(client, run=run, example=1, kind=kind, attn="raw", detail="all")
    stored = reader.attention(run, 1, kind=kind)
    assert got["error"] is None and got["detail"] == "all" and got["layers"] == list(range(stored.shape[0]))
    assert got["attention"].dtype == np.float16 and got["attention"].shape == stored.shape
    assert np.array_equal(got["attention"].astype(np.float32), stored)  # float16 in the store: exact
    assert got["key"]["run"] == run and got["key"]["example"] == 1 and got["data_offset"] % ALIGN == 0
    assert got["tq"] == stored.shape[2] and got["tk"] == stored.shape[3]


def test_rollout_is_float32_beside_the_attention(client, reader: StoreReader) -> None:
    got = fetch(client, run=BERT_RUN, example=2, kind="self", attn="rollout", detail="all")
    stored = reader.attention(BERT_RUN, 2)
    assert got["rollout"].dtype == np.float32 and got["rollout"].shape == stored.shape[:1] + stored.shape[2:]
    assert np.array_equal(got["attention"].astype(np.float32), stored)
    rows = got["rollout"].sum(axis=-1)  # each query's rollout is a distribution over the keys
    assert np.allclose(rows, 1.0, atol=1e-4)


def test_one_layer_and_the_rows_of_a_query_position(client, reader: StoreReader) -> None:
    stored = reader.attention(BERT_RUN, 3)
    got = fetch(client, run=BERT_RUN, example=3, kind="self", attn="raw", detail="layer", layer=1, step=2)
    assert got["layers"] == [1] and got["key"]["layer"] == 1
    assert np.array_equal(got["attention"].astype(np.float32), stored[1][None])
    if got["step_rows"] is not None:  # sent with the layer when the server holds the whole example
        assert got["step"] == 2 and np.array_equal(got["step_rows"].astype(np.float32), stored[:, :, 2, :])
    rows = fetch(client, run=BERT_RUN, example=3, kind="self", attn="raw", detail="layer", layer=1, step=4,
                 part="rows")
    assert rows["step"] == 4 and np.array_equal(rows["step_rows"].astype(np.float32), stored[:, :, 4, :])
    past = fetch(client, run=BERT_RUN, example=3, kind="self", attn="raw", detail="layer", step=10**6, part="rows")
    assert past["step"] == stored.shape[2] - 1  # clamped to the last query position


def test_the_model_view_comes_on_its_own(client, reader: StoreReader) -> None:
    """The first screen's data leaves the model view out (it reads every head); ``part=model_view`` is the view
    the Python builder draws for the example, and a bad example is a one-line error, not a traceback."""
    from attnviz.dashboard.example import views
    from attnviz.dashboard.urlstate import ViewState

    first = fetch(client, run=GPT2_RUN, example=2, kind="self", attn="raw", detail="all")
    assert first["error"] is None and first["model_view"] is None and first["attention"] is not None
    got = fetch(client, run=GPT2_RUN, example=2, kind="self", attn="raw", detail="all", part="model_view")
    want = views.model_view(reader, ViewState(run=GPT2_RUN, example=2, layer=0, head=None))
    assert got["error"] is None and set(got) >= {"model_view"} and "attention" not in got
    assert len(got["model_view"]["data"]) == len(want["data"])
    for a, b in zip(got["model_view"]["data"], want["data"], strict=True):
        assert a["z"] == b["z"] and a["x"] == b["x"] and a["y"] == b["y"]
    bad = fetch(client, run=GPT2_RUN, example=10**6, kind="self", attn="raw", part="model_view")
    assert bad["error"] and "\n" not in bad["error"] and bad.get("model_view") is None


def test_auto_detail_follows_the_budget(dashboard_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, "1")
    got = fetch(create_app(dashboard_store).server.test_client(), run=BERT_RUN, example=0, kind="self",
                attn="raw", detail="auto", layer=1)
    assert got["detail"] == "layer" and got["layers"] == [1] and got["key"]["detail"] == "layer"


def test_a_page_url_is_resolved_as_the_sync_callback_resolves_it(client, reader: StoreReader) -> None:
    got = fetch(client, search=f"?run={BERT_RUN}&example=2&layer=99&head=mean&step=3")
    n_layers = reader.attention(BERT_RUN, 2).shape[0]
    assert got["state"] == {"run": BERT_RUN, "example": 2, "layer": n_layers - 1, "head": None, "step": 3,
                            "kind": "self", "attn": "raw"}
    assert got["key"] == {"run": BERT_RUN, "example": 2, "kind": "self", "attn": "raw", "detail": "all", "step": 3}
    first = fetch(client, search="")  # no run named: the store's first run
    assert first["state"]["run"] == reader.runs()[0] and first["error"] is None


@pytest.mark.parametrize(("query", "expected"), [
    ({"run": "nope", "example": 0}, "not in"),
    ({"run": BERT_RUN, "example": 10**9}, "out of range"),
    ({"run": BERT_RUN, "example": 0, "kind": "cross"}, "no 'cross' attention"),
    ({"run": BERT_RUN, "example": "x"}, None),  # a malformed number falls back as in a URL
    ({"search": "?run=%00&example=-1"}, None),
])
def test_a_selection_that_cannot_be_drawn_is_a_message(client, query: dict, expected: str | None) -> None:
    got = fetch(client, **query)
    if expected is None:
        assert "attention" in got or got["error"]
    else:
        assert expected in got["error"] and "\n" not in got["error"] and "attention" not in got
    assert got["message_template"]["layout"]["meta"]["message"] == ""


def test_only_stores_of_the_data_directory_and_only_with_credentials(dashboard_store: Path,
                                                                     tmp_path: Path) -> None:
    client = create_app(dashboard_store).server.test_client()
    for name in ("../demo.h5", "/etc/passwd", "nothing-here.h5"):
        resp = client.get(ROUTE + "?store=" + quote(name) + "&run=" + BERT_RUN)
        assert resp.status_code == 400 and resp.data.startswith(b"attnviz: ") and resp.data.count(b"\n") == 1
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(dashboard_store, folder / "other.h5")
    if dashboard_store.with_suffix(".h5.d").exists():
        shutil.copytree(dashboard_store.with_suffix(".h5.d"), folder / "other.h5.d")
    other = create_app(dashboard_store, data_dir=folder).server.test_client()
    got = unpack(other.get(ROUTE + "?" + urlencode({"store": "other.h5", "run": BERT_RUN, "example": 0})).data)
    assert got["error"] is None and got["run"] == BERT_RUN
    locked = create_app(dashboard_store, auth=AuthConfig({"alice": "s3cret"}, "test")).server.test_client()
    assert locked.get(ROUTE + "?run=" + BERT_RUN).status_code == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()}
    assert locked.get(ROUTE + "?run=" + BERT_RUN, headers=auth).status_code == 200
