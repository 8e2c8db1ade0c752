"""Dask scans of a run's raw attention for corpus analysis (relative-position and head-similarity sums).

:func:`scan_run` scans the raw attention of a run once, one task per shard file (the task reads the shard itself
through :func:`attnviz.pipeline.store.iter_attention`: h5py objects cannot be pickled), and returns
relative-position sums and head-similarity sums. This module opens no file: every read goes through
:mod:`attnviz.pipeline.store` (a missing or damaged shard is a one-line
:class:`~attnviz.pipeline.store.StoreError` naming the shard and the repair), and the cached aggregates are written
with :func:`attnviz.pipeline.store.write_analysis`.

No torch here; dask is imported only by :func:`scan_run`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnviz.pipeline.statistics.relpos import relpos_sums
from attnviz.pipeline.statistics.similarity import js_distance
from attnviz.pipeline.store import RunInfo, ShardEntry, iter_attention

#: Kinds whose queries and keys index the same tokens (relative positions are defined).
SELF_KINDS = ("self", "decoder")


@dataclass
class ScanPartial:
    """Sums over some examples of one attention kind (add partials with :meth:`add`)."""

    kind: str
    n_examples: int = 0
    relpos_sums: np.ndarray | None = None  #: [C, 2k+1] float64 (self-attention kinds only)
    relpos_counts: np.ndarray | None = None  #: [2k+1] int64
    js_sum: np.ndarray | None = None  #: [C, C] float64 sum over examples of the per-example distance
    js_examples: int = 0

    def add(self, other: ScanPartial) -> ScanPartial:
        """Sum of two partials of the same kind."""

        def plus(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
            return y if x is None else x if y is None else x + y

        return ScanPartial(self.kind, self.n_examples + other.n_examples,
                           plus(self.relpos_sums, other.relpos_sums),
                           plus(self.relpos_counts, other.relpos_counts),
                           plus(self.js_sum, other.js_sum), self.js_examples + other.js_examples)


def scan_shard(store: str, run: str, entry: ShardEntry, kinds: Sequence[str], max_offset: int,
               similarity_limit: int) -> dict[str, ScanPartial]:
    """Scan one shard file of ``run`` (read here, so the task pickles as plain arguments).

    For every example and every kind: relative-position sums (:func:`.relpos.relpos_sums`, self
    and decoder attention) and, for the first ``similarity_limit`` examples of the shard, the per-example
    head-similarity matrix (:func:`attnviz.pipeline.statistics.similarity.js_distance`).
    """
    out = {kind: ScanPartial(kind) for kind in kinds}
    for kind, j, attn in iter_attention(store, run, entry, kinds):
        part = out[kind]
        tq, tk = attn.shape[-2:]
        if kind in SELF_KINDS and tq > 0:
            s, c = relpos_sums(attn, max_offset)
            part = part.add(ScanPartial(kind, 0, s, c))
        if j < similarity_limit and tq > 0:
            js = js_distance(attn.reshape(-1, tq, tk))
            part = part.add(ScanPartial(kind, js_sum=js, js_examples=1))
        part.n_examples += 1
        out[kind] = part
    return out


def scan_run(store: str | os.PathLike, info: RunInfo, *, kinds: Sequence[str] | None = None,
             max_offset: int = 16, similarity_examples: int | None = 1000, workers: int | None = None,
             scheduler: str | None = None, client: Any = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, ScanPartial]:
    """Scan a run's raw attention: one task per shard; returns the summed :class:`ScanPartial` of each kind.

    ``similarity_examples`` limits the head-similarity average to the run's first N examples (None: all).
    Execution: an existing dask ``client``, else a dask scheduler address (``scheduler``), else a
    ``LocalCluster`` of ``workers`` processes; ``workers=0`` runs the tasks in this process (no dask).
    ``progress(done, total)`` is called as shards finish.
    """
    kinds = list(kinds or info.kinds)
    store = os.fspath(store)
    limit = info.num_examples if similarity_examples is None else int(similarity_examples)
    limits, seen = [], 0
    for entry in info.shards:
        limits.append(max(0, min(entry.count, limit - seen)))
        seen += entry.count
    total = len(info.shards)
    results: dict[str, ScanPartial] = {k: ScanPartial(k) for k in kinds}

    def merge(partials: dict[str, ScanPartial]) -> None:
        for k, p in partials.items():
            results[k] = results[k].add(p)

    if progress:
        progress(0, total)
    if workers == 0 and client is None and scheduler is None:
        for done, (entry, lim) in enumerate(zip(info.shards, limits, strict=True), start=1):
            merge(scan_shard(store, info.name, entry, kinds, max_offset, lim))
            if progress:
                progress(done, total)
        return results

    from distributed import Client, LocalCluster, as_completed

    own_cluster = None
    own_client = None
    if client is None:
        if scheduler:
            own_client = client = Client(scheduler)
        else:
            own_cluster = LocalCluster(n_workers=workers or min(4, os.cpu_count() or 1), threads_per_worker=1,
                                       processes=True, dashboard_address=None)
            own_client = client = Client(own_cluster)
    try:
        futures = client.map(scan_shard, [store] * total, [info.name] * total, info.shards, [kinds] * total,
                             [max_offset] * total, limits, pure=False)
        for done, future in enumerate(as_completed(futures), start=1):
            merge(future.result())
            if progress:
                progress(done, total)
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return results
