"""Corpus tab: per-head statistics of a whole run, head-by-head comparison with a second run, drill-down.

Run A is the header's run (``run-select``); run B is picked here. Every view reads per-head metric arrays
``[N, L, H]`` (through ``attnviz.pipeline.scan``), per-group sums of them, or the cached aggregates of ``attnviz
analyze`` (``analysis.h5``); no view reads raw attention. Derived data is cached per process, keyed by the
run's shard list, so a growing run is re-read; the raw metric arrays share a byte budget.

A store that cannot be read (a missing or damaged shard, a vanished index: :class:`attnviz.pipeline.store.StoreError`)
never fails a callback: each view shows the message in its place and puts it in its own error slot, and the
tab's alert shows the slots' messages as one line (the rest of the page keeps working; nothing failed is
cached, so the next interaction after a repair reads the store again).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dash
import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import numpy as np
from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from attnviz.dashboard import corpus_figures as cf
from attnviz.dashboard import ids
from attnviz.dashboard.data import current_reader, current_store_path, requested_store
from attnviz.dashboard.urlstate import example_href
from attnviz.pipeline.metrics import METRICS
from attnviz.pipeline.scan import Analysis, load_analysis, read_columns, read_group_sums, read_metric_rows, read_texts
from attnviz.pipeline.statistics.aggregates import (
    AGGREGATES,
    Groups,
    aggregate_rows,
    aggregate_rows_all,
    extreme_examples,
    group_mean,
    layer_profile,
    layer_rows,
    make_groups,
)
from attnviz.pipeline.statistics.filters import ExampleColumns, ExampleFilter, filter_mask
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS, PATTERN_METRICS, classify_heads
from attnviz.pipeline.statistics.significance import HeadTest, compare_rows, pair_examples
from attnviz.pipeline.store import RunInfo, StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

# ---- component ids ---------------------------------------------------------------------------------------
KIND = "corpus-kind"
METRIC = "corpus-metric"
AGG = "corpus-agg"
RUN_B = "corpus-run-b"
LENGTH = "corpus-length"
TRUNCATED = "corpus-truncated"
FIELDS = "corpus-fields"
FIELD = "corpus-field"  #: pattern-matching type of the metadata filters: {"type": FIELD, "field": name}
STATUS = "corpus-status"
HEATMAP_A = "corpus-heatmap-a"
HEATMAP_B = "corpus-heatmap-b"
DIFF = "corpus-diff"
PROFILE = "corpus-profile"
HEAD = "corpus-head"
HEAD_TITLE = "corpus-head-title"
HEAD_DIST = "corpus-head-dist"
HEAD_EXAMPLES = "corpus-head-examples"
PATTERNS_A = "corpus-patterns-a"
PATTERNS_B = "corpus-patterns-b"
SIMILARITY_A = "corpus-similarity-a"
SIMILARITY_B = "corpus-similarity-b"
RELPOS = "corpus-relpos"
TABLE = "corpus-head-table"
EXPORT = "corpus-export"
ALERT = "corpus-alert"  #: the tab's one-line message when the store cannot be read
ERROR = "corpus-error"  #: pattern-matching type of each view's error slot: {"type": ERROR, "view": name}
#: The views that read the store, each with its own error slot (``""`` while it reads fine).
VIEWS = ("runs", "filters", "heatmaps", "difference", "profile", "table", "patterns", "drill", "analysis")

#: Byte budget of the per-process cache of raw ``[L*H, N]`` metric arrays (env ``ATTNVIZ_CORPUS_CACHE_MB``).
ROWS_CACHE_BYTES = int(float(os.environ.get("ATTNVIZ_CORPUS_CACHE_MB", "160")) * (1 << 20))
#: Examples listed at each end of a head's ranking in the drill-down.
TOP_EXAMPLES = 5
DEFAULT_METRIC = "entropy"


# --------------------------------------------------------------------------------------------------------
# Per-process caches
# --------------------------------------------------------------------------------------------------------


class _Cache:
    """Thread-safe LRU that computes each key once (concurrent callers of a key wait for the first) and
    evicts by count and, optionally, by a byte budget (``nbytes`` of the values)."""

    def __init__(self, max_items: int, max_bytes: int | None = None) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:
                    return self._data[key]
            value = compute()
            with self._lock:
                self._data[key] = value
                self._key_locks.pop(key, None)
                self._evict()
            return value

    def has(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            self._evict()

    def _evict(self) -> None:
        while len(self._data) > self.max_items:
            self._data.popitem(last=False)
        if self.max_bytes is not None:
            while len(self._data) > 1 and sum(_nbytes(v) for v in self._data.values()) > self.max_bytes:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def _nbytes(value: Any) -> int:
    return int(getattr(value, "nbytes", 0))


_rows_cache = _Cache(64, ROWS_CACHE_BYTES)
_columns_cache = _Cache(16)
_sums_cache = _Cache(16)
_pairs_cache = _Cache(16)
_derived_cache = _Cache(512)  # small results: masks, aggregates, tests, tables
_analysis_cache = _Cache(32)


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
        return self.info.name

    @property
    def stamp(self) -> tuple:
        """Changes when the run's shards change or the run is recreated."""
        return (self.store, self.info.name, str(self.info.meta.get("created", "")),
                tuple(s.file for s in self.info.shards))

    def shape(self, kind: str) -> tuple[int, int] | None:
        return self.info.shape.get(kind)


