"""Store operations only tests need: write and commit a shard in one call, edit a run's metadata in place."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnviz.pipeline.records import ExampleResult
from attnviz.pipeline.store import RunInfo, StoreWriter, shard_dir, shard_file_name, write_shard_file
from attnviz.pipeline.store.index import write_index


def write_shard(writer: StoreWriter, run: str, start: int, results: Sequence[ExampleResult], *,
                dtype: str = "float16", codec_name: str | None = None) -> RunInfo:
    """Write ``results`` as the shard of ``run`` starting at ``start`` and commit it to the index."""
    path = shard_dir(writer.path, run) / shard_file_name(start, len(results))
    write_shard_file(path, run, start, results, dtype=dtype, codec_name=codec_name)
    return writer.commit_shard(run, path)


def update_meta(store: str | Path, run: str, **values: Any) -> None:
    """Merge ``values`` into a run's metadata (under the store's lock, as a writer would)."""
    writer = StoreWriter(store)
    with writer._locked() as runs:
        runs[run].meta.update(values)
        write_index(writer.path, runs)
