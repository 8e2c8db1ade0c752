"""The duplicate-token and induction scores against TransformerLens's head-detector definition, computed
independently: the detection pattern is built as TransformerLens builds it (a token-equality matrix with its
diagonal zeroed, lower triangle; the induction pattern is that matrix rolled one key to the right with the first
column zeroed), and the score is ``(A * P).sum() / A.sum()`` over one example's whole ``[T, T]`` matrix (the
"mul" error measure). Heads are constructed to show each pattern exactly on a sequence repeated twice.
"""

from __future__ import annotations

import numpy as np
import pytest

from attnviz.pipeline.metrics import attention_metrics, example_metrics


def tl_duplicate_pattern(tokens: np.ndarray) -> np.ndarray:
    """TransformerLens ``get_duplicate_token_head_detection_pattern``, in numpy."""
    t = tokens.shape[-1]
    token_pattern = np.tile(tokens, (t, 1))
    eq = np.equal(token_pattern, token_pattern.T).astype(int)
    np.fill_diagonal(eq, 0)
    return np.tril(eq).astype(float)


def tl_induction_pattern(tokens: np.ndarray) -> np.ndarray:
    """TransformerLens ``get_induction_head_detection_pattern``, in numpy."""
    dup = tl_duplicate_pattern(tokens)
    shifted = np.roll(dup, 1, axis=1)
    shifted[:, 0] = 0
    return np.tril(shifted)


def tl_score(attention: np.ndarray, pattern: np.ndarray) -> float:
    """TransformerLens ``compute_head_attention_similarity_score`` with ``error_measure="mul"``."""
    return float((attention * pattern).sum() / attention.sum())


def causal_rows(rng: np.random.Generator, heads: int, t: int) -> np.ndarray:
    """``[1, heads, t, t]`` causal attention, each row a random distribution on keys ``0..i``."""
    a = rng.gamma(0.3, size=(1, heads, t, t)) * np.tri(t)
    a[..., 0] += 1e-9
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def repeated(rng: np.random.Generator, n: int, vocabulary: int = 1000) -> np.ndarray:
    """``n`` distinct random tokens, then the same ``n`` again (the probe's random sequence repeated twice)."""
    first = rng.choice(vocabulary, size=n, replace=False)
    return np.concatenate([first, first])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("vocabulary", [3, 50])
def test_causal_scores_equal_transformer_lens(seed: int, vocabulary: int) -> None:
    rng = np.random.default_rng(seed)
    t = 20
    ids = rng.integers(0, vocabulary, size=t)
    attn = causal_rows(rng, 3, t)
    m = example_metrics(attn, np.zeros(t, np.uint8), causal=True, self_attention=True, key_ids=ids)
    for h in range(3):
        a = attn[0, h].astype(np.float64)
        assert m["duplicate_token"][0, h] == pytest.approx(tl_score(a, tl_duplicate_pattern(ids)), abs=1e-6)
        assert m["induction"][0, h] == pytest.approx(tl_score(a, tl_induction_pattern(ids)), abs=1e-6)


def test_bidirectional_attention_uses_the_same_lower_triangular_pattern() -> None:
    """For an encoder the pattern is the same (earlier copies only); the denominator is every weight."""
    rng = np.random.default_rng(4)
    t = 12
    ids = rng.integers(0, 4, size=t)
    attn = rng.dirichlet(np.ones(t), size=(1, 2, t)).astype(np.float32)
    m = example_metrics(attn, np.zeros(t, np.uint8), causal=False, self_attention=True, key_ids=ids)
    for h in range(2):
        a = attn[0, h].astype(np.float64)
        assert m["duplicate_token"][0, h] == pytest.approx(tl_score(a, tl_duplicate_pattern(ids)), abs=1e-6)
        assert m["induction"][0, h] == pytest.approx(tl_score(a, tl_induction_pattern(ids)), abs=1e-6)