def _run(name: str | None) -> Run | None:
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
        names = run.info.meta.get("metrics", {}).get(kind, [])
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


def comparison(a: Run, b: Run, kind: str, metric: str, filt: ExampleFilter, per_layer: bool
               ) -> HeadTest:
    """The A/B test of every head (or every layer's mean over heads when ``per_layer``)."""
    def compute() -> HeadTest:
        ra, rb = metric_rows(a, kind, metric), metric_rows(b, kind, metric)
        if per_layer:
            ra, rb = layer_rows(ra, a.shape(kind)[0]), layer_rows(rb, b.shape(kind)[0])
        columns = (np.flatnonzero(mask(a, filt)), np.flatnonzero(mask(b, filt)))
        return compare_rows(ra, rb, pairs=filtered_pairs(a, b, filt), columns=columns)

    return _derived_cache.get(("test", a.stamp, b.stamp, kind, metric, filt, per_layer), compute)


def layer_agg(run: Run, kind: str, metric: str, agg: str, filt: ExampleFilter) -> np.ndarray:
    """``[L]`` aggregate of the per-example layer means (mean over heads) of a metric."""
    def compute() -> np.ndarray:
        per_layer = layer_rows(metric_rows(run, kind, metric), run.shape(kind)[0])
        return aggregate_rows(per_layer, agg, mask(run, filt))

    return _derived_cache.get(("layer", run.stamp, kind, metric, agg, filt), compute)


def profile(run: Run, kind: str, metric: str, filt: ExampleFilter) -> dict[str, np.ndarray]:
    """Per-layer mean and interquartile band of a metric."""
    def compute() -> dict[str, np.ndarray]:
        return layer_profile(metric_rows(run, kind, metric), run.shape(kind)[0], mask(run, filt))

    return _derived_cache.get(("profile", run.stamp, kind, metric, filt), compute)


def analysis(run: Run) -> Analysis | None:
    """The run's cached ``attnviz analyze`` aggregates (re-read when the file changes)."""
    from attnviz.pipeline.scan import analysis_path

    path = analysis_path(run.store, run.name)
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return _analysis_cache.get((run.stamp, stamp), lambda: load_analysis(run.store, run.name))


