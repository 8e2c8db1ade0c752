"""Value-weighted attention ‖α_ij f(x_j)‖ (``--capture norms``) against a direct computation from each model's
weights (BERT, GPT-2 with its Conv1D projections, ALBERT with its shared layer), and its per-head metrics against
a row-by-row reference on the row-normalized norms (docs/metrics.md, "Value-weighted attention").

Stores are written by the real pipeline (tiny random configs, float32 storage); the reference reruns the same
seeded model on each example alone and reads W_V, b_V, W_O from its modules.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from attnviz.pipeline.metrics import METRICS, metric_spec, value_weighted_names
from attnviz.pipeline.models.loading import load_model
from attnviz.pipeline.models.norms import NormsUnsupportedError, normalize_rows
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import MissingCaptureError, NotKeptError, StoreReader

REPO = Path(__file__).resolve().parents[1]
N = 5
MODELS = {
    "bert-random": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128},
    "gpt2-random": {"n_layer": 2, "n_head": 4, "n_embd": 64},
    "albert-random": {"num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128,
                      "embedding_size": 32},
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def norms_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = request.param
    store = tmp_path_factory.mktemp("norms") / f"{model}.h5"
    precompute(PrecomputeOptions(model=model, input=str(REPO / "data/demo.jsonl"), store=store, limit=N, threads=1,
                                 batch_size=4, capture="attention,norms", dtype="float32", overrides=MODELS[model]))
    (run,) = StoreReader(store).runs()
    return model, store, run


def _reference_norms(model: str, ids: list[int]) -> np.ndarray:
    """‖f_h(x_j)‖ ``[L, H, T]`` straight from the weights: x is each layer's attention input (GPT-2: ln_1 of the
    residual stream), v = x W_V + b_V, f_h = v_h W_O^h."""
    lm = load_model(model, MODELS[model], threads=1)
    base = lm.model.base_model
    with torch.no_grad():
        out = base(input_ids=torch.tensor([ids]), output_hidden_states=True)
    layers, heads = lm.shape()["self"]
    result = []
    for layer in range(layers):
        h = out.hidden_states[layer][0]
        if model == "gpt2-random":
            block = base.h[layer]
            x = block.ln_1(h)
            width = x.shape[-1]
            w_v = block.attn.c_attn.weight[:, 2 * width:]  # Conv1D: [in, out]
            b_v = block.attn.c_attn.bias[2 * width:]
            v = x @ w_v + b_v
            w_o = block.attn.c_proj.weight  # [in, out]
        else:
            if model == "bert-random":
                att = base.encoder.layer[layer].attention
                value, dense = att.self.value, att.output.dense
            else:  # ALBERT: one layer's modules shared by every layer
                att = base.encoder.albert_layer_groups[0].albert_layers[0].attention
                value, dense = att.value, att.dense
            v = h @ value.weight.T + value.bias
            w_o = dense.weight.T  # nn.Linear stores [out, in]
        d = v.shape[-1] // heads
        per_head = [torch.linalg.vector_norm(v[:, k * d:(k + 1) * d] @ w_o[k * d:(k + 1) * d], dim=-1)
                    for k in range(heads)]
        result.append(torch.stack(per_head).numpy())
    return np.stack(result)


def test_norms_equal_a_direct_computation_from_the_weights(norms_run: tuple[str, Path, str]) -> None:
    model, store, run = norms_run
    reader = StoreReader(store)
    for i in range(N):
        ids = [int(t) for t in reader.token_ids(run, i)]
        fx = _reference_norms(model, ids)  # [L, H, T]
        attn = reader.attention(run, i)
        expected = attn * fx[:, :, None, :]
        got = reader.value_norms(run, i)
        assert got.shape == attn.shape
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)
        # slices read as attention's do
        np.testing.assert_array_equal(reader.value_norms(run, i, 1, 2), got[1, 2])
        np.testing.assert_array_equal(reader.value_norms(run, i, head=3), got[:, 3])


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_value_weighted_metrics_are_the_metrics_of_the_normalized_norms(norms_run: tuple[str, Path, str]) -> None:
    model, store, run = norms_run
    reader = StoreReader(store)
    assert reader.metric_names(run) == [*METRICS, *value_weighted_names()]
    causal = model == "gpt2-random"
    vw_entropy, vw_first = reader.metrics(run, "vw_entropy"), reader.metrics(run, "vw_mass_first")
    vw_distance = reader.metrics(run, "vw_mean_distance")
    for i in range(N):
        norms = reader.value_norms(run, i).astype(np.float64)
        layers, heads, t, _ = norms.shape
        for layer in range(layers):
            for head in range(heads):
                rows = []
                for q in range(t):
                    keys = norms[layer, head, q, : q + 1] if causal else norms[layer, head, q]
                    rows.append(keys / keys.sum())
                assert vw_entropy[i, layer, head] == pytest.approx(np.mean([_entropy(r) for r in rows]), rel=1e-4)
                assert vw_first[i, layer, head] == pytest.approx(np.mean([r[0] for r in rows]), rel=1e-4)
                dist = np.mean([sum(w * abs(q - j) for j, w in enumerate(r)) for q, r in enumerate(rows)])
                assert vw_distance[i, layer, head] == pytest.approx(dist, rel=1e-4, abs=1e-6)


def test_normalize_rows_masks_padding_and_the_future() -> None:
    weighted = np.arange(1, 1 + 2 * 9, dtype=np.float32).reshape(2, 1, 1, 3, 3)
    qmask = np.array([[True, True, True], [True, True, False]])
    kmask = qmask.copy()
    out = normalize_rows(weighted, qmask, kmask, causal=True)
    np.testing.assert_allclose(out[0, 0, 0], [[1, 0, 0], [4 / 9, 5 / 9, 0], [7 / 24, 8 / 24, 9 / 24]], rtol=1e-6)
    np.testing.assert_allclose(out[1, 0, 0, 1], [13 / 27, 14 / 27, 0], rtol=1e-6)
    assert not out[1, 0, 0, 2].any()  # a padded query's row
    np.testing.assert_allclose(out.sum(-1)[0, 0, 0], 1.0, rtol=1e-6)


def test_metric_spec_describes_value_weighted_names() -> None:
    spec = metric_spec("vw_entropy")
    assert spec is not None and spec.label == "Entropy (value-weighted)" and spec.unit == "nats"
    assert metric_spec("entropy") is METRICS["entropy"]
    assert metric_spec("vw_nothing") is None and metric_spec("nothing") is None


def test_norms_metrics_for_every_example_raw_norms_for_kept_ones(tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    store = tmp_path / "keep.h5"
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=store, limit=6,
                                 threads=1, capture="attention,norms", attention="every:3",
                                 overrides=MODELS["bert-random"]))
    reader = StoreReader(store)
    (run,) = reader.runs()
    assert np.isfinite(reader.metrics(run, "vw_entropy")).all()
    assert reader.value_norms(run, 3).shape[:2] == (2, 4)
    with pytest.raises(NotKeptError):
        reader.value_norms(run, 1)
    # a run without the capture says how to get it
    plain = tmp_path / "plain.h5"
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=plain, limit=2,
                                 threads=1, capture="attention", overrides=MODELS["bert-random"]))
    other = StoreReader(plain)
    with pytest.raises(MissingCaptureError, match="--capture attention,norms"):
        other.value_norms(other.runs()[0], 0)
    assert "vw_entropy" not in other.metric_names(other.runs()[0])


def test_a_model_without_known_projections_is_refused_in_one_line() -> None:
    lm = load_model("bert-random", MODELS["bert-random"], threads=1)
    lm.config.model_type = "mystery"
    from attnviz.pipeline.models.norms import ValueNormRecorder

    with pytest.raises(NormsUnsupportedError, match="drop norms from --capture") as err:
        ValueNormRecorder(lm)
    assert "\n" not in str(err.value)


def test_example_view_draws_the_value_weighted_matrix(norms_run: tuple[str, Path, str]) -> None:
    import attnviz
    from attnviz.dashboard.figjson import decode

    _model, store, run = norms_run
    ex = attnviz.open_store(store).example(run, 2)
    fig = ex.matrix(layer=1, head=3, mode="value-weighted")
    np.testing.assert_allclose(decode(fig.data[0].z), StoreReader(store).value_norms(run, 2, 1, 3), rtol=1e-6)
    assert "value-weighted" in fig.layout.title.text and fig.data[0].colorbar.title.text == "‖α·f(x)‖"
    mean = decode(ex.matrix(layer=1, head=None, mode="value-weighted").data[0].z)
    np.testing.assert_allclose(mean, StoreReader(store).value_norms(run, 2, 1).mean(axis=0), rtol=1e-5)
