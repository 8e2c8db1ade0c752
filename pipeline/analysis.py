"""Corpus-level analysis of per-head metrics: aggregates, filters, A/B tests, pattern labels, head similarity.

Pure functions over numpy arrays (numpy and scipy only; no I/O, no torch). The definitions are documented in
``docs/metrics.md`` (sections "Corpus aggregates and significance", "Head pattern labels" and "Head
similarity and relative-position profiles").

Conventions: a run's metric is ``[N, L, H]`` (examples, layers, heads). Corpus functions work on the
*head-major* layout ``[C, N]`` with ``C = L * H`` (row ``l * H + h``), where every head's values over the
corpus are contiguous. NaN marks a value that is undefined for an example (e.g. ``mass_prev`` of a one-token
example); every aggregate ignores NaN, and a head with no defined value aggregates to NaN.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import special
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from attnviz.pipeline.metrics import METRICS, example_metrics
from attnviz.pipeline.records import ExampleResult, TokenSequence
from attnviz.pipeline.token_classes import CLS_OR_BOS, PUNCTUATION, SEP_OR_EOS, SPECIAL

# --------------------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------------------

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
        if "std" in hows:  # float32 deviations, squares summed in float64
            d = row - np.float32(mean)
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
# Example columns and filters
# --------------------------------------------------------------------------------------------------------

#: Value that stands for a metadata field an example does not have.
MISSING = "(missing)"
#: A metadata field is offered as a filter when it has at most this many distinct values in the run.
MAX_FIELD_VALUES = 50


@dataclass(frozen=True)
class Categorical:
    """A low-cardinality column: ``values[codes[i]]`` is example ``i``'s value (as a string)."""

    codes: np.ndarray  #: [N] int32
    values: tuple[str, ...]


