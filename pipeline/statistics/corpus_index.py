"""Exact corpus aggregates of a metric over any example filter, without the per-example values in memory.

A corpus view filters examples by length, truncation and metadata; every such filter keeps or drops whole
*groups* (:class:`~attnviz.pipeline.statistics.aggregates.Groups`). For one metric of a run, the rows ``[R, N]``
(``R`` = the ``L*H`` heads, then the ``L`` per-example layer means of :func:`.aggregates.layer_rows`) are summarized
once, by ``attnviz analyze``, into a :class:`MetricIndex`:

* per row and group: count, sum and sum of squared deviations (``m2``) of the defined values, so that the
  filtered mean and population standard deviation are exact combinations (Chan et al.'s pairwise update);
* per row: ``B`` bins of about equal count over the whole run (``edges``; equal values always share a bin) and the
  count of every (bin, group) *cell*; the values themselves are stored once, cell after cell (bin-major, then group,
  then example order), so the ``k``-th smallest value of any filter is found by summing cell counts to the bin
  that holds it and reading that bin alone (about ``N / B`` values): exact quantiles, read in milliseconds;
* per head and group: the ``k`` largest and smallest values with their example indices (ties to the lower index),
  of which the filtered extremes are the extremes;
* the values of a seeded sample of examples (:func:`hash_sample`, the same inputs in every run of the same text),
  on which the A − B significance tests run when a run has more examples than the sample.

The quantile (numpy's default "linear" method), the mean, the standard deviation (``ddof = 0``), the extremes and
the histogram (:func:`histogram`, as ``np.histogram``) equal those of the per-example values
(``tests/test_corpus_index.py`` checks it). Pure numpy; the stored values are read through a ``read(ranges)``
callable (:mod:`attnviz.pipeline.store`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from attnviz.pipeline.statistics.aggregates import _lerp, extreme_examples

#: At most this many (bin, group) cells per row: the bins of a row are ``CELL_BUDGET // groups`` (a power of 2).
CELL_BUDGET = 32768
MIN_BINS, MAX_BINS = 8, 256
#: Bins hold about this many values at least (a small run needs few bins: each read is small anyway).
MIN_BIN_VALUES = 256
#: Extremes kept per head and group (the drill-down lists this many at each end).
TOP_K = 5
#: Examples per run in the significance tests' sample.
SAMPLE_SIZE = 20_000

#: ``read(ranges)``: the stored values of each ``(lo, hi)`` range of a metric index, as float32 arrays.
Reader = Callable[[Sequence[tuple[int, int]]], list[np.ndarray]]


def bins_for(n_groups: int, n_examples: int | None = None) -> int:
    """Bins per row for ``n_groups`` groups (and ``n_examples``): the largest power of two with
    ``bins * groups <= CELL_BUDGET`` and ``bins * MIN_BIN_VALUES <= n_examples``, clipped to
    ``MIN_BINS .. MAX_BINS``."""
    raw = CELL_BUDGET // max(1, int(n_groups))
    if n_examples is not None:
        raw = min(raw, int(n_examples) // MIN_BIN_VALUES)
    return int(min(MAX_BINS, max(MIN_BINS, 1 << max(0, int(math.log2(max(1, raw)))))))


def hash_sample(keys: np.ndarray, size: int = SAMPLE_SIZE) -> np.ndarray:
    """Positions (ascending) of the examples whose input key falls below ``size / N`` of the key range: about
    ``size`` examples, all of them when ``N <= size``. Keys are hashes of the input text
    (:func:`~attnviz.pipeline.statistics.filters.text_key`), so two runs of the same inputs sample the same inputs
    (their pairs stay pairs) and repeated texts are sampled together."""
    keys = np.asarray(keys, dtype=np.uint64)
    n = keys.size
    if n <= size:
        return np.arange(n, dtype=np.int64)
    threshold = np.uint64(min((1 << 64) - 1, (size << 64) // n))
    return np.flatnonzero(keys < threshold).astype(np.int64)


@dataclass
class MetricIndex:
    """The summary of one metric's rows ``[R, N]`` over a run's ``G`` groups (see the module docstring)."""

    counts: np.ndarray  #: [R, G] int64 defined (non-NaN) values per group
    sums: np.ndarray  #: [R, G] float64
    m2: np.ndarray  #: [R, G] float64 sum of squared deviations from the group's mean
    edges: np.ndarray  #: [R, B+1] float32: bin b holds edges[b] <= x < edges[b+1]; the last non-empty bin ends at max
    cells: np.ndarray  #: [R, B, G] int64 values per (bin, group) cell
    head_rows: int  #: rows 0 .. head_rows-1 are heads (the extremes are kept for those)
    top_values: np.ndarray  #: [head_rows, G, K] float32, largest first (NaN pads)
    top_index: np.ndarray  #: [head_rows, G, K] int64 example indices (-1 pads)
    bottom_values: np.ndarray  #: [head_rows, G, K] float32, smallest first
    bottom_index: np.ndarray
    sample: np.ndarray | None = None  #: [R, S] float32 values of the sampled examples (NaN kept)
    _bases: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return int(self.counts.shape[0])

    @property
    def groups(self) -> int:
        return int(self.counts.shape[1])

    @property
    def bins(self) -> int:
        return int(self.cells.shape[1])

    def row_starts(self, row: int) -> np.ndarray:
        """``[B*G + 1]`` int64: where each cell of ``row`` starts in the stored values (rows one after another)."""
        if self._bases is None:
            totals = self.cells.reshape(self.rows, -1).sum(axis=1, dtype=np.int64)
            self._bases = np.concatenate([[0], np.cumsum(totals)[:-1]]).astype(np.int64)
        starts = np.empty(self.bins * self.groups + 1, dtype=np.int64)
        starts[0] = 0
        np.cumsum(self.cells[row].ravel(), out=starts[1:])
        return starts + self._bases[row]

    def bin_span(self, row: int, b: int, starts: np.ndarray | None = None) -> tuple[int, int]:
        """``(lo, hi)`` of the stored values of bin ``b`` of ``row`` (every group's cell of the bin)."""
        starts = self.row_starts(row) if starts is None else starts
        return int(starts[b * self.groups]), int(starts[(b + 1) * self.groups])


# --------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------


def build_metric_index(rows: np.ndarray, of_example: np.ndarray, n_groups: int, *, head_rows: int,
                       sample: np.ndarray | None = None, bins: int | None = None, top_k: int = TOP_K
                       ) -> tuple[MetricIndex, list[np.ndarray]]:
    """The :class:`MetricIndex` of ``rows`` ``[R, N]`` (float32; NaN: undefined) whose examples fall into groups
    ``of_example`` ``[N]``, and the stored values of each row (cells in order). ``sample``: positions of the
    sampled examples (:func:`hash_sample`)."""
    rows = np.asarray(rows, dtype=np.float32)
    n_rows, n = rows.shape
    g_all = np.asarray(of_example, dtype=np.int64)
    n_bins = int(bins or bins_for(n_groups, n))
    key_dtype = np.int16 if n_bins * n_groups < (1 << 15) else np.int32
    out = MetricIndex(
        counts=np.zeros((n_rows, n_groups), np.int64), sums=np.zeros((n_rows, n_groups)),
        m2=np.zeros((n_rows, n_groups)), edges=np.zeros((n_rows, n_bins + 1), np.float32),
        cells=np.zeros((n_rows, n_bins, n_groups), np.int64), head_rows=head_rows,
        top_values=np.full((head_rows, n_groups, top_k), np.nan, np.float32),
        top_index=np.full((head_rows, n_groups, top_k), -1, np.int64),
        bottom_values=np.full((head_rows, n_groups, top_k), np.nan, np.float32),
        bottom_index=np.full((head_rows, n_groups, top_k), -1, np.int64),
        sample=None if sample is None else rows[:, np.asarray(sample, dtype=np.int64)].copy())
    stored: list[np.ndarray] = []
    for r in range(n_rows):
        v = rows[r]
        ok = ~np.isnan(v)
        if ok.all():
            ids, vals, grp = None, v, g_all
        else:
            ids = np.flatnonzero(ok)
            vals, grp = v[ids], g_all[ids]
        counts = np.bincount(grp, minlength=n_groups)
        sums = np.bincount(grp, weights=vals, minlength=n_groups)
        means = np.divide(sums, counts, out=np.zeros(n_groups), where=counts > 0)
        out.counts[r], out.sums[r] = counts, sums
        out.m2[r] = np.bincount(grp, weights=np.square(vals.astype(np.float64) - means[grp]), minlength=n_groups)
        if vals.size == 0:
            stored.append(np.zeros(0, np.float32))
            continue
        by_value = np.argsort(vals)
        ordered = vals[by_value]
        lower = np.unique(ordered[(np.arange(n_bins) * vals.size) // n_bins])  # equal-count lower edges
        out.edges[r, :lower.size] = lower
        out.edges[r, lower.size:] = ordered[-1]
        bin_of = np.empty(vals.size, np.int64)  # the bin of each value (searched with the sorted values: fast)
        bin_of[by_value] = np.searchsorted(lower, ordered, side="right") - 1
        cell = bin_of * n_groups + grp
        order = np.argsort(cell.astype(key_dtype), kind="stable")  # by cell, then example order
        out.cells[r] = np.bincount(cell, minlength=n_bins * n_groups).reshape(n_bins, n_groups)
        stored.append(vals[order])
        if r < head_rows:
            example = order if ids is None else ids[order]
            _extremes(out, r, stored[-1], example, top_k)
    return out, stored


def _extremes(index: MetricIndex, r: int, values: np.ndarray, example: np.ndarray, k: int) -> None:
    """Fill row ``r``'s per-group top/bottom ``k`` from its stored values (cells in order) and their examples."""
    cells = index.cells[r]  # [B, G]
    starts = np.zeros(cells.size + 1, np.int64)
    np.cumsum(cells.ravel(), out=starts[1:])
    n_bins, n_groups = cells.shape
    for g in np.flatnonzero(cells.sum(axis=0)):
        column = cells[:, g]
        filled = np.flatnonzero(column)
        for largest, vals_out, ids_out in ((True, index.top_values, index.top_index),
                                           (False, index.bottom_values, index.bottom_index)):
            # Whole cells from the end until k values: every value tied with the k-th is in them (ties share a bin).
            picked, total = [], 0
            for b in (filled[::-1] if largest else filled):
                picked.append(b)
                total += int(column[b])
                if total >= k:
                    break
            spans = [(starts[b * n_groups + g], starts[b * n_groups + g + 1]) for b in picked]
            cand_v = np.concatenate([values[lo:hi] for lo, hi in spans])
            cand_i = np.concatenate([example[lo:hi] for lo, hi in spans])
            by_index = np.argsort(cand_i, kind="stable")
            best = by_index[extreme_examples(cand_v[by_index], k, largest=largest)]
            vals_out[r, g, :best.size] = cand_v[best]
            ids_out[r, g, :best.size] = cand_i[best]


# --------------------------------------------------------------------------------------------------------
# Queries (``keep``: [G] bool, the groups a filter keeps)
# --------------------------------------------------------------------------------------------------------


def filtered_moments(index: MetricIndex, keep: np.ndarray, rows: slice | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, mean, std)`` per row over the kept groups: int64, float64, float64 (NaN where ``n == 0``); the
    standard deviation is the population one (``ddof = 0``)."""
    sel = rows or slice(None)
    counts, sums, m2 = index.counts[sel][:, keep], index.sums[sel][:, keep], index.m2[sel][:, keep]
    n = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.sum(axis=1) / n
        group_mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        total_m2 = m2.sum(axis=1) + (counts * np.square(group_mean - mean[:, None])).sum(axis=1)
        std = np.sqrt(total_m2 / n)
    nan = n == 0
    mean[nan], std[nan] = np.nan, np.nan
    return n, mean, std


def quantiles(index: MetricIndex, keep: np.ndarray, qs: Sequence[float], read: Reader,
              rows: Sequence[int] | None = None) -> np.ndarray:
    """``[len(qs), len(rows)]`` float64: numpy's default ("linear") quantiles ``qs`` of each row's defined values in
    the kept groups (NaN where none), reading only the bins that hold the order statistics."""
    rows = list(range(index.rows)) if rows is None else list(rows)
    cells = index.cells[rows][:, :, keep]  # [R', B, G']
    per_bin = cells.sum(axis=2)  # [R', B]
    cum = np.cumsum(per_bin, axis=1)
    wanted: dict[tuple[int, int], set[int]] = {}  # (row position, bin) -> ranks within that bin
    plan: list[tuple[int, int, list[tuple[int, int]], float]] = []  # (q, row position, [(bin, rank)], fraction)
    out = np.full((len(qs), len(rows)), np.nan)
    for qi, q in enumerate(qs):
        for p in range(len(rows)):
            n = int(cum[p, -1])
            if n == 0:
                continue
            pos = q * (n - 1)
            k = int(np.floor(pos))
            located = []
            for t in [k] + ([k + 1] if k + 1 < n else []):
                b = int(np.searchsorted(cum[p], t, side="right"))
                within = t - (int(cum[p, b - 1]) if b else 0)
                wanted.setdefault((p, b), set()).add(within)
                located.append((b, within))
            plan.append((qi, p, located, pos - k))
    order = sorted(wanted)
    row_starts = {p: index.row_starts(rows[p]) for p in {p for p, _ in order}}
    spans = [index.bin_span(rows[p], b, row_starts[p]) for p, b in order]
    found: dict[tuple[int, int, int], float] = {}
    for (p, b), values in zip(order, read(spans), strict=True):
        ranks = sorted(wanted[(p, b)])
        part = np.partition(values[np.repeat(keep, index.cells[rows[p], b])], ranks)
        for t in ranks:
            found[(p, b, t)] = float(part[t])
    for qi, p, located, frac in plan:
        x = [found[(p, b, t)] for b, t in located]
        out[qi, p] = x[0] if len(x) == 1 else _lerp(x[0], x[1], frac)
    return out


def extremes(index: MetricIndex, keep: np.ndarray, row: int, k: int = TOP_K, *, largest: bool
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(values, example indices)`` of the ``k`` largest (or smallest) defined values of a head over the kept
    groups, in order, ties to the lower example index (as :func:`.aggregates.extreme_examples`)."""
    vals = (index.top_values if largest else index.bottom_values)[row][keep].ravel()
    ids = (index.top_index if largest else index.bottom_index)[row][keep].ravel()
    ok = ids >= 0
    vals, ids = vals[ok], ids[ok]
    by_index = np.argsort(ids, kind="stable")
    best = by_index[extreme_examples(vals[by_index], k, largest=largest)]
    return vals[best], ids[best]


def histogram(index: MetricIndex, keep: np.ndarray, row: int, edges: np.ndarray, read: Reader) -> np.ndarray:
    """``np.histogram`` counts of a row's defined values in the kept groups over ``edges`` (float64, increasing,
    spanning the values: every bin half-open but the last), reading only the bins that an edge falls into."""
    edges = np.asarray(edges, dtype=np.float64)
    filled = index.cells[row][:, keep].sum(axis=1)  # [B]
    nonempty = np.flatnonzero(filled)
    if nonempty.size == 0:
        return np.zeros(edges.size - 1, np.int64)
    lower = index.edges[row, :int(nonempty[-1]) + 1].astype(np.float64)  # lower edge of each bin up to the last
    cum = np.concatenate([[0], np.cumsum(filled[:lower.size])])
    starts = index.row_starts(row)
    inner = edges[1:-1]
    home = np.searchsorted(lower, inner, side="right") - 1  # the bin whose range an edge falls into
    partial = sorted({int(b) for b in home if b >= 0})
    spans = [index.bin_span(row, b, starts) for b in partial]
    in_bin = {b: np.sort(values[np.repeat(keep, index.cells[row, b])].astype(np.float64))
              for b, values in zip(partial, read(spans), strict=True)}
    below = np.zeros(inner.size, np.int64)  # values < each inner edge
    for e, (edge, b) in enumerate(zip(inner, home, strict=True)):
        if b < 0:
            continue
        below[e] = cum[b] + int(np.searchsorted(in_bin[int(b)], edge, side="left"))
    total = int(cum[-1])
    counts = np.diff(np.concatenate([[0], below, [total]]))
    return counts.astype(np.int64)


__all__ = ["CELL_BUDGET", "SAMPLE_SIZE", "TOP_K", "MetricIndex", "Reader", "bins_for", "build_metric_index",
           "extremes", "filtered_moments", "hash_sample", "histogram", "quantiles"]
