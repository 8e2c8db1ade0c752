"""Comparing run A with run B head by head: pairing the examples of the same input, a paired bootstrap of
the mean difference A − B or a Mann–Whitney U test, and Benjamini–Hochberg adjusted p-values.

Rows are heads (or layers) in the head-major layout ``[C, N]`` of :mod:`attnviz.pipeline.statistics`."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import special

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
    block = rng.integers(0, max_blocks, size=n) if blocked else np.zeros(0, dtype=np.int64)  # unused unblocked
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
