"""Aggregates of per-head metrics over a corpus: per-head summaries, per-layer profiles, per-group sums.

Conventions: a run's metric is ``[N, L, H]`` (examples, layers, heads). Corpus functions work on the
*head-major* layout ``[C, N]`` with ``C = L * H`` (row ``l * H + h``), where every head's values over the
corpus are contiguous. NaN marks a value that is undefined for an example (e.g. ``mass_prev`` of a one-token
example); every aggregate ignores NaN, and a head with no defined value aggregates to NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from attnviz.pipeline.statistics.filters import ExampleColumns, ExampleFilter, filter_mask

#: Aggregates over examples, in menu order: key -> label.
AGGREGATES: dict[str, str] = {
    "mean": "Mean",
    "median": "Median",
    "std": "Standard deviation",
    "p90": "90th percentile",
}


def head_major(values: np.ndarray) -> np.ndarray:
    """``[N, L, H]`` → ``[L*H, N]`` float32, C-contiguous (one row per head, examples along the row)."""
    values = np.asarray(values)
    if values.ndim != 3:
        raise ValueError(f"values must be [N, L, H], got shape {values.shape}")
    n = values.shape[0]
    return np.ascontiguousarray(values.reshape(n, -1).T, dtype=np.float32)


#: Quantile of each quantile aggregate.
_QUANTILES: dict[str, float] = {"median": 0.5, "p90": 0.9}


def _lerp(lo: float, hi: float, t: float) -> float:
    """numpy's ``_lerp``: ``lo + t (hi - lo)``, evaluated from the nearer end for ``t >= 0.5``."""
    return hi - (hi - lo) * (1.0 - t) if t >= 0.5 else lo + (hi - lo) * t