def value_text(value: object) -> str:
    """A metadata value as filter text (None: :data:`MISSING`; booleans as true/false)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def text_key(text: str, target_text: str = "") -> int:
    """64-bit key of an input (its text and target text), used to pair the examples of two runs."""
    digest = hashlib.blake2b(f"{text}\x1f{target_text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass
class ExampleColumns:
    """The per-example columns that filters and pairing need (compact: no text, no metadata dicts)."""

    input_index: np.ndarray  #: [N] int64
    n_tokens: np.ndarray  #: [N] int64 source tokens
    truncated: np.ndarray  #: [N] bool
    key: np.ndarray  #: [N] uint64 :func:`text_key` of each example
    fields: dict[str, Categorical] = field(default_factory=dict)  #: filterable fields (label, metadata)

    def __len__(self) -> int:
        return int(self.n_tokens.shape[0])

    @classmethod
    def build(cls, input_index: Sequence[int], n_tokens: Sequence[int], truncated: Sequence[bool],
              texts: Sequence[str], target_texts: Sequence[str], labels: Sequence[str],
              metas: Sequence[Mapping[str, object]]) -> ExampleColumns:
        """Columns from per-example values; ``label`` (when any is non-empty) and every metadata field with
        at most :data:`MAX_FIELD_VALUES` distinct values become filterable :class:`Categorical` fields."""
        n = len(n_tokens)
        raw: dict[str, list[str]] = {}
        if any(labels):
            raw["label"] = [value_text(x) if x != "" else MISSING for x in labels]
        names = sorted({k for m in metas for k in m})
        for name in names:
            if name == "label" and "label" in raw:
                continue
            column = [value_text(m.get(name)) for m in metas]
            if len(set(column)) <= MAX_FIELD_VALUES:
                raw[name] = column
        fields = {}
        for name, column in sorted(raw.items()):
            values, codes = np.unique(np.asarray(column, dtype=object).astype(str), return_inverse=True)
            fields[name] = Categorical(codes=codes.astype(np.int32).reshape(n), values=tuple(values.tolist()))
        keys = np.fromiter((text_key(t, g) for t, g in zip(texts, target_texts, strict=True)),
                           dtype=np.uint64, count=n)
        return cls(input_index=np.asarray(input_index, dtype=np.int64),
                   n_tokens=np.asarray(n_tokens, np.int64), truncated=np.asarray(truncated, dtype=bool),
                   key=keys, fields=fields)

    def take(self, idx: np.ndarray) -> ExampleColumns:
        """The rows ``idx`` as new columns."""
        return ExampleColumns(
            input_index=self.input_index[idx], n_tokens=self.n_tokens[idx], truncated=self.truncated[idx],
            key=self.key[idx],
            fields={k: Categorical(c.codes[idx], c.values) for k, c in self.fields.items()})


@dataclass(frozen=True)
class ExampleFilter:
    """Which examples a corpus view uses. The empty filter keeps every example.

    ``min_tokens``/``max_tokens`` bound the source length (inclusive); ``truncated`` keeps only truncated
    (True) or only complete (False) examples (None: both); ``fields`` keeps examples whose value of each named
    field is one of the listed values (:data:`MISSING` selects examples without the field).
    """

    min_tokens: int | None = None
    max_tokens: int | None = None
    truncated: bool | None = None
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def make(cls, min_tokens: int | None = None, max_tokens: int | None = None, truncated: bool | None = None,
             fields: Mapping[str, Sequence[str]] | None = None) -> ExampleFilter:
        """A normalized filter (fields sorted; fields with no selected value dropped)."""
        items = tuple(sorted((k, tuple(sorted(map(str, v)))) for k, v in (fields or {}).items() if v))
        low = None if min_tokens is None else int(min_tokens)
        high = None if max_tokens is None else int(max_tokens)
        return cls(low, high, truncated, items)

    def describe(self) -> str:
        """Short human description ("all examples" when empty)."""
        parts = []
        if self.min_tokens is not None or self.max_tokens is not None:
            parts.append(f"{self.min_tokens if self.min_tokens is not None else ''}"
                         f"..{self.max_tokens if self.max_tokens is not None else ''} tokens")
        if self.truncated is not None:
            parts.append("truncated" if self.truncated else "not truncated")
        parts += [f"{k} in {{{', '.join(v)}}}" for k, v in self.fields]
        return "; ".join(parts) or "all examples"


def filter_mask(cols: ExampleColumns, filt: ExampleFilter) -> np.ndarray:
    """``[N]`` bool: the examples that ``filt`` keeps."""
    mask = np.ones(len(cols), dtype=bool)
    if filt.min_tokens is not None:
        mask &= cols.n_tokens >= filt.min_tokens
    if filt.max_tokens is not None:
        mask &= cols.n_tokens <= filt.max_tokens
    if filt.truncated is not None:
        mask &= cols.truncated == filt.truncated
    for name, wanted in filt.fields:
        column = cols.fields.get(name)
        if column is None:  # the run has no such field: every example is "missing"
            if MISSING not in wanted:
                mask[:] = False
            continue
        ok = np.array([v in wanted for v in column.values], dtype=bool)
        mask &= ok[column.codes] if ok.size else False
    return mask


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


# --------------------------------------------------------------------------------------------------------
# Pairing and significance
# --------------------------------------------------------------------------------------------------------

#: Two runs are compared pairwise when this fraction of the larger filtered run has a partner in the other.
PAIRED_MIN_FRACTION = 0.9
#: Bootstrap resamples for the paired test.
N_BOOT = 1000
#: Above this many pairs the bootstrap resamples random blocks of pairs instead of single pairs.
MAX_BLOCKS = 1000
#: The rank test uses at most this many examples per run (a seeded random subsample).
MAX_RANK_EXAMPLES = 5000
#: False discovery rate of the significance marks.
ALPHA = 0.05


def pair_examples(key_a: np.ndarray, key_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match examples of two runs with the same input: the k-th occurrence of a key in A with its k-th
    occurrence in B. Returns ``(ia, ib)`` int64 index arrays, sorted by ``ia``."""

    def occurrence_keys(key: np.ndarray) -> np.ndarray:
        order = np.argsort(key, kind="stable")
        s = key[order]
        if s.size == 0:
            return np.asarray(key, dtype=np.uint64)
        new = np.concatenate([[True], s[1:] != s[:-1]])
        start = np.maximum.accumulate(np.where(new, np.arange(s.size), 0))
        rank = np.empty(s.size, dtype=np.uint64)
        rank[order] = (np.arange(s.size) - start).astype(np.uint64)
        # mix the occurrence number into the key (splitmix-style odd multiplier; collisions ~2^-64)
        return np.asarray(key, dtype=np.uint64) ^ (rank * np.uint64(0x9E3779B97F4A7C15))

    ka, kb = occurrence_keys(np.asarray(key_a, np.uint64)), occurrence_keys(np.asarray(key_b, np.uint64))
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    order = np.argsort(ia)
    return ia[order].astype(np.int64), ib[order].astype(np.int64)


