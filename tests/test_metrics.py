"""Tests of attnviz.pipeline.metrics against an independent reference and the metrics' invariants.

The reference below is deliberately naive: plain Python loops over rows and keys in float64 (``math.log``),
reading only the valid entries and sharing no code with the module. Attention is generated row-stochastic
on the valid keys, with garbage (random values, NaN, inf) in every padded row / column, so that a metric
that reads padding fails.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnviz.pipeline.metrics import (
    METRICS,
    SPARSITY_THRESHOLD,
    attention_metrics,
    attention_rollout,
    example_metrics,
)
from attnviz.pipeline.token_classes import CLS_OR_BOS, PUNCTUATION, SEP_OR_EOS, SPECIAL

FLAG_MASSES = {"mass_cls": CLS_OR_BOS, "mass_sep": SEP_OR_EOS, "mass_special": SPECIAL, "mass_punct": PUNCTUATION}
SELF_ONLY = {"mass_self", "mass_prev", "mass_next", "mean_distance", "duplicate_token", "induction"}
DETECTORS = {"duplicate_token", "induction"}


# ----------------------------------------------------------------------------------------------------------
# Independent reference
# ----------------------------------------------------------------------------------------------------------


def reference_metrics(
    attn: np.ndarray,
    qmask: np.ndarray,
    kmask: np.ndarray,
    flags: np.ndarray,
    causal: bool,
    self_attention: bool,
    threshold: float = SPARSITY_THRESHOLD,
    ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Every metric by the written definition, one row at a time, in float64 (the head-detector scores only
    with token ``ids``, else NaN as in the module)."""
    n_b, n_l, n_h, tq, tk = attn.shape
    out = {name: np.full((n_b, n_l, n_h), np.nan) for name in METRICS}
    for b in range(n_b):
        example_keys = [j for j in range(tk) if kmask[b, j]]
        first = example_keys[0] if example_keys else None
        for layer in range(n_l):
            for head in range(n_h):
                per_row: dict[str, list[float]] = defaultdict(list)
                pairs = 0
                sparse_pairs = 0
                detector = {"total": 0.0, "duplicate_token": 0.0, "induction": 0.0}
                rows_seen = 0
                for i in range(tq):
                    if not qmask[b, i]:
                        continue
                    keys = [j for j in example_keys if not causal or j <= i]
                    if not keys:
                        continue
                    row = {j: float(attn[b, layer, head, i, j]) for j in keys}
                    n = len(keys)
                    h_i = 0.0
                    kl_i = 0.0
                    for p in row.values():
                        if p > 0:
                            h_i -= p * math.log(p)
                            kl_i += p * math.log(p * n)
                    per_row["entropy"].append(h_i)
                    if n > 1:
                        per_row["entropy_norm"].append(h_i / math.log(n))
                    per_row["kl_uniform"].append(kl_i)
                    active = 0
                    for p in row.values():
                        if p >= threshold:
                            active += 1
                    pairs += n
                    sparse_pairs += n - active
                    per_row["token_sparsity_avg"].append(active)
                    per_row["token_sparsity_max"].append(active)
                    per_row["confidence"].append(max(row.values()))
                    per_row["mass_first"].append(row.get(first, 0.0))
                    for name, bit in FLAG_MASSES.items():
                        per_row[name].append(sum(p for j, p in row.items() if flags[b, j] & bit))
                    if self_attention:
                        per_row["mass_self"].append(row.get(i, 0.0))
                        if i >= 1 and kmask[b, i - 1]:
                            per_row["mass_prev"].append(row.get(i - 1, 0.0))
                        if i + 1 < tk and kmask[b, i + 1]:
                            per_row["mass_next"].append(row.get(i + 1, 0.0))
                        per_row["mean_distance"].append(sum(p * abs(i - j) for j, p in row.items()))
                        rows_seen += 1
                        for j, p in row.items():
                            detector["total"] += p
                            if ids is not None and j < i and ids[b, j] == ids[b, i]:
                                detector["duplicate_token"] += p
                            if ids is not None and j - 1 in row and j - 1 < i and ids[b, j - 1] == ids[b, i]:
                                detector["induction"] += p
                for name, values in per_row.items():
                    if name == "token_sparsity_max":
                        out[name][b, layer, head] = max(values)
                    else:
                        out[name][b, layer, head] = sum(values) / len(values)
                if pairs:
                    out["sparsity"][b, layer, head] = sparse_pairs / pairs
                if ids is not None and rows_seen and detector["total"] != 0:
                    for name in DETECTORS:
                        out[name][b, layer, head] = detector[name] / detector["total"]
    return out


