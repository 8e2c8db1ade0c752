"""Pure numpy computations behind the Example tab's figures (no Dash, no plotly, no store)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def mean_heads(attn: np.ndarray) -> np.ndarray:
    """Mean over the head axis of ``[H, Tq, Tk]`` attention, as float32 ``[Tq, Tk]``."""
    return np.asarray(attn, dtype=np.float32).mean(axis=0, dtype=np.float32)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows of ``x`` ``[T, D]`` onto their first two principal components: float32 ``[T, 2]``.

    Centred, via numpy SVD; the sign of each component is fixed (largest loading positive) so the picture is
    stable. Fewer than two usable components give zero columns.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"pca_2d needs a [T, D] array, got shape {x.shape}")
    out = np.zeros((x.shape[0], 2), dtype=np.float32)
    if x.shape[0] < 2 or x.shape[1] == 0:
        return out
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    for c in range(k):
        if s[c] <= 1e-12 * max(1.0, s[0]):
            continue
        v = vt[c]
        v = v if v[np.argmax(np.abs(v))] >= 0 else -v
        out[:, c] = (centred @ v).astype(np.float32)
    return out


def sorted_finite(values: np.ndarray) -> np.ndarray:
    """The finite values of ``values`` sorted ascending (a distribution ready for :func:`percentile_of`)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return np.sort(v[np.isfinite(v)])


def percentile_of(distribution: np.ndarray, value: float) -> float:
    """Percentile rank (0..100) of ``value`` within a sorted finite ``distribution``.

    Counts values below plus half of the ties (so the median of a symmetric sample is 50). NaN if ``value`` is
    not finite or the distribution is empty.
    """
    if not np.isfinite(value) or distribution.size == 0:
        return math.nan
    lo = np.searchsorted(distribution, value, side="left")
    hi = np.searchsorted(distribution, value, side="right")
    return float(100.0 * (lo + 0.5 * (hi - lo)) / distribution.size)


def pool_matrix(a: np.ndarray, max_rows: int, max_cols: int) -> np.ndarray:
    """Block-mean pool the last two axes of ``a`` to at most ``max_rows`` x ``max_cols`` cells (float32).

    Works on ``[R, C]`` or stacks ``[..., R, C]``. Blocks are ``ceil(R / max_rows)`` by ``ceil(C / max_cols)``;
    the last block may be partial (its mean is over the cells it has).
    """
    a = np.asarray(a, dtype=np.float32)
    rows, cols = a.shape[-2:]
    fr = max(1, math.ceil(rows / max_rows))
    fc = max(1, math.ceil(cols / max_cols))
    if fr == 1 and fc == 1:
        return a
    out_r, out_c = math.ceil(rows / fr), math.ceil(cols / fc)
    lead = a.shape[:-2]
    padded = np.zeros((*lead, out_r * fr, out_c * fc), dtype=np.float32)
    padded[..., :rows, :cols] = a
    total = padded.reshape(*lead, out_r, fr, out_c, fc).sum(axis=(-3, -1), dtype=np.float32)
    n_r = np.minimum(fr, rows - fr * np.arange(out_r)).astype(np.float32)
    n_c = np.minimum(fc, cols - fc * np.arange(out_c)).astype(np.float32)
    return (total / np.outer(n_r, n_c)).astype(np.float32)


def attention_scores(q: np.ndarray, k: np.ndarray, scale: float, *, causal: bool = False) -> np.ndarray:
    """Pre-softmax scores ``scale · Q Kᵀ`` as float32 ``[Tq, Tk]``; for causal attention the masked
    (future) entries are NaN."""
    s = (np.asarray(q, dtype=np.float64) @ np.asarray(k, dtype=np.float64).T) * scale
    if causal:
        s[~np.tri(s.shape[0], s.shape[1], dtype=bool)] = np.nan
    return s.astype(np.float32)


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Row softmax ignoring NaN entries (which get weight 0), float32."""
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    m = np.where(finite, s, -np.inf).max(axis=-1, keepdims=True)
    e = np.where(finite, np.exp(s - m), 0.0)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def score_multiplier(score_scale: float | None, head_dim: int) -> tuple[float, str]:
    """The attention score multiplier and a note saying where it came from."""
    if score_scale is not None:
        return float(score_scale), "from model_info score_scale"
    return 1.0 / math.sqrt(head_dim), f"1/√d_k, d_k = {head_dim}"


@dataclass(frozen=True)
class Histogram:
    """Pre-binned values: bin ``edges`` (n+1), ``counts`` (n) and summary statistics."""

    edges: np.ndarray
    counts: np.ndarray
    n: int
    mean: float
    std: float

    @property
    def centers(self) -> np.ndarray:
        return ((self.edges[:-1] + self.edges[1:]) / 2).astype(np.float32)


def histogram(values: np.ndarray, bins: int = 40) -> Histogram:
    """Histogram of the finite values (float32 edges, int32 counts); an empty input gives zero bins."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Histogram(np.zeros(0, np.float32), np.zeros(0, np.int32), 0, math.nan, math.nan)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    return Histogram(edges.astype(np.float32), counts.astype(np.int32), int(v.size), float(v.mean()),
                     float(v.std()))


