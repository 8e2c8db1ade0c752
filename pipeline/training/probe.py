"""The probe of a training series: one fixed input (a text, TSV or JSONL file, or random token sequences)
that every checkpoint is run on, and the fingerprint that proves it is the same for every checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnviz.pipeline.models.extract import EncodedExample, TokenClassifier
from attnviz.pipeline.models.loading import LoadedModel
from attnviz.pipeline.precompute.inputs import InputError, InputSet, load_input
from attnviz.pipeline.precompute.local import encode_input
from attnviz.pipeline.precompute.options import PrecomputeOptions


def probe_fingerprint(encoded: list[EncodedExample], max_length: int) -> str:
    """A 16-hex-digit hash of what the model is shown: every example's token ids (source and target) and the
    token limit. Two probes with this fingerprint feed a model exactly the same tokens."""
    ids = [[e.source_ids, e.target_ids] for e in encoded]
    blob = json.dumps({"max_length": max_length, "ids": ids}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class PreparedProbe:
    """A probe tokenized for one tokenizer: its input, examples, token limit, fingerprint and token classes."""

    inputs: InputSet
    encoded: list[EncodedExample]
    max_length: int
    fingerprint: str
    classifier: TokenClassifier


@dataclass
class Probe:
    """The fixed inputs of a series. ``spec``: a sentence file (``.txt``, ``.tsv``, ``.jsonl``) or a random spec
    (``random:length=24,count=32,seed=0,repeat=2``: random sequences repeated twice, for the induction and
    duplicate-token scores). ``limit``: only the first N examples; ``max_length``: truncate to N tokens.

    The file is read once, when the probe is made (a file that changes later does not change the probe); its
    tokenization is kept per tokenizer, so recording many checkpoints tokenizes it once.
    """

    spec: str
    limit: int | None = None
    max_length: int | None = None
    _inputs: InputSet | None = field(default=None, init=False, repr=False)
    _prepared: weakref.WeakKeyDictionary[Any, PreparedProbe] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False)

    def __post_init__(self) -> None:
        self.spec = os.fspath(self.spec)
        if self.limit is not None and self.limit < 1:
            raise InputError(f"probe limit must be at least 1 (got {self.limit})")
        self._inputs = load_input(self.spec)  # None for a random spec (built with the tokenizer)

    @classmethod
    def of(cls, probe: Probe | str | os.PathLike) -> Probe:
        """``probe`` itself, or the probe of a spec or path."""
        return probe if isinstance(probe, Probe) else cls(str(Path(probe)) if isinstance(probe, Path) else
                                                          os.fspath(probe))

    def options(self, *, model: str, store: str | os.PathLike, run: str, **kw: Any) -> PrecomputeOptions:
        """The precompute options of one checkpoint run of this probe."""
        return PrecomputeOptions(model=model, input=self.spec, store=Path(store), run=run, limit=self.limit,
                                 max_length=self.max_length, **kw)

    def prepare(self, lm: LoadedModel) -> PreparedProbe:
        """The probe tokenized by ``lm``'s tokenizer (cached for that tokenizer object)."""
        cached = self._prepared.get(lm.tokenizer)
        if cached is None:
            opts = self.options(model=lm.info.name, store="unused.h5", run="probe", capture="attention")
            inputs, encoded, max_len = encode_input(lm, self._inputs, opts)
            cached = PreparedProbe(inputs, encoded, max_len, probe_fingerprint(encoded, max_len),
                                   TokenClassifier(lm))
            self._prepared[lm.tokenizer] = cached
        return cached


__all__ = ["PreparedProbe", "Probe", "probe_fingerprint"]
