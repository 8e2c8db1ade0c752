"""Store access of the Example tab: the slices its views draw, the derived arrays cached per run version, and
the corpus search. Every function takes the page's reader (:func:`attnviz.dashboard.data.current_reader`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.dashboard.cache import LRU, RunStamp, run_stamp
from attnviz.dashboard.example.analysis import pool_matrix
from attnviz.dashboard.example.tokens import display_tokens, raw_labels
from attnviz.pipeline.metrics import attention_rollout
from attnviz.pipeline.records import KIND_SIDES
from attnviz.pipeline.store import ExampleTable, StoreReader
from attnviz.pipeline.store.meta import run_meta

MAX_SEARCH_RESULTS = 50

_rollouts = LRU(8)
_pooled = LRU(16)
_tokens = LRU(256)
_sorted_metrics = LRU(64)


def stamp(reader: StoreReader, run: str) -> RunStamp:
    """The run's cache key (:func:`attnviz.dashboard.cache.run_stamp`) in ``reader``'s store."""
    return run_stamp(str(reader.path), reader.run_info(run))


def family(reader: StoreReader, run: str) -> str:
    """The run's model family (``encoder`` when the metadata lacks it)."""
    return run_meta(reader.run_info(run).meta).family


def is_causal(reader: StoreReader, run: str, kind: str) -> bool:
    """Whether queries only see earlier keys (decoder self-attention, decoder-only models)."""
    return kind == "decoder" or (kind == "self" and family(reader, run) == "decoder")


def tokens_for(reader: StoreReader, run: str, example: int, side: str) -> list[str]:
    """Display tokens of one side of an example (cached per run version)."""
    return _tokens.get((stamp(reader, run), example, side),
                       lambda: display_tokens(reader.tokens(run, example, side)))


def raw_tokens_for(reader: StoreReader, run: str, example: int, side: str) -> list[str]:
    """Raw labels (the tokenizer's strings, quoted: :func:`~.tokens.raw_labels`) of one side of an example
    (cached per run version)."""
    return _tokens.get((stamp(reader, run), example, side, "raw"),
                       lambda: raw_labels(reader.tokens(run, example, side)))


def kind_tokens(reader: StoreReader, run: str, example: int, kind: str, *,
                raw: bool = False) -> tuple[list[str], list[str]]:
    """(query tokens, key tokens) of an attention kind: display labels, or raw labels when ``raw``."""
    q_side, k_side = KIND_SIDES[kind]
    side_tokens = raw_tokens_for if raw else tokens_for
    q = side_tokens(reader, run, example, q_side)
    return q, (q if k_side == q_side else side_tokens(reader, run, example, k_side))


def rollout(reader: StoreReader, run: str, example: int, kind: str) -> np.ndarray:
    """Attention rollout ``[L, T, T]`` of an example (mean over heads, with the residual), cached. Only for
    self-attention kinds (the caller checks)."""
    return _rollouts.get((stamp(reader, run), example, kind),
                         lambda: attention_rollout(reader.attention(run, example, kind=kind)))


def pooled_attention(reader: StoreReader, run: str, example: int, kind: str, tile: int) -> np.ndarray:
    """Every layer × head's matrix of an example, block-mean pooled to at most ``tile`` × ``tile``, cached."""
    def compute() -> np.ndarray:
        return pool_matrix(reader.attention(run, example, kind=kind), tile, tile)

    return _pooled.get((stamp(reader, run), example, kind, tile), compute)


def metric_distribution(reader: StoreReader, run: str, name: str, kind: str) -> np.ndarray:
    """One metric for every example, sorted per head along the example axis: ``[N, L, H]`` float32 with NaNs
    moved to the end (``np.sort``), cached per run version."""
    def compute() -> np.ndarray:
        return np.sort(reader.metrics(run, name, kind), axis=0)

    return _sorted_metrics.get((stamp(reader, run), name, kind), compute)


@dataclass(frozen=True)
class ExampleSummary:
    """What the picker shows of one example: its table row and the run's flags."""

    table: ExampleTable
    index: int
    random_weights: bool
    mantissa_bits: int | None
    n_tokens: int
    n_target_tokens: int


def example_summary(reader: StoreReader, run: str, example: int) -> ExampleSummary | str:
    """The example's summary, or a one-line message when ``example`` is out of range."""
    table = reader.examples(run)
    if not 0 <= example < len(table):
        return f"example {example} is out of range for run {run!r} (0..{len(table) - 1})"
    meta = run_meta(reader.run_info(run).meta)
    return ExampleSummary(table, example, random_weights=meta.random_weights,
                          mantissa_bits=meta.mantissa_bits, n_tokens=int(table.n_tokens[example]),
                          n_target_tokens=int(table.n_target_tokens[example]))


def search_examples(table: ExampleTable, text: str, limit: int = MAX_SEARCH_RESULTS) -> list[tuple[int, str]]:
    """Examples whose text (or target text) contains every word of ``text`` (case-insensitive):
    ``(index, shortened text)`` pairs, at most ``limit``."""
    words = [w for w in text.lower().split() if w]
    hits: list[tuple[int, str]] = []
    for i, (src, tgt) in enumerate(zip(table.text, table.target_text, strict=True)):
        hay = f"{src}\n{tgt}".lower()
        if all(w in hay for w in words):
            hits.append((i, src if len(src) <= 100 else src[:97] + "…"))
            if len(hits) >= limit:
                break
    return hits
