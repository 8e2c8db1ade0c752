"""Store access of the Corpus tab: per-head metric arrays ``[N, L, H]`` (through ``attnviz.pipeline.scan``),
per-group sums of them, the cached aggregates of ``attnviz analyze`` (``analysis.h5``), and what is derived from
them. No function reads raw attention.

Derived data is cached per process (:class:`attnviz.dashboard.cache.LRU`), keyed by the run's stamp
(:func:`attnviz.dashboard.cache.run_stamp`), so a growing run is re-read; the raw metric arrays share a byte
budget. Nothing failed is cached, so the next interaction after a repair reads the store again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from attnviz.dashboard.cache import LRU, RunStamp, run_stamp
from attnviz.dashboard.data import current_reader, current_store_path
from attnviz.pipeline.statistics.aggregates import (
    AGGREGATES,
    Groups,
    aggregate_rows,
    aggregate_rows_all,
    group_mean,
    layer_profile,
    make_groups,
)
from attnviz.pipeline.statistics.filters import ExampleColumns, ExampleFilter, filter_mask
from attnviz.pipeline.statistics.patterns import PATTERN_METRICS, classify_heads
from attnviz.pipeline.statistics.significance import HeadTest, compare_rows, pair_examples
from attnviz.pipeline.store import (
    Analysis,
    RunInfo,
    StoreError,
    analysis_path,
    load_analysis,
    read_columns,
    read_group_sums,
    read_metric_rows,
    read_texts,
)
from attnviz.pipeline.store.meta import run_meta

log = logging.getLogger(__name__)

#: Byte budget of the per-process cache of raw ``[L*H, N]`` metric arrays (env ``ATTNVIZ_CORPUS_CACHE_MB``).
ROWS_CACHE_BYTES = int(float(os.environ.get("ATTNVIZ_CORPUS_CACHE_MB", "160")) * (1 << 20))

_rows_cache = LRU(64, ROWS_CACHE_BYTES)
_columns_cache = LRU(16)
_sums_cache = LRU(16)
_pairs_cache = LRU(16)
_derived_cache = LRU(512)  # small results: masks, aggregates, tests, tables
_analysis_cache = LRU(32)

def clear_caches() -> None:
    """Forget every cached array (tests, benchmarks)."""
    for cache in (_rows_cache, _columns_cache, _sums_cache, _pairs_cache, _derived_cache, _analysis_cache):
        cache.clear()


@dataclass(frozen=True)
class Run:
    """A run as the caches see it: the store, its info and a stamp that changes when its shards change."""

    store: str
    info: RunInfo

    @property
    def name(self) -> str:
        """The run's name."""
        return self.info.name

    @property
    def stamp(self) -> RunStamp:
        """The run's cache key (:func:`attnviz.dashboard.cache.run_stamp`)."""
        return run_stamp(self.store, self.info)

    def shape(self, kind: str) -> tuple[int, int]:
        """``(layers, heads)`` of an attention kind (a one-line StoreError when the run lacks it)."""
        if kind not in self.info.shape:
            raise StoreError(f"run {self.name!r} has no {kind!r} attention")
        return self.info.shape[kind]


def run_of(name: str | None) -> Run | None:
    """The page's run ``name`` (None when no name is given or the store lacks it)."""
    if not name:
        return None
    reader = current_reader()
    if name not in reader.runs():
        return None
    return Run(current_store_path(), reader.run_info(name))


def _fresh_analysis(run: Run) -> Analysis | None:
    """The run's ``attnviz analyze`` cache when it was computed from the run's current shards and reads (an
    unreadable one is left to the views that need it, which say so: the others read the shards instead)."""
    try:
        cached = analysis(run)
    except StoreError as exc:
        log.warning("corpus: ignoring the analysis cache: %s", exc)
        return None
    return cached if cached is not None and not cached.is_stale(run.info) else None


def columns(run: Run) -> tuple[ExampleColumns, Groups]:
    """Filter/pairing columns of a run (from analysis.h5 when fresh) and its filter groups."""
    def compute() -> tuple[ExampleColumns, Groups]:
        cached = _fresh_analysis(run)
        cols = cached.columns if cached is not None and cached.columns is not None else None
        if cols is None or len(cols) != run.info.num_examples:
            cols = read_columns(run.store, run.info)
        return cols, make_groups(cols)

    return _columns_cache.get(run.stamp, compute)


def metric_rows(run: Run, kind: str, metric: str) -> np.ndarray:
    """``[L*H, N]`` float32 values of one metric (cached within the byte budget)."""
    return _rows_cache.get((run.stamp, kind, metric),
                           lambda: read_metric_rows(run.store, run.info, kind, metric))


