"""Input sentence sets: text files, TSV pairs, JSONL, and reproducible random token sequences (no torch)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

RANDOM_SPEC = re.compile(r"^random(?::(.*))?$")
JSONL_RESERVED = ("text", "target", "label")
UTF8_BOM = b"\xef\xbb\xbf"
#: Bounds of a random spec: longer sequences than any model accepts, or more examples than a store holds, are typos.
MAX_RANDOM_LENGTH = 1_000_000
MAX_RANDOM_COUNT = 10**12


class InputError(ValueError):
    """Bad input (one line naming the problem and what to do)."""


@dataclass
class InputExample:
    """One input example. ``token_ids`` is set for random token sequences (fed to the model as they are)."""

    index: int
    text: str
    target: str = ""
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    token_ids: list[int] | None = None


@dataclass
class InputSet:
    """A whole input: its examples in order and what identifies it."""

    examples: Sequence[InputExample]  #: a list, or a lazy sequence for random inputs (built on access)
    spec: str  #: the path or random spec as given
    fingerprint: str  #: sha256 of the file bytes, or of the random spec
    kind: str  #: "text", "pairs", "jsonl" or "random"
    blank_lines: int = 0


def _decode_lines(path: Path) -> tuple[list[str], bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist: check the path") from None
    except IsADirectoryError:
        raise InputError(f"input {path} is a folder: give a .txt, .tsv or .jsonl file") from None
    except OSError as exc:
        raise InputError(f"cannot read input file {path}: {exc.strerror}") from None
    if b"\x00" in raw[:65536]:
        raise InputError(f"input file {path} looks binary (NUL bytes): give UTF-8 text")
    # A UTF-8 byte-order mark (Windows editors write one) is not part of the first sentence.
    lines = raw.removeprefix(UTF8_BOM).split(b"\n")
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise InputError(f"input file {path} line {number}: not valid UTF-8 (byte {exc.start + 1}); "
                             "convert the file to UTF-8") from None
    if out and out[-1] == "":
        out.pop()
    return out, raw


def read_inputs(path: str | Path, *, fmt: str | None = None) -> InputSet:
    """Read a sentence set: ``.txt`` (one sentence a line), ``.tsv`` (source<TAB>target) or ``.jsonl``.

    Blank lines are skipped and counted; example indices count non-blank lines only; each example's meta
    keeps its 1-based ``line`` and the ``corpus`` file name. Raises InputError on bad input.
    """
    path = Path(path)
    fmt = fmt or {".tsv": "pairs", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix.lower(), "text")
    lines, raw = _decode_lines(path)
    examples: list[InputExample] = []
    blank = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            blank += 1
            continue
        meta: dict[str, Any] = {"line": number, "corpus": path.name}
        if fmt == "text":
            examples.append(InputExample(len(examples), line.strip(), meta=meta))
        elif fmt == "pairs":
            cols = line.split("\t")
            if len(cols) != 2 or not cols[0].strip() or not cols[1].strip():
                raise InputError(f"input file {path} line {number}: expected 2 non-empty tab-separated columns "
                                 f"(source<TAB>target), found {len(cols)}")
            examples.append(InputExample(len(examples), cols[0].strip(), target=cols[1].strip(), meta=meta))
        else:
            examples.append(_jsonl_example(path, number, line, len(examples), meta))
    if not examples:
        raise InputError(f"input file {path} has no sentences (empty or only blank lines)")
    return InputSet(examples, str(path), hashlib.sha256(raw).hexdigest(), fmt, blank)


def _jsonl_example(path: Path, number: int, line: str, index: int, meta: dict[str, Any]) -> InputExample:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"input file {path} line {number}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise InputError(f"input file {path} line {number}: expected a JSON object with a 'text' field")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"input file {path} line {number}: field 'text' is missing or empty")
    target = record.get("target", "")
    if target is not None and not isinstance(target, str):
        raise InputError(f"input file {path} line {number}: field 'target' must be a string")
    label = record.get("label", "")
    extra = {k: v for k, v in record.items() if k not in JSONL_RESERVED and _is_scalar(v)}
    return InputExample(index, text.strip(), target=(target or "").strip(),
                        label="" if label is None else str(label), meta={**extra, **meta})


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def parse_random_spec(spec: str) -> dict[str, int] | None:
    """Parse ``random:length=32,count=100,seed=0,repeat=1`` (all optional); None if ``spec`` is not a random spec.

    ``repeat=R`` repeats each random sequence R times (``repeat=2``: a random sequence repeated twice, the input
    of the induction and duplicate-token scores); ``length`` is the length of one copy.
    """
    m = RANDOM_SPEC.match(spec.strip())
    if not m:
        return None
    params = {"length": 16, "count": 100, "seed": 0, "repeat": 1}
    for part in filter(None, (m.group(1) or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in params or not value.strip().isdigit():
            raise InputError(f"bad random input {spec!r}: use random:length=N,count=N,seed=N[,repeat=N]")
        params[key] = int(value)
    if params["length"] < 1 or params["count"] < 1 or params["repeat"] < 1:
        raise InputError(f"bad random input {spec!r}: length, count and repeat must be at least 1")
    if params["length"] * params["repeat"] > MAX_RANDOM_LENGTH:
        raise InputError(f"bad random input {spec!r}: length {params['length']} is longer than any model accepts; "
                         "use the model's max length or less")
    if params["count"] > MAX_RANDOM_COUNT:
        raise InputError(f"bad random input {spec!r}: count must be at most {MAX_RANDOM_COUNT:,}")
    return params


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sequence ([CLS] / [SEP] for BERT, none for
    GPT-2), found by encoding a one-word probe with and without special tokens."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


class RandomExamples(Sequence[InputExample]):
    """Reproducible random token sequences, built only when accessed: example k uses seed ``seed + k``; with
    ``repeat`` > 1 the sequence is repeated that many times (between the tokenizer's special tokens).

    ``random:count=100000000`` with ``--limit 2`` builds two examples, not 10⁸.
    """

    def __init__(self, tokenizer: Any, length: int, count: int, seed: int, repeat: int = 1) -> None:
        self.tokenizer, self.length, self.size, self.seed, self.repeat = tokenizer, length, count, seed, repeat
        self.prefix, self.suffix = special_token_frame(tokenizer)

    @cached_property
    def _allowed(self) -> np.ndarray:
        excluded = np.fromiter(self.tokenizer.all_special_ids, dtype=np.int64)
        return np.setdiff1d(np.arange(len(self.tokenizer)), excluded)

    def __len__(self) -> int:
        return self.size

    def _example(self, k: int) -> InputExample:
        rng = np.random.default_rng(self.seed + k)
        content = [int(x) for x in rng.choice(self._allowed, size=self.length, replace=True)] * self.repeat
        return InputExample(k, self.tokenizer.decode(content), meta={"random_seed": self.seed + k},
                            token_ids=[*self.prefix, *content, *self.suffix])

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._example(k) for k in range(*index.indices(self.size))]
        if index < 0:
            index += self.size
        if not 0 <= index < self.size:
            raise IndexError(index)
        return self._example(index)


def random_inputs(tokenizer: Any, spec: str) -> InputSet:
    """Reproducible random token sequences for a tokenizer (see :class:`RandomExamples`; built lazily).

    The content tokens are random; the tokenizer's own special tokens ([CLS] ... [SEP] for BERT) are added.
    """
    params = parse_random_spec(spec)
    if params is None:
        raise InputError(f"{spec!r} is not a random input spec")
    examples = RandomExamples(tokenizer, params["length"], params["count"], params["seed"], params["repeat"])
    canon = f"random:length={params['length']},count={params['count']},seed={params['seed']}"
    if params["repeat"] > 1:  # written only when used: specs without it keep their fingerprint
        canon += f",repeat={params['repeat']}"
    return InputSet(examples, canon, hashlib.sha256(canon.encode()).hexdigest(), "random")


def load_input(spec: str) -> InputSet | None:
    """Read a file input; return None for a random spec (which needs the tokenizer: see random_inputs)."""
    if parse_random_spec(spec) is not None:
        return None
    return read_inputs(spec)