# --------------------------------------------------------------------------------------------------------
# Controls → selection
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What the corpus views show, parsed from the controls."""

    a: Run
    b: Run | None
    kind: str
    metric: str
    agg: str
    filt: ExampleFilter

    @property
    def same_grid(self) -> bool:
        return self.b is not None and self.b_has_kind and self.a.shape(self.kind) == self.b.shape(self.kind)

    @property
    def b_has_kind(self) -> bool:
        return self.b is not None and self.kind in self.b.info.kinds and self.metric in self.b.info.meta.get(
            "metrics", {}).get(self.kind, [])

    @property
    def label(self) -> str:
        spec = METRICS.get(self.metric)
        return spec.label if spec else self.metric


def parse_filter(length: Sequence[int] | None, length_bounds: tuple[int, int] | None, truncated: str | None,
                 field_ids: Sequence[dict], field_values: Sequence[Any]) -> ExampleFilter:
    """The filter the controls describe (a length range equal to the full range filters nothing)."""
    lo = hi = None
    if length and len(length) == 2 and length_bounds:
        lo = int(length[0]) if int(length[0]) > length_bounds[0] else None
        hi = int(length[1]) if int(length[1]) < length_bounds[1] else None
    trunc = {"yes": True, "no": False}.get(truncated or "any")
    fields = {i["field"]: list(v) for i, v in zip(field_ids, field_values, strict=False) if v}
    return ExampleFilter.make(lo, hi, trunc, fields)


def _selection(run_a: str | None, run_b: str | None, kind: str | None, metric: str | None, agg: str | None,
               length: Any, length_bounds: Any, truncated: str | None, field_ids: Sequence[dict],
               field_values: Sequence[Any]) -> Selection:
    a = _run(run_a)
    if a is None:
        raise PreventUpdate
    kind = kind if kind in a.info.kinds else a.info.kinds[0]
    names = a.info.meta.get("metrics", {}).get(kind, [])
    if metric not in names:
        metric = DEFAULT_METRIC if DEFAULT_METRIC in names else (names[0] if names else "")
    b = _run(run_b) if run_b and run_b != run_a else None
    bounds = tuple(length_bounds) if length_bounds else None
    filt = parse_filter(length, bounds, truncated, field_ids, field_values)
    return Selection(a, b, kind, metric, agg if agg in AGGREGATES else "mean", filt)


# --------------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------------


def _graph(cid: str, **style: Any) -> dcc.Graph:
    return dcc.Graph(id=cid, figure=cf.message_figure("loading…"), config={"displaylogo": False},
                     style=style or None)


def _control(label: str, component: Any, width: int | None = None) -> dbc.Col:
    return dbc.Col([dbc.Label(label, className="small fw-semibold mb-0"), component],
                   width=width, className="mb-2")


def layout() -> html.Div:
    """The tab's content."""
    controls = dbc.Row([
        _control("Attention", dbc.Select(id=KIND, options=[], size="sm"), 2),
        _control("Metric", dcc.Dropdown(id=METRIC, options=[], clearable=False), 3),
        _control("Aggregate over examples", dbc.RadioItems(
            id=AGG, options=[{"label": v, "value": k} for k, v in AGGREGATES.items()], value="mean",
            inline=True, className="small"), 4),
        _control("Compare with run B", dcc.Dropdown(id=RUN_B, options=[], placeholder="(none)"), 3),
    ], className="g-2")
    filters = dbc.Row([
        _control("Sentence length (tokens)", dcc.RangeSlider(id=LENGTH, min=0, max=1, value=[0, 1], step=1,
                                                             allowCross=False,
                                                             tooltip={"placement": "bottom"}), 4),
        _control("Truncated", dbc.RadioItems(
            id=TRUNCATED, value="any", inline=True, className="small",
            options=[{"label": "any", "value": "any"}, {"label": "truncated", "value": "yes"},
                     {"label": "not truncated", "value": "no"}]), 3),
        dbc.Col(html.Div(id=FIELDS, className="d-flex flex-wrap gap-2"), width=5),
    ], className="g-2 align-items-end")
    heatmaps = dbc.Row([
        dbc.Col(_graph(HEATMAP_A), md=4),
        dbc.Col(_graph(HEATMAP_B), md=4),
        dbc.Col(_graph(DIFF), md=4),
    ], className="g-1")
    drill = dbc.Row([
        dbc.Col(_graph(PROFILE), md=4),
        dbc.Col([html.Div(id=HEAD_TITLE, className="fw-semibold small"), _graph(HEAD_DIST)], md=4),
        dbc.Col(html.Div(id=HEAD_EXAMPLES, className="small",
                         style={"maxHeight": "330px", "overflowY": "auto"}), md=4),
    ], className="g-1")
    patterns = dbc.Row([
        dbc.Col(_graph(PATTERNS_A), md=4),
        dbc.Col(_graph(PATTERNS_B), md=4),
        dbc.Col(_graph(RELPOS), md=4),
    ], className="g-1")
    similarity = dbc.Row([dbc.Col(_graph(SIMILARITY_A), md=6), dbc.Col(_graph(SIMILARITY_B), md=6)],
                         className="g-1")
    table = html.Div([
        html.Div([html.Span("Heads", className="fw-semibold me-3"),
                  dbc.Button("Export CSV", id=EXPORT, size="sm", color="secondary", outline=True)],
                 className="d-flex align-items-center mb-1"),
        dag.AgGrid(id=TABLE, rowData=[], columnDefs=[], className="ag-theme-alpine",
                   defaultColDef={"sortable": True, "filter": True, "resizable": True, "minWidth": 90},
                   dashGridOptions={"animateRows": False, "suppressColumnVirtualisation": True},
                   csvExportParams={"fileName": "attnviz-heads.csv"}, style={"height": "420px"}),
    ], className="mt-2")
    return html.Div([
        dcc.Store(id=HEAD),
        *[dcc.Store(id=_error_slot(view), data="") for view in VIEWS],
        dbc.Card(dbc.CardBody([controls, filters]), className="mb-2"),
        dbc.Alert(id=ALERT, is_open=False, color="warning", className="py-2 small mb-1"),
        html.Div(id=STATUS, className="small text-muted mb-1"),
        heatmaps, drill, patterns, similarity, table,
    ])


# --------------------------------------------------------------------------------------------------------
# View builders (called by the callbacks; each returns what its outputs need)
# --------------------------------------------------------------------------------------------------------


def _title(run: Run, text: str) -> str:
    return f"{text} — {run.name}"


def _n(run: Run, filt: ExampleFilter) -> int:
    return int(mask(run, filt).sum())


