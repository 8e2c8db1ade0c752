"""Build a run's corpus index (:mod:`attnviz.pipeline.statistics.corpus_index`, files of
:mod:`attnviz.pipeline.store.aggregates`): the filter groups, the test sample and one index file per metric.

Called by ``attnviz analyze``. Resumable: a metric whose file matches the run's shards and groups is skipped, so an
interrupted analyze does only what is left. With ``workers`` (or a dask ``scheduler``) the metrics are built by
dask tasks, each reading its metric's arrays and writing its own file; the task arguments are the store path, the
run and the groups (no open file crosses a process). No torch here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnviz.pipeline.statistics import corpus_index
from attnviz.pipeline.statistics.aggregates import Groups, layer_rows
from attnviz.pipeline.statistics.corpus_index import build_metric_index, hash_sample
from attnviz.pipeline.statistics.filters import ExampleColumns
from attnviz.pipeline.store import RunInfo, StoreError, read_group_sums, read_metric_rows, run_meta
from attnviz.pipeline.store.aggregates import (
    MOMENTS,
    IndexColumns,
    groups_hash,
    load_index_columns,
    load_metric_index,
    write_index_columns,
    write_metric_index,
)


@dataclass
class IndexSummary:
    """What one build did."""

    built: list[str]  #: ``kind/metric`` written now
    fresh: list[str]  #: already up to date (skipped)
    seconds: float


def index_columns(info: RunInfo, columns: ExampleColumns, groups: Groups) -> IndexColumns:
    """The run's :class:`IndexColumns` from its per-example columns and groups (the test sample: about
    :data:`~attnviz.pipeline.statistics.corpus_index.SAMPLE_SIZE` examples)."""
    sample = hash_sample(columns.key, corpus_index.SAMPLE_SIZE)
    return IndexColumns(shards=[s.file for s in info.shards], n_examples=info.num_examples,
                        groups_hash=groups_hash(groups.of_example), keys=groups.keys,
                        size=groups.size.astype(np.int64), sample_index=sample,
                        sample_group=groups.of_example[sample].astype(np.int64),
                        sample_key=np.asarray(columns.key, np.uint64)[sample])


def build_metric_file(store: str, info: RunInfo, kind: str, metric: str, of_example: np.ndarray, n_groups: int,
                      sample: np.ndarray, ghash: str) -> str:
    """Read one metric of the run, build its index (heads, then layer means) and write its file; return
    ``kind/metric``. A task of its own (picklable arguments)."""
    n_layers, n_heads = info.shape[kind]
    heads = read_metric_rows(store, info, kind, metric)  # [L*H, N]
    rows = np.concatenate([heads, layer_rows(heads, n_layers)])
    del heads
    index, values = build_metric_index(rows, of_example, n_groups, head_rows=n_layers * n_heads, sample=sample)
    del rows
    write_metric_index(store, info.name, kind, metric, index, values, shards=[s.file for s in info.shards],
                       ghash=ghash, shape=(n_layers, n_heads))
    return f"{kind}/{metric}"


def index_is_fresh(store: str | os.PathLike, info: RunInfo) -> bool:
    """Whether the run's corpus index exists for its current shards: the columns file and every metric's file
    (an unreadable file counts as not fresh)."""
    try:
        cols = load_index_columns(store, info.name)
        if cols is None or cols.is_stale(info):
            return False
        meta = run_meta(info.meta)
        for kind in info.kinds:
            for metric in meta.metrics_of(kind):
                found = load_metric_index(store, info.name, kind, metric, parts=(), sample=False)
                if found is None or not found.fresh(info, cols):
                    return False
    except StoreError:
        return False
    return True


def build_corpus_index(store: str | os.PathLike, info: RunInfo, columns: ExampleColumns, groups: Groups, *,
                       kinds: list[str] | None = None, workers: int | None = None, scheduler: str | None = None,
                       client: Any = None, progress: Callable[[int, int], None] | None = None) -> IndexSummary:
    """Write what is missing or stale of the run's corpus index: its columns file, then one file per (kind,
    metric). ``client`` (a dask client), ``scheduler`` or ``workers`` (a LocalCluster of that many processes):
    build the metric files on dask; otherwise (``workers`` 0 or None) in this process. ``progress(done, total)``
    after each metric."""
    t0 = time.perf_counter()
    store = os.fspath(store)
    cols = index_columns(info, columns, groups)
    existing = load_index_columns(store, info.name)
    if existing is None or existing.is_stale(info) or existing.groups_hash != cols.groups_hash:
        write_index_columns(store, info.name, cols)
    meta = run_meta(info.meta)
    todo: list[tuple[str, str]] = []
    fresh: list[tuple[str, str]] = []
    for kind in kinds or info.kinds:
        for metric in meta.metrics_of(kind):
            old = load_metric_index(store, info.name, kind, metric, parts=(), sample=False)
            (fresh if old is not None and old.fresh(info, cols) else todo).append((kind, metric))
    total = len(todo)
    if progress:
        progress(0, total)
    args = (groups.of_example.astype(np.int64), groups.count, cols.sample_index, cols.groups_hash)
    built: list[str] = []
    if not todo:
        pass
    elif client is not None or workers or scheduler:
        built = _on_dask(store, info, todo, args, workers, scheduler, progress, client)
    else:
        for kind, metric in todo:
            built.append(build_metric_file(store, info, kind, metric, *args))
            if progress:
                progress(len(built), total)
    return IndexSummary(built=built, fresh=[f"{k}/{m}" for k, m in fresh], seconds=time.perf_counter() - t0)


def index_group_sums(store: str | os.PathLike, info: RunInfo, kind: str, names: list[str], groups: Groups
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-group sums and counts of the heads of each metric (``[G, C]`` float64 and int64, as
    :func:`attnviz.pipeline.store.read_group_sums`), from the run's index files when they are fresh (the metric
    arrays are read only for a metric without one)."""
    n_heads = int(np.prod(info.shape[kind]))
    ghash = groups_hash(groups.of_example)
    out = {}
    for name in names:
        found = load_metric_index(store, info.name, kind, name, parts=MOMENTS, sample=False)
        if found is not None and found.groups_hash == ghash and found.shards == [s.file for s in info.shards]:
            out[name] = (found.index.sums[:n_heads].T.copy(), found.index.counts[:n_heads].T.copy())
        else:
            out.update(read_group_sums(store, info, kind, [name], groups))
    return out


def _on_dask(store: str, info: RunInfo, todo: list[tuple[str, str]], args: tuple, workers: int | None,
             scheduler: str | None, progress: Callable[[int, int], None] | None, given: Any = None) -> list[str]:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if given is not None:
        client = given
    elif scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        shared = client.scatter(list(args), broadcast=True)
        futures = [client.submit(build_metric_file, store, info, kind, metric, *shared, pure=False)
                   for kind, metric in todo]
        built = []
        for future in as_completed(futures):
            built.append(future.result())
            if progress:
                progress(len(built), len(todo))
        return built
    finally:
        if given is None:
            client.close()
        if cluster is not None:
            cluster.close()


__all__ = ["IndexSummary", "build_corpus_index", "build_metric_file", "index_columns", "index_group_sums",
           "index_is_fresh"]
