"""A run's metadata, typed: what ``meta_json`` of ``/runs/<run>`` holds (docs/store-format.md), read through
one function, :func:`run_meta`. No torch, no dash, no h5py here.

The writer (:func:`attnviz.pipeline.precompute.local.run_metadata`) records every field; stores written by older
versions may lack some keys, which read as the defaults below (``mantissa_bits`` as ``None``: every bit;
``family`` as ``"encoder"``). Keys this version does not know are kept (``extra="allow"``), so reading and
writing back loses nothing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Keys of a run's metadata that must match when a command writes to an existing run.
FINGERPRINT_KEYS = ("model", "model_info", "overrides", "input_fingerprint", "max_length", "capture", "dtype",
                    "mantissa_bits", "shard_size", "max_shard_elements", "long_inputs", "attention", "model_dtype")
#: The family a run without a ``family`` key is read as (the first stores held encoder models only).
DEFAULT_FAMILY = "encoder"


class RunMeta(BaseModel):
    """One run's metadata (see docs/store-format.md, "Run metadata")."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, protected_namespaces=())

    model: str = ""  #: model_info name
    model_info: dict[str, Any] = Field(default_factory=dict)  #: the whole validated model_info entry
    family: str = DEFAULT_FAMILY  #: ``encoder``, ``decoder`` or ``encoder-decoder``
    random_weights: bool = False  #: the weights are random (built from a config), not trained
    overrides: dict[str, Any] = Field(default_factory=dict)  #: ``--set`` overrides
    #: The resulting config's scalar fields (stored under ``model_config``, a name pydantic reserves).
    config: dict[str, Any] = Field(default_factory=dict, alias="model_config")
    tokenizer: str | None = None  #: model_info's tokenizer
    versions: dict[str, str] = Field(default_factory=dict)  #: torch, transformers, h5py, numpy versions
    dtype: str = "float16"  #: stored tensor dtype
    mantissa_bits: int | None = None  #: None: every bit of ``dtype``; else the bits attention was rounded to
    max_length: int | None = None  #: truncation length in tokens
    #: None: inputs longer than ``max_length`` were truncated; ``"window:STRIDE"``: cut into linked windows
    long_inputs: str | None = None
    capture: list[str] = Field(default_factory=lambda: ["attention"])  #: subset of attention, qkv, hidden, embeddings
    kinds: list[str] = Field(default_factory=lambda: ["self"])  #: attention kinds
    shape: dict[str, tuple[int, int]] = Field(default_factory=dict)  #: kind -> (layers, heads)
    metrics: dict[str, list[str]] = Field(default_factory=dict)  #: kind -> metric names
    input: str = ""  #: input path or random spec
    input_kind: str = ""  #: text, pairs, jsonl, random (or playground)
    input_fingerprint: str = ""  #: sha256 of the input's bytes (or of the random spec)
    planned_examples: int | None = None  #: examples the run holds when complete
    shard_size: int | None = None  #: the shard plan's examples per shard
    max_shard_elements: int | None = None  #: the shard plan's stored values per shard
    created: str = ""  #: UTC ISO 8601 time of creation
    fingerprint: str | None = None  #: hash of the FINGERPRINT_KEYS values, recorded in every shard file
    playground: bool = False  #: a run the dashboard's playground added to
    #: Which examples kept raw attention (``--attention``): None for every example (``all``, and every store written
    #: before the option), else ``none``, ``first:N``, ``every:K`` or ``sample:N,seed=S``.
    attention: str | None = None
    model_dtype: str | None = None  #: the dtype the model ran in; None: float32 (``--model-dtype``)
    #: A training checkpoint's series entry (name, step, epoch, loss, learning_rate, probe_fingerprint, log);
    #: None for other runs (:mod:`attnviz.pipeline.store.series`).
    series: dict[str, Any] | None = None

    def metrics_of(self, kind: str) -> list[str]:
        """Metric names stored for attention kind ``kind`` (empty for a kind the run lacks)."""
        return list(self.metrics.get(kind, []))

    def layers_heads(self, kind: str) -> tuple[int, int]:
        """(layers, heads) of attention kind ``kind``; KeyError for a kind the run lacks."""
        return self.shape[kind]

    @property
    def causal(self) -> bool:
        """Whether the run's self-attention is causal (a decoder-only model)."""
        return self.family == "decoder"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict the store records (``model_config`` under its stored name, extra keys kept)."""
        return self.model_dump(mode="json", by_alias=True)


def run_meta(meta: dict[str, Any] | RunMeta) -> RunMeta:
    """The typed metadata of a run from its stored dict (``RunInfo.meta``); a RunMeta is returned as it is.

    Missing keys read as the defaults of :class:`RunMeta`; a value of the wrong type raises
    :class:`~attnviz.pipeline.store.StoreError` with one line naming the key.
    """
    if isinstance(meta, RunMeta):
        return meta
    try:
        return RunMeta.model_validate(meta)
    except ValidationError as exc:
        from attnviz.pipeline.store.format import StoreError

        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise StoreError(f"run metadata key {where!r}: {err['msg']}: the store was written by another attnviz "
                         "version or damaged") from None


__all__ = ["DEFAULT_FAMILY", "FINGERPRINT_KEYS", "RunMeta", "run_meta"]
