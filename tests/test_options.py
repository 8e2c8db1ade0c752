"""One options object for precompute (issue 13): the command line's defaults are the API's, validation is in
one place, and run metadata is read through one typed function."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from attnviz.pipeline.cli import precompute as precompute_command
from attnviz.pipeline.precompute.inputs import InputError
from attnviz.pipeline.precompute.options import DEFAULT_SHARD_SIZE, PrecomputeOptions
from attnviz.pipeline.store import StoreError
from attnviz.pipeline.store.meta import RunMeta, run_meta


def _cli_defaults() -> dict[str, object]:
    import inspect

    out: dict[str, object] = {}
    for name, param in inspect.signature(precompute_command).parameters.items():
        info = param.default
        assert isinstance(info, typer.models.OptionInfo)
        out[name] = info.default
    return out


def test_the_command_line_defaults_are_the_options_defaults() -> None:
    cli = _cli_defaults()
    for name in ("model", "run", "limit", "batch_size", "max_length", "dtype", "mantissa_bits", "threads",
                 "shard_size", "workers", "scheduler"):
        assert cli[name] == PrecomputeOptions.default(name), name
    assert cli["capture"] == "attention,embeddings"
    assert PrecomputeOptions.default("capture") == ("attention", "embeddings")
    assert cli["shard_size"] == DEFAULT_SHARD_SIZE


def test_options_are_normalised() -> None:
    o = PrecomputeOptions(input="in.txt", store="s.h5", capture="embeddings,qkv", dtype="float16", mantissa_bits=10,
                          overrides=["n_layer=2", "n_head=4"])
    assert o.capture == ("attention", "qkv", "embeddings")
    assert o.mantissa_bits is None  # every bit of float16: no rounding
    assert o.overrides == {"n_layer": 2, "n_head": 4}
    assert o.store == Path("s.h5") and not o.distributed
    assert o.replace(workers=2).distributed


@pytest.mark.parametrize(("changes", "needle"), [
    ({"dtype": "int8"}, "unknown --dtype"),
    ({"mantissa_bits": 11}, "--mantissa-bits must be between 1 and 10"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"shard_size": 0}, "--shard-size must be at least 1"),
    ({"max_shard_elements": 0}, "max_shard_elements must be at least 1"),
    ({"limit": 0}, "--limit must be at least 1"),
    ({"max_length": 0}, "--max-length must be at least 1"),
    ({"threads": 0}, "--threads must be at least 1"),
    ({"workers": 0}, "--workers must be at least 1"),
    ({"workers": 2, "scheduler": "tcp://x:1"}, "exactly one"),
    ({"capture": "attention,logits"}, "unknown capture"),
])
def test_bad_options_are_refused_with_one_line(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(InputError, match=needle) as caught:
        PrecomputeOptions(input="in.txt", store="s.h5", **changes)
    assert "\n" not in str(caught.value)


def test_run_meta_reads_old_and_new_metadata() -> None:
    old = run_meta({"model": "bert", "shape": {"self": [2, 4]}, "metrics": {"self": ["entropy"]}})
    assert old.family == "encoder" and old.mantissa_bits is None and old.capture == ["attention"]
    assert old.metrics_of("self") == ["entropy"] and old.metrics_of("cross") == []
    assert old.layers_heads("self") == (2, 4)
    new = run_meta({"model": "gpt2", "family": "decoder", "model_config": {"n_layer": 2}, "future_key": 1})
    assert new.causal and new.config == {"n_layer": 2}
    assert new.to_dict()["model_config"] == {"n_layer": 2} and new.to_dict()["future_key"] == 1
    assert run_meta(new) is new and isinstance(new, RunMeta)
    with pytest.raises(StoreError, match="'shape'"):
        run_meta({"shape": "two by four"})
