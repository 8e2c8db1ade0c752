"""The Example tab's views and callbacks on a store made by the real pipeline (no browser).

Views must draw exactly the store's slices; callbacks are exercised through Flask's test client with the
payloads the browser sends.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from dashboard_fixtures import BERT_RUN, GPT2_RUN, SEQ2SEQ_RUN
from store_helpers import update_meta

from attnviz.dashboard import data
from attnviz.dashboard.app import LazyServer, create_app
from attnviz.dashboard.example import analysis, views
from attnviz.dashboard.example.data import search_examples
from attnviz.dashboard.example.sync import control_values, resolve_state, run_options
from attnviz.dashboard.figjson import decode
from attnviz.dashboard.serve import bind_warning, is_loopback, serve
from attnviz.dashboard.urlstate import ViewState, format_state
from attnviz.pipeline.metrics import attention_rollout
from attnviz.pipeline.store import MissingCaptureError, NotAStoreError, StoreReader


@pytest.fixture(scope="module")
def reader(dashboard_store: Path) -> StoreReader:
    return data.get_reader(dashboard_store)


def z_of(fig: dict) -> np.ndarray:
    return decode(fig["data"][0]["z"])


# ---- views draw the store's slices ----------------------------------------------------------------------------


def test_matrix_view_is_the_stored_slice(reader: StoreReader) -> None:
    state = ViewState(run=BERT_RUN, example=3, layer=1, head=2, step=1)
    fig, config = views.matrix_view(reader, state)
    np.testing.assert_array_equal(z_of(fig), reader.attention(BERT_RUN, 3, 1, 2))
    assert config["toImageButtonOptions"]["filename"] == f"{BERT_RUN}_ex3_L1_H2"
    assert fig["data"][0]["y"][0].startswith("0 [CLS]")
    mean_fig, mean_cfg = views.matrix_view(reader, state.with_changes(head=None))
    np.testing.assert_allclose(z_of(mean_fig), reader.attention(BERT_RUN, 3, 1).mean(axis=0), rtol=1e-6)
    assert mean_cfg["toImageButtonOptions"]["filename"].endswith("_Hmean")


def test_rollout_toggle(reader: StoreReader) -> None:
    state = ViewState(run=BERT_RUN, example=2, layer=1, head=0, attn="rollout")
    fig, config = views.matrix_view(reader, state)
    expected = attention_rollout(reader.attention(BERT_RUN, 2))[1]
    np.testing.assert_allclose(z_of(fig), expected, rtol=1e-6)
    assert not np.allclose(z_of(fig), reader.attention(BERT_RUN, 2, 1, 0))
    assert "rollout" in fig["layout"]["title"]["text"].lower()
    assert config["toImageButtonOptions"]["filename"].endswith("_rollout")
    with pytest.raises(views.ViewError, match="self-attention only"):
        views.matrix_view(reader, state.with_changes(run=SEQ2SEQ_RUN, kind="cross"))


def test_cross_attention_is_decoder_by_encoder(reader: StoreReader) -> None:
    state = ViewState(run=SEQ2SEQ_RUN, example=1, layer=1, head=3, kind="cross")
    fig, _ = views.matrix_view(reader, state)
    expected = reader.attention(SEQ2SEQ_RUN, 1, 1, 3, "cross")
    np.testing.assert_array_equal(z_of(fig), expected)
    assert len(fig["data"][0]["y"]) == len(reader.tokens(SEQ2SEQ_RUN, 1, "target"))
    assert len(fig["data"][0]["x"]) == len(reader.tokens(SEQ2SEQ_RUN, 1, "source"))
    assert expected.shape[0] != expected.shape[1]


def test_missing_kind_and_example_raise_one_line_errors(reader: StoreReader) -> None:
    with pytest.raises(MissingCaptureError, match="no 'cross' attention"):
        views.matrix_view(reader, ViewState(run=BERT_RUN, kind="cross"))
    with pytest.raises(Exception, match="out of range") as info:
        views.matrix_view(reader, ViewState(run=BERT_RUN, example=99999))
    assert "\n" not in str(info.value)


def test_head_view_lines_come_from_the_slice(reader: StoreReader) -> None:
    state = ViewState(run=GPT2_RUN, example=1, layer=0, head=1)
    fig = views.head_view(reader, state)
    w = reader.attention(GPT2_RUN, 1, 0, 1)
    drawn = sum(t["meta"]["segments"] for t in fig["data"][2:])
    assert drawn == int((w >= fig["layout"]["meta"]["edges"][0]).sum())
    for trace in fig["data"][2:]:
        y = decode(trace["y"])
        q, k = y[0::3].astype(int), y[1::3].astype(int)
        assert (k <= q).all()  # causal model: no line to a later token
    multi = views.head_view(reader, state.with_changes(head=None))
    assert multi["layout"]["meta"]["heads"] == 4


def test_model_view_and_timestep(reader: StoreReader) -> None:
    state = ViewState(run=BERT_RUN, example=0, layer=1, head=3, step=2)
    full = reader.attention(BERT_RUN, 0)
    model = views.model_view(reader, state)
    z = z_of(model)
    t = full.shape[-1]
    np.testing.assert_array_equal(z[(t + 1):(t + 1) + t, 3 * (t + 1):3 * (t + 1) + t], full[1, 3])
    bars, layers = views.timestep_view(reader, state)
    np.testing.assert_array_equal(decode(bars["data"][0]["y"]), full[1, 3, 2])
    np.testing.assert_array_equal(z_of(layers), full[:, 3, 2, :])
    causal_bars, _ = views.timestep_view(reader, ViewState(run=GPT2_RUN, example=0, step=2))
    assert "Generation step 2" in causal_bars["layout"]["title"]["text"]
    with pytest.raises(views.ViewError, match="time step 500"):
        views.timestep_view(reader, state.with_changes(step=500))


def test_metrics_table_percentiles(reader: StoreReader) -> None:
    state = ViewState(run=BERT_RUN, example=4, layer=1, head=2)
    table = views.metrics_table(reader, state)
    m = table.names.index("entropy")
    column = reader.metrics(BERT_RUN, "entropy")[:, 1, 2]
    value = column[4]
    assert table.values[m, 2] == value
    expected = 100 * ((column < value).sum() + 0.5 * (column == value).sum()) / len(column)
    assert table.percentiles[m, 2] == pytest.approx(expected)
    assert table.values.shape == (len(table.names), 4)
    assert table.n_examples == reader.num_examples(BERT_RUN)


def test_debug_view_multiplier_and_reconstruction(reader: StoreReader) -> None:
    fig = views.debug_view(reader, ViewState(run=BERT_RUN, example=1, layer=0, head=1))
    title = fig["layout"]["title"]["text"]
    assert "attention score multiplier 0.25 (1/√d_k, d_k = 16)" in title  # hidden 64 / 4 heads
    err = float(title.rsplit("=", 1)[1].removesuffix("</sup>"))
    assert err < 5e-3  # softmax(QK^T / sqrt(d_k)) reproduces the stored attention
    assert fig["layout"]["meta"]["panels"][0] == "hidden state after layer 0"
    assert {"Q", "K", "V", "attention weights"} <= set(fig["layout"]["meta"]["panels"])
    with pytest.raises(MissingCaptureError, match="--capture attention,qkv"):
        views.debug_view(reader, ViewState(run=GPT2_RUN))


def test_embeddings_and_norms(reader: StoreReader) -> None:
    state = ViewState(run=SEQ2SEQ_RUN, example=0, kind="decoder")
    fig = views.embeddings_view(reader, state)
    inp, _ = reader.embeddings(SEQ2SEQ_RUN, 0, "target")
    np.testing.assert_allclose(decode(fig["data"][0]["x"]), analysis.pca_2d(inp)[:, 0], rtol=1e-5)
    norms = views.norms_view(reader, state)
    np.testing.assert_allclose(z_of(norms), np.linalg.norm(reader.hidden(SEQ2SEQ_RUN, 0, "target"), axis=-1),
                               rtol=1e-5)
    with pytest.raises(MissingCaptureError, match="hidden"):
        views.norms_view(reader, ViewState(run=GPT2_RUN))


# ---- selection, search, pin -------------------------------------------------------------------------------------


def test_resolve_state(reader: StoreReader) -> None:
    state, messages = resolve_state(reader, ViewState(run="nope", layer=7, head=9, step=999), explain=True)
    assert state.run == reader.runs()[0]
    assert state.layer == 1 and state.head == 3
    assert any("run 'nope' is not in this store" in m for m in messages)
    assert any("layer 7 is out of range" in m for m in messages)
    state, messages = resolve_state(reader, ViewState(run=BERT_RUN, example=99999), explain=True)
    assert state.example == 99999 and any("example 99999 is out of range" in m for m in messages)
    _, messages = resolve_state(reader, ViewState(run=BERT_RUN, kind="cross"), explain=True)
    assert any("has no cross-attention" in m for m in messages)


def test_controls_label_random_runs_and_kinds(reader: StoreReader) -> None:
    labels = {o["value"]: o["label"] for o in run_options(reader)}
    assert all(label.endswith("(random weights)") for label in labels.values())
    controls = control_values(reader, ViewState(run=SEQ2SEQ_RUN, kind="cross"))
    assert [o["value"] for o in controls["kind_options"]] == ["self", "decoder", "cross"]
    assert controls["head_options"][0] == {"label": "mean of all heads", "value": "mean"}
    assert control_values(reader, ViewState(run=GPT2_RUN))["step_label"] == "generation step"


def test_search_examples(reader: StoreReader) -> None:
    table = reader.examples(BERT_RUN)
    word = table.text[5].split()[1]
    hits = search_examples(table, word.upper())
    assert 5 in [i for i, _ in hits]
    assert all(word.lower() in table.text[i].lower() for i, _ in hits)
    assert search_examples(table, "zzqxj-not-there") == []


def test_get_reader_is_cached_per_process_and_refreshes(dashboard_store: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "copy.h5"
    shutil.copy(dashboard_store, store)
    shutil.copytree(f"{dashboard_store}.d", f"{store}.d")
    monkeypatch.setattr(data, "REFRESH_SECONDS", 0.5)
    first = data.get_reader(store)
    assert data.get_reader(store) is first
    update_meta(store, BERT_RUN, note="changed")
    assert "note" not in data.get_reader(store).run_info(BERT_RUN).meta  # throttled
    time.sleep(0.6)
    assert data.get_reader(store).run_info(BERT_RUN).meta["note"] == "changed"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must open its own reader, not reuse the parent's h5py handles
        try:
            child = data.get_reader(store)
            ok = child is not first and child.attention(BERT_RUN, 0, 0, 0).shape[0] > 0
            os.write(write_fd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"


# ---- serving ---------------------------------------------------------------------------------------------------


def test_serve_checks_the_store_and_warns_on_public_binds(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    assert bind_warning("127.0.0.1", False) is None
    assert "0.0.0.0" in bind_warning("0.0.0.0", False)
    with pytest.raises(NotAStoreError, match="does not exist"):
        serve(tmp_path / "missing.h5", say=lambda _m: None)


def _callback_payload(app, output: str, inputs: list[dict]) -> dict:
    key = next((k for k in app.callback_map if k == output or k.startswith(output + "@")), None) or next(
        k for k in app.callback_map if output in k)
    outputs = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]}
               for p in key.strip(".").split("...")]
    return {"output": key, "outputs": outputs if key.startswith("..") else outputs[0], "inputs": inputs,
            "changedPropIds": [f"{i['id']}.{i['property']}" for i in inputs], "state": []}


def test_payload_callback_over_http(dashboard_store: Path) -> None:
    """The example's data the page draws its attention views from: exactly the store's attention (float16 values,
    sent whole or one layer at a time), its tokens and rollout; an out-of-range example is a one-line error."""
    from attnviz.dashboard.example.payload import decode as decode_payload

    app = create_app(dashboard_store)
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    reader = StoreReader(dashboard_store)
    full = reader.attention(BERT_RUN, 2, kind="self")

    def ask(key: dict) -> dict:
        payload = _callback_payload(app, "example-payload.data",
                                    [{"id": "example-payload-key", "property": "data", "value": key}])
        resp = client.post("/_dash-update-component", json=payload)
        assert resp.status_code == 200, resp.data[:300]
        return json.loads(resp.data)["response"]["example-payload"]["data"]

    state = ViewState(run=BERT_RUN, example=2, layer=1, head=0)
    key = {"run": BERT_RUN, "example": 2, "kind": "self", "attn": "raw", "detail": "all"}
    body = ask(key)
    assert body["error"] is None and body["key"] == key
    assert body["attention"]["dtype"] == "f2"
    np.testing.assert_array_equal(decode_payload(body["attention"]).astype(np.float32), full)
    assert (body["n_layers"], body["n_heads"]) == full.shape[:2]
    assert body["q_tokens"] == body["k_tokens"] == reader.tokens(BERT_RUN, 2)
    assert body["rollout"] is None and body["model_view"]["data"]

    body = ask({**key, "detail": "layer", "layer": 1, "step": 3})  # a long example: one layer at a time
    assert body["layers"] == [1] and body["step"] == 3
    np.testing.assert_array_equal(decode_payload(body["attention"]).astype(np.float32), full[1:2])
    np.testing.assert_array_equal(decode_payload(body["step_rows"]).astype(np.float32), full[:, :, 3, :])

    body = ask({**key, "attn": "rollout"})
    assert body["rollout_error"] is None
    np.testing.assert_allclose(decode_payload(body["rollout"]), attention_rollout(full), rtol=1e-5, atol=1e-6)

    bad = ask({**key, "example": 99999})
    assert "out of range" in bad["error"] and "attention" not in bad
    assert format_state(state)  # the state the page would show in its URL


def test_wsgi_entry_needs_the_store_env(dashboard_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from werkzeug.test import Client

    monkeypatch.delenv("ATTNVIZ_STORE", raising=False)
    resp = Client(LazyServer()).get("/")
    assert resp.status_code == 500 and b"ATTNVIZ_STORE" in resp.data
    monkeypatch.setenv("ATTNVIZ_STORE", str(dashboard_store))
    resp = Client(LazyServer()).get("/_dash-layout")
    assert resp.status_code == 200 and b"run-select" in resp.data