def heatmap_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict, str]:
    """Figures of A's and B's heatmaps (shared colour range) and the status line."""
    agg_label = AGGREGATES[sel.agg].lower()
    za = heat(sel.a, sel.kind, sel.metric, sel.agg, sel.filt)
    zb = heat(sel.b, sel.kind, sel.metric, sel.agg, sel.filt) if sel.b_has_kind else None
    both = np.concatenate([za.ravel(), zb.ravel()]) if zb is not None else za.ravel()
    finite = both[np.isfinite(both)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    fig_a = cf.heatmap_figure(za, title=_title(sel.a, f"A: {sel.label} ({agg_label})"), label=sel.label,
                              zmin=lo, zmax=hi, selected=head)
    if sel.b is None:
        fig_b = cf.message_figure("pick a run B to compare", title="B")
    elif zb is None:
        fig_b = cf.message_figure(f"run {sel.b.name!r} has no {sel.kind} {sel.metric}", title="B")
    else:
        fig_b = cf.heatmap_figure(zb, title=_title(sel.b, f"B: {sel.label} ({agg_label})"), label=sel.label,
                                  zmin=lo, zmax=hi, selected=head if sel.same_grid else None)
    status = f"A: {sel.a.name} — {_n(sel.a, sel.filt)} of {sel.a.info.num_examples} examples"
    if sel.b is not None:
        status += f"; B: {sel.b.name} — {_n(sel.b, sel.filt)} of {sel.b.info.num_examples} examples"
    status += f"; filter: {sel.filt.describe()}"
    return fig_a, fig_b, status


def difference_view(sel: Selection, head: tuple[int, int] | None) -> dict:
    """A − B per head with significance marks, per layer when the head grids differ."""
    if sel.b is None:
        return cf.message_figure("pick a run B to see A − B", title="A − B")
    if not sel.b_has_kind:
        return cf.message_figure(f"run {sel.b.name!r} has no {sel.kind} {sel.metric}", title="A − B")
    if _n(sel.a, sel.filt) == 0 or _n(sel.b, sel.filt) == 0:
        return cf.message_figure("no examples left in A or B with this filter", title="A − B")
    agg_label = AGGREGATES[sel.agg].lower()
    if sel.same_grid:
        test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt, per_layer=False)
        diff = (heat(sel.a, sel.kind, sel.metric, sel.agg, sel.filt)
                - heat(sel.b, sel.kind, sel.metric, sel.agg, sel.filt))
        shape = diff.shape
        return cf.difference_figure(diff, test.significant.reshape(shape), test.q.reshape(shape),
                                    title=f"A − B ({agg_label})", label=sel.label, test=_test_name(test),
                                    selected=head)
    la, lb = sel.a.shape(sel.kind)[0], sel.b.shape(sel.kind)[0]
    if la != lb:
        return cf.message_figure(f"A has {la} layers and B {lb}: compare the per-layer profiles",
                                 title="A − B")
    test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt, per_layer=True)
    diff = layer_agg(sel.a, sel.kind, sel.metric, sel.agg, sel.filt) - layer_agg(
        sel.b, sel.kind, sel.metric, sel.agg, sel.filt)
    return cf.layer_difference_figure(diff, test.significant, test.q, label=sel.label, test=_test_name(test),
                                      title=f"A − B per layer (mean over heads, {agg_label})")


def _test_name(test: HeadTest) -> str:
    paired = test.method == "paired-bootstrap"
    name = f"paired bootstrap, {test.n_pairs} pairs" if paired else "Mann–Whitney U"
    return f"q < {test.alpha:g} ({name}, Benjamini–Hochberg)"


def profile_view(sel: Selection) -> dict:
    """The metric per layer for A and B (mean line, interquartile band)."""
    curves = []
    for run, colour, tag in ((sel.a, cf.COLOUR_A, "A"), (sel.b, cf.COLOUR_B, "B")):
        if run is None or (tag == "B" and not sel.b_has_kind) or _n(run, sel.filt) == 0:
            continue
        curves.append((f"{tag}: {run.name}", profile(run, sel.kind, sel.metric, sel.filt), colour))
    if not curves:
        return cf.message_figure("no examples left with this filter", title="Per layer")
    return cf.profile_figure(curves, title=f"{sel.label} per layer (mean over heads)", label=sel.label)


def _round(value: float, digits: int = 5) -> float | None:
    return None if not np.isfinite(value) else float(f"{value:.{digits}g}")


