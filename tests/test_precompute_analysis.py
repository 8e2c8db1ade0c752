"""Head similarity and relative positions are computed by ``attnviz precompute`` after its last shard (issue 15).

Checked: the cache precompute writes equals what ``attnviz analyze`` computes for the same run; a precompute
that stopped before analysing (``--no-analyze`` here, a kill in real life: the cache is written atomically)
computes it on its next run, which has no shard left to compute; a run extended by a later command gets a
fresh cache; a damaged cache is computed again; ``attnviz analyze`` still serves stores made before.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnviz.pipeline.precompute.analyze import analysis_needed, analyze
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import StoreReader, analysis_path, load_analysis

REPO = Path(__file__).resolve().parent.parent
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32}


def options(store: Path, **kw) -> PrecomputeOptions:
    return PrecomputeOptions(model="gpt2-random", input=str(REPO / "data/demo.jsonl"), store=store, threads=1,
                             overrides=TINY, capture="attention", shard_size=4, **kw)


def same_analysis(store: Path, run: str, other: Path) -> None:
    """The analysis of ``run`` in ``store`` equals the one in ``other`` (the same run analysed separately)."""
    a, b = load_analysis(store, run), load_analysis(other, run)
    assert a is not None and b is not None and a.shards == b.shards
    for kind, ka in a.kinds.items():
        kb = b.kinds[kind]
        assert ka.similarity is not None and kb.similarity is not None
        np.testing.assert_array_equal(ka.similarity, kb.similarity)
        np.testing.assert_array_equal(ka.order, kb.order)
        np.testing.assert_array_equal(ka.relpos, kb.relpos)
        assert ka.max_offset == kb.max_offset == 16


def test_precompute_caches_what_analyze_computes(tmp_path: Path) -> None:
    store = tmp_path / "a.h5"
    summary = precompute(options(store, limit=10))
    assert summary.analysis == "computed" and "relative positions computed" in summary.line()
    info = StoreReader(store).run_info(summary.run)
    cached = load_analysis(store, summary.run)
    assert cached is not None and not cached.is_stale(info) and cached.n_examples == 10
    # the same run made without the analysis in another store, then analysed by the command's function
    other = tmp_path / "b.h5"
    precompute(options(other, limit=10, analyze=False))
    assert load_analysis(other, summary.run) is None and analysis_needed(other, summary.run)
    analyze(other, summary.run, workers=0)
    same_analysis(store, summary.run, other)
    # nothing new: the cache is up to date and not written again
    mtime = analysis_path(store, summary.run).stat().st_mtime_ns
    again = precompute(options(store, limit=10))
    assert again.new_examples == 0 and again.analysis == "up to date"
    assert analysis_path(store, summary.run).stat().st_mtime_ns == mtime


def test_a_precompute_stopped_before_its_analysis_finishes_it_on_the_next_run(tmp_path: Path) -> None:
    store = tmp_path / "r.h5"
    first = precompute(options(store, limit=8, analyze=False))
    assert first.analysis == "" and not analysis_path(store, first.run).exists()
    resumed = precompute(options(store, limit=8))
    assert resumed.new_examples == 0 and resumed.analysis == "computed"
    assert not analysis_needed(store, first.run)
    # extended by a later command: the cache of 8 examples is stale, the new one covers 12
    extended = precompute(options(store, limit=12))
    assert extended.new_examples == 4 and extended.analysis == "computed"
    cached = load_analysis(store, first.run)
    assert cached is not None and cached.n_examples == 12
    # a damaged cache (not HDF5) is computed again, and nothing else changes
    analysis_path(store, first.run).write_bytes(b"not an HDF5 file" * 64)
    assert analysis_needed(store, first.run)
    repaired = precompute(options(store, limit=12))
    assert repaired.analysis == "computed" and load_analysis(store, first.run) is not None


def test_the_command_line_analyses_and_can_be_told_not_to(tmp_path: Path) -> None:
    store = tmp_path / "c.h5"
    base = [sys.executable, "-m", "attnviz.pipeline.cli", "precompute", "--model", "gpt2-random", "--input",
            str(REPO / "data/demo.jsonl"), "--store", str(store), "--limit", "4", "--capture", "attention",
            "--set", "n_layer=1", "--set", "n_head=2", "--set", "n_embd=32"]
    out = subprocess.run([*base, "--no-analyze"], capture_output=True, text=True, cwd=REPO, check=True)
    assert "relative positions" not in out.stdout
    run = "gpt2-random--demo"
    assert not analysis_path(store, run).exists()
    out = subprocess.run(base, capture_output=True, text=True, cwd=REPO, check=True)
    assert "head similarity and relative positions computed" in out.stdout
    assert load_analysis(store, run) is not None


@pytest.mark.parametrize("workers", [0])
def test_analyze_still_serves_older_stores(tmp_path: Path, workers: int) -> None:
    store = tmp_path / "old.h5"
    summary = precompute(options(store, limit=4, analyze=False))  # as a store made before precompute analysed
    result = analyze(store, summary.run, max_offset=3, workers=workers)
    cached = load_analysis(store, summary.run)
    assert result.examples == 4 and cached is not None and cached.kinds["self"].max_offset == 3
    # precompute keeps that cache while it is up to date, and keeps its offset when it recomputes
    assert precompute(options(store, limit=4)).analysis == "up to date"
    precompute(options(store, limit=6))
    cached = load_analysis(store, summary.run)
    assert cached is not None and cached.n_examples == 6 and cached.kinds["self"].max_offset == 3