def reference_rollout(attn: np.ndarray, residual: bool, head_reduce: str) -> np.ndarray:
    """Rollout with explicit loops: A_hat per layer, then out[l] = A_hat[l] @ out[l-1]."""
    n_l, n_h, t, _ = attn.shape
    result = np.zeros((n_l, t, t))
    prev = [[1.0 if i == j else 0.0 for j in range(t)] for i in range(t)]
    for layer in range(n_l):
        a_hat = [[0.0] * t for _ in range(t)]
        for i in range(t):
            for j in range(t):
                vals = [float(attn[layer, h, i, j]) for h in range(n_h)]
                a_hat[i][j] = sum(vals) / n_h if head_reduce == "mean" else max(vals)
            if residual:
                for j in range(t):
                    a_hat[i][j] = 0.5 * a_hat[i][j] + (0.5 if i == j else 0.0)
                total = sum(a_hat[i])
                for j in range(t):
                    a_hat[i][j] /= total
        cur = [[sum(a_hat[i][k] * prev[k][j] for k in range(t)) for j in range(t)] for i in range(t)]
        result[layer] = cur
        prev = cur
    return result


# ----------------------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------------------


def random_rows(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """``shape + (n,)`` rows summing to 1: a mix of flat, peaked, one-hot rows, exact zeros, threshold ties."""
    alpha = rng.choice([0.02, 0.2, 1.0, 10.0], size=shape)[..., None]
    rows = rng.gamma(np.broadcast_to(alpha, (*shape, n)))
    rows[rng.random((*shape, n)) < 0.1] = 0.0  # exact zeros inside the valid keys
    rows[..., 0] += 1e-12  # never an all-zero row
    rows /= rows.sum(axis=-1, keepdims=True)
    onehot = rng.random(shape) < 0.1
    if onehot.any():
        rows[onehot] = np.eye(n)[rng.integers(0, n, size=int(onehot.sum()))]
    return rows


def random_flags(rng: np.random.Generator, n: int) -> np.ndarray:
    flags = np.zeros(n, dtype=np.uint8)
    flags[rng.random(n) < 0.2] |= PUNCTUATION
    if n:
        flags[0] |= SPECIAL | CLS_OR_BOS
        flags[-1] |= SPECIAL | SEP_OR_EOS
    return flags


def make_batch(
    rng: np.random.Generator,
    mode: str,
    q_lens: list[int],
    k_lens: list[int] | None = None,
    n_layers: int = 2,
    n_heads: int = 3,
    left_pad: bool = False,
    extra_pad: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """A padded batch for mode "encoder", "causal" or "cross", with garbage in all padding.

    Sequences are padded on the right (or left) to the longest length plus ``extra_pad``.
    Returns (attn, query_mask, key_mask, key_flags, examples): ``examples[b]`` is example ``b`` alone,
    unpadded (``[L, H, q_len, k_len]``, float32).
    """
    k_lens = q_lens if k_lens is None else k_lens
    n_b, tq, tk = len(q_lens), max(q_lens) + extra_pad, max(k_lens) + extra_pad
    attn = rng.random((n_b, n_layers, n_heads, tq, tk)).astype(np.float32) * 3.0  # garbage everywhere
    attn[rng.random(attn.shape) < 0.05] = np.nan
    attn[rng.random(attn.shape) < 0.02] = np.inf
    qmask = np.zeros((n_b, tq), dtype=bool)
    kmask = np.zeros((n_b, tk), dtype=bool)
    flags = np.full((n_b, tk), SPECIAL, dtype=np.uint8)  # padding tokens are special: must not count
    examples = []
    for b, (lq, lk) in enumerate(zip(q_lens, k_lens, strict=True)):
        if mode == "causal":
            ex = np.zeros((n_layers, n_heads, lq, lk))
            for i in range(lq):
                ex[:, :, i, : i + 1] = random_rows(rng, (n_layers, n_heads), i + 1)
        else:
            ex = random_rows(rng, (n_layers, n_heads, lq), lk)
        ex = ex.astype(np.float32)
        examples.append(ex)
        q0 = tq - lq if left_pad else 0
        k0 = tk - lk if left_pad else 0
        if mode == "causal":
            # Only the lower triangle is the model's; the upper triangle of the example stays garbage.
            tri = np.tri(lq, lk, dtype=bool)
            block = attn[b, :, :, q0 : q0 + lq, k0 : k0 + lk]
            block[:, :, tri] = ex[:, :, tri]
        else:
            attn[b, :, :, q0 : q0 + lq, k0 : k0 + lk] = ex
        qmask[b, q0 : q0 + lq] = True
        kmask[b, k0 : k0 + lk] = True
        flags[b, k0 : k0 + lk] = random_flags(rng, lk)
    return attn, qmask, kmask, flags, examples


MODES = {"encoder": (False, True), "causal": (True, True), "cross": (False, False)}  # causal, self


def batch_ids(rng: np.random.Generator, key_mask: np.ndarray, vocabulary: int = 4) -> np.ndarray:
    """Token ids for a batch's keys: a small vocabulary (so that tokens repeat), garbage in the padding."""
    ids = rng.integers(0, vocabulary, size=key_mask.shape)
    return np.where(key_mask, ids, rng.integers(-3, vocabulary, size=key_mask.shape))


def assert_metrics_close(got: dict, want: dict, rtol: float = 2e-5, atol: float = 2e-6) -> None:
    assert list(got) == list(METRICS)
    for name in METRICS:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, equal_nan=True, err_msg=name)


# ----------------------------------------------------------------------------------------------------------
# Against the reference
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_padded_batch(mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q_lens = [int(x) for x in rng.integers(1, 13, size=5)] + [12]
    k_lens = [int(x) for x in rng.integers(1, 10, size=6)] if mode == "cross" else None
    attn, qm, km, fl, _ = make_batch(rng, mode, q_lens, k_lens)
    causal, self_attention = MODES[mode]
    ids = batch_ids(rng, km)
    got = attention_metrics(attn, qm, km, fl, causal=causal, self_attention=self_attention, key_ids=ids)
    want = reference_metrics(attn, qm, km, fl, causal, self_attention, ids=ids)
    assert_metrics_close(got, want)
    for name in METRICS:
        assert got[name].shape == attn.shape[:3] and got[name].dtype == np.float32
        # Every example has a valid query, so only self-only metrics of cross-attention may be all NaN.
        if mode == "cross" and name in SELF_ONLY:
            assert np.isnan(got[name]).all()
        elif name not in {"entropy_norm", "mass_prev", "mass_next"}:
            assert np.isfinite(got[name]).all(), name


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("extra_pad", [0, 3])
def test_matches_reference_left_padding(mode: str, extra_pad: int) -> None:
    """Left padding (and padding beyond the longest example): the first valid key is not at 0."""
    rng = np.random.default_rng(7)
    k_lens = [5, 2, 7, 4] if mode == "cross" else None
    attn, qm, km, fl, _ = make_batch(rng, mode, [3, 9, 6, 1], k_lens, left_pad=True, extra_pad=extra_pad)
    causal, self_attention = MODES[mode]
    ids = batch_ids(rng, km)
    got = attention_metrics(attn, qm, km, fl, causal=causal, self_attention=self_attention, key_ids=ids)
    assert_metrics_close(got, reference_metrics(attn, qm, km, fl, causal, self_attention, ids=ids))


@pytest.mark.parametrize("mode", list(MODES))
def test_matches_reference_with_query_holes(mode: str) -> None:
    """Self-attention where some tokens are keys but not queries (query_mask a strict subset of key_mask)."""
    rng = np.random.default_rng(17)
    k_lens = [6, 9, 3] if mode == "cross" else None
    attn, qm, km, fl, _ = make_batch(rng, mode, [7, 4, 8], k_lens, extra_pad=2)
    qm[0, 0] = qm[1, 2] = qm[2, 7] = False
    causal, self_attention = MODES[mode]
    ids = batch_ids(rng, km)
    got = attention_metrics(attn, qm, km, fl, causal=causal, self_attention=self_attention, key_ids=ids)
    assert_metrics_close(got, reference_metrics(attn, qm, km, fl, causal, self_attention, ids=ids))


def test_matches_reference_larger_batch() -> None:
    """Several examples per internal chunk and windows cropped to different lengths."""
    rng = np.random.default_rng(11)
    attn, qm, km, fl, _ = make_batch(rng, "encoder", [int(x) for x in rng.integers(1, 31, 10)], n_heads=2)
    ids = batch_ids(rng, km, vocabulary=6)
    got = attention_metrics(attn, qm, km, fl, causal=False, self_attention=True, key_ids=ids)
    assert_metrics_close(got, reference_metrics(attn, qm, km, fl, False, True, ids=ids))


@pytest.mark.parametrize("threshold", [0.05, 0.3])
def test_other_thresholds_match_reference(threshold: float) -> None:
    rng = np.random.default_rng(3)
    attn, qm, km, fl, _ = make_batch(rng, "encoder", [4, 8, 7])
    got = attention_metrics(attn, qm, km, fl, causal=False, self_attention=True, threshold=threshold)
    assert_metrics_close(got, reference_metrics(attn, qm, km, fl, False, True, threshold))


def test_threshold_is_exact_at_float32_boundary() -> None:
    """A weight counts as active iff w >= 0.01 as real numbers (float32(0.01) is just below 0.01)."""
    below = np.float32(0.01)  # 0.0099999998
    above = np.nextafter(below, np.float32(1))  # 0.0100000007
    assert float(below) < SPARSITY_THRESHOLD <= float(above)
    row = np.array([below, above, 1 - float(below) - float(above)], dtype=np.float32)
    m = example_metrics(row[None, None, None, :], np.zeros(3, np.uint8), causal=False, self_attention=False)
    assert m["token_sparsity_avg"][0, 0] == 2.0
    assert m["token_sparsity_max"][0, 0] == 2.0
    assert m["sparsity"][0, 0] == np.float32(1 / 3)


# ----------------------------------------------------------------------------------------------------------
# Closed-form cases
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 17, 128])
def test_uniform_attention(n: int) -> None:
    attn = np.full((2, 3, n, n), 1.0 / n, dtype=np.float32)
    m = example_metrics(attn, np.zeros(n, np.uint8), causal=False, self_attention=True)
    np.testing.assert_allclose(m["entropy"], math.log(n), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m["kl_uniform"], 0.0, atol=1e-6)
    np.testing.assert_allclose(m["confidence"], 1.0 / n, rtol=1e-6)
    np.testing.assert_allclose(m["mass_self"], 1.0 / n, rtol=1e-6)
    np.testing.assert_allclose(m["mean_distance"], sum(abs(i - j) for i in range(n) for j in range(n)) / n**2)
    if n > 1:
        np.testing.assert_allclose(m["entropy_norm"], 1.0, rtol=1e-6)
    else:
        assert np.isnan(m["entropy_norm"]).all()  # ln 1 = 0: undefined, excluded
    expected_active = n if 1.0 / n >= SPARSITY_THRESHOLD else 0
    assert (m["token_sparsity_avg"] == expected_active).all()
    assert (m["sparsity"] == (0.0 if expected_active else 1.0)).all()


