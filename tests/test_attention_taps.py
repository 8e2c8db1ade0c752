"""Stopping the forward pass after the last attention: same tensors as the whole forward, less work."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from attnviz.pipeline.models import taps
from attnviz.pipeline.models.extract import encode, forward_batch, length_batches
from attnviz.pipeline.models.loading import LoadedModel, load_model
from attnviz.pipeline.precompute.inputs import InputExample
from tests.test_precompute import PAIRS, SENTENCES, TINY


def _batches(lm: LoadedModel) -> list[list]:
    if lm.family == "encoder-decoder":
        examples = [InputExample(index=i, text=s, target=t) for i, (s, t) in enumerate(PAIRS)]
    else:
        examples = [InputExample(index=i, text=s) for i, s in enumerate(SENTENCES)]
    return list(length_batches([encode(lm, e) for e in examples], 2))


@contextmanager
def _counting_module_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Counts every module call (forward hook) while the block runs."""
    count = [0]

    def hook(*_args: object) -> None:
        count[0] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        yield count
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("model", ["bert-random", "albert-random", "gpt2-random", "seq2seq-random"])
def test_stopped_forward_returns_the_whole_forwards_tensors_with_fewer_module_calls(model: str) -> None:
    lm = load_model(model, TINY[model])
    base = lm.model.base_model
    batches = _batches(lm)
    assert not taps.is_traced(base)
    forward_batch(lm, batches[0])  # the first forward is whole and traces where each attention comes from
    sites = taps.known_sites(base)
    assert sites is not None
    assert {kind: len(s) for kind, s in sites.items()} == {kind: layers for kind, (layers, _) in lm.shape().items()}
    for batch in batches:
        with _counting_module_calls(base) as stopped_calls:
            stopped = forward_batch(lm, batch)
        with _counting_module_calls(base) as whole_calls:
            whole = forward_batch(lm, batch, full=True)
        assert stopped_calls[0] < whole_calls[0], "the stopped forward must skip what follows the last attention"
        assert stopped.attentions.keys() == whole.attentions.keys() == lm.shape().keys()
        for kind, layers in whole.attentions.items():
            assert len(stopped.attentions[kind]) == len(layers)
            for got, ref in zip(stopped.attentions[kind], layers, strict=True):
                assert torch.equal(got, ref), f"{model} {kind}: stopped forward differs from the whole forward"


def test_a_model_whose_attention_cannot_be_traced_runs_whole_forwards() -> None:
    lm = load_model("bert-random", TINY["bert-random"])
    base = lm.model.base_model
    batch = _batches(lm)[0]

    def cloned_attention() -> dict[str, tuple[torch.Tensor, ...]]:  # tensors no module returned
        with torch.inference_mode():
            out = base(**{"input_ids": torch.tensor([batch[0].source_ids])}, output_attentions=True)
        return {"self": tuple(a.clone() for a in out.attentions)}

    taps.discover(base, cloned_attention)
    assert taps.is_traced(base) and taps.known_sites(base) is None
    with _counting_module_calls(base) as untraced_calls:
        got = forward_batch(lm, batch)
    with _counting_module_calls(base) as whole_calls:
        ref = forward_batch(lm, batch, full=True)
    assert untraced_calls[0] == whole_calls[0]
    for a, b in zip(got.attentions["self"], ref.attentions["self"], strict=True):
        assert torch.equal(a, b)


def test_hidden_state_capture_runs_the_whole_forward() -> None:
    lm = load_model("gpt2-random", TINY["gpt2-random"])
    batches = _batches(lm)
    forward_batch(lm, batches[0])
    assert taps.known_sites(lm.model.base_model) is not None
    out = forward_batch(lm, batches[1], capture=("attention", "hidden"))
    ref = forward_batch(lm, batches[1], capture=("attention", "hidden"), full=True)
    assert len(out.hidden["source"]) == lm.shape()["self"][0] + 1
    assert torch.equal(out.hidden["source"][-1], ref.hidden["source"][-1])  # the final layer ran


def test_a_model_that_changes_attention_after_returning_it_is_not_stopped_early() -> None:
    lm = load_model("bert-random", TINY["bert-random"])
    base = lm.model.base_model
    batches = _batches(lm)

    def halve_returned_weights(_module: torch.nn.Module, _inputs: object, output: tuple) -> None:
        output[1].mul_(0.5)  # the enclosing block changes its self-attention's weights in place, afterwards

    handles = [layer.attention.register_forward_hook(halve_returned_weights) for layer in base.encoder.layer]
    try:
        first = forward_batch(lm, batches[0])
        assert taps.is_traced(base) and taps.known_sites(base) is None, "the check against the whole forward failed"
        first_rows = first.attentions["self"][-1][:, :, 0].sum(-1)  # every example's first query, every head
        assert torch.allclose(first_rows, torch.full_like(first_rows, 0.5)), "the in-place halving took effect"
        with _counting_module_calls(base) as calls:
            got = forward_batch(lm, batches[1])
        with _counting_module_calls(base) as whole_calls:
            ref = forward_batch(lm, batches[1], full=True)
    finally:
        for h in handles:
            h.remove()
    assert calls[0] == whole_calls[0]
    for a, b in zip(got.attentions["self"], ref.attentions["self"], strict=True):
        assert torch.equal(a, b)


def test_two_threads_forwarding_one_model_each_get_their_own_attention_and_qkv() -> None:
    lm = load_model("bert-random", TINY["bert-random"])
    batches = _batches(lm)[:2]
    capture = ("attention", "qkv")
    forward_batch(lm, batches[0], capture=capture)  # traced
    refs = [forward_batch(lm, b, capture=capture) for b in batches]
    failures: list[str] = []

    def work(k: int) -> None:
        try:
            compare(k)
        except Exception as exc:  # noqa: BLE001 - a thread's exception must fail the test, not just warn
            failures.append(f"thread {k}: {type(exc).__name__}: {exc}")

    def compare(k: int) -> None:
        for _ in range(15):
            got = forward_batch(lm, batches[k], capture=capture)
            same = all(torch.equal(a, b)
                       for a, b in zip(got.attentions["self"], refs[k].attentions["self"], strict=True))
            same_qkv = all(np.array_equal(a, b) for a, b in zip(got.qkv["self"], refs[k].qkv["self"], strict=True))
            if not (same and same_qkv):
                failures.append(f"thread {k}: attention {same}, qkv {same_qkv}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads between almost every bytecode: the forwards interleave
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:3]


@pytest.mark.parametrize("model", ["bert-random", "seq2seq-random"])
def test_qkv_of_the_tracing_forward_and_of_stopped_forwards_equal_the_whole_forwards(model: str) -> None:
    lm = load_model(model, TINY[model])
    capture = ("attention", "qkv")
    for batch in _batches(lm)[:2]:  # the first forward traces the model, the second is stopped
        got = forward_batch(lm, batch, capture=capture)
        ref = forward_batch(lm, batch, capture=capture, full=True)
        assert got.qkv.keys() == ref.qkv.keys() == lm.shape().keys()
        for kind, (layers, heads) in lm.shape().items():
            for a, b in zip(got.qkv[kind], ref.qkv[kind], strict=True):
                assert a.shape[1:3] == (layers, heads)
                assert np.array_equal(a, b)