def group_sums(run: Run, kind: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-group sums and counts of every stored metric (one pass over the metric arrays, then small)."""
    def compute() -> dict[str, tuple[np.ndarray, np.ndarray]]:
        names = run_meta(run.info.meta).metrics_of(kind)
        groups = columns(run)[1]
        cached = _fresh_analysis(run)
        ka = cached.kinds.get(kind) if cached is not None else None
        if ka is not None and set(names) <= set(ka.group_sums) and all(
                ka.group_sums[n][0].shape[0] == groups.count for n in names):
            return {n: ka.group_sums[n] for n in names}
        return read_group_sums(run.store, run.info, kind, names, groups)

    return _sums_cache.get((run.stamp, kind), compute)


def mask(run: Run, filt: ExampleFilter) -> np.ndarray:
    """The examples of ``run`` that ``filt`` keeps."""
    return _derived_cache.get(("mask", run.stamp, filt), lambda: filter_mask(columns(run)[0], filt))


def heat(run: Run, kind: str, metric: str, agg: str, filt: ExampleFilter) -> np.ndarray:
    """``[L, H]`` aggregate of a metric over the filtered examples."""
    def compute() -> np.ndarray:
        rows = aggregate_rows(metric_rows(run, kind, metric), agg, mask(run, filt))
        return rows.reshape(run.shape(kind))

    return _derived_cache.get(("heat", run.stamp, kind, metric, agg, filt), compute)


def heats(run: Run, kind: str, metric: str, filt: ExampleFilter) -> dict[str, np.ndarray]:
    """Every aggregate ``[L, H]`` of a metric (the missing ones computed together, in one pass per head)."""
    def key(agg: str) -> tuple:
        return ("heat", run.stamp, kind, metric, agg, filt)

    missing = [agg for agg in AGGREGATES if not _derived_cache.has(key(agg))]
    if len(missing) > 1:
        computed = aggregate_rows_all(metric_rows(run, kind, metric), mask(run, filt), missing)
        for agg, values in computed.items():
            _derived_cache.put(key(agg), values.reshape(run.shape(kind)))
    return {agg: heat(run, kind, metric, agg, filt) for agg in AGGREGATES}


def pattern_labels(run: Run, kind: str, filt: ExampleFilter) -> np.ndarray:
    """``[L, H]`` pattern label keys from the filtered corpus means."""
    def compute() -> np.ndarray:
        means = filtered_means(run, kind, filt)
        return classify_heads({k: v for k, v in means.items() if k in PATTERN_METRICS})

    return _derived_cache.get(("patterns", run.stamp, kind, filt), compute)


def filtered_means(run: Run, kind: str, filt: ExampleFilter) -> dict[str, np.ndarray]:
    """Corpus mean ``[L, H]`` of every metric over the filtered examples (from the group sums)."""
    def compute() -> dict[str, np.ndarray]:
        groups = columns(run)[1]
        keep = groups.mask(filt)
        shape = run.shape(kind)
        return {k: group_mean(s, c, keep).reshape(shape) for k, (s, c) in group_sums(run, kind).items()}

    return _derived_cache.get(("means", run.stamp, kind, filt), compute)


def pairs(a: Run, b: Run) -> tuple[np.ndarray, np.ndarray]:
    """Examples of A and B with the same input text."""
    return _pairs_cache.get((a.stamp, b.stamp),
                            lambda: pair_examples(columns(a)[0].key, columns(b)[0].key))


def filtered_pairs(a: Run, b: Run, filt: ExampleFilter) -> tuple[np.ndarray, np.ndarray]:
    """The pairs whose two examples both pass the filter (example indices of A and of B)."""
    ia, ib = pairs(a, b)
    keep = mask(a, filt)[ia] & mask(b, filt)[ib]
    return ia[keep], ib[keep]


def comparison(a: Run, b: Run, kind: str, metric: str, filt: ExampleFilter) -> HeadTest:
    """The A/B test of every head (runs of the same layer × head grid)."""
    def compute() -> HeadTest:
        ra, rb = metric_rows(a, kind, metric), metric_rows(b, kind, metric)
        columns = (np.flatnonzero(mask(a, filt)), np.flatnonzero(mask(b, filt)))
        return compare_rows(ra, rb, pairs=filtered_pairs(a, b, filt), columns=columns)

    return _derived_cache.get(("test", a.stamp, b.stamp, kind, metric, filt), compute)


def profile(run: Run, kind: str, metric: str, filt: ExampleFilter) -> dict[str, np.ndarray]:
    """Per-layer mean and interquartile band of a metric."""
    def compute() -> dict[str, np.ndarray]:
        return layer_profile(metric_rows(run, kind, metric), run.shape(kind)[0], mask(run, filt))

    return _derived_cache.get(("profile", run.stamp, kind, metric, filt), compute)


def analysis(run: Run) -> Analysis | None:
    """The run's cached ``attnviz analyze`` aggregates (re-read when the file changes)."""
    path = analysis_path(run.store, run.name)
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return _analysis_cache.get((run.stamp, stamp), lambda: load_analysis(run.store, run.name))



def texts(run: Run, examples: list[int]) -> list[str]:
    """The input texts of some examples of ``run``."""
    return read_texts(run.store, run.info, examples)
