"""Input sentence sets: text files, TSV pairs, JSONL, and reproducible random token sequences (no torch)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RANDOM_SPEC = re.compile(r"^random(?::(.*))?$")
JSONL_RESERVED = ("text", "target", "label")


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

    examples: list[InputExample]
    spec: str  #: the path or random spec as given
    fingerprint: str  #: sha256 of the file bytes, or of the random spec
    kind: str  #: "text", "pairs", "jsonl" or "random"
    blank_lines: int = 0

    @property
    def has_targets(self) -> bool:
        return any(e.target for e in self.examples)


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
    lines = raw.split(b"\n")
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
    """Parse ``random:length=32,count=100,seed=0`` (all optional); None if ``spec`` is not a random spec."""
    m = RANDOM_SPEC.match(spec.strip())
    if not m:
        return None
    params = {"length": 16, "count": 100, "seed": 0}
    for part in filter(None, (m.group(1) or "").split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in params or not value.strip().isdigit():
            raise InputError(f"bad random input {spec!r}: use random:length=N,count=N,seed=N")
        params[key] = int(value)
    if params["length"] < 1 or params["count"] < 1:
        raise InputError(f"bad random input {spec!r}: length and count must be at least 1")
    return params


def random_token_ids(vocab_size: int, excluded: set[int], length: int, seed: int) -> list[int]:
    """``length`` token ids drawn uniformly from the vocabulary minus ``excluded`` (special tokens), seeded."""
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(vocab_size), np.fromiter(excluded, dtype=np.int64, count=len(excluded)))
    return [int(x) for x in rng.choice(allowed, size=length, replace=True)]


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sequence ([CLS] / [SEP] for BERT, none for
    GPT-2), found by encoding a one-word probe with and without special tokens."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


def random_inputs(tokenizer: Any, spec: str) -> InputSet:
    """Reproducible random token sequences for a tokenizer: example k uses seed ``seed + k``.

    The content tokens are random; the tokenizer's own special tokens ([CLS] ... [SEP] for BERT) are added.
    """
    params = parse_random_spec(spec)
    if params is None:
        raise InputError(f"{spec!r} is not a random input spec")
    excluded = set(tokenizer.all_special_ids)
    prefix, suffix = special_token_frame(tokenizer)
    examples = []
    for k in range(params["count"]):
        content = random_token_ids(len(tokenizer), excluded, params["length"], params["seed"] + k)
        ids = [*prefix, *content, *suffix]
        text = tokenizer.decode(content)
        examples.append(InputExample(k, text, meta={"random_seed": params["seed"] + k}, token_ids=ids))
    canon = f"random:length={params['length']},count={params['count']},seed={params['seed']}"
    return InputSet(examples, canon, hashlib.sha256(canon.encode()).hexdigest(), "random")


def load_input(spec: str) -> InputSet | None:
    """Read a file input; return None for a random spec (which needs the tokenizer: see random_inputs)."""
    if parse_random_spec(spec) is not None:
        return None
    return read_inputs(spec)
