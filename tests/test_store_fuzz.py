"""Property-based round trip of the store writer/reader: random shapes, lengths 1..1024, both dtypes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import write_shard

from attnviz.pipeline.records import ExampleResult, TokenSequence
from attnviz.pipeline.store import StoreReader, StoreWriter


def _example(i: int, t: int, t_tgt: int, layers: int, heads: int, rng: np.random.Generator) -> ExampleResult:
    def attn(tq: int, tk: int) -> np.ndarray:
        a = rng.random((layers, heads, tq, tk), dtype=np.float32)
        return a / a.sum(-1, keepdims=True)

    def tokens(n: int) -> TokenSequence:
        return TokenSequence(rng.integers(0, 50000, n).astype(np.int32), [f"tok{k}é" for k in range(n)],
                             rng.integers(0, 16, n).astype(np.uint8))

    return ExampleResult(
        input_index=i, text=f"text {i} ✓", source=tokens(t), target=tokens(t_tgt), target_text=f"objetivo {i}",
        attention={"self": attn(t, t), "decoder": attn(t_tgt, t_tgt), "cross": attn(t_tgt, t)},
        metrics={k: {"entropy": rng.random((layers, heads), dtype=np.float32)} for k in ("self", "decoder", "cross")},
        meta={"i": i}, qkv={"self": tuple(rng.standard_normal((layers, heads, t, 4), dtype=np.float32)
                                         for _ in range(3))},
        hidden={"source": rng.standard_normal((layers + 1, t, 8), dtype=np.float32)},
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.tuples(st.integers(1, 1024), st.integers(1, 40)), min_size=1, max_size=4),
    layers=st.integers(1, 2), heads=st.integers(1, 2), dtype=st.sampled_from(["float16", "float32"]),
    split=st.integers(0, 3), seed=st.integers(0, 2**16),
)
def test_round_trip(lengths: list[tuple[int, int]], layers: int, heads: int, dtype: str, split: int,
                    seed: int) -> None:
    # Long sources only with a short decoder side, to keep each case small.
    lengths = [(t, u) if t <= 128 else (t, 1) for t, u in lengths]
    rng = np.random.default_rng(seed)
    results = [_example(i, t, u, layers, heads, rng) for i, (t, u) in enumerate(lengths)]
    meta = {"kinds": ["self", "decoder", "cross"], "shape": {k: [layers, heads] for k in ("self", "decoder", "cross")},
            "metrics": {k: ["entropy"] for k in ("self", "decoder", "cross")}, "model": "fuzz",
            "family": "encoder-decoder", "capture": ["attention", "qkv", "hidden"], "planned_examples": len(results)}
    cut = min(split, len(results))
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s.h5"
        writer = StoreWriter(store)
        writer.begin_run("fuzz", meta, fingerprint_keys=[])
        for start, part in ((cut, results[cut:]), (0, results[:cut])):
            if part:
                write_shard(writer, "fuzz", start, part, dtype=dtype)
        tol = {"float16": dict(atol=1e-3, rtol=1e-3), "float32": dict(atol=0, rtol=0)}[dtype]
        with StoreReader(store) as reader:
            assert reader.num_examples("fuzz") == len(results)
            for i, r in enumerate(results):
                for kind in ("self", "decoder", "cross"):
                    np.testing.assert_allclose(reader.attention("fuzz", i, kind=kind), r.attention[kind], **tol)
                layer, head = layers - 1, heads - 1
                np.testing.assert_allclose(reader.attention("fuzz", i, layer, head, kind="cross"),
                                           r.attention["cross"][layer, head], **tol)
                q, k, v = reader.qkv("fuzz", i, layer, head)
                np.testing.assert_allclose(q, r.qkv["self"][0][layer, head], **{**tol, "atol": 1e-2})
                np.testing.assert_allclose(reader.hidden("fuzz", i), r.hidden["source"], **{**tol, "atol": 1e-2})
                assert reader.tokens("fuzz", i) == r.source.strings
                assert reader.tokens("fuzz", i, side="target") == r.target.strings
                np.testing.assert_array_equal(reader.token_ids("fuzz", i), r.source.ids)
                np.testing.assert_array_equal(reader.token_flags("fuzz", i, side="target"), r.target.flags)
            for kind in ("self", "decoder", "cross"):
                np.testing.assert_array_equal(reader.metrics("fuzz", "entropy", kind),
                                              np.stack([r.metrics[kind]["entropy"] for r in results]))
            table = reader.examples("fuzz")
            assert table.text == [r.text for r in results]
            assert table.target_text == [r.target_text for r in results]
            assert table.n_tokens.tolist() == [t for t, _ in lengths]