def use_paired(n_pairs: int, n_a: int, n_b: int) -> bool:
    """Whether two filtered runs cover the same inputs (see :data:`PAIRED_MIN_FRACTION`)."""
    return n_pairs >= 2 and n_pairs >= PAIRED_MIN_FRACTION * max(n_a, n_b)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) over all non-NaN entries of ``p`` (NaN stays NaN)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return q
    pv = p[ok]
    order = np.argsort(pv)
    scaled = pv[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    q[ok] = out
    return q


@dataclass
class HeadTest:
    """Per-row (head or layer) comparison of run A with run B."""

    method: str  #: "paired-bootstrap" or "mann-whitney"
    effect: np.ndarray  #: [C] paired: mean of A − B over pairs; rank test: P(A > B) + P(A = B)/2
    p: np.ndarray  #: [C] two-sided p-values
    q: np.ndarray  #: [C] Benjamini–Hochberg adjusted p-values
    significant: np.ndarray  #: [C] bool, q < alpha
    ci_low: np.ndarray  #: [C] paired: 95% bootstrap interval of the mean difference (NaN for the rank test)
    ci_high: np.ndarray
    n_a: int
    n_b: int
    n_pairs: int
    alpha: float = ALPHA

    def describe(self) -> str:
        """One line: which test, over how many examples, at which FDR."""
        if self.method == "paired-bootstrap":
            what = f"paired bootstrap over {self.n_pairs} matched examples"
        else:
            shown = f"{min(self.n_a, MAX_RANK_EXAMPLES)} vs {min(self.n_b, MAX_RANK_EXAMPLES)}"
            what = f"Mann–Whitney U over {shown} examples"
        return f"{what}; Benjamini–Hochberg FDR {self.alpha:g}"


@functools.lru_cache(maxsize=4)
def resample_weights(m: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, m]`` float64: how often each of ``m`` units is drawn in each of ``n_boot`` resamples with
    replacement (seeded; the same for every metric and filter of a size, so cached and read-only)."""
    draws = np.random.default_rng([seed, m]).integers(0, m, size=(n_boot, m))
    weights = np.bincount((draws + np.arange(n_boot)[:, None] * m).ravel(),
                          minlength=n_boot * m).reshape(n_boot, m).astype(np.float64)
    weights.flags.writeable = False
    return weights


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, ia: np.ndarray | None = None,
                     ib: np.ndarray | None = None, n_boot: int = N_BOOT, max_blocks: int = MAX_BLOCKS,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired bootstrap of the mean difference ``A − B`` for each row of ``a`` ``[C, Na]``, ``b`` ``[C, Nb]``.

    The pairs are columns ``ia[k]`` of ``a`` and ``ib[k]`` of ``b`` (default: column ``k`` of both, for
    aligned arrays); rows are read one at a time, so no ``[C, P]`` copy is made. Pairs with a NaN on either
    side are left out (per row).
    Up to ``max_blocks`` pairs, the pairs themselves are resampled; beyond, each pair is assigned to one of
    ``max_blocks`` blocks at random (seeded) and the blocks are resampled (blocks of exchangeable pairs: the
    resampled ratio of sums keeps the variance of the mean of all pairs).
    Returns ``(mean_diff, ci_low, ci_high, p)``: the 2.5/97.5 percentile interval and the two-sided
    p-value ``2 Φ(−|mean / se*|)`` where ``se*`` is the bootstrap standard error (``p = 0`` when every
    resample gives the same non-zero mean).
    """
    a, b = np.asarray(a), np.asarray(b)
    if ia is None or ib is None:
        if a.shape != b.shape:
            raise ValueError(f"unaligned pairs need ia and ib: shapes {a.shape} and {b.shape}")
        ia = ib = np.arange(a.shape[1])
    c, n = a.shape[0], len(ia)
    rng = np.random.default_rng(seed)
    blocked = n > max_blocks
    block = rng.integers(0, max_blocks, size=n) if blocked else None
    m = max_blocks if blocked else n
    sums = np.zeros((c, m), dtype=np.float64)
    counts = np.zeros((c, m), dtype=np.float64)
    sizes = np.bincount(block, minlength=m).astype(np.float64) if blocked else np.ones(m)
    if blocked:  # block of every column of a and of b (bin m: not in a pair), to sum rows without gathering
        block_a = np.full(a.shape[1], m, dtype=np.int64)
        block_b = np.full(b.shape[1], m, dtype=np.int64)
        block_a[ia], block_b[ib] = block, block
        aligned = a.shape[1] == b.shape[1] and np.array_equal(block_a, block_b)  # one bincount of a − b
    any_nan = False
    for r in range(c):  # one row of differences at a time
        if blocked and not (np.isnan(a[r]).any() or np.isnan(b[r]).any()):
            if aligned:
                sums[r] = np.bincount(block_a, weights=a[r] - b[r], minlength=m + 1)[:m]
            else:
                sums[r] = (np.bincount(block_a, weights=a[r], minlength=m + 1)[:m]
                           - np.bincount(block_b, weights=b[r], minlength=m + 1)[:m])
            counts[r] = sizes
            continue
        d = a[r].take(ia).astype(np.float32) - b[r].take(ib).astype(np.float32)
        valid = ~np.isnan(d)
        row_nan = not valid.all()
        if row_nan:
            any_nan = True
            d = np.where(valid, d, np.float32(0.0))
        if blocked:
            sums[r] = np.bincount(block, weights=d, minlength=m)
            counts[r] = np.bincount(block, weights=valid, minlength=m) if row_nan else sizes
        else:
            sums[r], counts[r] = d, valid
    nan = np.full(c, np.nan)
    if m == 0:
        return nan, nan.copy(), nan.copy(), nan.copy()
    total_n = counts.sum(axis=1)
    weights = resample_weights(m, n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums.sum(axis=1) / total_n
        denominator = weights @ counts.T if any_nan else (weights @ counts[0])[:, None]
        boot = (weights @ sums.T) / denominator  # [n_boot, C] resampled means
    if np.isfinite(boot).all():
        ci_low, ci_high = np.percentile(boot, [2.5, 97.5], axis=0)
        se = boot.std(axis=0, ddof=1)
    else:
        ci_low, ci_high, se = nan.copy(), nan.copy(), nan.copy()
        for r in range(c):
            v = boot[:, r][np.isfinite(boot[:, r])]
            if v.size >= 2:
                ci_low[r], ci_high[r] = np.percentile(v, [2.5, 97.5])
                se[r] = v.std(ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(mean) / se
    p = np.where(se > 0, 2.0 * special.ndtr(-z), np.where(mean == 0, 1.0, 0.0))
    p = np.where(total_n >= 2, p, np.nan)
    return mean, ci_low, ci_high, p


def _mwu_row(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """U_A / (n_A n_B) and the two-sided asymptotic p-value for two NaN-free 1-D samples."""
    na, nb = a.size, b.size
    n = na + nb
    sa, sb = np.sort(a), np.sort(b)
    # U_A = sum over a of #(b < a) + #(b == a) / 2 (sorted needles keep searchsorted cache-friendly)
    left, right = np.searchsorted(sb, sa, "left"), np.searchsorted(sb, sa, "right")
    u1 = float(left.sum()) + 0.5 * float((right - left).sum())
    pooled = np.sort(np.concatenate([sa, sb]))
    starts = np.flatnonzero(np.concatenate([[True], pooled[1:] != pooled[:-1]]))
    t = np.diff(np.append(starts, n)).astype(np.float64)
    ties = float((t ** 3 - t).sum())
    var = na * nb / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return u1 / (na * nb), 1.0
    z = (max(u1, na * nb - u1) - na * nb / 2.0 - 0.5) / np.sqrt(var)
    return u1 / (na * nb), float(min(1.0, max(0.0, 2.0 * special.ndtr(-z))))


def mann_whitney(a: np.ndarray, b: np.ndarray, *, columns_a: np.ndarray | None = None,
                 columns_b: np.ndarray | None = None, max_examples: int = MAX_RANK_EXAMPLES, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann–Whitney U test of each row of ``a`` ``[C, Na]`` against that row of ``b`` ``[C, Nb]``.

    Normal approximation with tie correction and continuity correction (as ``scipy.stats.mannwhitneyu(...,
    method="asymptotic")``); NaN values are left out per row. Each side is first reduced to a seeded random
    subsample of at most ``max_examples`` examples. ``columns_a``/``columns_b`` restrict each side to some
    columns (the filtered examples; default all). Returns ``(effect, p)`` with ``effect = U_A / (n_A n_B)``
    = P(A > B) + P(A = B)/2 (NaN, NaN where a side has no value).
    """
    rng = np.random.default_rng(seed)

    def sample(x: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
        cols = np.arange(x.shape[1]) if cols is None else np.asarray(cols)
        if cols.size > max_examples:
            cols = cols[np.sort(rng.choice(cols.size, max_examples, replace=False))]
        return np.take(np.asarray(x, dtype=np.float32), cols, axis=1)

    a, b = sample(a, columns_a), sample(b, columns_b)
    c = a.shape[0]
    effect, p = np.full(c, np.nan), np.full(c, np.nan)
    for r in range(c):
        ra, rb = a[r], b[r]
        if np.isnan(ra).any():
            ra = ra[~np.isnan(ra)]
        if np.isnan(rb).any():
            rb = rb[~np.isnan(rb)]
        if ra.size and rb.size:
            effect[r], p[r] = _mwu_row(ra, rb)
    return effect, p


def compare_rows(a: np.ndarray, b: np.ndarray, *, pairs: tuple[np.ndarray, np.ndarray] | None = None,
                 columns: tuple[np.ndarray, np.ndarray] | None = None, alpha: float = ALPHA, seed: int = 0
                 ) -> HeadTest:
    """Compare run A's rows ``[C, Na]`` with run B's ``[C, Nb]`` row by row.

    ``columns = (ca, cb)`` are the column indices of the examples to compare (the filtered ones; default
    all columns). With ``pairs = (ia, ib)`` (column indices of matched examples among those, see
    :func:`pair_examples`) and :func:`use_paired` true, a :func:`paired_bootstrap` of the pairs; otherwise a
    :func:`mann_whitney` test of the columns. p-values are adjusted with :func:`benjamini_hochberg` over the
    rows; a row is significant when q < alpha.
    """
    ca, cb = columns if columns is not None else (None, None)
    n_a = a.shape[1] if ca is None else len(ca)
    n_b = b.shape[1] if cb is None else len(cb)
    nan = np.full(a.shape[0], np.nan)
    if pairs is not None and use_paired(len(pairs[0]), n_a, n_b):
        ia, ib = pairs
        effect, lo, hi, p = paired_bootstrap(a, b, ia=ia, ib=ib, seed=seed)
        method, n_pairs = "paired-bootstrap", len(ia)
    else:
        effect, p = mann_whitney(a, b, columns_a=ca, columns_b=cb, seed=seed)
        lo, hi, method, n_pairs = nan, nan.copy(), "mann-whitney", 0
    q = benjamini_hochberg(p)
    return HeadTest(method=method, effect=effect, p=p, q=q, significant=np.nan_to_num(q, nan=1.0) < alpha,
                    ci_low=lo, ci_high=hi, n_a=n_a, n_b=n_b, n_pairs=n_pairs, alpha=alpha)


# --------------------------------------------------------------------------------------------------------
# Head pattern labels
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatternRule:
    """A head pattern: a head qualifies when the largest corpus mean of ``metrics`` reaches ``threshold``."""

    key: str
    label: str
    metrics: tuple[str, ...]
    threshold: float


#: Mass patterns, in tie-break order; the qualifying rule with the largest mass wins.
MASS_PATTERNS: tuple[PatternRule, ...] = (
    PatternRule("previous", "previous token", ("mass_prev",), 0.5),
    PatternRule("next", "next token", ("mass_next",), 0.5),
    PatternRule("self", "diagonal / self", ("mass_self",), 0.5),
    PatternRule("first", "first token / [CLS] sink", ("mass_first", "mass_cls"), 0.5),
    PatternRule("sep", "[SEP] sink", ("mass_sep",), 0.5),
    PatternRule("punct", "punctuation", ("mass_punct",), 0.5),
)
#: A head with no mass pattern is "broad" when its corpus mean normalized entropy is at least this.
BROAD_ENTROPY = 0.8
#: Every label, in legend order: key -> label.
PATTERN_LABELS: dict[str, str] = {
    **{r.key: r.label for r in MASS_PATTERNS},
    "broad": "broad",
    "heterogeneous": "heterogeneous",
}
#: Metrics the classifier reads.
PATTERN_METRICS: tuple[str, ...] = tuple(dict.fromkeys(
    [m for r in MASS_PATTERNS for m in r.metrics] + ["entropy_norm"]))


def classify_heads(means: Mapping[str, np.ndarray]) -> np.ndarray:
    """Label each head from the corpus means of its metrics (``name -> [C]`` or ``[L, H]``).

    Returns an array of the same shape of keys of :data:`PATTERN_LABELS` (object dtype), "" where the head
    has no defined value at all. Rule (docs/metrics.md): among the :data:`MASS_PATTERNS` whose mass reaches
    its threshold, the one with the largest mass; else "broad" when ``entropy_norm >= BROAD_ENTROPY``; else
    "heterogeneous". Metrics missing from ``means`` or NaN never qualify.
    """
    some = next(iter(means.values()))
    shape = np.shape(some)
    best = np.full(shape, -np.inf)
    label = np.full(shape, "heterogeneous", dtype=object)
    defined = np.zeros(shape, dtype=bool)

    def get(name: str) -> np.ndarray:
        v = means.get(name)
        return np.full(shape, np.nan) if v is None else np.asarray(v, dtype=np.float64)

    for rule in MASS_PATTERNS:
        mass = np.full(shape, np.nan)
        for name in rule.metrics:
            mass = np.fmax(mass, get(name))
        defined |= ~np.isnan(mass)
        win = (np.nan_to_num(mass, nan=-np.inf) >= rule.threshold) & (mass > best)
        label[win] = rule.key
        best = np.where(win, mass, best)
    ent = get("entropy_norm")
    defined |= ~np.isnan(ent)
    label[np.isinf(best) & (np.nan_to_num(ent, nan=-1.0) >= BROAD_ENTROPY)] = "broad"
    label[~defined] = ""
    return label


# --------------------------------------------------------------------------------------------------------
# Relative-position profile and head similarity (from raw attention, used by the scan)
# --------------------------------------------------------------------------------------------------------


def relpos_sums(attn: np.ndarray, max_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Attention summed by relative offset ``o = j − i`` in ``−k..k`` for one example.

    ``attn`` is ``[L, H, T, T]`` (self-attention). Returns ``(sums [L*H, 2k+1] float64, counts [2k+1]
    int64)``: ``sums[c, o+k]`` is the sum over queries ``i`` of ``a[c, i, i+o]`` and ``counts[o+k]`` the
    number of queries whose ``i+o`` is a token. The profile is ``sums.sum / counts.sum`` over examples.
    """
    attn = np.asarray(attn)
    n_layers, n_heads, tq, tk = attn.shape
    if tq != tk:
        raise ValueError(f"relative positions need self-attention (Tq == Tk), got {tq} x {tk}")
    k = int(max_offset)
    flat = attn.reshape(n_layers * n_heads, tq, tk)
    sums = np.zeros((flat.shape[0], 2 * k + 1), dtype=np.float64)
    counts = np.zeros(2 * k + 1, dtype=np.int64)
    for o in range(-min(k, tq - 1), min(k, tq - 1) + 1):
        diag = np.diagonal(flat, offset=o, axis1=1, axis2=2)
        sums[:, o + k] = diag.sum(axis=1, dtype=np.float64)
        counts[o + k] = tq - abs(o)
    return sums, counts


def relpos_profile(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean attention by offset ``[C, 2k+1]`` float32 from accumulated :func:`relpos_sums` (NaN where no
    query had that offset)."""
    out = np.full(sums.shape, np.nan, dtype=np.float32)
    np.divide(sums, counts[None, :], out=out, where=counts[None, :] > 0, casting="unsafe")
    return out


def js_distance(attn: np.ndarray) -> np.ndarray:
    """Mean Jensen–Shannon distance between every pair of heads' attention rows, for one example.

    ``attn`` is ``[C, Tq, Tk]`` (rows are distributions over keys). For heads ``g, h``: the mean over queries
    ``i`` of ``sqrt(JSD(a_g[i], a_h[i]))`` with JSD in bits (so in ``[0, 1]``); ``JSD = H(m) − (H(p)+H(q))/2``
    with ``m = (p+q)/2``. Logarithms in float32, sums in float64 (absolute error below ~1e-3 on the distance).
    Returns ``[C, C]`` float64, symmetric, zero diagonal.
    """
    p = np.clip(np.asarray(attn, dtype=np.float32), 0.0, None)
    c = p.shape[0]
    lp = np.log(p, out=np.zeros_like(p), where=p > 0)
    h = -(p * lp).sum(axis=-1, dtype=np.float64)  # [C, Tq] entropy in nats
    out = np.zeros((c, c), dtype=np.float64)
    for g in range(c - 1):
        m = 0.5 * (p[g] + p[g + 1:])  # [C-g-1, Tq, Tk]
        lm = np.log(m, out=np.zeros_like(m), where=m > 0)
        hm = -(m * lm).sum(axis=-1, dtype=np.float64)
        jsd = (hm - 0.5 * (h[g] + h[g + 1:])) / np.log(2.0)
        out[g, g + 1:] = np.sqrt(np.clip(jsd, 0.0, 1.0)).mean(axis=-1)
    return out + out.T


def cluster_order(distance: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage hierarchical clustering of a ``[C, C]`` distance matrix."""
    d = np.asarray(distance, dtype=np.float64)
    if d.shape[0] < 3:
        return np.arange(d.shape[0])
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    z = hierarchy.linkage(squareform(np.nan_to_num(d, nan=1.0), checks=False), method="average",
                          optimal_ordering=True)
    return hierarchy.leaves_list(z).astype(np.int64)


# --------------------------------------------------------------------------------------------------------
# Reference heads: attention built to show one pattern (tests, benchmarks, documentation)
# --------------------------------------------------------------------------------------------------------


def pattern_attention(key: str, flags: np.ndarray, *, strength: float = 0.85,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """``[T, T]`` self-attention of a head built to show pattern ``key`` (a :data:`PATTERN_LABELS` key).

    Each row puts ``strength`` on the pattern's key (previous / next / same token, the first token, the
    [SEP] token, the last punctuation token) and spreads the rest uniformly; "broad" rows are uniform and
    "heterogeneous" rows are random Dirichlet(0.3) draws. ``flags`` are the tokens' ``attnviz.pipeline.token_classes``
    bits (used to find [SEP] and punctuation).
    """
    t = len(flags)
    rng = rng or np.random.default_rng(0)
    uniform = np.full((t, t), 1.0 / t)
    if key == "broad":
        return uniform.astype(np.float32)
    if key == "heterogeneous":
        return rng.dirichlet(np.full(t, 0.3), size=t).astype(np.float32)
    rows = np.arange(t)
    if key == "previous":
        target = np.maximum(rows - 1, 0)
    elif key == "next":
        target = np.minimum(rows + 1, t - 1)
    elif key == "self":
        target = rows
    elif key == "first":
        target = np.zeros(t, dtype=int)
    elif key in ("sep", "punct"):
        bit = SEP_OR_EOS if key == "sep" else PUNCTUATION
        where = np.flatnonzero(np.asarray(flags) & bit)
        target = np.full(t, where[-1] if where.size else t - 1)
    else:
        raise ValueError(f"unknown pattern {key!r}: use one of {', '.join(PATTERN_LABELS)}")
    out = (1.0 - strength) * uniform
    out[rows, target] += strength
    return out.astype(np.float32)


def synthetic_examples(patterns: Sequence[Sequence[str]], n: int, *, start: int = 0, seed: int = 0,
                       min_tokens: int = 6, max_tokens: int = 12, strength: float = 0.85,
                       text_prefix: str = "sentence") -> list[ExampleResult]:
    """``n`` examples (``attnviz.pipeline.records.ExampleResult``) whose head ``(l, h)`` shows ``patterns[l][h]``.

    Tokens are ``[CLS] w1 .. wk . [SEP]`` with their class flags; texts are ``"<text_prefix> <index> ..."``;
    metadata ``corpus``/``source``/``length_bucket``, a ``label``, and every 7th example truncated. Metrics
    are computed from the float32 attention with ``attnviz.pipeline.metrics.example_metrics``. Deterministic in
    ``seed`` and the example index; each head draws its own random numbers, so changing one head's pattern
    leaves every other head unchanged.
    """
    out = []
    for i in range(start, start + n):
        rng = np.random.default_rng([seed, i])
        t = int(rng.integers(min_tokens, max_tokens + 1))
        words = [f"w{int(x)}" for x in rng.integers(0, 50, size=t - 3)]
        strings = ["[CLS]", *words, ".", "[SEP]"]
        flags = np.array([SPECIAL | CLS_OR_BOS, *[0] * len(words), PUNCTUATION, SPECIAL | SEP_OR_EOS],
                         dtype=np.uint8)
        attn = np.stack([np.stack([pattern_attention(key, flags, strength=strength,
                                                     rng=np.random.default_rng([seed, i, li, hi]))
                                   for hi, key in enumerate(layer)]) for li, layer in enumerate(patterns)])
        metrics = example_metrics(attn, flags, causal=False, self_attention=True)
        out.append(ExampleResult(
            input_index=i, text=f"{text_prefix} {i} {' '.join(words)} .",
            source=TokenSequence(ids=np.arange(t, dtype=np.int32), strings=strings, flags=flags),
            attention={"self": attn}, metrics={"self": metrics}, truncated=i % 7 == 0,
            label="pos" if i % 3 == 0 else "neg",
            meta={"corpus": "synthetic", "source": "alpha" if i % 2 else "beta",
                  "length_bucket": "short" if t <= 8 else "long", "line": i + 1}))
    return out


def synthetic_meta(n_layers: int, n_heads: int, planned: int, model: str = "synthetic") -> dict:
    """Run metadata for :func:`synthetic_examples` runs (the keys ``StoreWriter.begin_run`` callers need)."""
    return {"model": model, "family": "encoder", "random_weights": True, "capture": ["attention"],
            "kinds": ["self"], "shape": {"self": [n_layers, n_heads]}, "metrics": {"self": list(METRICS)},
            "planned_examples": planned}