def activation_norms(hidden: np.ndarray) -> np.ndarray:
    """L2 norm of each hidden vector: ``[L+1, T, D]`` -> float32 ``[L+1, T]``."""
    return np.linalg.norm(np.asarray(hidden, dtype=np.float32), axis=-1).astype(np.float32)


#: Default opacity bins of the head view (weights below the first edge are not drawn).
HEAD_VIEW_EDGES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0 + 1e-6)


@dataclass(frozen=True)
class SegmentBin:
    """Lines of one opacity bin: weights in ``[lo, hi)``, drawn with ``opacity``; NaN-separated x/y."""

    lo: float
    hi: float
    opacity: float
    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray  #: the weights of the segments, in drawing order
    pairs: np.ndarray  #: ``[n, 2]`` (query, key) of each segment

    @property
    def count(self) -> int:
        return int(self.weights.size)


def head_view_bins(weights: np.ndarray, *, edges: tuple[float, ...] = HEAD_VIEW_EDGES,
                   query: int | None = None, key: int | None = None, max_segments: int = 20_000,
                   x_left: float = 0.0, x_right: float = 1.0) -> tuple[list[SegmentBin], int]:
    """Group the lines of a head view by opacity.

    Each (query i, key j) with weight ``w >= edges[0]`` becomes a segment from ``(x_left, i)`` to
    ``(x_right, j)``, put in the bin ``edges[b] <= w < edges[b+1]`` whose opacity is the bin's mid-point.
    ``query`` / ``key`` keep only that token's lines. At most ``max_segments`` of the largest weights are kept
    (ties: the earlier pair).

    Returns the non-empty bins and the number of segments left out by the cap.
    """
    w = np.asarray(weights, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"head view needs [Tq, Tk] weights, got shape {w.shape}")
    mask = np.isfinite(w) & (w >= edges[0])
    if query is not None:
        keep = np.zeros_like(mask)
        keep[query, :] = True
        mask &= keep
    if key is not None:
        keep = np.zeros_like(mask)
        keep[:, key] = True
        mask &= keep
    qi, kj = np.nonzero(mask)
    vals = w[qi, kj]
    dropped = 0
    if vals.size > max_segments:
        # the largest weights, ties to the earlier pair, kept in row-major order (the page's head view, in
        # dashboard/assets/example.js, picks the same lines)
        top = np.sort(np.argsort(-vals, kind="stable")[:max_segments])
        dropped = vals.size - max_segments
        qi, kj, vals = qi[top], kj[top], vals[top]
    which = np.searchsorted(np.asarray(edges), vals, side="right") - 1
    which = np.clip(which, 0, len(edges) - 2)
    out: list[SegmentBin] = []
    for b in range(len(edges) - 1):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            continue
        x = np.empty(3 * n, dtype=np.float32)
        y = np.empty(3 * n, dtype=np.float32)
        x[0::3], x[1::3], x[2::3] = x_left, x_right, np.nan
        y[0::3], y[1::3], y[2::3] = qi[sel], kj[sel], np.nan
        lo, hi = edges[b], min(edges[b + 1], 1.0)
        out.append(SegmentBin(lo=lo, hi=hi, opacity=round((lo + hi) / 2, 4), x=x, y=y, weights=vals[sel],
                              pairs=np.stack([qi[sel], kj[sel]], axis=1)))
    return out, dropped
