"""Store access of the Corpus tab: per-head metric arrays ``[N, L, H]`` (through ``attnviz.pipeline.scan``),
per-group sums of them, the cached aggregates of ``attnviz analyze`` (``analysis.h5``), and what is derived from
them. No function reads raw attention.

A run that ``attnviz analyze`` indexed (its corpus index matches the run's shards:
:mod:`attnviz.pipeline.store.aggregates`) is answered from the index: every aggregate exact, nothing per example in
memory (the significance tests use the index's sample of
:data:`~attnviz.pipeline.statistics.corpus_index.SAMPLE_SIZE` examples when the run is larger).
Otherwise the per-example metric arrays are read and kept within a byte budget.

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
    extreme_examples,
    group_mean,
    layer_profile,
    make_groups,
)
from attnviz.pipeline.statistics.corpus_index import Reader, filtered_moments, quantiles
from attnviz.pipeline.statistics.corpus_index import extremes as corpus_index_extremes
from attnviz.pipeline.statistics.corpus_index import histogram as corpus_index_histogram
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
from attnviz.pipeline.store.aggregates import (
    MOMENTS,
    SUMMARY,
    IndexColumns,
    MetricIndexFile,
    index_path,
    load_index_columns,
    load_metric_index,
    read_index_values,
)
from attnviz.pipeline.store.meta import run_meta

log = logging.getLogger(__name__)

#: The quantile of each quantile aggregate.
QUANTILES = {"median": 0.5, "p90": 0.9}

#: Byte budget of the per-process cache of raw ``[L*H, N]`` metric arrays (env ``ATTNVIZ_CORPUS_CACHE_MB``).
ROWS_CACHE_BYTES = int(float(os.environ.get("ATTNVIZ_CORPUS_CACHE_MB", "160")) * (1 << 20))

#: Byte budget of the per-process cache of corpus-index summaries (env ``ATTNVIZ_CORPUS_INDEX_CACHE_MB``).
INDEX_CACHE_BYTES = int(float(os.environ.get("ATTNVIZ_CORPUS_INDEX_CACHE_MB", "128")) * (1 << 20))

_rows_cache = LRU(64, ROWS_CACHE_BYTES)
_columns_cache = LRU(16)
_sums_cache = LRU(16)
_pairs_cache = LRU(16)
_derived_cache = LRU(512, 64 << 20)  # small results: masks, aggregates, tests, tables
_analysis_cache = LRU(32)
_index_columns_cache = LRU(16)
_index_cache = LRU(64, INDEX_CACHE_BYTES)


def clear_caches() -> None:
    """Forget every cached array (tests, benchmarks)."""
    for cache in (_rows_cache, _columns_cache, _sums_cache, _pairs_cache, _derived_cache, _analysis_cache,
                  _index_columns_cache, _index_cache):
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


def _fresh_analysis(run: Run, with_columns: bool = False) -> Analysis | None:
    """The run's ``attnviz analyze`` cache when it was computed from the run's current shards and reads (an
    unreadable one is left to the views that need it, which say so: the others read the shards instead)."""
    try:
        cached = load_analysis(run.store, run.name) if with_columns else analysis(run)
    except StoreError as exc:
        log.warning("corpus: ignoring the analysis cache: %s", exc)
        return None
    return cached if cached is not None and not cached.is_stale(run.info) else None


# --------------------------------------------------------------------------------------------------------
# The corpus index (written by attnviz analyze)
# --------------------------------------------------------------------------------------------------------


def run_index(run: Run) -> IndexColumns | None:
    """The run's index columns when ``attnviz analyze`` wrote them for its current shards (else None: the views
    read the metric arrays). An unreadable index is logged and ignored."""
    def compute() -> IndexColumns | None:
        try:
            cols = load_index_columns(run.store, run.name)
        except StoreError as exc:
            log.warning("corpus: ignoring the corpus index: %s", exc)
            return None
        return cols if cols is not None and not cols.is_stale(run.info) else None

    return _index_columns_cache.get((run.stamp, _mtime(index_path(run.store, run.name))), compute)


def _mtime(path: os.PathLike) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def metric_index(run: Run, kind: str, metric: str, parts: tuple[str, ...] = SUMMARY) -> MetricIndexFile | None:
    """One metric's index (``parts`` of it, and the sample with the whole summary) when it is fresh, else None."""
    cols = run_index(run)
    if cols is None:
        return None
    path = index_path(run.store, run.name, kind, metric)

    def load(what: tuple[str, ...]) -> MetricIndexFile | None:
        try:
            found = load_metric_index(run.store, run.name, kind, metric, parts=what, sample=what == SUMMARY)
        except StoreError as exc:
            log.warning("corpus: ignoring a corpus index file: %s", exc)
            return None
        return found if found is not None and found.fresh(run.info, cols) else None

    whole = ("index", run.stamp, _mtime(path), kind, metric, SUMMARY)
    if parts != SUMMARY and _index_cache.has(whole):  # the whole summary holds the parts asked for
        return _index_cache.get(whole, lambda: load(SUMMARY))
    return _index_cache.get(whole[:-1] + (parts,), lambda: load(parts))


