"""The options of ``attnviz precompute``: one typed object, one set of defaults, one place for validation.

The command line (:mod:`attnviz.pipeline.cli`) builds a :class:`PrecomputeOptions` from its flags and takes
its defaults from here; the single-process run (:func:`attnviz.pipeline.precompute.local.precompute`,
:func:`~attnviz.pipeline.precompute.local.prepare_run`) and the dask run
(:func:`attnviz.pipeline.precompute.distributed.precompute_distributed`) take the object itself. Building one
checks every value that can be checked without the model, the input or the store, and raises
:class:`~attnviz.pipeline.precompute.inputs.InputError` with one line naming the flag (the model-dependent checks,
``--max-length`` against the special tokens and ``--set`` keys against the config, happen once the model is
known). No torch, no dask here; h5py and the model_info schema are imported only when options are built, so
the command line imports this module cheaply for its defaults.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnviz.pipeline.precompute.inputs import InputError
from attnviz.pipeline.precompute.keep import parse_attention
from attnviz.pipeline.precompute.windows import LongInputs, parse_long_inputs

#: What a run can capture besides attention (which is always captured).
CAPTURES = ("attention", "qkv", "hidden", "embeddings", "norms")
#: Examples per shard file (the unit of commit and resume).
DEFAULT_SHARD_SIZE = 256
#: At most this many stored attention (+Q/K/V/hidden) values in one shard, to bound memory at long T.
DEFAULT_MAX_SHARD_ELEMENTS = 1 << 26
#: The dtypes a model can run in (``--model-dtype``); metrics are computed from its attention cast to float32.
MODEL_DTYPES = ("float32", "float16", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(?::\d{1,3})?)$")


def parse_capture(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Validate a capture list ("attention,qkv,hidden,embeddings"); attention is always captured and comes first."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in items if s not in CAPTURES]
    if bad:
        raise InputError(f"unknown capture {bad[0]!r}: use a comma list of {', '.join(CAPTURES)}")
    return ("attention", *[c for c in CAPTURES[1:] if c in items])


@dataclass(frozen=True, kw_only=True)
class PrecomputeOptions:
    """Everything one ``attnviz precompute`` command is asked to do, validated on construction.

    ``input`` and ``store`` are required; every other field has the one default the command line and the API
    share. ``capture`` defaults to ``attention,embeddings`` for both (before, the API captured attention only):
    pass ``capture="attention"`` for the smallest store. ``capture`` may be given as a comma string or a
    sequence and is kept as a tuple in canonical order; ``overrides`` may be a mapping or ``--set``-style
    ``key=value`` strings and is kept as a dict; ``mantissa_bits`` equal to every bit of ``dtype`` is kept as
    ``None`` (no rounding). ``workers``/``scheduler`` choose the dask run (at most one of them; neither: the
    single-process run). ``long_inputs`` may be given as its command-line spelling (``"window:64"``).
    """

    model: str = "minilm"  #: model_info name (see ``attnviz models``)
    input: str  #: sentence file (.txt, .tsv pairs, .jsonl) or ``random:length=N,count=N,seed=N``
    store: Path  #: store file (created if missing)
    run: str | None = None  #: run name (default: ``<model>--<input name>``)
    limit: int | None = None  #: only the first N examples
    batch_size: int = 16  #: examples per forward pass
    max_length: int | None = None  #: truncate inputs to this many tokens (default: the model's own limit)
    #: longer inputs: ``truncate``, or ``window[:STRIDE]`` (overlapping windows stored as linked examples)
    long_inputs: LongInputs = LongInputs()
    capture: tuple[str, ...] = ("attention", "embeddings")  #: attention plus any of qkv, hidden, embeddings
    dtype: str = "float16"  #: stored tensor dtype: float16 or float32
    mantissa_bits: int | None = None  #: round stored attention weights to N mantissa bits (None: every bit)
    threads: int | None = None  #: torch threads (default: torch's choice; distributed: cores per worker thread)
    overrides: dict[str, Any] = field(default_factory=dict)  #: model config overrides (``--set key=value``)
    shard_size: int = DEFAULT_SHARD_SIZE  #: examples per shard file (unit of commit and resume)
    max_shard_elements: int = DEFAULT_MAX_SHARD_ELEMENTS  #: stored values per shard, at most
    workers: int | None = None  #: run on a dask LocalCluster with N worker processes
    scheduler: str | None = None  #: address of an existing dask scheduler
    #: which examples keep raw attention, Q/K/V, hidden states and embeddings (metrics and tokens: every one)
    attention: str = "all"
    device: str = "auto"  #: where the model runs: auto, cpu, cuda, cuda:N or mps
    model_dtype: str = "float32"  #: the dtype the model runs in: float32, float16 or bfloat16
    #: after the last shard, cache head similarity and relative positions (``attnviz analyze``) unless up to date
    analyze: bool = True

    def __post_init__(self) -> None:
        from attnviz.pipeline.store import MANTISSA_BITS  # h5py: imported when options are built, not with the CLI

        set_ = object.__setattr__
        set_(self, "input", os.fspath(self.input))
        set_(self, "store", Path(self.store))
        if self.dtype not in MANTISSA_BITS:
            raise InputError(f"unknown --dtype {self.dtype!r}: use float16 or float32")
        bits = MANTISSA_BITS[self.dtype]
        if self.mantissa_bits is not None and not 1 <= self.mantissa_bits <= bits:
            raise InputError(f"--mantissa-bits must be between 1 and {bits} for {self.dtype} "
                             f"(got {self.mantissa_bits}); leave it out to store every bit")
        if self.mantissa_bits == bits:
            set_(self, "mantissa_bits", None)  # every bit: the same as not rounding
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        if self.shard_size < 1:
            raise InputError(f"--shard-size must be at least 1 (got {self.shard_size}); the default is "
                             f"{DEFAULT_SHARD_SIZE}")
        if self.max_shard_elements < 1:
            raise InputError(f"max_shard_elements must be at least 1 (got {self.max_shard_elements}); the default "
                             f"is {DEFAULT_MAX_SHARD_ELEMENTS}")
        if self.limit is not None and self.limit < 1:
            raise InputError("--limit must be at least 1")
        if self.max_length is not None and self.max_length < 1:
            raise InputError(f"--max-length must be at least 1 token (got {self.max_length}); leave it out for "
                             "the model's own limit")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1 (got {self.threads}); leave it out for torch's choice")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be at least 1 (got {self.workers})")
        if self.workers is not None and self.scheduler:
            raise InputError("give exactly one of --workers N (a local cluster) or --scheduler ADDRESS")
        set_(self, "capture", parse_capture(self.capture))
        set_(self, "attention", parse_attention(self.attention).spec)
        device = str(self.device).strip().lower()
        if not _DEVICE.match(device):
            raise InputError(f"unknown --device {self.device!r}: use auto, cpu, cuda, cuda:N or mps")
        set_(self, "device", device)
        if self.model_dtype not in MODEL_DTYPES:
            raise InputError(f"unknown --model-dtype {self.model_dtype!r}: use {', '.join(MODEL_DTYPES)}")
        set_(self, "long_inputs", parse_long_inputs(self.long_inputs))
        set_(self, "overrides", _overrides(self.overrides))

    @property
    def distributed(self) -> bool:
        """Whether the options ask for the dask run (``--workers`` or ``--scheduler``)."""
        return self.workers is not None or bool(self.scheduler)

    def replace(self, **changes: Any) -> PrecomputeOptions:
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (what the command line shows and uses when a flag is left out)."""
        f = cls.__dataclass_fields__[name]
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        raise KeyError(f"option {name!r} has no default: it is required")


def _overrides(given: Mapping[str, Any] | Sequence[str] | None) -> dict[str, Any]:
    """Config overrides as a dict: a mapping as it is, ``key=value`` strings parsed like ``--set``."""
    if given is None:
        return {}
    if isinstance(given, Mapping):
        return dict(given)
    if isinstance(given, str):
        given = [given]
    from attnviz.pipeline.models.info import parse_overrides

    return parse_overrides(list(given))


__all__ = ["CAPTURES", "DEFAULT_MAX_SHARD_ELEMENTS", "DEFAULT_SHARD_SIZE", "MODEL_DTYPES", "PrecomputeOptions",
           "parse_capture"]