def test_a_uniform_512_token_head_has_no_active_key_and_is_told_apart_by_entropy_norm() -> None:
    """The issue's head: uniform over 512 tokens, every weight 1/512 < θ, so no active key and sparsity 1 although
    the head is as broad as can be (docs/metrics.md, "Long, broad rows"); entropy_norm = 1 says so."""
    n = 512
    attn = np.full((1, 1, n, n), 1.0 / n, dtype=np.float32)
    m = example_metrics(attn, np.zeros(n, np.uint8), causal=False, self_attention=True)
    assert m["token_sparsity_avg"][0, 0] == 0.0 and m["token_sparsity_max"][0, 0] == 0.0
    assert m["sparsity"][0, 0] == 1.0
    np.testing.assert_allclose(m["entropy_norm"], 1.0, rtol=1e-5)
    assert METRICS["token_sparsity_avg"].label == "Active keys ≥ 0.01 (mean)"
    assert "Normalized entropy" in METRICS["token_sparsity_avg"].description


def test_uniform_causal_attention() -> None:
    t = 6
    attn = np.tri(t) / np.arange(1, t + 1)[:, None]
    m = example_metrics(attn[None, None].astype(np.float32), np.zeros(t, np.uint8), causal=True, self_attention=True)
    lns = [math.log(i + 1) for i in range(t)]
    np.testing.assert_allclose(m["entropy"], np.mean(lns), rtol=1e-6)
    np.testing.assert_allclose(m["kl_uniform"], 0.0, atol=1e-6)
    np.testing.assert_allclose(m["entropy_norm"], 1.0, rtol=1e-6)  # over rows 1..T-1
    np.testing.assert_allclose(m["confidence"], np.mean([1 / (i + 1) for i in range(t)]), rtol=1e-6)
    np.testing.assert_allclose(m["mass_first"], np.mean([1 / (i + 1) for i in range(t)]), rtol=1e-6)
    assert (m["mass_next"] == 0.0).all()  # causal: 0 by construction, but defined (rows 0..T-2)