def _keep(run: Run, filt: ExampleFilter) -> np.ndarray:
    """``[G]`` bool: the groups of the run's index that ``filt`` keeps."""
    cols = run_index(run)
    assert cols is not None
    return _derived_cache.get(("keep", run.stamp, filt), lambda: filter_mask(cols.keys, filt))


def _reader(found: MetricIndexFile) -> Reader:
    return lambda spans: read_index_values(found.path, spans)


def count(run: Run, filt: ExampleFilter) -> int:
    """How many examples of ``run`` the filter keeps."""
    cols = run_index(run)
    if cols is not None:
        return int(cols.size[_keep(run, filt)].sum())
    return int(mask(run, filt).sum())


def filter_choices(run: Run) -> tuple[int, int, dict[str, tuple[str, ...]]]:
    """The shortest and longest example (tokens) and each filterable field's values."""
    cols = run_index(run)
    keys = cols.keys if cols is not None else columns(run)[0]
    if len(keys) == 0:
        return 0, 0, {}
    return (int(keys.n_tokens.min()), int(keys.n_tokens.max()),
            {name: column.values for name, column in keys.fields.items()})


def columns(run: Run) -> tuple[ExampleColumns, Groups]:
    """Filter/pairing columns of a run (from analysis.h5 when fresh) and its filter groups."""
    def compute() -> tuple[ExampleColumns, Groups]:
        cached = _fresh_analysis(run, with_columns=True)
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


def _indexed_aggregates(run: Run, kind: str, metric: str, filt: ExampleFilter, hows: list[str],
                        rows: slice) -> dict[str, np.ndarray] | None:
    """Aggregates ``hows`` of the index rows ``rows`` over the filtered examples (float32), or None when the
    metric is not indexed."""
    found = metric_index(run, kind, metric)
    if found is None:
        return None
    keep = _keep(run, filt)
    _, mean, std = filtered_moments(found.index, keep, rows)
    out = {"mean": mean, "std": std}
    wanted = [h for h in hows if h in QUANTILES]
    if wanted:
        picked = list(range(found.index.rows))[rows]
        values = quantiles(found.index, keep, [QUANTILES[h] for h in wanted], _reader(found), picked)
        out.update(zip(wanted, values, strict=True))
    return {h: np.asarray(out[h], dtype=np.float32) for h in hows}


def _head_rows(run: Run, kind: str) -> slice:
    n_layers, n_heads = run.shape(kind)
    return slice(0, n_layers * n_heads)


def _layer_rows(run: Run, kind: str) -> slice:
    n_layers, n_heads = run.shape(kind)
    return slice(n_layers * n_heads, n_layers * n_heads + n_layers)


def heat(run: Run, kind: str, metric: str, agg: str, filt: ExampleFilter) -> np.ndarray:
    """``[L, H]`` aggregate of a metric over the filtered examples."""
    def compute() -> np.ndarray:
        indexed = _indexed_aggregates(run, kind, metric, filt, [agg], _head_rows(run, kind))
        rows = indexed[agg] if indexed is not None else aggregate_rows(metric_rows(run, kind, metric), agg,
                                                                       mask(run, filt))
        return rows.reshape(run.shape(kind))

    return _derived_cache.get(("heat", run.stamp, kind, metric, agg, filt), compute)


def heats(run: Run, kind: str, metric: str, filt: ExampleFilter) -> dict[str, np.ndarray]:
    """Every aggregate ``[L, H]`` of a metric (the missing ones computed together, in one pass per head)."""
    def key(agg: str) -> tuple:
        return ("heat", run.stamp, kind, metric, agg, filt)

    missing = [agg for agg in AGGREGATES if not _derived_cache.has(key(agg))]
    if len(missing) > 1:
        computed = _indexed_aggregates(run, kind, metric, filt, missing, _head_rows(run, kind))
        if computed is None:
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
        shape = run.shape(kind)
        names = run_meta(run.info.meta).metrics_of(kind)
        if run_index(run) is not None:
            found = {name: metric_index(run, kind, name, MOMENTS) for name in names}
            if all(f is not None for f in found.values()):
                keep, rows = _keep(run, filt), _head_rows(run, kind)
                return {name: filtered_moments(f.index, keep, rows)[1].astype(np.float32).reshape(shape)
                        for name, f in found.items() if f is not None}
        groups = columns(run)[1]
        keep = groups.mask(filt)
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
        sampled = _sampled_comparison(a, b, kind, metric, filt)
        if sampled is not None:
            return sampled
        ra, rb = metric_rows(a, kind, metric), metric_rows(b, kind, metric)
        columns = (np.flatnonzero(mask(a, filt)), np.flatnonzero(mask(b, filt)))
        return compare_rows(ra, rb, pairs=filtered_pairs(a, b, filt), columns=columns)

    return _derived_cache.get(("test", a.stamp, b.stamp, kind, metric, filt), compute)


