"""Concurrent load against gunicorn (2 sync workers) while a precompute writes a new run into the same store.

A short version of ``bench/load.py`` (which runs 60 s and prints the figures): 20 client threads for ~12 s over
the Example tab's matrix, head view, model view and metrics callbacks and every Corpus-tab callback, while
``attnviz precompute`` commits a new run shard by shard. Asserts 0 errors (HTTP, error alerts, store messages,
malformed matrices), that readers saw the new run grow shard by shard to its full size, that every matrix read
from the new run equals the final stored data (no partial example), and a clean shutdown.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from dashboard_fixtures import REPO

sys.path.insert(0, str(REPO))

from bench.load import run_load, summary  # noqa: E402

LIMIT, SHARD = 240, 8  # 30 shards: the writer must still be committing while the watcher polls


@pytest.mark.slow
def test_load_with_a_concurrent_writer(dashboard_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "load.h5"
    shutil.copy2(dashboard_store, store)
    shutil.copytree(f"{dashboard_store}.d", f"{store}.d")
    lines: list[str] = []
    result = run_load(store, clients=20, duration=12, workers=2, precompute={"limit": LIMIT, "shard_size": SHARD},
                      log_dir=tmp_path, say=lines.append)
    s = summary(result)
    print(s)
    assert result.errors == [], result.errors[:10]
    assert s["server_logged_errors"] == 0 and s["server_exit"] == 0 and s["precompute_exit"] == 0
    assert s["requests"] >= 100 and s["p95_ms"] > 0
    assert any(name.startswith("corpus") for name in s["per_callback"]), s["per_callback"]
    assert {"example data", "metrics"} <= set(s["per_callback"])
    counts = s["new_run_counts_seen"]
    assert counts[-1] == LIMIT and s["new_run_examples"] == LIMIT, counts
    assert counts == sorted(counts), counts
    during = [n for n in counts if n > s["new_run_committed_before_load"]]
    assert len(during) >= 2, counts  # new shards appeared, one after another, while it served
    assert all(n % SHARD == 0 for n in counts), counts  # only whole shards are ever visible
    assert s["new_run_reads_checked"] > 0