def _quantiles(v: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Quantiles of a 1-D NaN-free array, numpy's default ("linear") method, by successive partial sorts.

    The order statistics are found in increasing order, each one by partitioning only the part of the array
    above the previous one (or by a minimum when it is the next one), so a median and a 90th percentile cost
    about 1.6 partitions of the array.
    """
    n = v.size
    plan = [(q * (n - 1), int(np.floor(q * (n - 1)))) for q in qs]
    needed = sorted({k for _, k in plan} | {k + 1 for _, k in plan if k + 1 < n})
    part = np.array(v, copy=True)
    stat: dict[int, float] = {}
    lo = 0
    for k in needed:
        seg = part[lo:]
        if k == lo:  # the smallest remaining value: bring it to position k
            j = int(np.argmin(seg))
            seg[0], seg[j] = seg[j], seg[0]
        else:
            seg.partition(k - lo)
        stat[k] = float(part[k])
        lo = k + 1
    return [stat[k] if k + 1 >= n else _lerp(stat[k], stat[k + 1], pos - k) for pos, k in plan]


def _row_aggregates(row: np.ndarray, hows: Sequence[str]) -> list[float]:
    """The aggregates ``hows`` of one row, NaN values left out (NaN when none is left)."""
    if np.isnan(row).any():
        row = row[~np.isnan(row)]
    if row.size == 0:
        return [float("nan")] * len(hows)
    out: dict[str, float] = {}
    if "mean" in hows or "std" in hows:
        mean = float(np.mean(row, dtype=np.float64))
        out["mean"] = mean
        if "std" in hows:  # deviations and their squares in float64
            d = row.astype(np.float64) - mean
            out["std"] = float(np.sqrt(np.square(d).sum(dtype=np.float64) / row.size))
    wanted = [h for h in hows if h in _QUANTILES]
    if wanted:
        out.update(zip(wanted, _quantiles(row, [_QUANTILES[h] for h in wanted]), strict=True))
    return [out[h] for h in hows]


def aggregate_rows_all(rows: np.ndarray, mask: np.ndarray | None = None,
                       hows: Sequence[str] = tuple(AGGREGATES)) -> dict[str, np.ndarray]:
    """Several aggregates of each row of ``rows`` ``[C, N]`` over the examples where ``mask`` is True.

    ``hows`` are keys of :data:`AGGREGATES`: the NaN-ignoring mean, median, population standard deviation
    (ddof 0) and 90th percentile (linear interpolation), i.e. ``np.nanmean``/``nanmedian``/``nanstd``/
    ``nanpercentile(.., 90)`` along axis 1. Returns ``how -> [C]`` float32 (NaN for a row with no defined
    value). Rows are processed one at a time (no copy of the whole selection).
    """
    bad = [h for h in hows if h not in AGGREGATES]
    if bad:
        raise ValueError(f"unknown aggregate {bad[0]!r}: use one of {', '.join(AGGREGATES)}")
    rows = np.asarray(rows, dtype=np.float32)
    index = None if mask is None or np.all(mask) else np.flatnonzero(mask)
    out = np.empty((len(hows), rows.shape[0]), dtype=np.float32)
    for c, row in enumerate(rows):
        out[:, c] = _row_aggregates(row if index is None else row[index], hows)
    return dict(zip(hows, out, strict=True))


def aggregate_rows(rows: np.ndarray, how: str, mask: np.ndarray | None = None) -> np.ndarray:
    """One aggregate (:func:`aggregate_rows_all`) of each row: ``[C]`` float32."""
    return aggregate_rows_all(rows, mask, (how,))[how]


def aggregate(values: np.ndarray, how: str, mask: np.ndarray | None = None) -> np.ndarray:
    """:func:`aggregate_rows` of an ``[N, L, H]`` metric: the ``[L, H]`` heatmap (float32)."""
    _, n_layers, n_heads = np.shape(values)
    return aggregate_rows(head_major(values), how, mask).reshape(n_layers, n_heads)


def layer_rows(rows: np.ndarray, n_layers: int) -> np.ndarray:
    """Per-example mean over each layer's heads: ``[L*H, N]`` → ``[L, N]`` float32 (NaN-ignoring)."""
    rows = np.asarray(rows, dtype=np.float32)
    grouped = rows.reshape(n_layers, -1, rows.shape[1])
    if not np.isnan(grouped).any():
        return grouped.mean(axis=1, dtype=np.float64).astype(np.float32)
    valid = ~np.isnan(grouped)
    total = np.where(valid, grouped, 0.0).sum(axis=1, dtype=np.float64)
    count = valid.sum(axis=1)
    out = np.full(total.shape, np.nan, dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out


def layer_profile(rows: np.ndarray, n_layers: int, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-layer profile of a metric: the per-example layer value (mean over heads) summarized over examples.

    Returns float32 ``[L]`` arrays ``mean``, ``q25`` and ``q75`` (interquartile band), NaN-ignoring.
    """
    per_layer = layer_rows(rows, n_layers)
    if mask is not None:
        per_layer = np.take(per_layer, np.flatnonzero(mask), axis=1)
    out = {"mean": aggregate_rows(per_layer, "mean")}
    q25, q75 = np.full(n_layers, np.nan, np.float32), np.full(n_layers, np.nan, np.float32)
    for layer, r in enumerate(per_layer):
        r = r[~np.isnan(r)]
        if r.size:
            q25[layer], q75[layer] = _quantiles(r, (0.25, 0.75))
    out["q25"], out["q75"] = q25, q75
    return out


# --------------------------------------------------------------------------------------------------------
# Group sums: exact filtered means of every metric without keeping the per-example arrays
# --------------------------------------------------------------------------------------------------------


@dataclass
class Groups:
    """Examples grouped by every column a filter can test (length, truncation, each filterable field).

    Any :class:`ExampleFilter` keeps or drops whole groups, so per-group sums give exact filtered means.
    """

    of_example: np.ndarray  #: [N] int64 group of each example
    keys: ExampleColumns  #: one representative row per group (for evaluating a filter on the groups)
    size: np.ndarray  #: [G] int64 examples per group

    @property
    def count(self) -> int:
        return int(self.size.shape[0])

    def mask(self, filt: ExampleFilter) -> np.ndarray:
        """``[G]`` bool: the groups that ``filt`` keeps."""
        return filter_mask(self.keys, filt)


def make_groups(cols: ExampleColumns) -> Groups:
    """Group the examples of ``cols`` by (n_tokens, truncated, every field's value)."""
    n = len(cols)
    key = np.unique(cols.n_tokens, return_inverse=True)[1].reshape(n).astype(np.int64)
    columns = [cols.truncated.astype(np.int64), *(c.codes.astype(np.int64) for c in cols.fields.values())]
    for column in columns:
        combined = key * (int(column.max(initial=0)) + 1) + column
        key = np.unique(combined, return_inverse=True)[1].reshape(n).astype(np.int64)
    first = np.full(int(key.max(initial=-1)) + 1, n, dtype=np.int64)
    np.minimum.at(first, key, np.arange(n))
    return Groups(of_example=key, keys=cols.take(first), size=np.bincount(key, minlength=first.size))


def group_sums(rows: np.ndarray, groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """Per-group NaN-ignoring sums and counts of a metric in head-major layout ``[C, N]``:
    ``([G, C] float64, [G, C] int64)``.

    One ``bincount`` per head (float64 accumulation); counts are the group sizes when nothing is NaN.
    """
    rows = np.asarray(rows, dtype=np.float32)
    g, n_groups = groups.of_example, groups.count
    has_nan = bool(np.isnan(rows).any())
    sums = np.empty((n_groups, rows.shape[0]), dtype=np.float64)
    counts = np.empty((n_groups, rows.shape[0]), dtype=np.int64)
    for c, row in enumerate(rows):
        if has_nan:
            ok = ~np.isnan(row)
            sums[:, c] = np.bincount(g, weights=np.where(ok, row, np.float32(0.0)), minlength=n_groups)
            counts[:, c] = np.bincount(g[ok], minlength=n_groups)
        else:
            sums[:, c] = np.bincount(g, weights=row, minlength=n_groups)
    if not has_nan:
        counts[:] = groups.size[:, None]
    return sums, counts


def group_mean(sums: np.ndarray, counts: np.ndarray, group_mask: np.ndarray) -> np.ndarray:
    """Mean over the examples of the kept groups, from :func:`group_sums`: ``[C]`` float32 (NaN if none)."""
    total = sums[group_mask].sum(axis=0)
    count = counts[group_mask].sum(axis=0)
    out = np.full(total.shape, np.nan, dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out


def extreme_examples(values: np.ndarray, k: int, *, largest: bool) -> np.ndarray:
    """Indices of the ``k`` largest (or smallest) finite values, in order; ties go to the lower index.

    A partial sort: O(N) for the corpus, then a sort of the few candidates.
    """
    values = np.asarray(values)
    ok = np.flatnonzero(np.isfinite(values))
    k = min(int(k), ok.size)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    v = values[ok].astype(np.float64)
    if largest:
        v = -v
    kth = np.partition(v, k - 1)[k - 1]
    cand = np.flatnonzero(v <= kth)
    order = np.lexsort((ok[cand], v[cand]))
    return ok[cand[order[:k]]].astype(np.int64)