def _sampled_comparison(a: Run, b: Run, kind: str, metric: str, filt: ExampleFilter) -> HeadTest | None:
    """The A/B test on the two runs' index samples (all of each run up to the sample size), or None when either
    is not indexed. The samples hold the same inputs in both runs (hashes of the text), so pairs stay pairs."""
    ca, cb = run_index(a), run_index(b)
    fa, fb = metric_index(a, kind, metric), metric_index(b, kind, metric)
    if ca is None or cb is None or fa is None or fb is None or fa.index.sample is None or fb.index.sample is None:
        return None
    ra, rb = fa.index.sample[_head_rows(a, kind)], fb.index.sample[_head_rows(b, kind)]
    keep_a, keep_b = _keep(a, filt)[ca.sample_group], _keep(b, filt)[cb.sample_group]
    ia, ib = _pairs_cache.get(("sample", a.stamp, b.stamp), lambda: pair_examples(ca.sample_key, cb.sample_key))
    both = keep_a[ia] & keep_b[ib]
    return compare_rows(ra, rb, pairs=(ia[both], ib[both]),
                        columns=(np.flatnonzero(keep_a), np.flatnonzero(keep_b)))


def profile(run: Run, kind: str, metric: str, filt: ExampleFilter) -> dict[str, np.ndarray]:
    """Per-layer mean and interquartile band of a metric."""
    def compute() -> dict[str, np.ndarray]:
        found = metric_index(run, kind, metric)
        if found is None:
            return layer_profile(metric_rows(run, kind, metric), run.shape(kind)[0], mask(run, filt))
        keep, rows = _keep(run, filt), _layer_rows(run, kind)
        mean = filtered_moments(found.index, keep, rows)[1]
        q25, q75 = quantiles(found.index, keep, [0.25, 0.75], _reader(found), list(range(found.index.rows))[rows])
        return {"mean": mean.astype(np.float32), "q25": q25.astype(np.float32), "q75": q75.astype(np.float32)}

    return _derived_cache.get(("profile", run.stamp, kind, metric, filt), compute)


def analysis(run: Run) -> Analysis | None:
    """The run's cached ``attnviz analyze`` aggregates (re-read when the file changes)."""
    path = analysis_path(run.store, run.name)
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return _analysis_cache.get((run.stamp, stamp), lambda: load_analysis(run.store, run.name, columns=False))



@dataclass(frozen=True)
class HeadValues:
    """One head's values over the filtered examples, as the drill-down needs them: how many are defined, their
    range, and the extremes (example indices and values, largest and smallest first; ties to the lower index)."""

    n: int
    lo: float
    hi: float
    top: tuple[np.ndarray, np.ndarray]  #: (examples, values)
    bottom: tuple[np.ndarray, np.ndarray]


def head_values(run: Run, kind: str, metric: str, filt: ExampleFilter, row: int, k: int) -> HeadValues:
    """The drill-down's numbers of head ``row`` (``layer * H + head``): from the index, or the metric array."""
    def compute() -> HeadValues:
        found = metric_index(run, kind, metric)
        if found is not None:
            keep = _keep(run, filt)
            n = int(found.index.counts[row, keep].sum())
            top_v, top_i = corpus_index_extremes(found.index, keep, row, k, largest=True)
            bottom_v, bottom_i = corpus_index_extremes(found.index, keep, row, k, largest=False)
            lo, hi = (float(bottom_v[0]), float(top_v[0])) if n else (np.nan, np.nan)
            return HeadValues(n, lo, hi, (top_i, top_v), (bottom_i, bottom_v))
        keep_idx = np.flatnonzero(mask(run, filt))
        values = metric_rows(run, kind, metric)[row, keep_idx]
        finite = values[np.isfinite(values)]
        top = extreme_examples(values, k, largest=True)
        bottom = extreme_examples(values, k, largest=False)
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (np.nan, np.nan)
        return HeadValues(int(finite.size), lo, hi, (keep_idx[top], values[top]), (keep_idx[bottom], values[bottom]))

    return _derived_cache.get(("head", run.stamp, kind, metric, filt, row, k), compute)


def head_histogram(run: Run, kind: str, metric: str, filt: ExampleFilter, row: int, edges: np.ndarray
                   ) -> np.ndarray:
    """``np.histogram`` counts of head ``row``'s defined values over the filtered examples on ``edges``."""
    def compute() -> np.ndarray:
        found = metric_index(run, kind, metric)
        if found is not None:
            return corpus_index_histogram(found.index, _keep(run, filt), row, edges, _reader(found))
        values = metric_rows(run, kind, metric)[row, np.flatnonzero(mask(run, filt))].astype(np.float64)
        return np.histogram(values[np.isfinite(values)], bins=edges)[0]

    return _derived_cache.get(("hist", run.stamp, kind, metric, filt, row, tuple(np.asarray(edges).tolist())),
                              compute)


def texts(run: Run, examples: list[int]) -> list[str]:
    """The input texts of some examples of ``run``."""
    return read_texts(run.store, run.info, examples)
