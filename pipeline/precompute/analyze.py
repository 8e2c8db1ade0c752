"""Scan a run's raw attention once and cache head similarity and relative-position profiles in
``STORE.h5.d/<run>/analysis.h5`` (read back with :func:`attnviz.pipeline.store.load_analysis`).

``attnviz precompute`` does this after its last shard (:func:`ensure_analysis`: only when the cache is missing,
damaged or older than the run's shards, so a precompute killed while analysing finishes it on its next run);
``attnviz analyze`` (:func:`analyze`) does it for stores made before, or with other parameters."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnviz.pipeline.precompute.corpus_index import build_corpus_index, index_group_sums, index_is_fresh
from attnviz.pipeline.precompute.neighbours import build_neighbours, neighbours_needed
from attnviz.pipeline.precompute.qk_space import build_qk_space, qk_space_needed
from attnviz.pipeline.scan import scan_run
from attnviz.pipeline.statistics.aggregates import make_groups
from attnviz.pipeline.statistics.relpos import relpos_profile
from attnviz.pipeline.statistics.similarity import cluster_order
from attnviz.pipeline.store import (
    Analysis,
    KindAnalysis,
    StoreError,
    StoreReader,
    load_analysis,
    now_iso,
    read_columns,
    run_meta,
    write_analysis,
)

DEFAULT_MAX_OFFSET = 16
DEFAULT_SIMILARITY_EXAMPLES = 1000


@dataclass
class AnalyzeSummary:
    """What one analyze command did."""

    run: str
    path: Path
    examples: int
    similarity_examples: int
    kinds: list[str]
    seconds: float

    def line(self) -> str:
        return (f"run {self.run!r}: {self.examples} examples scanned ({', '.join(self.kinds)}), head "
                f"similarity over {self.similarity_examples}, {self.seconds:.1f} s -> {self.path}")


def analyze(store: str | os.PathLike, run: str, *, kinds: Sequence[str] | None = None,
            max_offset: int = DEFAULT_MAX_OFFSET,
            similarity_examples: int | None = DEFAULT_SIMILARITY_EXAMPLES, workers: int | None = None,
            scheduler: str | None = None, client: Any = None,
            progress: Callable[[int, int], None] | None = None, neighbours_layer: int | None = None,
            neighbours_backend: str = "auto", qk_method: str = "pca") -> AnalyzeSummary:
    """Compute and store a run's head similarity (with its clustered order) and relative-position profiles,
    plus its filter columns and per-group metric sums (so the dashboard's first view reads no metadata), and its
    corpus index (:func:`attnviz.pipeline.precompute.corpus_index.build_corpus_index`: exact filtered aggregates
    for the Corpus tab without the per-example arrays; resumed where an interrupted analyze stopped).

    ``similarity_examples``: average head similarity over the run's first N examples (None or 0: all).
    ``workers``/``scheduler``/``client``: as :func:`attnviz.pipeline.scan.scan_run` (``workers=0``: in this
    process). A run that captured hidden states also gets its token-neighbour index
    (:func:`attnviz.pipeline.precompute.neighbours.build_neighbours`, of ``neighbours_layer``, default the last);
    one that captured Q/K its query–key space (:func:`attnviz.pipeline.precompute.qk_space.build_qk_space`, projected
    with ``qk_method``).
    """
    t0 = time.perf_counter()
    if max_offset < 1:
        raise StoreError("--max-offset must be at least 1")
    with StoreReader(store) as reader:
        info = reader.run_info(run)
    if info.num_examples == 0:
        raise StoreError(f"run {run!r} has no examples yet: run 'attnviz precompute' first")
    kinds = list(kinds or info.kinds)
    unknown = [k for k in kinds if k not in info.kinds]
    if unknown:
        raise StoreError(f"run {run!r} has no {unknown[0]!r} attention (it has {', '.join(info.kinds)})")
    limit = similarity_examples or None
    meta = run_meta(info.meta)
    partials = scan_run(store, info, kinds=kinds, max_offset=max_offset, similarity_examples=limit,
                        workers=workers, scheduler=scheduler, client=client, progress=progress)
    columns = read_columns(store, info)
    result = Analysis(run=run, shards=[s.file for s in info.shards], n_examples=info.num_examples,
                      created=now_iso(), columns=columns)
    groups = make_groups(columns)
    build_corpus_index(store, info, columns, groups, kinds=kinds, workers=workers, scheduler=scheduler,
                       client=client)
    for kind, part in partials.items():
        n_layers, n_heads = info.shape[kind]
        ka = KindAnalysis(kind=kind, layers=n_layers, heads=n_heads, max_offset=max_offset)
        if part.js_sum is not None and part.js_examples:
            ka.similarity = (part.js_sum / part.js_examples).astype(np.float32)
            ka.order = cluster_order(ka.similarity)
            ka.similarity_examples = part.js_examples
        if part.relpos_sums is not None and part.relpos_counts is not None:
            ka.relpos = relpos_profile(part.relpos_sums, part.relpos_counts)
            ka.relpos_counts = part.relpos_counts
        ka.group_sums = index_group_sums(store, info, kind, meta.metrics_of(kind), groups)
        result.kinds[kind] = ka
    path = write_analysis(store, result)
    if "hidden" in meta.capture:
        with StoreReader(store) as reader:
            kept = reader.kept_examples(run).size
        if kept:
            build_neighbours(store, run, neighbours_layer, backend=neighbours_backend)
    if "qkv" in meta.capture and "self" in info.kinds:
        with StoreReader(store) as reader:
            kept = reader.kept_examples(run).size
        if kept:
            build_qk_space(store, run, method=qk_method)
    sim = max((k.similarity_examples for k in result.kinds.values()), default=0)
    return AnalyzeSummary(run=run, path=path, examples=info.num_examples, similarity_examples=sim,
                          kinds=kinds, seconds=time.perf_counter() - t0)


def analysis_needed(store: str | os.PathLike, run: str) -> bool:
    """Whether ``run`` has examples and its cached analysis or its corpus index is missing, unreadable or older
    than its shards."""
    with StoreReader(store) as reader:
        info = reader.run_info(run)
    if info.num_examples == 0:
        return False
    try:
        cached = load_analysis(store, run, columns=False)
    except StoreError:
        return True  # damaged: computed again (written atomically, so nothing else is lost)
    return (cached is None or cached.is_stale(info) or not index_is_fresh(store, info)
            or neighbours_needed(store, run) or qk_space_needed(store, run))


def ensure_analysis(store: str | os.PathLike, run: str, *, workers: int | None = 0, client: Any = None,
                    progress: Callable[[int, int], None] | None = None) -> AnalyzeSummary | None:
    """:func:`analyze` the run unless its cache is up to date (None then): what precompute runs after its last
    shard. A cache made before with another ``--max-offset`` keeps that offset; everything else takes the
    defaults of ``attnviz analyze``."""
    if not analysis_needed(store, run):
        return None
    max_offset = DEFAULT_MAX_OFFSET
    try:
        cached = load_analysis(store, run)
    except StoreError:
        cached = None
    if cached is not None:
        max_offset = max((k.max_offset for k in cached.kinds.values()), default=0) or DEFAULT_MAX_OFFSET
    return analyze(store, run, max_offset=max_offset, workers=None if client is not None else workers,
                   client=client, progress=progress)
