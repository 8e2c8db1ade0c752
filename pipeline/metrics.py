"""Per-head attention metrics and attention rollout (numpy only; the dashboard imports this, never torch).

Every metric is defined in ``docs/metrics.md``; this module is the one implementation. Metrics are computed
vectorized over a padded batch, from the float32 attention the model returns (before any down-cast), and
stored per example, layer and head as ``[B, L, H]`` float32.

Notation (see the docs): for example ``b``, query ``i`` and key ``j``, ``a_ij`` is the attention weight and
``K_i`` the set of *valid keys* of query ``i``: unpadded keys, and for causal (decoder) self-attention only
those with ``j <= i``. ``n_i = |K_i|``. A query row *qualifies* when the query is unpadded and ``n_i > 0``.
Weights outside ``K_i`` (padding, the masked upper triangle) and rows of padded queries are ignored
entirely, whatever they contain (NaN included). Weights are **not** renormalized on ``K_i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from attnviz.pipeline.token_classes import CLS_OR_BOS, PUNCTUATION, SEP_OR_EOS, SPECIAL

_TINY = np.float32(np.finfo(np.float32).tiny)  # smallest normal float32; ln of it is finite
_CHUNK_ELEMENTS = 1 << 18  # attention weights per chunk in _row_statistics (keeps temporaries in cache)

#: A key is "active" for a query when its weight is >= this; "sparse" when below it (docs/metrics.md).
SPARSITY_THRESHOLD: float = 0.01
#: Rows spread evenly over more keys than this have every weight below the threshold (docs/metrics.md).
_EVEN_LIMIT = round(1 / SPARSITY_THRESHOLD)


@dataclass(frozen=True)
class MetricSpec:
    """Description of one per-head metric, for the store's attributes and the dashboard's labels."""

    name: str  #: key in the result dict and the store
    label: str  #: short human label
    unit: str  #: "nats", "fraction", "weight", "keys" or "tokens"
    description: str  #: one-line definition (the full one is in docs/metrics.md)
    self_only: bool  #: defined only for self-attention (NaN for cross-attention)


def _spec(name: str, label: str, unit: str, description: str, self_only: bool = False) -> MetricSpec:
    return MetricSpec(name=name, label=label, unit=unit, description=description, self_only=self_only)


#: Ordered registry of every metric ``attention_metrics`` returns.
METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        _spec("entropy", "Entropy", "nats", "mean over queries of -sum_{j in K_i} a_ij ln a_ij"),
        _spec(
            "entropy_norm",
            "Normalized entropy",
            "fraction",
            "mean over queries with n_i > 1 of H_i / ln n_i",
        ),
        _spec("kl_uniform", "KL from uniform", "nats", "mean over queries of sum_{j in K_i} a_ij ln(a_ij n_i)"),
        _spec(
            "sparsity",
            f"Sparsity (weights < {SPARSITY_THRESHOLD:g})",
            "fraction",
            f"fraction of all valid (query, key) weights < {SPARSITY_THRESHOLD} (pooled over the example); "
            f"a row spread evenly over more than {_EVEN_LIMIT} keys counts as wholly sparse "
            f"(1/n < {SPARSITY_THRESHOLD}): read it with Normalized entropy",
        ),
        _spec(
            "token_sparsity_avg",
            f"Active keys ≥ {SPARSITY_THRESHOLD:g} (mean)",
            "keys",
            f"mean over queries of the number of valid keys with weight >= {SPARSITY_THRESHOLD}; 0 for a row spread "
            f"evenly over more than {_EVEN_LIMIT} keys (every weight 1/n < {SPARSITY_THRESHOLD}), which is broad "
            "attention, not sparse: read it with Normalized entropy",
        ),
        _spec(
            "token_sparsity_max",
            f"Active keys ≥ {SPARSITY_THRESHOLD:g} (max)",
            "keys",
            f"max over queries of the number of valid keys with weight >= {SPARSITY_THRESHOLD} (0 when every row "
            f"is spread over more than {_EVEN_LIMIT} keys)",
        ),
        _spec("confidence", "Confidence", "weight", "mean over queries of max_{j in K_i} a_ij"),
        _spec("mass_first", "Mass on first token", "weight", "mean over queries of the weight on the first key"),
        _spec("mass_cls", "Mass on CLS/BOS", "weight", "mean over queries of the weight on CLS_OR_BOS keys"),
        _spec("mass_sep", "Mass on SEP/EOS", "weight", "mean over queries of the weight on SEP_OR_EOS keys"),
        _spec("mass_special", "Mass on special", "weight", "mean over queries of the weight on SPECIAL keys"),
        _spec(
            "mass_punct",
            "Mass on punctuation",
            "weight",
            "mean over queries of the weight on PUNCTUATION keys",
        ),
        _spec("mass_self", "Mass on self", "weight", "mean over queries of a_ii", self_only=True),
        _spec(
            "mass_prev",
            "Mass on previous",
            "weight",
            "mean over queries i >= 1 (i-1 a valid token) of a_{i,i-1}",
            self_only=True,
        ),
        _spec(
            "mass_next",
            "Mass on next",
            "weight",
            "mean over queries whose i+1 is a valid token of a_{i,i+1} (0 for causal attention)",
            self_only=True,
        ),
        _spec(
            "mean_distance",
            "Mean attention distance",
            "tokens",
            "mean over queries of sum_{j in K_i} a_ij |i - j|",
            self_only=True,
        ),
        _spec(
            "duplicate_token",
            "Duplicate-token score",
            "weight",
            "share of the attention on earlier copies of the query's own token (TransformerLens head detector)",
            self_only=True,
        ),
        _spec(
            "induction",
            "Induction score",
            "weight",
            "share of the attention on the token after an earlier copy of the query's token (TransformerLens)",
            self_only=True,
        ),
    )
}

#: Prefix of the metrics computed on the row-normalized value-weighted norms of a run with ``--capture norms``
#: (``vw_entropy`` …; docs/metrics.md, "Value-weighted attention").
VALUE_WEIGHTED_PREFIX = "vw_"


def value_weighted_names() -> list[str]:
    """The names of the value-weighted metrics, one per metric of :data:`METRICS`, in registry order."""
    return [VALUE_WEIGHTED_PREFIX + name for name in METRICS]


def metric_spec(name: str) -> MetricSpec | None:
    """The description of a stored metric name (a :data:`METRICS` name or its value-weighted ``vw_`` twin);
    None for a name attnviz does not define."""
    if name in METRICS:
        return METRICS[name]
    base = METRICS.get(name.removeprefix(VALUE_WEIGHTED_PREFIX)) if name.startswith(VALUE_WEIGHTED_PREFIX) else None
    if base is None:
        return None
    return MetricSpec(name=name, label=f"{base.label} (value-weighted)", unit=base.unit,
                      description=f"{base.description}, on the row-normalized ‖a_ij f(x_j)‖", self_only=base.self_only)


#: The head-detector scores: they compare token ids, so they need ``key_ids`` (NaN without them).
DETECTOR_METRICS: tuple[str, ...] = ("duplicate_token", "induction")

# The flag-mass metrics and their bits, in the order of the key indicator columns after "first".
_FLAG_METRICS: tuple[tuple[str, int], ...] = (
    ("mass_cls", CLS_OR_BOS),
    ("mass_sep", SEP_OR_EOS),
    ("mass_special", SPECIAL),
    ("mass_punct", PUNCTUATION),
)


def _check_inputs(
    attn: np.ndarray,
    query_mask: np.ndarray,
    key_mask: np.ndarray,
    key_flags: np.ndarray,
    causal: bool,
    self_attention: bool,
    threshold: float,
) -> None:
    if attn.ndim != 5:
        raise ValueError(f"attn must be [B, L, H, Tq, Tk], got shape {attn.shape}")
    b, _, _, tq, tk = attn.shape
    if query_mask.shape != (b, tq):
        raise ValueError(f"query_mask must be [B, Tq] = {(b, tq)}, got {query_mask.shape}")
    if key_mask.shape != (b, tk):
        raise ValueError(f"key_mask must be [B, Tk] = {(b, tk)}, got {key_mask.shape}")
    if key_flags.shape != (b, tk):
        raise ValueError(f"key_flags must be [B, Tk] = {(b, tk)}, got {key_flags.shape}")
    if causal and not self_attention:
        raise ValueError("causal attention must be self-attention")
    if self_attention and tq != tk:
        raise ValueError(f"self-attention needs Tq == Tk, got {tq} != {tk}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")


def _float32_at_least(x: float) -> np.float32:
    """The smallest float32 ``>= x``, so that ``w >= it`` is ``w >= x`` exactly for float32 ``w``."""
    t = np.float32(x)
    return np.nextafter(t, np.float32(np.inf)) if float(t) < x else t


def _bounds(any_valid: Any) -> tuple[int, int]:
    """``[first, last + 1)`` of the True entries of a 1-D bool array (``(0, 0)`` when none)."""
    nz = np.flatnonzero(any_valid)
    return (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)


def _row_statistics(
    attn: np.ndarray, valid: np.ndarray, cols: np.ndarray, threshold: float, self_attention: bool
) -> dict[str, np.ndarray]:
    """Per-query-row statistics of the attention restricted to the valid keys; each ``[B, L, H, Tq]``.

    ``a`` below is ``attn`` with every weight outside ``K_i`` (and every padded query row) set to exactly 0.
    Returns ``rowsum`` (sum_j a), ``entropy`` (-sum a ln a), ``active`` (count of a >= threshold),
    ``confidence`` (max a), ``linear`` (``sum_j a_ij cols[j, c]``, ``[B, L, H, Tq, C]``, for 0/1 key
    indicator columns) and, for self-attention, ``self`` / ``prev`` / ``next`` (a[i,i], a[i,i-1], a[i,i+1];
    0 where the position does not exist) and ``distance`` (sum a |i-j|). Rows without valid keys get 0.

    Performance (the work is memory-bound): the batch is processed in chunks of whole examples that fit in
    cache, each cropped to the bounding box of its valid queries and keys (padding costs nothing), with
    reused buffers. The masked chunk is written key-major, ``[n, Tk, L, H, Tq]``, so that every reduction
    over keys is a sum of long contiguous slabs (fast SIMD) rather than many short rows, and the masses on
    flagged keys only touch the flagged slabs. Within a chunk everything is vectorized. The reductions are plain
    numpy (single-threaded, deterministic); the masses on the indicator columns are one small ``np.matmul``
    per example (BLAS: the products are exact 0/1 selections, only the order of the additions is BLAS's).
    """
    b, n_layers, n_heads, tq, tk = attn.shape
    f32 = np.float32
    shape = (b, n_layers, n_heads, tq)
    n_cols = cols.shape[-1]
    names = ["rowsum", "entropy", "active", "confidence"]
    if self_attention:
        names += ["self", "prev", "next", "distance"]
    st = {k: np.zeros(shape, f32) for k in names}
    st["linear"] = np.zeros((*shape, n_cols), f32)
    # |i - j| laid out like a key-major chunk: [Tk, 1, 1, Tq].
    dist = np.abs(np.arange(tk, dtype=f32)[:, None] - np.arange(tq, dtype=f32)[None, :])[:, None, None, :]
    validf = valid.astype(f32)[:, None, None]  # [B, 1, 1, Tq, Tk]
    thr = _float32_at_least(threshold)
    per_example = n_layers * n_heads * tq * tk
    step = max(1, min(b, _CHUNK_ELEMENTS // max(1, per_example)))
    buf_a = np.empty(step * per_example, f32)
    buf_w = np.empty_like(buf_a)
    buf_m = np.empty(buf_a.shape, dtype=bool)
    for s in range(0, b, step):
        e = min(b, s + step)
        n = e - s
        q0, q1 = _bounds(valid[s:e].any(axis=(0, 2)))
        k0, k1 = _bounds(valid[s:e].any(axis=(0, 1)))
        if self_attention:  # one square window, so that diagonals stay diagonals
            q0 = k0 = min(q0, k0)
            q1 = k1 = max(q1, k1)
        wq, wk = q1 - q0, k1 - k0
        if wq == 0 or wk == 0:
            continue  # no valid (query, key) pair in the chunk: all statistics stay 0
        size = n * wk * n_layers * n_heads * wq
        kshape = (n, wk, n_layers, n_heads, wq)
        a, w, m = (buf[:size].reshape(kshape) for buf in (buf_a, buf_w, buf_m))
        x = attn[s:e, :, :, q0:q1, k0:k1]
        # a[b, j, l, h, i] = attn[b, l, h, i, j] on K_i, else 0 (written key-major through a view).
        with np.errstate(invalid="ignore"):  # inf * 0 in the padding: detected and redone just below
            np.multiply(x, validf[s:e, :, :, q0:q1, k0:k1], out=a.transpose(0, 2, 3, 4, 1))
        out = {k: v[s:e, :, :, q0:q1] for k, v in st.items()}
        np.add.reduce(a, axis=1, out=out["rowsum"])
        if not np.isfinite(out["rowsum"]).all():
            # Non-finite garbage outside K_i (inf * 0 = NaN): mask by selection instead of product.
            sel = np.where(validf[s:e, :, :, q0:q1, k0:k1] != 0, x, f32(0.0))
            np.copyto(a.transpose(0, 2, 3, 4, 1), sel)
            np.add.reduce(a, axis=1, out=out["rowsum"])
        np.maximum.reduce(a, axis=1, out=out["confidence"])
        # Masses on the 0/1 indicator columns: linear[.., i, c] = sum_j a_ij cols[j, c], one small matrix product
        # per example (the products are exact; only the order of the additions is BLAS's).
        if np.isfinite(out["rowsum"]).all():
            masses = np.matmul(a.reshape(n, wk, -1).transpose(0, 2, 1), cols[s:e, k0:k1])  # [n, L*H*wq, C]
            out["linear"][...] = masses.reshape(n, n_layers, n_heads, wq, n_cols)
        else:  # a non-finite weight inside K_i: only the flagged keys' own weights may reach a mass
            for i in range(n):
                for c in range(n_cols):
                    keys = np.flatnonzero(cols[s + i, k0:k1, c])
                    np.add.reduce(a[i, keys], axis=0, out=out["linear"][i, ..., c])
        if self_attention:
            out["self"][...] = np.diagonal(a, 0, 4, 1)  # a[i, i]
            if wq > 1:
                out["prev"][..., 1:] = np.diagonal(a, -1, 4, 1)  # a[i, i-1] for i = q0+1..q1-1
                out["next"][..., :-1] = np.diagonal(a, 1, 4, 1)  # a[i, i+1] for i = q0..q1-2
            np.multiply(a, dist[k0:k1, :, :, q0:q1], out=w)
            np.add.reduce(w, axis=1, out=out["distance"])
        # Exactly w >= threshold (as real numbers); threshold > 0, so masked (zero) weights never count.
        np.greater_equal(a, thr, out=m)
        np.add.reduce(m, axis=1, dtype=f32, out=out["active"])
        # The one log. a * ln(a + FLT_MIN) is exactly 0 at a = 0 (0 ln 0 = 0) and equals a * ln(a) in
        # float32 for every a >= 2**-102; below that the term is < 1e-29 either way.
        np.add(a, _TINY, out=w)
        np.log(w, out=w)
        w *= a
        # Negated on a contiguous temporary: numpy 2.4's in-place np.negative(x, out=x) on a strided view
        # returned wrong values (-0.0) for some elements (tests/test_metrics.py has the regression test).
        out["entropy"][...] = np.negative(np.add.reduce(w, axis=1))
    return st


def _detector_scores(attn: np.ndarray, valid: np.ndarray, key_ids: np.ndarray, rowsum: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """TransformerLens's duplicate-token and induction head scores (``error_measure="mul"``), ``[B, L, H]``.

    ``score = sum_{(i, j) in P} a_ij / sum_{i in Q, j in K_i} a_ij`` with the 0/1 detection pattern ``P``:
    duplicate token ``P[i, j] = [j < i and id_j = id_i]``, induction ``P[i, j] = [j - 1 < i and
    id_{j-1} = id_i]`` (the token right after an earlier copy of the query's token), both restricted to valid
    pairs (``j`` and, for induction, ``j - 1`` in ``K_i``). The pattern is sparse, so its weights are gathered
    rather than masked: the cost grows with the number of repeated tokens, not with ``T²``. NaN where the
    example has no qualifying row or its weights sum to 0.
    """
    b, n_layers, n_heads, tq, _ = attn.shape
    same = key_ids[:, :, None] == key_ids[:, None, :]  # [B, T, T]: id_i == id_j
    duplicate = same & valid & np.tri(tq, tq, -1, dtype=bool)[None]  # j < i, (i, j) valid
    induction = np.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1] & valid[:, :, 1:]  # key j whose j - 1 is an earlier copy
    den = rowsum.sum(axis=-1, dtype=np.float64)  # [B, L, H]; rows outside Q are 0
    has_rows = np.asarray(valid.any(axis=(1, 2)))[:, None, None]
    out = {}
    for name, pattern in (("duplicate_token", duplicate), ("induction", induction)):
        num = np.zeros((b, n_layers, n_heads))
        bi, qi, ki = np.nonzero(pattern)
        if bi.size:
            np.add.at(num, bi, attn[bi, :, :, qi, ki].astype(np.float64))  # [P, L, H] summed per example
        out[name] = np.divide(num, den, out=np.full(num.shape, np.nan), where=has_rows & (den != 0))
    return out


def attention_metrics(
    attn: np.ndarray,
    query_mask: np.ndarray,
    key_mask: np.ndarray,
    key_flags: np.ndarray,
    *,
    causal: bool,
    self_attention: bool,
    threshold: float = SPARSITY_THRESHOLD,
    key_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every metric in ``METRICS`` for every example, layer and head of a padded batch.

    Args:
        attn: ``[B, L, H, Tq, Tk]`` attention weights (float32; other float dtypes are cast to float32).
        query_mask: ``[B, Tq]`` bool, True at valid (unpadded) queries.
        key_mask: ``[B, Tk]`` bool, True at valid (unpadded) keys.
        key_flags: ``[B, Tk]`` uint8 flags from ``attnviz.pipeline.token_classes``.
        causal: decoder self-attention: the valid keys of query ``i`` are the valid keys ``j <= i``.
        self_attention: queries and keys index the same sequence (needs ``Tq == Tk``); False for
            cross-attention, where the self-only metrics are NaN.
        threshold: sparsity threshold, in ``(0, 1]``.
        key_ids: ``[B, Tk]`` token ids of the keys (of the queries too: self-attention), for the head-detector
            scores (:data:`DETECTOR_METRICS`), which are NaN without them; padding ids are never read.

    Returns:
        ``name -> [B, L, H]`` float32 for every name in ``METRICS``, in registry order; NaN where a
        metric is undefined (no qualifying query row, or a self-only metric of cross-attention).
    """
    attn = np.asarray(attn)
    query_mask = np.asarray(query_mask, dtype=bool)
    key_mask = np.asarray(key_mask, dtype=bool)
    key_flags = np.asarray(key_flags)
    _check_inputs(attn, query_mask, key_mask, key_flags, causal, self_attention, threshold)
    if key_ids is not None:
        key_ids = np.asarray(key_ids)
        if key_ids.shape != key_mask.shape:
            raise ValueError(f"key_ids must be [B, Tk] = {key_mask.shape}, got {key_ids.shape}")
    b, n_layers, n_heads, tq, tk = attn.shape
    f32 = np.float32

    # valid[b, i, j]: j in K_i for a valid query i (all False on rows of padded queries).
    valid = query_mask[:, :, None] & key_mask[:, None, :]
    if causal:
        valid &= np.tri(tq, tk, dtype=bool)[None]
    n_keys = valid.sum(axis=-1)  # [B, Tq] = n_i
    row_ok = n_keys > 0  # qualifying rows

    # 0/1 key indicator columns for the masses: first valid key, then one column per flag.
    cols = np.zeros((b, tk, 1 + len(_FLAG_METRICS)), dtype=f32)
    if tk:
        first_key = np.argmax(key_mask, axis=1)  # lowest-index valid key (0 when right-padded)
        cols[np.arange(b), first_key, 0] = key_mask[np.arange(b), first_key]
    for c, (_, bit) in enumerate(_FLAG_METRICS):
        cols[:, :, 1 + c] = (key_flags & bit) != 0

    st = _row_statistics(attn, valid, cols, threshold, self_attention)
    ent, active, conf, lin = st["entropy"], st["active"], st["confidence"], st["linear"]
    rowsum = st["rowsum"]

    ln_n = np.log(np.maximum(n_keys, 1)).astype(f32)  # [B, Tq]; 0 where n_i <= 1
    ln_n_safe = np.where(n_keys > 1, ln_n, f32(1.0))

    # Per-row values [B, L, H, Tq] and row weights [B, Tq]; example value = weighted mean over rows.
    rows: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    ok = row_ok.astype(np.float64)
    rows["entropy"], weights["entropy"] = ent, ok
    rows["entropy_norm"] = ent / ln_n_safe[:, None, None]
    weights["entropy_norm"] = (n_keys > 1).astype(np.float64)
    rows["kl_uniform"], weights["kl_uniform"] = ln_n[:, None, None] * rowsum - ent, ok
    rows["token_sparsity_avg"], weights["token_sparsity_avg"] = active, ok
    rows["confidence"], weights["confidence"] = conf, ok
    rows["mass_first"], weights["mass_first"] = lin[..., 0], ok
    for c, (name, _) in enumerate(_FLAG_METRICS):
        rows[name], weights[name] = lin[..., 1 + c], ok

    if self_attention:
        t = tq
        w_prev = np.zeros((b, t))
        w_next = np.zeros((b, t))
        w_prev[:, 1:] = row_ok[:, 1:] & key_mask[:, :-1]  # queries i >= 1 whose i-1 is a valid token
        w_next[:, :-1] = row_ok[:, :-1] & key_mask[:, 1:]  # queries whose i+1 is a valid token
        rows["mass_self"], weights["mass_self"] = st["self"], ok
        rows["mass_prev"], weights["mass_prev"] = st["prev"], w_prev
        rows["mass_next"], weights["mass_next"] = st["next"], w_next
        rows["mean_distance"], weights["mean_distance"] = st["distance"], ok
    detectors = _detector_scores(attn, valid, key_ids, rowsum) if self_attention and key_ids is not None else {}

    # Weighted means over rows, one float64 matrix product per distinct row weighting (the weights are 0/1).
    means: dict[str, np.ndarray] = {}
    for w in {id(w): w for w in weights.values()}.values():
        names = [name for name in rows if weights[name] is w]
        stacked = np.stack([rows[name] for name in names]).astype(np.float64)  # [K, B, L, H, Tq]
        num = np.matmul(stacked.reshape(len(names), b, n_layers * n_heads, tq), w[None, :, :, None])
        num = num.reshape(len(names), b, n_layers, n_heads)
        den = w.sum(axis=1)[:, None, None]
        for name, num_k in zip(names, num, strict=True):
            means[name] = np.divide(num_k, den, out=np.full(num_k.shape, np.nan), where=den > 0)

    out: dict[str, np.ndarray] = {}
    for name in METRICS:
        if name == "sparsity":
            # Pooled over the example's valid pairs: sum_i (n_i - active_i) / sum_i n_i (integer counts,
            # exact in float64; rows of padded queries have n_i = active_i = 0).
            pairs = n_keys.sum(axis=1, dtype=np.float64)[:, None, None]
            sparse = pairs - active.sum(axis=-1, dtype=np.float64)
            val = np.divide(sparse, pairs, out=np.full(sparse.shape, np.nan), where=pairs > 0)
        elif name == "token_sparsity_max":
            val = np.full((b, n_layers, n_heads), np.nan)
            if tq:
                mx = np.where(row_ok[:, None, None], active, -1).max(axis=-1)
                val = np.where(mx >= 0, mx, np.nan)
        elif name in means:
            val = means[name]
        elif name in detectors:
            val = detectors[name]
        else:  # self-only metric of cross-attention (or a head-detector score without token ids)
            val = np.full((b, n_layers, n_heads), np.nan)
        out[name] = np.asarray(val, dtype=f32)
    return out


def example_metrics(
    attn: np.ndarray,
    key_flags: np.ndarray,
    *,
    causal: bool,
    self_attention: bool,
    threshold: float = SPARSITY_THRESHOLD,
    key_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``attention_metrics`` for one unpadded example (every query and key valid).

    Args:
        attn: ``[L, H, Tq, Tk]`` attention weights.
        key_flags: ``[Tk]`` uint8 flags.
        causal, self_attention, threshold: as for ``attention_metrics``.
        key_ids: ``[Tk]`` token ids (for the head-detector scores; NaN without them).

    Returns:
        ``name -> [L, H]`` float32 for every name in ``METRICS``.
    """
    attn = np.asarray(attn)
    if attn.ndim != 4:
        raise ValueError(f"attn must be [L, H, Tq, Tk], got shape {attn.shape}")
    tq, tk = attn.shape[-2:]
    res = attention_metrics(
        attn[None],
        np.ones((1, tq), dtype=bool),
        np.ones((1, tk), dtype=bool),
        np.asarray(key_flags)[None],
        causal=causal,
        self_attention=self_attention,
        threshold=threshold,
        key_ids=None if key_ids is None else np.asarray(key_ids)[None],
    )
    return {k: v[0] for k, v in res.items()}


def attention_rollout(attn: np.ndarray, *, residual: bool = True, head_reduce: str = "mean") -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) of one unpadded self-attention example.

    ``out[l] = Â_l · Â_{l-1} · … · Â_0`` (matrix products, ``out[0] = Â_0``), where ``Ā_l`` is the head
    reduction (mean or elementwise max over heads) of layer ``l``'s ``[T, T]`` attention, and

    * ``residual=True``: ``Â_l = 0.5·Ā_l + 0.5·I`` with each row then divided by its sum;
    * ``residual=False``: ``Â_l = Ā_l`` (plain product, no identity and no renormalization).

    ``out[l][i, j]`` is how much of token ``j``'s input embedding reaches token ``i`` after layer ``l``.
    Products are accumulated in float64.

    Args:
        attn: ``[L, H, T, T]`` attention weights.
        residual: add the identity for the residual connection (and renormalize rows).
        head_reduce: ``"mean"`` (the paper's choice) or ``"max"`` over heads.

    Returns:
        ``[L, T, T]`` float32 rollout after each layer.
    """
    attn = np.asarray(attn, dtype=np.float64)
    if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be [L, H, T, T], got shape {attn.shape}")
    if head_reduce == "mean":
        a_bar = attn.mean(axis=1)
    elif head_reduce == "max":
        a_bar = attn.max(axis=1)
    else:
        raise ValueError(f"head_reduce must be 'mean' or 'max', got {head_reduce!r}")
    n_layers, t = a_bar.shape[0], a_bar.shape[-1]
    if residual:
        a_hat = 0.5 * a_bar + 0.5 * np.eye(t)[None]
        a_hat /= a_hat.sum(axis=-1, keepdims=True)
    else:
        a_hat = a_bar
    out = np.empty((n_layers, t, t), dtype=np.float64)
    acc = np.eye(t)
    for layer in range(n_layers):  # sequential by definition; L is small
        acc = a_hat[layer] @ acc
        out[layer] = acc
    return out.astype(np.float32)
