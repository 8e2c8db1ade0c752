"""Synthetic runs for tests and benchmarks: heads built to show one pattern each, examples made of them, and
run metadata to write them with ``StoreWriter``.

Import as ``from synthetic import synthetic_examples`` (``tests/`` is on ``sys.path`` under pytest;
``bench/`` scripts add it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attnviz.pipeline.metrics import METRICS, example_metrics
from attnviz.pipeline.records import ExampleResult, TokenSequence
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS
from attnviz.pipeline.token_classes import CLS_OR_BOS, PUNCTUATION, SEP_OR_EOS, SPECIAL


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
