"""Attention by relative offset ``j − i``, accumulated over the examples of a run (used by the scan)."""

from __future__ import annotations

import numpy as np


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