def test_padded_batch_equals_each_example_alone() -> None:
    """Right- and left-padded examples of different lengths in one batch, garbage ids and weights in the padding."""
    rng = np.random.default_rng(5)
    lengths = [7, 16, 3, 11]
    t = 18
    attn = rng.random((4, 1, 2, t, t)).astype(np.float32) * 5
    qm = np.zeros((4, t), bool)
    ids = rng.integers(-5, 0, size=(4, t))  # garbage: equal to each other, never to a real token
    alone = []
    for b, n in enumerate(lengths):
        offset = (t - n) if b % 2 else 0
        tokens = rng.integers(0, 3, size=n)
        ex = causal_rows(rng, 2, n)
        block = attn[b, :, :, offset:offset + n, offset:offset + n]
        block[..., np.tri(n, dtype=bool)] = ex[..., np.tri(n, dtype=bool)]
        qm[b, offset:offset + n] = True
        ids[b, offset:offset + n] = tokens
        alone.append({name: [tl_score(ex[0, h].astype(np.float64), pattern(tokens)) for h in range(2)]
                      for name, pattern in (("duplicate_token", tl_duplicate_pattern),
                                            ("induction", tl_induction_pattern))})
    got = attention_metrics(attn, qm, qm, np.zeros((4, t), np.uint8), causal=True, self_attention=True, key_ids=ids)
    for b in range(4):
        for name in ("duplicate_token", "induction"):
            np.testing.assert_allclose(got[name][b, 0], alone[b][name], atol=1e-6, err_msg=f"{name} example {b}")


@pytest.mark.parametrize("n", [2, 5, 24])
def test_perfect_induction_head_on_a_repeated_sequence(n: int) -> None:
    """Queries of the second copy put all their weight on the token after their earlier copy; queries of the first
    copy attend uniformly. Only the n second-copy rows have a target: the score is n / 2n = 0.5, whatever n."""
    rng = np.random.default_rng(n)
    ids = repeated(rng, n)
    t = 2 * n
    attn = np.zeros((1, 2, t, t), np.float32)
    for i in range(n):
        attn[:, :, i, : i + 1] = 1 / (i + 1)
    for k in range(n):
        attn[:, 0, n + k, k + 1] = 1.0  # head 0: induction (the token after the first copy of token k)
        attn[:, 1, n + k, k] = 1.0  # head 1: duplicate token (the first copy itself)
    m = example_metrics(attn, np.zeros(t, np.uint8), causal=True, self_attention=True, key_ids=ids)
    assert m["induction"][0, 0] == pytest.approx(0.5)
    assert m["duplicate_token"][0, 0] == pytest.approx(0.0)
    assert m["duplicate_token"][0, 1] == pytest.approx(0.5)
    assert m["induction"][0, 1] == pytest.approx(0.0)


def test_previous_token_head_scores_zero_on_distinct_tokens() -> None:
    rng = np.random.default_rng(9)
    n = 10
    ids = repeated(rng, n)
    t = 2 * n
    attn = np.zeros((1, 1, t, t), np.float32)
    attn[0, 0, 0, 0] = 1.0
    for i in range(1, t):
        attn[0, 0, i, i - 1] = 1.0
    m = example_metrics(attn, np.zeros(t, np.uint8), causal=True, self_attention=True, key_ids=ids)
    assert m["induction"][0, 0] == 0.0 and m["duplicate_token"][0, 0] == 0.0
    assert m["mass_prev"][0, 0] == 1.0


def test_undefined_without_ids_and_for_cross_attention() -> None:
    attn = np.full((1, 1, 3, 3), 1 / 3, np.float32)
    m = example_metrics(attn, np.zeros(3, np.uint8), causal=False, self_attention=True)
    assert np.isnan(m["induction"]).all() and np.isnan(m["duplicate_token"]).all()
    m = example_metrics(attn, np.zeros(3, np.uint8), causal=False, self_attention=False, key_ids=np.zeros(3, int))
    assert np.isnan(m["induction"]).all() and np.isnan(m["duplicate_token"]).all()
    with pytest.raises(ValueError, match="key_ids"):
        attention_metrics(attn[None], np.ones((1, 3), bool), np.ones((1, 3), bool), np.zeros((1, 3), np.uint8),
                          causal=False, self_attention=True, key_ids=np.zeros((1, 2), int))


def test_scores_are_shares_of_the_attention() -> None:
    """Invariants: 0 <= score <= 1, and a sequence of one repeated token puts every off-diagonal weight on a
    duplicate (duplicate score = 1 - mean a_ii)."""
    rng = np.random.default_rng(12)
    t = 9
    attn = causal_rows(rng, 4, t)
    m = example_metrics(attn, np.zeros(t, np.uint8), causal=True, self_attention=True, key_ids=np.full(t, 7))
    diag = np.diagonal(attn[0], axis1=1, axis2=2).mean(-1)
    np.testing.assert_allclose(m["duplicate_token"][0], 1 - diag, atol=1e-6)
    assert ((m["induction"] >= 0) & (m["induction"] <= 1)).all()
