"""Inputs longer than the model accepts: truncate them (the default) or cut them into overlapping windows.

``--long-inputs truncate`` keeps the first ``max_length`` tokens of a text and flags the example as truncated.
``--long-inputs window[:STRIDE]`` covers the whole text with windows of ``max_length`` tokens (the model's special
tokens included): window *k*'s content starts at token ``k * STRIDE`` of the text (the last window ends with the
text), ``STRIDE`` defaulting to half a window. Every window is an example of the run, consecutive in text order,
whose metadata links it to its text (``window``, ``windows``, ``window_input``, ``window_token_start``; see
docs/store-format.md); :meth:`attnviz.pipeline.store.StoreReader.windows` lists an example's windows. A text that
fits is one ordinary example either way.

Only tokenizers are used here (no torch): the model side encodes each window like any other example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from attnviz.pipeline.precompute.inputs import InputError, InputExample, special_token_frame

TRUNCATE = "truncate"
WINDOW = "window"
_SPEC = re.compile(r"^(truncate|window)(?::(\d+))?$")
#: Metadata keys of a window example (docs/store-format.md, "Windows of a long input").
WINDOW_KEYS = ("window", "windows", "window_input", "window_token_start")


@dataclass(frozen=True)
class LongInputs:
    """How inputs longer than the model's limit are handled: ``mode`` truncate or window; ``stride`` in tokens
    (None: half a window, fixed once the window size is known)."""

    mode: str = TRUNCATE
    stride: int | None = None

    @property
    def windowed(self) -> bool:
        return self.mode == WINDOW

    def spec(self) -> str:
        """The option as the command line spells it (``truncate``, ``window``, ``window:64``)."""
        return self.mode if self.stride is None else f"{self.mode}:{self.stride}"


def parse_long_inputs(spec: str | LongInputs | None) -> LongInputs:
    """``truncate``, ``window`` or ``window:STRIDE`` as a :class:`LongInputs` (InputError naming the flag)."""
    if isinstance(spec, LongInputs):
        return spec
    text = (spec or TRUNCATE).strip().lower()
    m = _SPEC.match(text)
    if not m or (m.group(1) == TRUNCATE and m.group(2)):
        raise InputError(f"unknown --long-inputs {spec!r}: use truncate, window or window:STRIDE (tokens)")
    stride = int(m.group(2)) if m.group(2) else None
    if stride is not None and stride < 1:
        raise InputError("--long-inputs window:STRIDE needs a stride of at least 1 token")
    return LongInputs(m.group(1), stride)


def window_size(tokenizer: Any, max_length: int) -> int:
    """Content tokens per window: ``max_length`` less the tokenizer's special tokens around one sequence."""
    prefix, suffix = special_token_frame(tokenizer)
    return max_length - len(prefix) - len(suffix)


def resolved(long_inputs: LongInputs, tokenizer: Any, max_length: int) -> LongInputs:
    """``long_inputs`` with its stride fixed (half a window by default); InputError for a stride longer than a
    window (windows would skip tokens)."""
    if not long_inputs.windowed:
        return long_inputs
    size = window_size(tokenizer, max_length)
    stride = long_inputs.stride or max(1, size // 2)
    if stride > size:
        raise InputError(f"--long-inputs window:{stride} skips tokens: a window holds {size} tokens here, so use a "
                         f"stride of at most {size}")
    return LongInputs(WINDOW, stride)


def window_starts(n_tokens: int, size: int, stride: int) -> list[int]:
    """First content token of each window over ``n_tokens`` tokens: ``0, stride, 2·stride, …`` while the text
    goes on past the window, then one last window ending with the text (``[0]`` when it fits)."""
    if n_tokens <= size:
        return [0]
    starts = list(range(0, n_tokens - size, stride))
    if starts[-1] != n_tokens - size:
        starts.append(n_tokens - size)
    return starts


def _text_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]] | None]:
    """The text's token ids without special tokens, and their character spans when the tokenizer knows them."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return list(enc["input_ids"]), [tuple(span) for span in enc["offset_mapping"]]
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]), None


def split_example(tokenizer: Any, example: InputExample, max_length: int, long_inputs: LongInputs,
                  first_index: int) -> list[tuple[InputExample, list[int]]]:
    """The windows of one input example as (example, token ids with the special tokens) pairs, numbered from
    ``first_index`` (their example indices in the run). An example that fits, a random token sequence or a
    truncating run gives ``[]``: the caller encodes it as one ordinary example."""
    if not long_inputs.windowed or example.token_ids is not None or long_inputs.stride is None:
        return []
    size = window_size(tokenizer, max_length)
    ids, spans = _text_tokens(tokenizer, example.text)
    if len(ids) <= size:
        return []
    prefix, suffix = special_token_frame(tokenizer)
    starts = window_starts(len(ids), size, long_inputs.stride)
    out = []
    for k, start in enumerate(starts):
        content = ids[start:start + size]
        if spans is not None:
            text = example.text[spans[start][0]:spans[start + len(content) - 1][1]]
        else:
            text = tokenizer.decode(content)
        meta = {**example.meta, "window": k, "windows": len(starts), "window_input": example.index,
                "window_token_start": start}
        window = InputExample(first_index + k, text, target="", label=example.label, meta=meta)
        out.append((window, [*prefix, *content, *suffix]))
    return out


__all__ = ["TRUNCATE", "WINDOW", "WINDOW_KEYS", "LongInputs", "parse_long_inputs", "resolved", "split_example",
           "window_size", "window_starts"]
