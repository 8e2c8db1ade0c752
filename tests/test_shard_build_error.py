"""An error while a shard's file is built (copy, compression, HDF5 image) while the I/O thread writes and commits
the previous one: the error surfaces in the command, the shards committed before it stay readable, no temporary
file is left, and a rerun resumes into the same stored values as an uninterrupted run. Real model (tiny random
BERT), real HDF5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from attnviz.pipeline.precompute import local
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import StoreReader

REPO = Path(__file__).resolve().parent.parent
TINY = {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 32, "intermediate_size": 64}


def _options(store: Path) -> PrecomputeOptions:
    return PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=store, run="r",
                             limit=40, shard_size=10, batch_size=4, threads=1, overrides=TINY,
                             capture=("attention",), analyze=False)


def _stored(store: Path) -> list[np.ndarray]:
    with StoreReader(store) as reader:
        return [reader.attention("r", i) for i in range(reader.num_examples("r"))]


def test_error_building_a_shard_keeps_earlier_shards_and_resumes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reference = tmp_path / "ref.h5"
    precompute(_options(reference))
    calls = {"n": 0}
    real = local.shard_image

    def failing_third(*args: Any, **kwargs: Any) -> bytes:
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("out of memory building the shard file")
        return real(*args, **kwargs)

    store = tmp_path / "s.h5"
    monkeypatch.setattr(local, "shard_image", failing_third)
    with pytest.raises(MemoryError):
        precompute(_options(store))
    with StoreReader(store) as reader:
        assert reader.num_examples("r") == 20  # shards 1 and 2 committed, the third never was
    assert not [p for p in Path(f"{store}.d").rglob("*") if ".tmp-" in p.name]
    monkeypatch.setattr(local, "shard_image", real)
    summary = precompute(_options(store))
    assert (summary.new_examples, summary.skipped_examples) == (20, 20)
    got, want = _stored(store), _stored(reference)
    assert len(got) == len(want) == 40
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