def table_view(sel: Selection) -> tuple[list[dict], list[dict]]:
    """Rows (one per head of A) and column definitions of the head table."""
    n_layers, n_heads = sel.a.shape(sel.kind)
    labels = pattern_labels(sel.a, sel.kind, sel.filt)
    means = filtered_means(sel.a, sel.kind, sel.filt)
    aggs = heats(sel.a, sel.kind, sel.metric, sel.filt)
    cols: list[dict] = [
        {"field": "layer", "pinned": "left", "width": 80, "filter": "agNumberColumnFilter"},
        {"field": "head", "pinned": "left", "width": 80, "filter": "agNumberColumnFilter"},
        {"field": "pattern", "filter": "agTextColumnFilter"},
    ]
    num = {"filter": "agNumberColumnFilter", "type": "numericColumn"}
    cols += [{"field": f"{sel.metric} {k}", "headerName": f"A {sel.metric} ({k})", **num} for k in aggs]
    test = None
    if sel.same_grid and _n(sel.a, sel.filt) and _n(sel.b, sel.filt):
        zb = heat(sel.b, sel.kind, sel.metric, sel.agg, sel.filt)
        test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt, per_layer=False)
        cols += [{"field": "B", "headerName": f"B {sel.metric} ({sel.agg})", **num},
                 {"field": "A - B", "headerName": f"A − B ({sel.agg})", **num},
                 {"field": "q", "headerName": "q (BH)", **num},
                 {"field": "significant", "filter": "agTextColumnFilter"}]
    cols += [{"field": f"mean {m}", "headerName": f"mean {m}", "headerTooltip": METRICS[m].description
              if m in METRICS else m, **num} for m in means]
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            c = layer * n_heads + head
            row: dict[str, Any] = {"layer": layer, "head": head,
                                   "pattern": PATTERN_LABELS.get(labels[layer, head], "undefined")}
            for k, z in aggs.items():
                row[f"{sel.metric} {k}"] = _round(z[layer, head])
            if test is not None:
                row["B"] = _round(zb[layer, head])
                row["A - B"] = _round(aggs[sel.agg][layer, head] - zb[layer, head])
                row["q"] = _round(test.q[c], 3)
                row["significant"] = "yes" if test.significant[c] else "no"
            for m, z in means.items():
                row[f"mean {m}"] = _round(z[layer, head])
            rows.append(row)
    return rows, cols


def pattern_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict]:
    """Pattern maps of A and B."""
    out = []
    for run, tag in ((sel.a, "A"), (sel.b, "B")):
        if run is None:
            out.append(cf.message_figure("pick a run B to see its head patterns", title="B: head patterns"))
        elif sel.kind not in run.info.kinds:
            out.append(cf.message_figure(f"run {run.name!r} has no {sel.kind} attention", title=f"{tag}"))
        elif _n(run, sel.filt) == 0:
            out.append(cf.message_figure("no examples left with this filter", title=f"{tag}: head patterns"))
        else:
            same = tag == "A" or sel.same_grid
            out.append(cf.pattern_figure(pattern_labels(run, sel.kind, sel.filt),
                                         selected=head if same else None,
                                         title=_title(run, f"{tag}: head patterns")))
    return out[0], out[1]


def _analyze_hint(run: Run) -> str:
    return f"not computed yet: run  attnviz analyze --store {run.store} --run {run.name}"


def similarity_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict]:
    """Clustered head-similarity maps of A and B (from analysis.h5)."""
    out = []
    for run, tag in ((sel.a, "A"), (sel.b, "B")):
        title = f"{tag}: head similarity"
        if run is None:
            out.append(cf.message_figure("pick a run B to see its head similarity", title=title))
            continue
        cached = analysis(run)
        ka = cached.kinds.get(sel.kind) if cached else None
        if ka is None or ka.similarity is None or ka.order is None:
            out.append(cf.message_figure(_analyze_hint(run), title=title))
            continue
        note = " (stale: rerun attnviz analyze)" if cached.is_stale(run.info) else ""
        text = f"{title}, JS distance over {ka.similarity_examples} examples{note}"
        out.append(cf.similarity_figure(ka.similarity, ka.order, ka.heads, selected=head,
                                        title=_title(run, text)))
    return out[0], out[1]


def relpos_view(sel: Selection, head: tuple[int, int] | None) -> dict:
    """Mean attention by relative offset of the selected head, A and B (from analysis.h5)."""
    if head is None:
        return cf.message_figure("click a head to see its relative-position profile",
                                 title="Relative position")
    layer, h = head
    curves, k, hints = [], 0, []
    for run, colour, tag in ((sel.a, cf.COLOUR_A, "A"), (sel.b, cf.COLOUR_B, "B")):
        if run is None:
            continue
        cached = analysis(run)
        ka = cached.kinds.get(sel.kind) if cached else None
        if ka is None or ka.relpos is None:
            hints.append(_analyze_hint(run) if ka is None else f"{run.name}: no relative positions for "
                                                                 f"{sel.kind} attention")
            continue
        if layer >= ka.layers or h >= ka.heads:
            continue
        if k and ka.max_offset != k:
            continue
        k = ka.max_offset
        curves.append((f"{tag}: {run.name}", ka.relpos[layer * ka.heads + h], colour))
    if not curves:
        return cf.message_figure("\n".join(hints) or "no profile for this head", title="Relative position")
    return cf.relpos_figure(curves, k, title=f"Layer {layer} head {h}: attention by relative position")


