"""No sequence of commands lists an example twice or leaves a run that blocks the right command (issue 12).

Shards are planned over the examples a run lacks, commits refuse overlaps, a run whose command failed before
its first shard is removed (or, if a kill left it, takes the next configuration), and ``verify`` finds and
repairs what older versions could leave behind: overlapping shards, misplaced example indices, empty runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta
from typer.testing import CliRunner

from attnviz.pipeline.cli import app
from attnviz.pipeline.precompute.local import PrecomputeSummary, precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import (
    StoreError,
    StoreReader,
    StoreWriter,
    config_fingerprint,
    shard_dir,
    shard_file_name,
    verify_store,
    write_shard_file,
)
from attnviz.pipeline.store.index import read_index, write_index

TINY = {"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 32, "intermediate_size": 64}
SENTENCES = [f"Sentence number {i} says something about {'the cat ' * (i % 5)}and stops." for i in range(50)]
PATTERNS = [["previous", "first"], ["broad", "next"]]
KEYS = ("model",)


@pytest.fixture()
def sentences(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def _run(sentences: Path, store: Path, on_start: Callable[[int, int], None] | None = None,
         **kw: Any) -> PrecomputeSummary:
    return precompute(PrecomputeOptions(model="bert-random", input=str(sentences), store=store, overrides=TINY, run="r",
                                        shard_size=16, capture="attention", **kw), on_start=on_start)


def _texts(store: Path) -> list[str]:
    with StoreReader(store) as reader:
        return reader.examples("r").text


def _shards(store: Path) -> list[tuple[int, int]]:
    return [(s.start, s.count) for s in read_index(store)["r"].shards]


def test_a_larger_limit_extends_the_run_and_a_smaller_one_is_done(sentences: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    assert _run(sentences, store, limit=32).examples == 32
    second = _run(sentences, store, limit=40)
    assert (second.examples, second.new_examples, second.skipped_examples) == (40, 8, 32)
    assert _shards(store) == [(0, 16), (16, 16), (32, 8)]
    assert _texts(store) == SENTENCES[:40]
    smaller = _run(sentences, store, limit=10)
    assert (smaller.examples, smaller.new_examples) == (40, 0)
    full = _run(sentences, store)
    assert (full.examples, full.new_examples) == (50, 10)
    assert _texts(store) == SENTENCES
    assert verify_store(store).problems == [] and verify_store(store).incomplete == []
    # The same examples as one command over the whole input.
    whole = tmp_path / "whole.h5"
    _run(sentences, whole)
    with StoreReader(store) as a, StoreReader(whole) as b:
        assert a.run_info("r").meta["planned_examples"] == 50
        for i in range(50):
            assert a.tokens("r", i) == b.tokens("r", i)
            np.testing.assert_allclose(a.attention("r", i), b.attention("r", i), atol=2e-3)


def test_a_full_run_after_a_limit_trial(sentences: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    _run(sentences, store, limit=5)
    assert _run(sentences, store).examples == 50
    assert _texts(store) == SENTENCES
    with StoreReader(store) as reader:
        assert list(reader.examples("r").input_index) == list(range(50))


def _synthetic_store(tmp_path: Path, ranges: list[tuple[int, int]]) -> Path:
    store = tmp_path / "syn.h5"
    writer = StoreWriter(store)
    writer.begin_run("r", synthetic_meta(2, 2, 40), fingerprint_keys=KEYS)
    for start, count in ranges:
        write_shard(writer, "r", start, synthetic_examples(PATTERNS, count, start=start))
    return store


def test_commit_refuses_a_shard_that_overlaps(tmp_path: Path) -> None:
    store = _synthetic_store(tmp_path, [(0, 8)])
    writer = StoreWriter(store)
    with pytest.raises(StoreError, match="overlaps committed shard"):
        write_shard(writer, "r", 4, synthetic_examples(PATTERNS, 8, start=4))
    assert _shards(store) == [(0, 8)]
    write_shard(writer, "r", 8, synthetic_examples(PATTERNS, 4, start=8))
    assert _shards(store) == [(0, 8), (8, 4)]


def test_orphans_of_another_plan_or_configuration_are_not_adopted(tmp_path: Path) -> None:
    store = _synthetic_store(tmp_path, [(0, 8)])
    folder = shard_dir(store, "r")
    overlapping = write_shard_file(folder / shard_file_name(0, 10), "r", 0, synthetic_examples(PATTERNS, 10))
    other_config = write_shard_file(folder / shard_file_name(8, 4), "r", 8,
                                    synthetic_examples(PATTERNS, 4, start=8), fingerprint="0123456789abcdef")
    same_config = write_shard_file(folder / shard_file_name(12, 4), "r", 12,
                                   synthetic_examples(PATTERNS, 4, start=12),
                                   fingerprint=config_fingerprint(synthetic_meta(2, 2, 40), KEYS))
    StoreWriter(store).begin_run("r", synthetic_meta(2, 2, 40), fingerprint_keys=KEYS)
    assert _shards(store) == [(0, 8), (12, 4)]
    assert not overlapping.exists() and not other_config.exists() and same_config.exists()


def test_a_shard_of_another_configuration_is_refused(tmp_path: Path) -> None:
    store = _synthetic_store(tmp_path, [(0, 8)])
    path = write_shard_file(shard_dir(store, "r") / shard_file_name(8, 4), "r", 8,
                            synthetic_examples(PATTERNS, 4, start=8), fingerprint="0123456789abcdef")
    with pytest.raises(StoreError, match="another configuration"):
        StoreWriter(store).commit_shard("r", path)


def test_a_command_that_fails_before_its_first_shard_leaves_no_run(sentences: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"

    def interrupted(_done: int, _total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(sentences, store, limit=4, on_start=interrupted)
    assert "r" not in read_index(store)
    assert not shard_dir(store, "r").exists()


def test_an_empty_run_left_by_a_kill_takes_the_next_configuration(sentences: Path, tmp_path: Path) -> None:
    """A kill before the first shard leaves an empty run; the corrected command must not be refused."""
    store = tmp_path / "s.h5"
    StoreWriter(store).begin_run("r", {"model": "bert-random", "overrides": {"num_hidden_layers": -1}},
                                 fingerprint_keys=("model", "overrides"))
    summary = _run(sentences, store, limit=4)
    assert summary.examples == 4
    meta = read_index(store)["r"].meta
    assert meta["overrides"] == TINY
    with pytest.raises(StoreError, match="different configuration"):
        precompute(PrecomputeOptions(model="bert-random", input=str(sentences), store=store, run="r", shard_size=16,
                                     limit=4, overrides={**TINY, "num_attention_heads": 4}, capture="attention"))


def _corrupt_index(store: Path, extra: list[tuple[str, int, int]]) -> None:
    """Write index entries directly, as attnviz before this fix could (commit_shard now refuses them)."""
    from attnviz.pipeline.store import ShardEntry

    runs = read_index(store)
    runs["r"].shards.extend(ShardEntry(f, s, c) for f, s, c in extra)
    runs["r"].shards.sort(key=lambda e: e.start)
    write_index(store, runs)


def test_verify_reports_and_repairs_overlapping_shards(tmp_path: Path) -> None:
    store = _synthetic_store(tmp_path, [(0, 8)])
    folder = shard_dir(store, "r")
    write_shard_file(folder / shard_file_name(0, 12), "r", 0, synthetic_examples(PATTERNS, 12))
    _corrupt_index(store, [(shard_file_name(0, 12), 0, 12)])
    check = verify_store(store)
    assert len(check.problems) == 1 and "overlap" in check.problems[0] and "0..7" in check.problems[0]
    result = CliRunner().invoke(app, ["verify", "--store", str(store)])
    assert result.exit_code == 1 and "overlap" in result.stderr
    result = CliRunner().invoke(app, ["verify", "--store", str(store), "--repair"])
    assert result.exit_code == 0, result.output
    assert _shards(store) == [(0, 12)]
    assert (folder / (shard_file_name(0, 8) + ".dropped")).exists()
    with StoreReader(store) as reader:
        assert list(reader.examples("r").input_index) == list(range(12))
    assert verify_store(store).problems == []


def test_verify_reports_duplicated_example_indices(tmp_path: Path) -> None:
    store = _synthetic_store(tmp_path, [(0, 8)])
    examples = synthetic_examples(PATTERNS, 4, start=8)
    examples[2].input_index = 9  # 8, 9, 9, 11: 9 twice, 10 missing
    path = write_shard_file(shard_dir(store, "r") / shard_file_name(8, 4), "r", 8, examples)
    _corrupt_index(store, [(path.name, 8, 4)])
    check = verify_store(store, repair=True)
    assert len(check.problems) == 1 and "duplicated or misplaced example indices" in check.problems[0]
    assert _shards(store) == [(0, 8)]
    assert any("8..39 not computed" in line for line in verify_store(store).incomplete)


def test_verify_reports_and_removes_a_run_without_shards(tmp_path: Path) -> None:
    store = _synthetic_store(tmp_path, [(0, 8)])
    StoreWriter(store).begin_run("empty", synthetic_meta(2, 2, 5), fingerprint_keys=KEYS)
    check = verify_store(store)
    assert len(check.problems) == 1 and "'empty' has no shard" in check.problems[0]
    verify_store(store, repair=True)
    assert sorted(read_index(store)) == ["r"]
    assert verify_store(store).problems == []
