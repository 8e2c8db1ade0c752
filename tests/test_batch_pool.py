"""Whole batches side by side (pipeline/precompute/batch_pool.py): the same results as one batch at a time, for
every family and capture, with kept and dropped examples; the worker count's bounds; torch's threads restored;
an error in a worker's batch surfaces; and a whole precompute with two workers stores what one worker stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnviz.pipeline.models.extract import TokenClassifier, encode
from attnviz.pipeline.models.loading import load_model
from attnviz.pipeline.precompute.batch_pool import BATCH_MEMORY_BUDGET, BatchPool, batch_bytes, worker_count
from attnviz.pipeline.precompute.inputs import InputExample
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.records import ExampleResult
from attnviz.pipeline.store import StoreReader
from tests.test_precompute import PAIRS, SENTENCES, TINY

#: Sentences of many lengths, so that a shard has several length batches.
TEXTS = [*SENTENCES, *(" ".join(SENTENCES[: k % 5 + 1]) for k in range(13))]


def _examples(model: str) -> list[InputExample]:
    if model == "seq2seq-random":
        return [InputExample(index=i, text=s, target=t) for i, (s, t) in enumerate(PAIRS * 4)]
    return [InputExample(index=i, text=t) for i, t in enumerate(TEXTS)]


def _run(lm, examples, *, threads: int, capture: tuple[str, ...], keep: list[bool] | None = None
         ) -> tuple[list[ExampleResult], int]:
    encoded = [encode(lm, e) for e in examples]
    with BatchPool(lm, batch_size=3, threads=threads) as pool:
        results = pool.submit(encoded, capture=capture, dtype="float16", classifier=TokenClassifier(lm),
                              keep=keep).results()
        return sorted(results, key=lambda r: r.input_index), pool.workers


def _assert_same(one: list[ExampleResult], two: list[ExampleResult]) -> None:
    """Two computations of the same examples agree: tokens and flags exactly, tensors to float16 rounding (the
    forward's matrix products may add in another order with another thread count), metrics to 1e-5."""
    assert [r.input_index for r in one] == [r.input_index for r in two]
    for a, b in zip(one, two, strict=True):
        assert a.kept == b.kept and a.text == b.text
        np.testing.assert_array_equal(a.source.ids, b.source.ids)
        np.testing.assert_array_equal(a.source.flags, b.source.flags)
        assert a.attention.keys() == b.attention.keys()
        for kind in a.attention:
            assert a.attention[kind].shape == b.attention[kind].shape
            np.testing.assert_allclose(a.attention[kind].astype(np.float32), b.attention[kind].astype(np.float32),
                                       rtol=2e-3, atol=1e-4)
            for name, values in a.metrics[kind].items():
                np.testing.assert_allclose(values, b.metrics[kind][name], rtol=1e-5, atol=1e-5, err_msg=name)
        for side in a.hidden:
            np.testing.assert_allclose(a.hidden[side].astype(np.float32), b.hidden[side].astype(np.float32),
                                       rtol=2e-3, atol=2e-3)
        for kind in a.qkv:
            for x, y in zip(a.qkv[kind], b.qkv[kind], strict=True):
                np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("model,capture", [
    ("minilm", ("attention",)),
    ("bert-random", ("attention", "qkv", "hidden", "embeddings")),
    ("gpt2-random", ("attention", "norms")),
    ("seq2seq-random", ("attention", "qkv")),
])
def test_two_workers_give_what_one_gives(model: str, capture: tuple[str, ...]) -> None:
    lm = load_model(model, TINY[model])
    examples = _examples(model)
    keep = [k % 3 != 1 for k in range(len(examples))]  # some examples keep no raw tensors (--attention)
    serial, one = _run(lm, examples, threads=1, capture=capture, keep=keep)
    pooled, two = _run(lm, examples, threads=2, capture=capture, keep=keep)
    assert (one, two) == (1, 2)
    assert [r.kept for r in pooled] == keep
    assert all(r.attention["self"].size == 0 for r in pooled if not r.kept)
    _assert_same(serial, pooled)


def test_results_come_longest_batch_first() -> None:
    lm = load_model("bert-random", TINY["bert-random"])
    encoded = [encode(lm, e) for e in _examples("bert-random")]
    with BatchPool(lm, batch_size=3, threads=2) as pool:
        results = pool.submit(encoded, capture=("attention",), dtype="float16",
                              classifier=TokenClassifier(lm)).results()
    lengths = [len(r.source) for r in results]
    assert sorted(r.input_index for r in results) == list(range(len(encoded)))
    assert sorted(lengths[:3]) == sorted(lengths)[-3:] and min(lengths) in lengths[-3:]  # the first batch: longest


def test_worker_count_is_bounded_by_threads_and_memory() -> None:
    lm = load_model("bert-random", TINY["bert-random"])  # 2 layers x 4 heads
    assert batch_bytes(lm, 32, 30) == 3 * 4 * 32 * 8 * 30 * 30
    assert worker_count(lm, 1, 32, 30) == 1
    assert worker_count(lm, 2, 32, 30) == 2
    assert worker_count(lm, 16, 32, 30) == 16
    # Batches so long that two would pass the budget run one at a time.
    longest = int((BATCH_MEMORY_BUDGET / (3 * 4 * 32 * 8)) ** 0.5) + 1
    assert batch_bytes(lm, 32, longest) > BATCH_MEMORY_BUDGET
    assert worker_count(lm, 8, 32, longest) == 1
    half = int((BATCH_MEMORY_BUDGET / 2 / (3 * 4 * 32 * 8)) ** 0.5)
    assert worker_count(lm, 8, 32, half) == 2


def test_torch_threads_are_shared_out_and_restored() -> None:
    lm = load_model("bert-random", TINY["bert-random"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with BatchPool(lm, batch_size=3, threads=4) as pool:
            assert pool.workers == 4 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 4
        with BatchPool(lm, batch_size=3, threads=1) as pool:  # one worker: torch's threads untouched
            assert pool.workers == 1 and torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_an_error_in_a_workers_batch_surfaces_and_the_pool_stops() -> None:
    lm = load_model("bert-random", TINY["bert-random"])
    encoded = [encode(lm, e) for e in _examples("bert-random")]
    # Longer than the model's positions: this example's batch fails inside a worker, in the forward pass.
    encoded[4].source_ids = (encoded[4].source_ids * 600)[: lm.config.max_position_embeddings + 50]
    restore = torch.get_num_threads()
    with pytest.raises((IndexError, RuntimeError)), BatchPool(lm, batch_size=3, threads=2) as pool:
        pool.submit(encoded, capture=("attention",), dtype="float16", classifier=TokenClassifier(lm)).results()
    assert torch.get_num_threads() == restore


def test_a_precompute_with_two_workers_stores_what_one_worker_stores(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    stores = {}
    for threads in (1, 2):
        stores[threads] = tmp_path / f"t{threads}.h5"
        precompute(PrecomputeOptions(model="bert-random", overrides=TINY["bert-random"], input=str(path),
                                     store=stores[threads], batch_size=3, threads=threads, shard_size=5,
                                     capture="attention", attention="every:2"))
    with StoreReader(stores[1]) as one, StoreReader(stores[2]) as two:
        run = one.runs()[0]
        assert two.runs() == [run] and one.num_examples(run) == two.num_examples(run) == len(TEXTS)
        assert len(one.run_info(run).shards) == len(two.run_info(run).shards) == 4
        for i in range(len(TEXTS)):
            assert one.tokens(run, i) == two.tokens(run, i)
            assert one.has_attention(run, i) == two.has_attention(run, i) == (i % 2 == 0)
            if i % 2 == 0:
                np.testing.assert_allclose(one.attention(run, i), two.attention(run, i), rtol=2e-3, atol=1e-4)
        assert one.metric_names(run) == two.metric_names(run)
        for name in one.metric_names(run):
            np.testing.assert_allclose(one.metrics(run, name), two.metrics(run, name), rtol=1e-5, atol=1e-5,
                                       err_msg=name)
