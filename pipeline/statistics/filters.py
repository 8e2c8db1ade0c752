"""Which examples a corpus view uses: compact per-example columns, the filter over them, and the input key
that pairs the examples of two runs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Value that stands for a metadata field an example does not have.
MISSING = "(missing)"
#: A metadata field is offered as a filter when it has at most this many distinct values in the run.
MAX_FIELD_VALUES = 50


@dataclass(frozen=True)
class Categorical:
    """A low-cardinality column: ``values[codes[i]]`` is example ``i``'s value (as a string)."""

    codes: np.ndarray  #: [N] int32
    values: tuple[str, ...]


def value_text(value: object) -> str:
    """A metadata value as filter text (None: :data:`MISSING`; booleans as true/false)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def text_key(text: str, target_text: str = "") -> int:
    """64-bit key of an input (its text and target text), used to pair the examples of two runs."""
    digest = hashlib.blake2b(f"{text}\x1f{target_text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass
class ExampleColumns:
    """The per-example columns that filters and pairing need (compact: no text, no metadata dicts)."""

    input_index: np.ndarray  #: [N] int64
    n_tokens: np.ndarray  #: [N] int64 source tokens
    truncated: np.ndarray  #: [N] bool
    key: np.ndarray  #: [N] uint64 :func:`text_key` of each example
    fields: dict[str, Categorical] = field(default_factory=dict)  #: filterable fields (label, metadata)

    def __len__(self) -> int:
        return int(self.n_tokens.shape[0])

    @classmethod
    def build(cls, input_index: Sequence[int], n_tokens: Sequence[int], truncated: Sequence[bool],
              texts: Sequence[str], target_texts: Sequence[str], labels: Sequence[str],
              metas: Sequence[Mapping[str, object]]) -> ExampleColumns:
        """Columns from per-example values; ``label`` (when any is non-empty) and every metadata field with
        at most :data:`MAX_FIELD_VALUES` distinct values become filterable :class:`Categorical` fields."""
        n = len(n_tokens)
        raw: dict[str, list[str]] = {}
        if any(labels):
            raw["label"] = [value_text(x) if x != "" else MISSING for x in labels]
        names = sorted({k for m in metas for k in m})
        for name in names:
            if name == "label" and "label" in raw:
                continue
            column = [value_text(m.get(name)) for m in metas]
            if len(set(column)) <= MAX_FIELD_VALUES:
                raw[name] = column
        fields = {}
        for name, column in sorted(raw.items()):
            values, codes = np.unique(np.asarray(column, dtype=object).astype(str), return_inverse=True)
            fields[name] = Categorical(codes=codes.astype(np.int32).reshape(n), values=tuple(values.tolist()))
        keys = np.fromiter((text_key(t, g) for t, g in zip(texts, target_texts, strict=True)),
                           dtype=np.uint64, count=n)
        return cls(input_index=np.asarray(input_index, dtype=np.int64),
                   n_tokens=np.asarray(n_tokens, np.int64), truncated=np.asarray(truncated, dtype=bool),
                   key=keys, fields=fields)

    def take(self, idx: np.ndarray) -> ExampleColumns:
        """The rows ``idx`` as new columns."""
        return ExampleColumns(
            input_index=self.input_index[idx], n_tokens=self.n_tokens[idx], truncated=self.truncated[idx],
            key=self.key[idx],
            fields={k: Categorical(c.codes[idx], c.values) for k, c in self.fields.items()})


@dataclass(frozen=True)
class ExampleFilter:
    """Which examples a corpus view uses. The empty filter keeps every example.

    ``min_tokens``/``max_tokens`` bound the source length (inclusive); ``truncated`` keeps only truncated
    (True) or only complete (False) examples (None: both); ``fields`` keeps examples whose value of each named
    field is one of the listed values (:data:`MISSING` selects examples without the field).
    """

    min_tokens: int | None = None
    max_tokens: int | None = None
    truncated: bool | None = None
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def make(cls, min_tokens: int | None = None, max_tokens: int | None = None, truncated: bool | None = None,
             fields: Mapping[str, Sequence[str]] | None = None) -> ExampleFilter:
        """A normalized filter (fields sorted; fields with no selected value dropped)."""
        items = tuple(sorted((k, tuple(sorted(map(str, v)))) for k, v in (fields or {}).items() if v))
        low = None if min_tokens is None else int(min_tokens)
        high = None if max_tokens is None else int(max_tokens)
        return cls(low, high, truncated, items)

    def describe(self) -> str:
        """Short human description ("all examples" when empty)."""
        parts = []
        if self.min_tokens is not None or self.max_tokens is not None:
            parts.append(f"{self.min_tokens if self.min_tokens is not None else ''}"
                         f"..{self.max_tokens if self.max_tokens is not None else ''} tokens")
        if self.truncated is not None:
            parts.append("truncated" if self.truncated else "not truncated")
        parts += [f"{k} in {{{', '.join(v)}}}" for k, v in self.fields]
        return "; ".join(parts) or "all examples"


def filter_mask(cols: ExampleColumns, filt: ExampleFilter) -> np.ndarray:
    """``[N]`` bool: the examples that ``filt`` keeps."""
    mask = np.ones(len(cols), dtype=bool)
    if filt.min_tokens is not None:
        mask &= cols.n_tokens >= filt.min_tokens
    if filt.max_tokens is not None:
        mask &= cols.n_tokens <= filt.max_tokens
    if filt.truncated is not None:
        mask &= cols.truncated == filt.truncated
    for name, wanted in filt.fields:
        column = cols.fields.get(name)
        if column is None:  # the run has no such field: every example is "missing"
            if MISSING not in wanted:
                mask[:] = False
            continue
        ok = np.array([v in wanted for v in column.values], dtype=bool)
        mask &= ok[column.codes] if ok.size else False
    return mask