def test_decoder_single_token() -> None:
    """T = 1 decoder: the only row puts weight 1 on itself; entropy 0, distance 0."""
    m = example_metrics(np.ones((2, 2, 1, 1), np.float32), np.zeros(1, np.uint8), causal=True, self_attention=True)
    for name, value in [
        ("entropy", 0.0),
        ("kl_uniform", 0.0),
        ("confidence", 1.0),
        ("mass_first", 1.0),
        ("mass_self", 1.0),
        ("mean_distance", 0.0),
        ("sparsity", 0.0),
        ("token_sparsity_avg", 1.0),
        ("token_sparsity_max", 1.0),
    ]:
        assert (m[name] == value).all(), name
    for name in ("entropy_norm", "mass_prev", "mass_next"):  # no qualifying row
        assert np.isnan(m[name]).all(), name


def test_decoder_row_zero_contributes_zero_entropy() -> None:
    """Row 0 of a decoder has one key: H_0 = 0 enters the mean of entropy but not of entropy_norm."""
    attn = np.array([[1.0, 0.0], [0.5, 0.5]], dtype=np.float32)[None, None]
    m = example_metrics(attn, np.zeros(2, np.uint8), causal=True, self_attention=True)
    np.testing.assert_allclose(m["entropy"], math.log(2) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["entropy_norm"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(m["mass_prev"], 0.5, rtol=1e-6)  # row 1 only
    np.testing.assert_allclose(m["mean_distance"], 0.25, rtol=1e-6)  # (0 + 0.5) / 2


@pytest.mark.parametrize("t", [2, 3, 10, 24])
def test_previous_token_head(t: int) -> None:
    attn = np.zeros((1, 2, t, t), np.float32)
    attn[:, :, 0, 0] = 1.0
    for i in range(1, t):
        attn[:, :, i, i - 1] = 1.0
    for causal in (False, True):
        m = example_metrics(attn, np.zeros(t, np.uint8), causal=causal, self_attention=True)
        assert (m["mass_prev"] == 1.0).all()
        assert (m["entropy"] == 0.0).all()
        np.testing.assert_allclose(m["mean_distance"], (t - 1) / t, rtol=1e-6)  # row 0 attends to itself
        np.testing.assert_allclose(m["mass_self"], 1 / t, rtol=1e-6)
        assert (m["mass_next"] == 0.0).all()
        assert (m["confidence"] == 1.0).all()
        assert (m["token_sparsity_max"] == 1.0).all()
        n_i = np.arange(1, t + 1) if causal else np.full(t, t)
        np.testing.assert_allclose(m["kl_uniform"], np.mean(np.log(n_i)), rtol=1e-6)


def test_masses_on_flagged_keys() -> None:
    """Hand-computed masses: flags select keys, a key may carry several flags."""
    attn = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]], dtype=np.float32)[None, None]
    flags = np.array([SPECIAL | CLS_OR_BOS, PUNCTUATION, PUNCTUATION, SPECIAL | SEP_OR_EOS], np.uint8)
    m = example_metrics(attn, flags, causal=False, self_attention=False)
    np.testing.assert_allclose(m["mass_first"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(m["mass_cls"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(m["mass_sep"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(m["mass_special"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(m["mass_punct"], 0.5, rtol=1e-6)
    for name in SELF_ONLY:
        assert np.isnan(m[name]).all()


def test_mass_next_needs_a_valid_next_token() -> None:
    """The last valid token has no next token: its row is excluded from mass_next (not counted as 0)."""
    rng = np.random.default_rng(5)
    attn, qm, km, fl, _ = make_batch(rng, "encoder", [3, 5], n_layers=1, n_heads=1)
    attn[0, 0, 0, :3, :3] = np.eye(3, k=1) + np.eye(3, k=-2)  # 0->1, 1->2, 2->0
    m = attention_metrics(attn, qm, km, fl, causal=False, self_attention=True)
    assert m["mass_next"][0, 0, 0] == 1.0  # rows 0 and 1 only
    np.testing.assert_allclose(m["mass_prev"][0, 0, 0], 0.0)  # rows 1 and 2 only
    np.testing.assert_allclose(m["mean_distance"][0, 0, 0], 4 / 3, rtol=1e-6)


def test_weights_are_not_renormalized() -> None:
    """Rows that do not sum to 1 on K_i: KL uses the definition sum a ln(a n), not ln n - H."""
    attn = np.array([[0.2, 0.3]], dtype=np.float32)[None, None]
    m = example_metrics(attn, np.zeros(2, np.uint8), causal=False, self_attention=False)
    want_h = -(0.2 * math.log(0.2) + 0.3 * math.log(0.3))
    want_kl = 0.2 * math.log(0.4) + 0.3 * math.log(0.6)
    np.testing.assert_allclose(m["entropy"], want_h, rtol=1e-6)
    np.testing.assert_allclose(m["kl_uniform"], want_kl, rtol=1e-6)
    assert abs(want_kl - (math.log(2) - want_h)) > 0.1  # the two formulas differ here


# ----------------------------------------------------------------------------------------------------------
# Padding, garbage and undefined values
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_padding_invariance(mode: str) -> None:
    """An example's metrics are the same alone or inside a padded batch with garbage in the padding.

    Same up to float32 rounding (1e-6): the order of a float32 sum can depend on the padded length.
    """
    rng = np.random.default_rng(21)
    q_lens = [5, 1, 12, 8, 3]
    k_lens = [7, 2, 4, 9, 9] if mode == "cross" else None
    attn, qm, km, fl, examples = make_batch(rng, mode, q_lens, k_lens)
    causal, self_attention = MODES[mode]
    ids = batch_ids(rng, km)
    batched = attention_metrics(attn, qm, km, fl, causal=causal, self_attention=self_attention, key_ids=ids)
    for b, ex in enumerate(examples):
        flags = fl[b, : ex.shape[-1]]
        alone = example_metrics(ex, flags, causal=causal, self_attention=self_attention,
                                key_ids=ids[b, : ex.shape[-1]])
        for name in METRICS:
            np.testing.assert_allclose(batched[name][b], alone[name], rtol=1e-6, atol=1e-6, equal_nan=True)


def test_garbage_values_do_not_leak() -> None:
    """Changing only padded / masked entries (to NaN, inf, huge) changes nothing."""
    rng = np.random.default_rng(4)
    attn, qm, km, fl, _ = make_batch(rng, "causal", [4, 7, 2])
    ids = batch_ids(rng, km)
    base = attention_metrics(attn, qm, km, fl, causal=True, self_attention=True, key_ids=ids)
    valid = qm[:, :, None] & km[:, None, :] & np.tri(7, dtype=bool)
    for fill in (0.0, np.nan, np.inf, -np.inf, 1e30):
        other = np.where(valid[:, None, None], attn, np.float32(fill))
        other_ids = np.where(km, ids, 99)  # padding ids are never read either
        again = attention_metrics(other, qm, km, fl, causal=True, self_attention=True, key_ids=other_ids)
        for name in METRICS:
            np.testing.assert_array_equal(again[name], base[name], err_msg=f"{name} fill={fill}")
            if name not in {"mass_prev", "mass_next", "entropy_norm"}:
                assert np.isfinite(again[name]).all()


def test_nan_inside_valid_keys_propagates() -> None:
    """A NaN weight the model really produced is not hidden."""
    attn = np.full((1, 1, 2, 2), 0.5, np.float32)
    attn[0, 0, 1, 1] = np.nan
    m = example_metrics(attn, np.zeros(2, np.uint8), causal=False, self_attention=True)
    assert np.isnan(m["entropy"]).all() and np.isnan(m["mean_distance"]).all()


def test_example_without_valid_queries_is_nan() -> None:
    rng = np.random.default_rng(8)
    attn, qm, km, fl, _ = make_batch(rng, "encoder", [3, 4])
    qm[1] = False
    m = attention_metrics(attn, qm, km, fl, causal=False, self_attention=True, key_ids=batch_ids(rng, km))
    for name in METRICS:
        assert np.isnan(m[name][1]).all(), name
        assert np.isfinite(m[name][0]).all(), name


def test_example_metrics_is_batch_of_one() -> None:
    rng = np.random.default_rng(9)
    attn, qm, km, fl, examples = make_batch(rng, "encoder", [6])
    one = example_metrics(examples[0], fl[0], causal=False, self_attention=True)
    batch = attention_metrics(examples[0][None], qm, km, fl, causal=False, self_attention=True)
    for name in METRICS:
        assert one[name].shape == examples[0].shape[:2]
        np.testing.assert_array_equal(one[name], batch[name][0])


def test_registry() -> None:
    assert list(METRICS) == [
        "entropy",
        "entropy_norm",
        "kl_uniform",
        "sparsity",
        "token_sparsity_avg",
        "token_sparsity_max",
        "confidence",
        "mass_first",
        "mass_cls",
        "mass_sep",
        "mass_special",
        "mass_punct",
        "mass_self",
        "mass_prev",
        "mass_next",
        "mean_distance",
        "duplicate_token",
        "induction",
    ]
    assert {n for n, s in METRICS.items() if s.self_only} == SELF_ONLY
    for name, spec in METRICS.items():
        assert spec.name == name and spec.label and spec.unit and spec.description


def test_input_validation() -> None:
    attn = np.full((1, 1, 1, 2, 3), 1 / 3, np.float32)
    qm, km, fl = np.ones((1, 2), bool), np.ones((1, 3), bool), np.zeros((1, 3), np.uint8)
    with pytest.raises(ValueError, match="Tq == Tk"):
        attention_metrics(attn, qm, km, fl, causal=False, self_attention=True)
    with pytest.raises(ValueError, match="causal"):
        attention_metrics(attn, qm, km, fl, causal=True, self_attention=False)
    with pytest.raises(ValueError, match="key_mask"):
        attention_metrics(attn, qm, km[:, :2], fl, causal=False, self_attention=False)
    with pytest.raises(ValueError, match="threshold"):
        attention_metrics(attn, qm, km, fl, causal=False, self_attention=False, threshold=0.0)
    with pytest.raises(ValueError, match="attn"):
        attention_metrics(attn[0], qm, km, fl, causal=False, self_attention=False)


def test_module_does_not_import_torch() -> None:
    code = "import sys, attnviz.pipeline.metrics; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----------------------------------------------------------------------------------------------------------
# Property tests
# ----------------------------------------------------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn) -> tuple:
    mode = draw(st.sampled_from(list(MODES)))
    n_l = draw(st.integers(1, 3))
    n_h = draw(st.integers(1, 3))
    n_b = draw(st.integers(1, 4))
    q_lens = draw(st.lists(st.integers(1, 24), min_size=n_b, max_size=n_b))
    k_lens = draw(st.lists(st.integers(1, 24), min_size=n_b, max_size=n_b)) if mode == "cross" else None
    left_pad = draw(st.booleans())
    extra_pad = draw(st.integers(0, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return mode, make_batch(rng, mode, q_lens, k_lens, n_l, n_h, left_pad, extra_pad)


def test_entropy_of_a_cropped_window_is_not_negated_in_place() -> None:
    """Regression: the batched entropy was 0 for one head (numpy 2.4's in-place np.negative on a strided
    view). Found by the property test below: one cross-attention query, two heads, garbage in the padding."""
    rows = np.array([[0.66123205, 0.33876798], [0.5837529, 0.41624713]], dtype=np.float32)  # [H, Tk]
    attn = np.full((1, 1, 2, 4, 5), 2.0, dtype=np.float32)
    attn[0, 0, :, 0, :2] = rows
    attn[0, 0, :, 2, 2:4] = np.inf
    qm = np.array([[True, False, False, False]])
    km = np.array([[True, True, False, False, False]])
    m = attention_metrics(attn, qm, km, np.zeros((1, 5), np.uint8), causal=False, self_attention=False)
    want = -(rows * np.log(rows)).sum(axis=-1)
    np.testing.assert_allclose(m["entropy"][0, 0], want, rtol=1e-6)
    np.testing.assert_allclose(m["kl_uniform"][0, 0], math.log(2) - want, rtol=1e-5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_property_invariants_and_padding(case: tuple) -> None:
    mode, (attn, qm, km, fl, examples) = case
    causal, self_attention = MODES[mode]
    batched = attention_metrics(attn, qm, km, fl, causal=causal, self_attention=self_attention)
    eps = 1e-5
    for b, ex in enumerate(examples):
        n_l, n_h, lq, lk = ex.shape
        # The generator's rows sum to 1 on the valid keys.
        if causal:
            np.testing.assert_allclose((ex * np.tri(lq, lk)).sum(-1), 1.0, rtol=1e-5)
        else:
            np.testing.assert_allclose(ex.sum(-1), 1.0, rtol=1e-5)
        n_i = np.arange(1, lq + 1) if causal else np.full(lq, lk)
        m = {k: v[b] for k, v in batched.items()}
        alone = example_metrics(ex, fl[b][km[b]], causal=causal, self_attention=self_attention)
        for name in METRICS:
            np.testing.assert_allclose(m[name], alone[name], rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=name)
        # Entropy: 0 <= H <= mean ln n; with rows summing to 1, H + KL = mean ln n.
        mean_ln_n = float(np.mean(np.log(n_i)))
        assert (m["entropy"] >= -eps).all() and (m["entropy"] <= mean_ln_n + eps).all()
        assert (m["kl_uniform"] >= -eps).all()
        np.testing.assert_allclose(m["entropy"] + m["kl_uniform"], mean_ln_n, atol=1e-4)
        if (n_i > 1).any():
            assert (m["entropy_norm"] >= -eps).all() and (m["entropy_norm"] <= 1 + eps).all()
        else:
            assert np.isnan(m["entropy_norm"]).all()
        # Sparsity and active keys: some weight of a row of <= 24 keys is >= 1/24 > threshold.
        assert (m["sparsity"] >= 0).all() and (m["sparsity"] <= 1).all()
        assert (m["token_sparsity_avg"] >= 1).all()
        assert (m["token_sparsity_avg"] <= m["token_sparsity_max"] + eps).all()
        assert (m["token_sparsity_max"] <= n_i.max()).all()
        assert (m["token_sparsity_max"] == np.round(m["token_sparsity_max"])).all()
        np.testing.assert_allclose(
            m["sparsity"], 1 - m["token_sparsity_avg"] * lq / n_i.sum(), atol=1e-5
        )  # pooled fraction = 1 - (mean active per row) * rows / pairs
        assert (m["confidence"] >= np.mean(1 / n_i) - eps).all() and (m["confidence"] <= 1 + eps).all()
        for name in ("mass_first", *FLAG_MASSES):
            assert (m[name] >= 0).all() and (m[name] <= 1 + eps).all(), name
        assert (m["mass_cls"] <= m["mass_special"] + eps).all()  # generator: CLS keys are special
        np.testing.assert_array_equal(m["mass_cls"], m["mass_first"])  # generator: first key = the CLS key
        if self_attention:
            for name in ("mass_self", "mass_prev", "mass_next"):
                assert np.isnan(m[name]).all() or ((m[name] >= 0) & (m[name] <= 1 + eps)).all(), name
            assert (m["mean_distance"] >= 0).all() and (m["mean_distance"] <= lq - 1 + eps).all()
            assert np.isnan(m["mass_prev"]).all() == (lq == 1)
            if causal:
                assert np.isnan(m["mass_next"]).all() or (m["mass_next"] == 0).all()
        else:
            for name in SELF_ONLY:
                assert np.isnan(m[name]).all(), name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(MODES)), st.integers(1, 6), st.booleans(), st.integers(0, 2**32 - 1))
def test_property_matches_reference_small(mode: str, t: int, left_pad: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q_lens = [int(x) for x in rng.integers(1, t + 1, size=3)]
    k_lens = [int(x) for x in rng.integers(1, t + 1, size=3)] if mode == "cross" else None
    attn, qm, km, fl, _ = make_batch(rng, mode, q_lens, k_lens, 1, 2, left_pad, int(rng.integers(0, 3)))
    qm &= rng.random(qm.shape) < 0.8  # some tokens are keys but not queries
    causal, self_attention = MODES[mode]
    got = attention_metrics(attn, qm, km, fl, causal=causal, self_attention=self_attention)
    assert_metrics_close(got, reference_metrics(attn, qm, km, fl, causal, self_attention))


# ----------------------------------------------------------------------------------------------------------
# Rollout
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("head_reduce", ["mean", "max"])
def test_rollout_matches_reference(residual: bool, head_reduce: str) -> None:
    rng = np.random.default_rng(12)
    attn = random_rows(rng, (3, 4, 5), 5).astype(np.float32)
    got = attention_rollout(attn, residual=residual, head_reduce=head_reduce)
    assert got.shape == (3, 5, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_rollout(attn, residual, head_reduce), rtol=1e-5, atol=1e-7)


def test_rollout_rows_sum_to_one_and_first_layer() -> None:
    rng = np.random.default_rng(13)
    attn = random_rows(rng, (4, 3, 7), 7).astype(np.float32)
    for residual in (True, False):
        r = attention_rollout(attn, residual=residual)
        np.testing.assert_allclose(r.sum(-1), 1.0, rtol=1e-5)
        assert (r >= 0).all()
    a0 = attn[0].astype(np.float64).mean(0)
    np.testing.assert_allclose(attention_rollout(attn)[0], 0.5 * a0 + 0.5 * np.eye(7), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        attention_rollout(attn, residual=False)[-1],
        np.linalg.multi_dot([attn[i].astype(np.float64).mean(0) for i in range(3, -1, -1)]),
        rtol=1e-5,
        atol=1e-7,
    )


def test_rollout_of_identity_is_identity() -> None:
    attn = np.broadcast_to(np.eye(6, dtype=np.float32), (3, 2, 6, 6))
    for residual in (True, False):
        np.testing.assert_array_equal(attention_rollout(attn, residual=residual), np.broadcast_to(np.eye(6), (3, 6, 6)))


def test_rollout_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        attention_rollout(np.ones((2, 2, 3, 4), np.float32))
    with pytest.raises(ValueError):
        attention_rollout(np.ones((2, 2, 3, 3), np.float32), head_reduce="median")


def test_degenerate_shapes() -> None:
    """An empty batch gives empty arrays; a batch of empty sequences gives NaN everywhere."""
    empty = attention_metrics(
        np.zeros((0, 2, 3, 4, 4), np.float32),
        np.zeros((0, 4), bool),
        np.zeros((0, 4), bool),
        np.zeros((0, 4), np.uint8),
        causal=False,
        self_attention=True,
    )
    assert all(v.shape == (0, 2, 3) for v in empty.values())
    blank = attention_metrics(
        np.zeros((2, 2, 3, 0, 0), np.float32),
        np.zeros((2, 0), bool),
        np.zeros((2, 0), bool),
        np.zeros((2, 0), np.uint8),
        causal=True,
        self_attention=True,
    )
    assert all(v.shape == (2, 2, 3) and np.isnan(v).all() for v in blank.values())
