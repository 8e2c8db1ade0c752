"""Every metric of :data:`attnviz.pipeline.metrics.METRICS` computed with torch on the tensors' own device.

The same definitions as :func:`attnviz.pipeline.metrics.attention_metrics` (the numpy reference, written down in
``docs/metrics.md``), so that a GPU precompute sends only the metric arrays and the stored slices to the host,
never the whole float32 attention. Row statistics are float32 sums over keys (like the reference; only the order
of the additions differs), the means over query rows float64; ``tests/test_torch_metrics.py`` checks both agree to
1e-6 on every model family. Weights outside a row's valid keys and rows of padded queries are ignored whatever
they hold (NaN included), as in the reference.
"""

from __future__ import annotations

import numpy as np
import torch

from attnviz.pipeline.metrics import _FLAG_METRICS, METRICS, SPARSITY_THRESHOLD, _float32_at_least

_TINY = float(np.finfo(np.float32).tiny)


def _as_bool(x: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, device=device).bool()


def attention_metrics_torch(attn: torch.Tensor, query_mask: torch.Tensor | np.ndarray,
                            key_mask: torch.Tensor | np.ndarray, key_flags: torch.Tensor | np.ndarray, *,
                            causal: bool, self_attention: bool, threshold: float = SPARSITY_THRESHOLD,
                            key_ids: torch.Tensor | np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """:func:`attnviz.pipeline.metrics.attention_metrics` on ``attn`` ``[B, L, H, Tq, Tk]`` where it lies.

    ``attn`` is cast to float32; masks, flags and ``key_ids`` (the keys' token ids, for the head-detector scores,
    which are NaN without them) may be numpy arrays (moved to the device). Returns ``name -> [B, L, H]`` float32
    tensors on the device, in registry order (NaN where undefined).
    """
    if attn.dim() != 5:
        raise ValueError(f"attn must be [B, L, H, Tq, Tk], got shape {tuple(attn.shape)}")
    dev = attn.device
    attn = attn.float()
    b, n_layers, n_heads, tq, tk = attn.shape
    qm, km = _as_bool(query_mask, dev), _as_bool(key_mask, dev)
    flags = torch.as_tensor(np.asarray(key_flags) if not isinstance(key_flags, torch.Tensor) else key_flags,
                            device=dev).to(torch.int32)
    if qm.shape != (b, tq) or km.shape != (b, tk) or flags.shape != (b, tk):
        raise ValueError(f"masks must be [B, Tq] = {(b, tq)} and [B, Tk] = {(b, tk)}")
    if causal and not self_attention:
        raise ValueError("causal attention must be self-attention")
    if self_attention and tq != tk:
        raise ValueError(f"self-attention needs Tq == Tk, got {tq} != {tk}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    f32, f64 = torch.float32, torch.float64

    valid = qm[:, :, None] & km[:, None, :]  # [B, Tq, Tk]: j in K_i for a valid query i
    if causal:
        valid &= torch.ones(tq, tk, dtype=torch.bool, device=dev).tril()[None]
    n_keys = valid.sum(-1)  # [B, Tq]
    row_ok = n_keys > 0
    # a = attn on K_i, else exactly 0 (a selection, so garbage outside K_i never reaches a sum).
    a = torch.where(valid[:, None, None], attn, torch.zeros((), dtype=f32, device=dev))

    rowsum = a.sum(-1)  # [B, L, H, Tq]
    confidence = a.amax(-1) if tk else torch.zeros_like(rowsum)
    cols = torch.zeros((b, tk, 1 + len(_FLAG_METRICS)), dtype=f32, device=dev)
    if tk:
        first = torch.argmax(km.to(torch.int8), dim=1)  # lowest-index valid key (0 when none)
        cols[torch.arange(b, device=dev), first, 0] = km[torch.arange(b, device=dev), first].to(f32)
    for c, (_, bit) in enumerate(_FLAG_METRICS):
        cols[:, :, 1 + c] = ((flags & bit) != 0).to(f32)
    if bool(torch.isfinite(rowsum).all()):
        linear = torch.matmul(a.reshape(b, -1, tk), cols).reshape(b, n_layers, n_heads, tq, -1)
    else:  # a non-finite weight inside K_i: only the flagged keys' own weights may reach a mass
        linear = torch.stack([torch.where(cols[:, None, None, None, :, c] != 0, a, 0.0).sum(-1)
                              for c in range(cols.shape[-1])], -1)
    thr = float(_float32_at_least(threshold))
    active = (a >= thr).sum(-1, dtype=f32)
    entropy = -(a * torch.log(a + _TINY)).sum(-1)

    ln_n = torch.log(n_keys.clamp(min=1).to(f32))  # [B, Tq]; 0 where n_i <= 1
    ln_n_safe = torch.where(n_keys > 1, ln_n, torch.ones((), dtype=f32, device=dev))
    ok = row_ok.to(f64)
    rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
        "entropy": (entropy, ok),
        "entropy_norm": (entropy / ln_n_safe[:, None, None], (n_keys > 1).to(f64)),
        "kl_uniform": (ln_n[:, None, None] * rowsum - entropy, ok),
        "token_sparsity_avg": (active, ok),
        "confidence": (confidence, ok),
        "mass_first": (linear[..., 0], ok),
    }
    for c, (name, _) in enumerate(_FLAG_METRICS):
        rows[name] = (linear[..., 1 + c], ok)
    if self_attention:
        diag = torch.diagonal(a, 0, -2, -1)  # a[i, i]: [B, L, H, T]
        prev = torch.zeros_like(diag)
        nxt = torch.zeros_like(diag)
        w_prev = torch.zeros((b, tq), dtype=f64, device=dev)
        w_next = torch.zeros((b, tq), dtype=f64, device=dev)
        if tq > 1:
            prev[..., 1:] = torch.diagonal(a, -1, -2, -1)
            nxt[..., :-1] = torch.diagonal(a, 1, -2, -1)
            w_prev[:, 1:] = (row_ok[:, 1:] & km[:, :-1]).to(f64)
            w_next[:, :-1] = (row_ok[:, :-1] & km[:, 1:]).to(f64)
        idx = torch.arange(tq, device=dev, dtype=f32)
        dist = (idx[:, None] - idx[None, :]).abs()
        rows["mass_self"] = (diag, ok)
        rows["mass_prev"] = (prev, w_prev)
        rows["mass_next"] = (nxt, w_next)
        rows["mean_distance"] = ((a * dist).sum(-1), ok)

    detectors: dict[str, torch.Tensor] = {}
    if self_attention and key_ids is not None:
        ids = torch.as_tensor(np.asarray(key_ids) if not isinstance(key_ids, torch.Tensor) else key_ids, device=dev)
        if ids.shape != (b, tk):
            raise ValueError(f"key_ids must be [B, Tk] = {(b, tk)}, got {tuple(ids.shape)}")
        detectors = _detector_scores(a, valid, ids, rowsum)

    out: dict[str, torch.Tensor] = {}
    nan = torch.full((b, n_layers, n_heads), float("nan"), dtype=f64, device=dev)
    for name in METRICS:
        if name == "sparsity":
            pairs = n_keys.sum(1, dtype=f64)[:, None, None]
            sparse = pairs - active.sum(-1, dtype=f64)
            val = torch.where(pairs > 0, sparse / pairs.clamp(min=1), nan)
        elif name == "token_sparsity_max":
            if tq:
                mx = torch.where(row_ok[:, None, None], active, torch.full((), -1.0, device=dev)).amax(-1)
                val = torch.where(mx >= 0, mx.to(f64), nan)
            else:
                val = nan
        elif name in rows:
            values, weight = rows[name]
            num = (values.to(f64) * weight[:, None, None]).sum(-1)
            den = weight.sum(1)[:, None, None]
            val = torch.where(den > 0, num / den.clamp(min=1), nan)
        elif name in detectors:
            val = detectors[name]
        else:  # self-only metric of cross-attention (or a head-detector score without token ids)
            val = nan
        out[name] = val.to(f32)
    return out


def _detector_scores(a: torch.Tensor, valid: torch.Tensor, ids: torch.Tensor, rowsum: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The duplicate-token and induction head scores (TransformerLens, ``error_measure="mul"``) as the reference
    defines them (:func:`attnviz.pipeline.metrics._detector_scores`): the weight on the detection pattern over the
    weight of every valid pair, float64 sums; NaN where the example has no valid row or its weights sum to 0."""
    tq = a.shape[-2]
    same = ids[:, :, None] == ids[:, None, :]  # [B, T, T]
    duplicate = same & valid & torch.ones(tq, tq, dtype=torch.bool, device=a.device).tril(-1)[None]
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1] & valid[:, :, 1:]
    den = rowsum.to(torch.float64).sum(-1)  # [B, L, H]
    usable = valid.any(dim=2).any(dim=1)[:, None, None] & (den != 0)
    out = {}
    for name, pattern in (("duplicate_token", duplicate), ("induction", induction)):
        num = torch.where(pattern[:, None, None], a, torch.zeros((), dtype=a.dtype, device=a.device)
                          ).to(torch.float64).sum(dim=(-1, -2))
        out[name] = torch.where(usable, num / torch.where(den != 0, den, torch.ones_like(den)),
                                torch.full_like(den, float("nan")))
    return out


__all__ = ["attention_metrics_torch"]
