"""Synthetic runs for tests and benchmarks: heads built to show one pattern each, examples made of them, and
run metadata to write them with ``StoreWriter``.

Import as ``from synthetic import synthetic_examples`` (``tests/`` is on ``sys.path`` under pytest;
``bench/`` scripts add it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnviz.pipeline.metrics import METRICS, example_metrics
from attnviz.pipeline.records import ExampleResult, TokenSequence
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS
from attnviz.pipeline.store import shard_dir, shard_file_name, write_shard_file
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


def series_examples(strengths: np.ndarray, n: int, *, seed: int = 0, length: int = 10) -> list[ExampleResult]:
    """``n`` decoder examples whose head ``(l, h)`` mixes uniform causal attention with a one-hot previous-token
    pattern: weight ``strengths[l, h]`` on the previous token (0: uniform, near 1: collapsed, entropy near 0).
    Metrics (head-detector scores included) come from ``example_metrics`` on the float32 attention."""
    strengths = np.asarray(strengths, dtype=np.float64)
    n_layers, n_heads = strengths.shape
    uniform = np.tri(length) / np.arange(1, length + 1)[:, None]
    prev = np.eye(length, k=-1)
    prev[0, 0] = 1.0
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        ids = rng.integers(0, 6, size=length).astype(np.int32)  # a small vocabulary: tokens repeat
        attn = np.stack([np.stack([(1 - s) * uniform + s * prev for s in row]) for row in strengths])
        attn = attn.astype(np.float32)
        flags = np.zeros(length, dtype=np.uint8)
        metrics = example_metrics(attn, flags, causal=True, self_attention=True, key_ids=ids)
        out.append(ExampleResult(
            input_index=i, text=" ".join(f"t{x}" for x in ids), source=TokenSequence(
                ids=ids, strings=[f"t{x}" for x in ids], flags=flags),
            attention={"self": attn}, metrics={"self": metrics}, meta={"line": i + 1}))
    return out


def write_series(store: Path, series: str, steps: Sequence[int], strengths: Sequence[np.ndarray], *,
                 n: int = 6, probe: str = "synthetic-probe", model: str = "synthetic") -> list[str]:
    """Write a training series: one checkpoint run per step, whose heads have the given previous-token
    ``strengths`` (``[L, H]`` per step; see :func:`series_examples`); loss falls with the step. Returns the runs."""
    from attnviz.pipeline.store import StoreWriter, checkpoint_run_name

    writer = StoreWriter(store)
    runs = []
    for k, (step, strength) in enumerate(zip(steps, strengths, strict=True)):
        layers, heads = np.shape(strength)
        run = checkpoint_run_name(series, step)
        meta = {**synthetic_meta(layers, heads, n, model=model), "family": "decoder", "random_weights": False,
                "series": {"name": series, "step": int(step), "epoch": None, "loss": 5.0 / (1 + k),
                           "learning_rate": 1e-3, "probe_fingerprint": probe,
                           "log": [[int(step), 5.0 / (1 + k), 1e-3]] if k else []}}
        writer.begin_run(run, meta, fingerprint_keys=[])
        path = shard_dir(store, run) / shard_file_name(0, n)
        write_shard_file(path, run, 0, series_examples(strength, n, seed=k))
        writer.commit_shard(run, path)
        runs.append(run)
    return runs
