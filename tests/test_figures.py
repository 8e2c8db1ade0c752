"""The Example tab's pure figure builders and the numpy helpers behind them (no store, no browser)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest
from dash._utils import to_json

from attnviz.dashboard import messages
from attnviz.dashboard.example import analysis, figures
from attnviz.dashboard.example.tokens import axis_labels, display_tokens
from attnviz.dashboard.figjson import decode, typed
from attnviz.pipeline.metrics import attention_rollout

RNG = np.random.default_rng(7)


def attention(tq: int, tk: int, concentration: float = 0.3) -> np.ndarray:
    return RNG.dirichlet(np.full(tk, concentration), size=tq).astype(np.float32)


def tokens(n: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{i % 5}" for i in range(n)]  # repeats on purpose: labels must still be unique


def valid(fig: dict) -> go.Figure:
    """Every builder's dict must be accepted by plotly's strict validation."""
    return go.Figure(fig)


# ---- typed arrays ---------------------------------------------------------------------------------------------


def test_typed_array_round_trip_and_dtype() -> None:
    a = RNG.random((3, 5)).astype(np.float64)
    spec = typed(a)
    assert spec["dtype"] == "f4" and spec["shape"] == "3, 5"
    np.testing.assert_array_equal(decode(spec), a.astype(np.float32))
    assert decode(typed(np.arange(4), np.int32)).dtype == np.int32
    with pytest.raises(ValueError):
        typed(np.zeros((2, 2, 2)))


# ---- attention matrix -----------------------------------------------------------------------------------------


def test_matrix_z_is_the_input_as_float32_typed_array() -> None:
    w = attention(6, 9)
    q, k = tokens(6, "q"), tokens(9, "k")
    fig = figures.attention_matrix_figure(w, q, k, title="t", step=2)
    heat = fig["data"][0]
    assert heat["type"] == "heatmap"
    assert {"bdata", "dtype"} <= set(heat["z"]) and heat["z"]["dtype"] == "f4"
    np.testing.assert_array_equal(decode(heat["z"]), w)
    assert heat["y"] == axis_labels(q) and heat["x"] == axis_labels(k)
    assert len(set(heat["x"])) == 9  # repeated tokens stay distinct columns
    assert "%{y}" in heat["hovertemplate"] and "%{x}" in heat["hovertemplate"] and "%{z" in heat["hovertemplate"]
    (rect,) = fig["layout"]["shapes"]
    assert (rect["y0"], rect["y1"]) == (1.5, 2.5)
    valid(fig)


def test_matrix_float16_input_is_sent_as_float32_not_text() -> None:
    w = attention(64, 64).astype(np.float16)
    payload = to_json(figures.attention_matrix_figure(w, tokens(64), tokens(64)))
    assert '"dtype":"f4"' in payload
    # base64 float32 is 4/3 * 4 bytes per value; a text list would be ~3x that
    assert len(payload) < 64 * 64 * 4 * 4 / 3 + 20_000


def test_matrix_rejects_mismatched_tokens() -> None:
    with pytest.raises(ValueError, match="do not match"):
        figures.attention_matrix_figure(attention(3, 4), tokens(3), tokens(5))


def test_matrix_of_512_tokens_is_compact() -> None:
    w = attention(512, 512)
    payload = to_json(figures.attention_matrix_figure(w, tokens(512), tokens(512)))
    # 512*512 float32 as base64 is 1.40 MB; plotly escapes each "/" of it as \u002f (+~0.11 MB); labels ~10 KB
    assert len(payload) < 1.53e6


def test_rollout_toggle_draws_the_rollout_layer() -> None:
    attn = RNG.dirichlet(np.ones(7), size=(3, 2, 7)).astype(np.float32)
    roll = attention_rollout(attn)
    fig = figures.attention_matrix_figure(roll[2], tokens(7), tokens(7), colorbar_title="rollout")
    np.testing.assert_allclose(decode(fig["data"][0]["z"]), roll[2])
    assert fig["data"][0]["colorbar"]["title"]["text"] == "rollout"
    assert not np.allclose(roll[2], attn[2].mean(axis=0))  # rollout is not the raw layer


# ---- head view ------------------------------------------------------------------------------------------------


def _line_traces(fig: dict) -> list[dict]:
    return [t for t in fig["data"][2:]]


def _segments(trace: dict) -> np.ndarray:
    x, y = decode(trace["x"]), decode(trace["y"])
    assert np.isnan(x[2::3]).all() and np.isnan(y[2::3]).all()  # NaN separators
    assert (x[0::3] == 0).all() and (x[1::3] == 1).all()
    return np.stack([y[0::3], y[1::3]], axis=1).astype(int)


def test_head_view_bins_match_weights() -> None:
    w = attention(12, 12)
    fig = figures.head_view_figure(w, tokens(12), tokens(12))
    valid(fig)
    assert [t["name"] for t in fig["data"][:2]] == ["queries", "keys"]
    edges = fig["layout"]["meta"]["edges"]
    drawn = 0
    for trace in _line_traces(fig):
        lo, hi = trace["meta"]["lo"], trace["meta"]["hi"]
        assert lo <= trace["opacity"] <= hi
        pairs = _segments(trace)
        weights = w[pairs[:, 0], pairs[:, 1]]
        assert (weights >= lo).all() and (weights < hi + 1e-6).all()
        assert trace["meta"]["segments"] == len(pairs)
        drawn += len(pairs)
    assert drawn == int((w >= edges[0]).sum())
    opacities = [t["opacity"] for t in _line_traces(fig)]
    assert opacities == sorted(opacities)  # bins ordered by weight


def test_head_view_selected_token_keeps_only_its_lines() -> None:
    w = attention(8, 10)
    fig = figures.head_view_figure(w, tokens(8), tokens(10), selected=("query", 3))
    pairs = np.concatenate([_segments(t) for t in _line_traces(fig)])
    assert set(pairs[:, 0]) == {3}
    assert len(pairs) == int((w[3] >= figures.HEAD_VIEW_EDGES[0]).sum())
    highlight = decode(fig["data"][0]["marker"]["color"])
    assert highlight[3] == 1 and highlight.sum() == 1
    fig = figures.head_view_figure(w, tokens(8), tokens(10), selected=("key", 4))
    pairs = np.concatenate([_segments(t) for t in _line_traces(fig)])
    assert set(pairs[:, 1]) == {4}


def test_head_view_all_heads_one_colour_per_head() -> None:
    w = RNG.dirichlet(np.full(9, 0.2), size=(4, 9)).astype(np.float32)
    fig = figures.head_view_figure(w, tokens(9), tokens(9))
    valid(fig)
    colours: dict[int, set[str]] = {}
    for trace in _line_traces(fig):
        colours.setdefault(trace["meta"]["head"], set()).add(trace["line"]["color"])
        pairs = _segments(trace)
        h = trace["meta"]["head"]
        assert (w[h][pairs[:, 0], pairs[:, 1]] >= trace["meta"]["lo"]).all()
    assert all(len(c) == 1 for c in colours.values())
    assert len({next(iter(c)) for c in colours.values()}) == len(colours) == 4
    assert sum(t["showlegend"] for t in _line_traces(fig)) == 4
    assert len(fig["data"]) <= 2 + 4 * (len(figures.MULTI_HEAD_EDGES) - 1)


def test_head_view_caps_segments_keeping_the_strongest() -> None:
    w = np.full((60, 60), 0.03, dtype=np.float32) + RNG.random((60, 60)).astype(np.float32) * 0.01
    fig = figures.head_view_figure(w, tokens(60), tokens(60), max_segments=100)
    pairs = np.concatenate([_segments(t) for t in _line_traces(fig)])
    assert len(pairs) == 100
    assert fig["layout"]["meta"]["dropped"] == 3600 - 100
    kept = w[pairs[:, 0], pairs[:, 1]]
    assert kept.min() >= np.sort(w.ravel())[-100]
    assert "3500 weakest lines not drawn" in fig["layout"]["title"]["text"]


def test_head_view_512_tokens_few_traces_and_small_payload() -> None:
    w = attention(512, 512, 0.05)
    fig = figures.head_view_figure(w, tokens(512), tokens(512))
    assert len(fig["data"]) <= 2 + len(figures.HEAD_VIEW_EDGES) - 1
    assert len(to_json(fig)) < 1_000_000


# ---- model view -----------------------------------------------------------------------------------------------


def test_model_view_tiles_hold_each_layer_and_head() -> None:
    attn = RNG.dirichlet(np.ones(5), size=(3, 4, 5)).astype(np.float32)
    fig = figures.model_view_figure(attn, selected=(2, 1))
    valid(fig)
    z = decode(fig["data"][0]["z"])
    assert z.shape == (3 * 6 - 1, 4 * 6 - 1)
    for layer in range(3):
        for head in range(4):
            np.testing.assert_array_equal(z[layer * 6:layer * 6 + 5, head * 6:head * 6 + 5], attn[layer, head])
    assert np.isnan(z[5]).all() and np.isnan(z[:, 5]).all()  # gaps between tiles
    (rect,) = fig["layout"]["shapes"]
    assert rect["x0"] == 6 - 0.5 and rect["y0"] == 12 - 0.5


def test_model_view_pools_long_sequences_and_clicks_name_the_cell() -> None:
    attn = RNG.random((2, 3, 100, 100)).astype(np.float32)
    fig = figures.model_view_figure(attn, tile=20)
    assert fig["layout"]["meta"]["tile"] == [20, 20]
    z = decode(fig["data"][0]["z"])
    np.testing.assert_allclose(z[21 + 3, 2 * 21 + 4], attn[1, 2, 15:20, 20:25].mean(), rtol=1e-5)
    x, y = fig["data"][0]["x"], fig["data"][0]["y"]
    assert figures.parse_model_view_click({"x": x[2 * 21 + 4], "y": y[21 + 3]}) == (1, 2)
    assert figures.parse_model_view_click({"x": "nonsense", "y": "L1 q0"}) is None
    assert figures.parse_model_view_click({}) is None


# ---- time step, histograms, embeddings, norms, messages ----------------------------------------------------------


def test_timestep_figures_hold_the_rows() -> None:
    rows = RNG.dirichlet(np.ones(6), size=4).astype(np.float32)
    bars = figures.timestep_bars_figure(rows[1], tokens(6))
    np.testing.assert_array_equal(decode(bars["data"][0]["y"]), rows[1])
    layers = figures.timestep_layers_figure(rows, tokens(6), selected_layer=1)
    np.testing.assert_array_equal(decode(layers["data"][0]["z"]), rows)
    assert layers["data"][0]["y"] == ["L0", "L1", "L2", "L3"]
    valid(bars), valid(layers)


def test_histograms_count_every_finite_value() -> None:
    values = {"Q": RNG.normal(size=500), "scores": np.r_[RNG.normal(size=300), [np.nan] * 20]}
    hists = {k: analysis.histogram(v) for k, v in values.items()}
    fig = figures.histograms_figure(hists, title="multiplier 0.125")
    valid(fig)
    assert [t["name"] for t in fig["data"]] == ["Q", "scores"]
    assert decode(fig["data"][0]["y"]).sum() == 500 and decode(fig["data"][1]["y"]).sum() == 300
    assert fig["data"][1]["xaxis"] == "x2" and fig["layout"]["meta"]["panels"] == ["Q", "scores"]


def test_pca_shape_order_and_sign() -> None:
    basis = np.linalg.qr(RNG.normal(size=(16, 16)))[0]
    coords = RNG.normal(size=(40, 16)) * np.array([10.0, 3.0] + [0.1] * 14)
    x = coords @ basis.T + 5.0
    out = analysis.pca_2d(x)
    assert out.shape == (40, 2) and out.dtype == np.float32
    assert np.var(out[:, 0]) > np.var(out[:, 1]) > 0
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    assert abs(np.corrcoef(out[:, 0], out[:, 1])[0, 1]) < 1e-4
    assert np.allclose(analysis.pca_2d(x), out)  # deterministic sign
    assert analysis.pca_2d(np.ones((1, 4))).shape == (1, 2)
    assert not analysis.pca_2d(np.ones((5, 4))).any()  # no variance: zeros, not noise


def test_embeddings_figure_places_each_token() -> None:
    a, b = RNG.normal(size=(7, 2)).astype(np.float32), RNG.normal(size=(7, 2)).astype(np.float32)
    fig = figures.embeddings_figure(a, b, tokens(7))
    valid(fig)
    np.testing.assert_array_equal(decode(fig["data"][1]["x"]), b[:, 0])
    np.testing.assert_array_equal(decode(fig["data"][0]["marker"]["color"]), np.arange(7))


def test_norm_strip() -> None:
    hidden = RNG.normal(size=(3, 5, 8)).astype(np.float32)
    norms = analysis.activation_norms(hidden)
    np.testing.assert_allclose(norms, np.linalg.norm(hidden, axis=-1), rtol=1e-6)
    fig = figures.norm_strip_figure(norms, tokens(5))
    valid(fig)
    assert fig["data"][0]["y"] == ["embeddings", "after L0", "after L1"]


def test_message_figure_shows_the_text() -> None:
    fig = messages.message_figure("run 'x' did not capture Q/K/V: rerun precompute with --capture attention,qkv")
    valid(fig)
    assert fig["data"] == []
    assert fig["layout"]["annotations"][0]["text"].startswith("run 'x' did not capture")
    assert fig["layout"]["meta"]["message"] == fig["layout"]["annotations"][0]["text"]


def test_image_config_names_the_file() -> None:
    cfg = figures.image_config("run_ex3_L1_H2")
    assert cfg["toImageButtonOptions"] == {"format": "png", "filename": "run_ex3_L1_H2", "scale": 2}


# ---- numpy helpers --------------------------------------------------------------------------------------------


def test_percentile_of() -> None:
    dist = analysis.sorted_finite(np.array([3.0, 1.0, np.nan, 2.0, 4.0]))
    assert dist.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert analysis.percentile_of(dist, 0.5) == 0
    assert analysis.percentile_of(dist, 5.0) == 100
    assert analysis.percentile_of(dist, 2.0) == pytest.approx(37.5)
    assert np.isnan(analysis.percentile_of(dist, np.nan))
    assert np.isnan(analysis.percentile_of(np.array([]), 1.0))


def test_pool_matrix_block_means() -> None:
    a = np.arange(35, dtype=np.float32).reshape(5, 7)
    pooled = analysis.pool_matrix(a, 2, 3)
    assert pooled.shape == (2, 3)
    assert pooled[0, 0] == a[:3, :3].mean() and pooled[1, 2] == a[3:, 6:].mean()
    assert analysis.pool_matrix(a, 10, 10) is not None and analysis.pool_matrix(a, 10, 10).shape == (5, 7)


def test_scores_softmax_reproduce_attention() -> None:
    q, k = RNG.normal(size=(6, 8)), RNG.normal(size=(6, 8))
    scale, why = analysis.score_multiplier(None, 8)
    assert scale == pytest.approx(8 ** -0.5) and "d_k = 8" in why
    assert analysis.score_multiplier(0.5, 8)[0] == 0.5
    s = analysis.attention_scores(q, k, scale, causal=True)
    assert np.isnan(s[0, 1:]).all() and np.isfinite(np.tril(s)).all()
    p = analysis.softmax_rows(s)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    assert (p[np.triu_indices(6, 1)] == 0).all()


def test_display_tokens() -> None:
    # a character split over two byte-level tokens is text on both (tests/test_tokens.py has the full set)
    assert display_tokens(["He", "Ġbrother", "âĢ", "Ļ", "Ċ"]) == ["He", "·brother", "’…", "…’", "↵"]
    assert display_tokens(["[CLS]", "play", "##ing", "▁x"]) == ["[CLS]", "play", "##ing", "·x"]


def test_importing_the_app_does_not_import_torch() -> None:
    code = ("import sys, attnviz.dashboard.app, attnviz.dashboard.serve, attnviz.dashboard.example.views; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []


def test_matrix_hover_carries_each_cells_raw_tokens() -> None:
    w = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    q, k = ["·the", "é…"], ["a", "b", "…é"]
    rq, rk = ["'Ġthe'", "'Ã' b'\\xc3'"], ["'a'", "'b'", "'©' b'\\xa9'"]
    fig = figures.attention_matrix_figure(w, q, k, raw=(rq, rk))
    go.Figure(fig)
    heat = fig["data"][0]
    assert "%{text}" in heat["hovertemplate"] and "%{customdata}" in heat["hovertemplate"]
    for i in range(2):
        for j in range(3):
            assert (heat["text"][i][j], heat["customdata"][i][j]) == (rq[i], rk[j])
    # the page fills the cells itself (payload templates): the hover names them, the arrays are left out
    template = figures.attention_matrix_figure(w, q, k, raw=(rq, rk), fill_raw=False)["data"][0]
    assert "%{text}" in template["hovertemplate"] and "text" not in template and "customdata" not in template
    # too many cells for a Python-built figure: no raw hover rather than a 3 MB figure
    big = np.zeros((300, 300), dtype=np.float32)
    labels = [str(i) for i in range(300)]
    heat = figures.attention_matrix_figure(big, labels, labels, raw=(labels, labels))["data"][0]
    assert "text" not in heat and "%{text}" not in heat["hovertemplate"]
    with pytest.raises(ValueError, match="raw tokens"):
        figures.attention_matrix_figure(w, q, k, raw=(rq, rk[:2]))


def test_head_view_token_hover_shows_the_raw_token() -> None:
    w = np.array([[1.0, 0.0], [0.4, 0.6]], dtype=np.float32)
    fig = figures.head_view_figure(w, ["·a", "é"], ["·a", "é"], raw=(["'Ġa'", "'Ã©'"], ["'Ġa'", "'Ã©'"]))
    go.Figure(fig)
    for trace in fig["data"][:2]:
        assert trace["customdata"] == ["'Ġa'", "'Ã©'"]
        assert trace["hovertemplate"] == "%{hovertext}<br>raw %{customdata}<extra></extra>"
    assert "customdata" not in figures.head_view_figure(w, ["a", "b"], ["a", "b"])["data"][0]