def drill_views(sel: Selection, head: tuple[int, int] | None) -> tuple[str, dict, Any]:
    """Title, distribution figure and top/bottom example tables of the selected head."""
    if head is None:
        return "", cf.message_figure("click a heatmap cell to see that head over the examples",
                                     title="Head drill-down"), ""
    layer, h = head
    samples, tables = [], []
    for run, colour, tag in ((sel.a, cf.COLOUR_A, "A"), (sel.b, cf.COLOUR_B, "B")):
        if run is None or sel.kind not in run.info.kinds or (tag == "B" and not sel.b_has_kind):
            continue
        n_layers, n_heads = run.shape(sel.kind)
        if layer >= n_layers or h >= n_heads:
            continue
        keep = np.flatnonzero(mask(run, sel.filt))
        values = metric_rows(run, sel.kind, sel.metric)[layer * n_heads + h, keep]
        samples.append((f"{tag}: {run.name}", values, colour))
        tables.append(_examples_table(run, tag, sel, layer, h, keep, values))
    title = f"Layer {layer}, head {h}: {sel.label} over the selected examples"
    if not samples:
        return title, cf.message_figure("this head is not in the runs shown", title=""), ""
    return title, cf.distribution_figure(samples, title="", label=sel.label), html.Div(tables)


def _examples_table(run: Run, tag: str, sel: Selection, layer: int, head: int, keep: np.ndarray,
                    values: np.ndarray) -> html.Div:
    top = extreme_examples(values, TOP_EXAMPLES, largest=True)  # ties: lowest example first
    bottom = extreme_examples(values, TOP_EXAMPLES, largest=False)
    k = top.size
    if k == 0:
        return html.Div(f"{tag}: no defined value", className="text-muted")
    picked = np.concatenate([top, bottom])
    texts = read_texts(run.store, run.info, keep[picked].tolist())
    page_store = requested_store()  # keep the page's ?store= in the links
    page_store = page_store if isinstance(page_store, str) else None
    body = []
    for rank, (pos, text) in enumerate(zip(picked, texts, strict=True)):
        example = int(keep[pos])
        which = "top" if rank < k else "bottom"
        href = example_href(run.name, example, layer, head, kind=sel.kind, store=page_store)
        body.append(html.Tr([
            html.Td(which, className="text-muted"), html.Td(f"{values[pos]:.4g}"),
            html.Td(dcc.Link(f"#{example}", href=href, id={"type": "corpus-example-link", "run": tag,
                                                          "example": example})),
            html.Td(text if len(text) <= 110 else text[:107] + "…"),
        ]))
    return html.Div([
        html.Div(f"{tag}: {run.name} — highest and lowest {k}", className="fw-semibold mt-1"),
        html.Table([html.Thead(html.Tr([html.Th(""), html.Th(sel.metric), html.Th("example"),
                                        html.Th("text")])),
                    html.Tbody(body)], className="table table-sm mb-1"),
    ])


# --------------------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------------------

#: Inputs of every filtered view (keyword names of the callbacks' arguments).
_VIEW_INPUTS = {
    "tab": Input(ids.TABS, "value"), "run_a": Input(ids.RUN_SELECT, "value"), "run_b": Input(RUN_B, "value"),
    "kind": Input(KIND, "value"), "metric": Input(METRIC, "value"), "agg": Input(AGG, "value"),
    "length": Input(LENGTH, "value"), "truncated": Input(TRUNCATED, "value"),
    "field_values": Input({"type": FIELD, "field": ALL}, "value"),
}
_VIEW_STATES = {"length_min": State(LENGTH, "min"), "length_max": State(LENGTH, "max"),
                "field_ids": State({"type": FIELD, "field": ALL}, "id")}
_HEAD_INPUT = {"head": Input(HEAD, "data")}


def _sel(tab: Any, run_a: Any, run_b: Any, kind: Any, metric: Any, agg: Any, length: Any, truncated: Any,
         field_values: Any, length_min: Any, length_max: Any, field_ids: Any, **_: Any) -> Selection:
    """The selection of a view callback's keyword arguments; nothing is computed while the tab is hidden."""
    if tab != "corpus":
        raise PreventUpdate
    bounds = (length_min, length_max) if length_min is not None and length_max is not None else None
    return _selection(run_a, run_b, kind, metric, agg, length, bounds, truncated, field_ids or [],
                      field_values or [])


def _head(data: Any) -> tuple[int, int] | None:
    if isinstance(data, dict) and isinstance(data.get("layer"), int) and isinstance(data.get("head"), int):
        return data["layer"], data["head"]
    return None


