"""Build a run's query–key space (``attnviz analyze``, runs that captured Q/K): a fixed sample of examples, and per
layer and head their queries and keys projected together to 2-D
(:func:`attnviz.pipeline.statistics.qk_space.joint_projection`), written to ``qk-space-<kind>.h5``
(:mod:`attnviz.pipeline.store.qk_space`). Memory is bounded by the sample (``sample_tokens``), whatever the run's
size: only the sampled examples' Q and K are read."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnviz.pipeline.statistics.qk_space import joint_projection, umap_available
from attnviz.pipeline.store import StoreError, StoreReader, run_meta
from attnviz.pipeline.store.qk_space import QKSpace, load_qk_space, write_qk_space

#: Tokens sampled (whole examples, spread evenly over the run's kept examples, until this many tokens).
DEFAULT_SAMPLE_TOKENS = 2000


@dataclass
class QKSummary:
    """What one build did."""

    run: str
    path: Path
    examples: int
    tokens: int
    method: str
    seconds: float

    def line(self) -> str:
        return (f"run {self.run!r}: query–key space of {self.tokens} tokens from {self.examples} examples "
                f"({self.method}), {self.seconds:.1f} s -> {self.path}")


def sample_examples(kept: np.ndarray, lengths: np.ndarray, budget: int) -> np.ndarray:
    """Kept examples spread evenly over the run (every ``len(kept)/n``-th) whose tokens add up to about
    ``budget`` (at least one example)."""
    if kept.size == 0:
        return kept
    mean = max(1.0, float(lengths[kept].mean()))
    n = int(min(kept.size, max(1, round(budget / mean))))
    picks = kept[np.unique(np.linspace(0, kept.size - 1, n).astype(np.int64))]
    total = np.cumsum(lengths[picks])
    return picks[: max(1, int(np.searchsorted(total, budget, side="right")) or 1)]


def qk_space_needed(store: str | os.PathLike, run: str) -> bool:
    """Whether ``run`` kept Q/K and lacks a fresh query–key space."""
    with StoreReader(store) as reader:
        info = reader.run_info(run)
        if info.num_examples == 0 or "qkv" not in (info.meta.get("capture") or []) or "self" not in info.kinds:
            return False
        if reader.kept_examples(run).size == 0:
            return False  # --attention none: no Q/K to project (analyze builds none)
    try:
        found = load_qk_space(store, run)
    except StoreError:
        return True
    return found is None or found.is_stale(info)


def build_qk_space(store: str | os.PathLike, run: str, *, sample_tokens: int = DEFAULT_SAMPLE_TOKENS,
                   method: str = "pca") -> QKSummary:
    """Project every head's queries and keys of a sample of ``run`` (self-attention) to 2-D and store them.
    ``method``: ``pca``, or ``umap`` (needs umap-learn). One-line StoreErrors for a run without Q/K."""
    t0 = time.perf_counter()
    if method == "umap" and not umap_available():
        raise StoreError("the UMAP projection needs umap-learn: pip install umap-learn (or use pca)")
    kind = "self"
    with StoreReader(store) as reader:
        info = reader.run_info(run)
        if "qkv" not in run_meta(info.meta).capture:
            raise StoreError(f"run {run!r} did not capture Q/K/V: rerun precompute with --capture attention,qkv "
                             "for its query–key space")
        lengths = reader.examples(run).n_tokens
        picks = sample_examples(reader.kept_examples(run), lengths, sample_tokens)
        if picks.size == 0:
            raise StoreError(f"run {run!r} kept no Q/K (--attention): nothing to project")
        qs, ks, examples, positions, tokens, flags = [], [], [], [], [], []
        for i in picks.tolist():
            q, k = reader.queries_keys(run, i, kind)
            qs.append(q)
            ks.append(k)
            t = q.shape[2]
            examples.append(np.full(t, i, dtype=np.int64))
            positions.append(np.arange(t, dtype=np.int32))
            tokens.extend(reader.tokens(run, i))
            flags.append(reader.token_flags(run, i))
    queries, keys = np.concatenate(qs, axis=2), np.concatenate(ks, axis=2)  # [L, H, S, d]
    n_layers, n_heads, s, _ = queries.shape
    q2 = np.zeros((n_layers, n_heads, s, 2), np.float32)
    k2 = np.zeros_like(q2)
    explained = np.zeros((n_layers, n_heads, 2), np.float32)
    for layer in range(n_layers):
        for head in range(n_heads):
            q2[layer, head], k2[layer, head], explained[layer, head] = joint_projection(
                queries[layer, head], keys[layer, head], method)
    space = QKSpace(run=run, kind=kind, method=method, shards=[x.file for x in info.shards],
                    example=np.concatenate(examples), position=np.concatenate(positions), token=tokens,
                    flags=np.concatenate(flags), queries=q2, keys=k2, explained=explained)
    path = write_qk_space(store, space)
    return QKSummary(run=run, path=path, examples=int(picks.size), tokens=s, method=method,
                     seconds=time.perf_counter() - t0)