def _error_slot(view: str) -> dict[str, str]:
    return {"type": ERROR, "view": view}


def _error_output(view: str) -> Output:
    return Output(_error_slot(view), "data")


def _guard(view: str, build: Callable[[], Sequence[Any]], fallback: Callable[[str], Sequence[Any]]
           ) -> tuple[Any, ...]:
    """``build()``'s outputs plus ``""`` for the view's error slot; when the store cannot be read
    (:class:`StoreError`), ``fallback(message)``'s outputs plus the one-line message. ``PreventUpdate`` and
    unexpected errors pass (the app's error handler reports those)."""
    try:
        return (*build(), "")
    except StoreError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("corpus %s: %s", view, text)
        return (*fallback(text), text)


def _figures(n: int, title: str = "") -> Callable[[str], list[dict]]:
    """A fallback of ``n`` message figures."""
    return lambda text: [cf.message_figure(text, title=title)] * n


#: Shows the first distinct message of the views' error slots (and how many others) in the tab's alert.
_ALERT_JS = """
function(messages) {
    const seen = [];
    for (const m of messages || []) { if (m && !seen.includes(m)) { seen.push(m); } }
    if (!seen.length) { return ["", false]; }
    const more = seen.length > 1 ? " (and " + (seen.length - 1) + " more)" : "";
    return [seen[0] + more, true];
}
"""


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""

    app.clientside_callback(_ALERT_JS, Output(ALERT, "children"), Output(ALERT, "is_open"),
                            Input({"type": ERROR, "view": ALL}, "data"))

    @app.callback(
        Output(RUN_B, "options"), Output(RUN_B, "value"), Output(KIND, "options"), Output(KIND, "value"),
        Output(METRIC, "options"), Output(METRIC, "value"), _error_output("runs"),
        Input(ids.RUN_SELECT, "value"), State(RUN_B, "value"), State(KIND, "value"), State(METRIC, "value"),
    )
    def corpus_runs(run_a, run_b, kind, metric):
        def build() -> tuple:
            reader = current_reader()
            if run_a not in reader.runs():
                raise PreventUpdate
            info = reader.run_info(run_a)
            others = [{"label": r, "value": r} for r in reader.runs() if r != run_a]
            kind_ = kind if kind in info.kinds else info.kinds[0]
            names = info.meta.get("metrics", {}).get(kind_, [])
            metric_ = metric if metric in names else (DEFAULT_METRIC if DEFAULT_METRIC in names else names[0])
            metric_options = [{"label": f"{METRICS[m].label} ({METRICS[m].unit})" if m in METRICS else m,
                               "value": m} for m in names]
            kind_options = [{"label": k, "value": k} for k in info.kinds]
            return others, (run_b if run_b != run_a else None), kind_options, kind_, metric_options, metric_

        return _guard("runs", build, lambda _: [dash.no_update] * 6)

    @app.callback(
        Output(LENGTH, "min"), Output(LENGTH, "max"), Output(LENGTH, "value"), Output(LENGTH, "marks"),
        Output(FIELDS, "children"), _error_output("filters"),
        Input(ids.TABS, "value"), Input(ids.RUN_SELECT, "value"), Input(RUN_B, "value"),
        State({"type": FIELD, "field": ALL}, "value"), State({"type": FIELD, "field": ALL}, "id"),
    )
    def corpus_filters(tab, run_a, run_b, values, field_ids):
        if tab != "corpus":
            raise PreventUpdate
        return _guard("filters", lambda: filter_controls(run_a, run_b, values or [], field_ids or []),
                      lambda _: [dash.no_update] * 5)

    @app.callback(output=[Output(HEATMAP_A, "figure"), Output(HEATMAP_B, "figure"),
                          Output(STATUS, "children"), _error_output("heatmaps")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_heatmaps(**kw):
        return _guard("heatmaps", lambda: heatmap_views(_sel(**kw), _head(kw["head"])),
                      lambda text: [*_figures(2)(text), dash.no_update])

    @app.callback(output=[Output(DIFF, "figure"), _error_output("difference")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_difference(**kw):
        return _guard("difference", lambda: [difference_view(_sel(**kw), _head(kw["head"]))],
                      _figures(1, "A − B"))

    @app.callback(output=[Output(PROFILE, "figure"), _error_output("profile")], inputs=_VIEW_INPUTS,
                  state=_VIEW_STATES)
    def corpus_profile(**kw):
        return _guard("profile", lambda: [profile_view(_sel(**kw))], _figures(1, "Per layer"))

    @app.callback(output=[Output(TABLE, "rowData"), Output(TABLE, "columnDefs"), _error_output("table")],
                  inputs=_VIEW_INPUTS, state=_VIEW_STATES)
    def corpus_table(**kw):
        return _guard("table", lambda: table_view(_sel(**kw)), lambda _: ([], []))

    @app.callback(output=[Output(PATTERNS_A, "figure"), Output(PATTERNS_B, "figure"), _error_output("patterns")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_patterns(**kw):
        return _guard("patterns", lambda: pattern_views(_sel(**kw), _head(kw["head"])),
                      _figures(2, "Head patterns"))

    @app.callback(Output(HEAD, "data"),
                  Input(HEATMAP_A, "clickData"), Input(HEATMAP_B, "clickData"), Input(DIFF, "clickData"),
                  Input(PATTERNS_A, "clickData"), Input(PATTERNS_B, "clickData"),
                  Input(SIMILARITY_A, "clickData"), Input(SIMILARITY_B, "clickData"),
                  prevent_initial_call=True)
    def corpus_pick_head(*clicks):
        sources = (HEATMAP_A, HEATMAP_B, DIFF, PATTERNS_A, PATTERNS_B, SIMILARITY_A, SIMILARITY_B)
        click = dict(zip(sources, clicks, strict=True)).get(ctx.triggered_id)
        picked = _clicked_head(click)
        if picked is None:
            raise PreventUpdate
        return {"layer": picked[0], "head": picked[1]}

    @app.callback(output=[Output(HEAD_TITLE, "children"), Output(HEAD_DIST, "figure"),
                          Output(HEAD_EXAMPLES, "children"), _error_output("drill")],
                  inputs={**_VIEW_INPUTS, **_HEAD_INPUT}, state=_VIEW_STATES)
    def corpus_drill(**kw):
        return _guard("drill", lambda: drill_views(_sel(**kw), _head(kw["head"])),
                      lambda text: ("", cf.message_figure(text), ""))

    @app.callback(Output(SIMILARITY_A, "figure"), Output(SIMILARITY_B, "figure"), Output(RELPOS, "figure"),
                  _error_output("analysis"),
                  Input(ids.TABS, "value"), Input(ids.RUN_SELECT, "value"), Input(RUN_B, "value"),
                  Input(KIND, "value"), Input(HEAD, "data"))
    def corpus_analysis(tab, run_a, run_b, kind, head_data):
        if tab != "corpus":
            raise PreventUpdate
        head = _head(head_data)

        def views() -> tuple[dict, dict, dict]:
            sel = _selection(run_a, run_b, kind, DEFAULT_METRIC, "mean", None, None, None, [], [])
            sim_a, sim_b = similarity_views(sel, head)
            return sim_a, sim_b, relpos_view(sel, head)

        return _guard("analysis", views, _figures(3, "Head similarity"))

    @app.callback(Output(TABLE, "exportDataAsCsv"), Input(EXPORT, "n_clicks"), prevent_initial_call=True)
    def corpus_export(n_clicks):
        return bool(n_clicks)


def filter_controls(run_a: str | None, run_b: str | None, values: Sequence[Any], field_ids: Sequence[dict]
                    ) -> tuple[int, int, list[int], dict, list]:
    """Length slider bounds/value/marks and one multi-select per metadata field, from runs A and B.

    Chosen field values are kept when the runs change; the length range is reset to the full range.
    """
    runs = [r for r in (_run(run_a), _run(run_b)) if r is not None]
    if not runs:
        raise PreventUpdate
    lengths = [columns(r)[0].n_tokens for r in runs if len(columns(r)[0])]
    lo = int(min(x.min() for x in lengths)) if lengths else 0
    hi = int(max(x.max() for x in lengths)) if lengths else 1
    hi = max(hi, lo + 1)
    chosen = {i["field"]: v for i, v in zip(field_ids, values, strict=False)}
    options: dict[str, set[str]] = {}
    for r in runs:
        for name, column in columns(r)[0].fields.items():
            options.setdefault(name, set()).update(column.values)
    dropdowns = [html.Div([
        dbc.Label(name, className="small fw-semibold mb-0"),
        dcc.Dropdown(id={"type": FIELD, "field": name}, options=sorted(vals), multi=True,
                     value=[v for v in chosen.get(name) or [] if v in vals], placeholder="any",
                     style={"minWidth": "10rem"}),
    ]) for name, vals in sorted(options.items())]
    return lo, hi, [lo, hi], {lo: str(lo), hi: str(hi)}, dropdowns


def _clicked_head(click: Any) -> tuple[int, int] | None:
    """(layer, head) of a click on a layer × head map (x = head, y = layer) or the similarity map."""
    if not click or not click.get("points"):
        return None
    point = click["points"][0]
    x, y = point.get("x"), point.get("y")
    if isinstance(x, str):
        return cf.parse_head_name(y if isinstance(y, str) else x)
    try:
        return int(round(float(y))), int(round(float(x)))
    except (TypeError, ValueError):
        return None
