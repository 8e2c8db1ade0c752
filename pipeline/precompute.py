"""``attnviz precompute``: inputs → batches → model → metrics → shards committed to the store."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.extract import (
    CAPTURES,
    EncodedExample,
    TokenClassifier,
    collect_batch,
    encode,
    forward_batch,
    length_batches,
)
from pipeline.inputs import InputError, InputSet, load_input, random_inputs
from pipeline.metrics import METRICS
from pipeline.model_info import get_model_info
from pipeline.models import LoadedModel, load_model, versions
from pipeline.records import ExampleResult
from pipeline.store import (
    MANTISSA_BITS,
    SHARD_DIR_SUFFIX,
    StoreError,
    StoreWriter,
    now_iso,
    shard_dir,
    shard_file_name,
    shard_image,
    write_bytes_atomically,
    write_shard_file,
)

#: Keys of a run's metadata that must match when a command writes to an existing run.
FINGERPRINT_KEYS = ("model", "model_info", "overrides", "input_fingerprint", "max_length", "capture", "dtype",
                    "mantissa_bits",
                    "shard_size", "max_shard_elements")
DEFAULT_SHARD_SIZE = 256
#: At most this many stored attention (+Q/K/V/hidden) values in one shard, to bound memory at long T.
DEFAULT_MAX_SHARD_ELEMENTS = 1 << 26


@dataclass
class PrecomputeSummary:
    """What one precompute command did."""

    store: Path
    run: str
    examples: int  #: examples in the run after this command
    new_examples: int  #: examples computed by this command
    skipped_examples: int  #: examples already in the store (resume)
    tokens: int
    seconds: float
    store_bytes: int
    blank_lines: int
    truncated: int

    def line(self) -> str:
        rate = self.new_examples / self.seconds if self.seconds > 0 else 0.0
        return (f"run {self.run!r}: {self.examples} examples ({self.new_examples} new, {self.skipped_examples} "
                f"resumed), {self.tokens} tokens, {self.truncated} truncated, {self.blank_lines} blank lines "
                f"skipped, {self.seconds:.1f} s ({rate:.1f} ex/s), store {self.store_bytes / 1e6:.1f} MB")


def default_run_name(model: str, input_spec: str) -> str:
    """``<model>--<input stem>`` made safe as a run name."""
    stem = "random" if input_spec.startswith("random") else Path(input_spec).stem
    return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{model}--{stem}")[:128]


def parse_capture(spec: str | Sequence[str]) -> list[str]:
    """Validate a capture list ("attention,qkv,hidden,embeddings"); attention is always captured."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in items if s not in CAPTURES]
    if bad:
        raise InputError(f"unknown capture {bad[0]!r}: use a comma list of {', '.join(CAPTURES)}")
    return ["attention", *[c for c in CAPTURES[1:] if c in items]]


def plan_shards(encoded: Sequence[EncodedExample], values_per_token_pair: int, shard_size: int,
                max_elements: int) -> list[tuple[int, int]]:
    """Split the input into (start, count) shards: at most ``shard_size`` examples and about ``max_elements``
    stored attention values each. Depends only on the input and the configuration, so a resumed run makes
    exactly the same shards."""
    shards: list[tuple[int, int]] = []
    start, size = 0, 0
    for k, enc in enumerate(encoded):
        t = enc.size
        cost = values_per_token_pair * t * t
        if k > start and (k - start >= shard_size or size + cost > max_elements):
            shards.append((start, k - start))
            start, size = k, 0
        size += cost
    if len(encoded) > start:
        shards.append((start, len(encoded) - start))
    return shards


def run_metadata(lm: LoadedModel, inputs: InputSet, *, max_length: int, capture: list[str], dtype: str,
                 mantissa_bits: int | None = None,
                 shard_size: int, max_shard_elements: int, planned: int) -> dict[str, Any]:
    """Everything the store records about a run (see docs/store-format.md)."""
    shape = lm.shape()
    return {
        "model": lm.info.name,
        "model_info": json.loads(lm.info.model_dump_json()),
        "family": lm.family,
        "random_weights": lm.info.random_weights,
        "overrides": lm.overrides,
        "model_config": {k: v for k, v in lm.config.to_diff_dict().items() if isinstance(v, int | float | str | bool)},
        "tokenizer": lm.info.tokenizer,
        "versions": versions(),
        "dtype": dtype,
        "mantissa_bits": mantissa_bits,
        "max_length": max_length,
        "capture": capture,
        "kinds": list(shape),
        "shape": {k: list(v) for k, v in shape.items()},
        "metrics": {k: list(METRICS) for k in shape},
        "input": inputs.spec,
        "input_kind": inputs.kind,
        "input_fingerprint": inputs.fingerprint,
        "planned_examples": planned,
        "shard_size": shard_size,
        "max_shard_elements": max_shard_elements,
        "created": now_iso(),
    }


def _values_per_pair(lm: LoadedModel) -> int:
    return sum(layers * heads for layers, heads in lm.shape().values())


@dataclass
class PreparedRun:
    """A validated, planned run whose index entry exists: what a precompute loop (local or distributed) needs."""

    store: Path
    run: str
    writer: StoreWriter
    lm: LoadedModel
    inputs: InputSet
    encoded: list[EncodedExample]
    shards: list[tuple[int, int]]  #: every planned (start, count), in input order
    todo: list[tuple[int, int]]  #: the shards not committed yet
    skipped: int  #: examples already committed (resume)
    captures: list[str]
    dtype: str
    batch_size: int
    mantissa_bits: int | None
    t0: float

    @property
    def total(self) -> int:
        return len(self.encoded)

    def summary(self, new_examples: int) -> PrecomputeSummary:
        """The command's summary once ``new_examples`` examples were committed by it."""
        final = self.writer.runs()[self.run]
        return PrecomputeSummary(
            store=self.store, run=self.run, examples=final.num_examples, new_examples=new_examples,
            skipped_examples=self.skipped, tokens=sum(e.size for e in self.encoded),
            seconds=time.perf_counter() - self.t0, store_bytes=store_size(self.store),
            blank_lines=self.inputs.blank_lines, truncated=sum(e.truncated for e in self.encoded))


def prepare_run(model: str, input_spec: str, store: str | os.PathLike, *, run: str | None = None,
                limit: int | None = None, batch_size: int = 16, max_length: int | None = None,
                capture: str | Sequence[str] = "attention", dtype: str = "float16", mantissa_bits: int | None = None,
                threads: int | None = None,
                overrides: dict[str, Any] | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                max_shard_elements: int = DEFAULT_MAX_SHARD_ELEMENTS, loaded: LoadedModel | None = None
                ) -> PreparedRun:
    """Validate everything, load the model, encode and plan the input, create or resume the run in the index.

    Everything that can be checked is checked before anything is written: the input, the model name, the
    store (schema, existing run's configuration). ``loaded`` reuses an already loaded ``model`` (a notebook,
    a benchmark) instead of loading it again; it must be that model with the same overrides.
    ``mantissa_bits`` rounds the stored attention weights to that many mantissa bits
    (:func:`pipeline.store.round_mantissa`: smaller files, relative error at most ``2**-(bits+1)``); metrics
    are computed before, from float32. ``None`` stores every bit of ``dtype``.
    """
    t0 = time.perf_counter()
    if dtype not in ("float16", "float32"):
        raise InputError(f"unknown --dtype {dtype!r}: use float16 or float32")
    if mantissa_bits is not None and not 1 <= mantissa_bits <= MANTISSA_BITS[dtype]:
        raise InputError(f"--mantissa-bits must be between 1 and {MANTISSA_BITS[dtype]} for {dtype} "
                         f"(got {mantissa_bits}); leave it out to store every bit")
    if mantissa_bits == MANTISSA_BITS[dtype]:
        mantissa_bits = None  # every bit: the same as not rounding
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    captures = parse_capture(capture)
    get_model_info(model)  # unknown model / bad file: fail before reading a large input
    inputs = load_input(input_spec)
    writer = StoreWriter(store)  # refuses non-stores and newer schemas before any work
    if loaded is not None and (loaded.info.name != model or loaded.overrides != dict(overrides or {})):
        raise InputError(f"the loaded model is {loaded.info.name!r} with overrides {loaded.overrides}, not "
                         f"{model!r} with {dict(overrides or {})}: pass the matching model name and --set values")
    lm = loaded or load_model(model, overrides, threads=threads)
    if inputs is None:
        inputs = random_inputs(lm.tokenizer, input_spec)
    examples = inputs.examples[:limit] if limit else inputs.examples
    max_len = min(max_length or lm.max_length, lm.max_length)
    encoded = [encode(lm, ex, max_len) for ex in examples]
    vals = _values_per_pair(lm) * (1 + 2 * ("qkv" in captures))
    shards = plan_shards(encoded, vals, shard_size, max_shard_elements)
    run = run or default_run_name(model, inputs.spec)
    meta = run_metadata(lm, inputs, max_length=max_len, capture=captures, dtype=dtype, mantissa_bits=mantissa_bits,
                        shard_size=shard_size,
                        max_shard_elements=max_shard_elements, planned=len(encoded))
    info = writer.begin_run(run, meta, fingerprint_keys=FINGERPRINT_KEYS)
    done = {(s.start, s.count) for s in info.shards}
    return PreparedRun(
        store=Path(store), run=run, writer=writer, lm=lm, inputs=inputs, encoded=encoded, shards=shards,
        todo=[s for s in shards if s not in done], skipped=sum(c for s, c in shards if (s, c) in done),
        captures=captures, dtype=dtype, batch_size=batch_size, mantissa_bits=mantissa_bits, t0=t0)


def compute_shard_results(lm: LoadedModel, encoded: Sequence[EncodedExample], *, batch_size: int,
                          capture: Sequence[str], dtype: str, classifier: TokenClassifier | None = None
                          ) -> list[ExampleResult]:
    """Run the model over one shard's examples: length batches, forward, metrics and per-example slices."""
    classifier = classifier or TokenClassifier(lm)
    results: list[ExampleResult] = []
    # Strictly serial: forward, then metrics and slicing, batch after batch. torch's intra-op threads spin
    # between kernels, so a helper thread doing the numpy work concurrently slowed the whole loop down
    # (bench/precompute.py: 0.76 of the bare forward with a helper thread, ~0.85 without).
    for batch in length_batches(encoded, batch_size):
        out = forward_batch(lm, batch, capture=capture)
        results.extend(collect_batch(lm, batch, out, capture=capture, store_dtype=dtype, classifier=classifier))
    return results


def compute_shard(lm: LoadedModel, encoded: Sequence[EncodedExample], start: int, store: str | os.PathLike,
                  run: str, *, batch_size: int, capture: Sequence[str], dtype: str,
                  classifier: TokenClassifier | None = None, mantissa_bits: int | None = None) -> Path:
    """Run the model over one shard's examples (input ``start .. start+len-1``) and write its shard file.

    The file is written under a temporary name and renamed (``write_shard_file``), so it is either absent or
    complete; it is not registered in the index (the caller commits it). Returns the shard file's path. This is
    the one per-shard computation, shared by the single-process and the distributed precompute.
    """
    results = compute_shard_results(lm, encoded, batch_size=batch_size, capture=capture, dtype=dtype,
                                    classifier=classifier)
    path = shard_dir(store, run) / shard_file_name(start, len(encoded))
    return write_shard_file(path, run, start, results, dtype=dtype, mantissa_bits=mantissa_bits)


def _persist_shard(writer: StoreWriter, run: str, path: Path, image: bytes, planned: int) -> None:
    """Write a shard file's bytes durably, then register the shard in the index (in that order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, image)
    writer.commit_shard(run, path, meta_update={"planned_examples": planned})


def precompute(model: str, input_spec: str, store: str | os.PathLike, *, run: str | None = None,
               limit: int | None = None, batch_size: int = 16, max_length: int | None = None,
               capture: str | Sequence[str] = "attention", dtype: str = "float16", mantissa_bits: int | None = None,
               threads: int | None = None,
               overrides: dict[str, Any] | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
               max_shard_elements: int = DEFAULT_MAX_SHARD_ELEMENTS,
               progress: Callable[[int, int], None] | None = None, on_start: Callable[[int, int], None] | None = None,
               loaded: LoadedModel | None = None) -> PrecomputeSummary:
    """Compute and store attention for ``input_spec`` with ``model``; resume if the run exists.

    Everything that can be checked is checked before anything is written (see :func:`prepare_run`).
    ``progress(done, total)`` is called after each committed shard and ``on_start(already_done, total)`` once
    before the first. ``loaded``: an already loaded model to reuse (see :func:`prepare_run`).
    """
    prep = prepare_run(model, input_spec, store, run=run, limit=limit, batch_size=batch_size, max_length=max_length,
                       capture=capture, dtype=dtype, mantissa_bits=mantissa_bits, threads=threads,
                       overrides=overrides, shard_size=shard_size,
                       max_shard_elements=max_shard_elements, loaded=loaded)
    # Token flags and strings of every id still to compute, read now with the preparation, not batch by batch.
    classifier = TokenClassifier(prep.lm)
    classifier.learn(i for start, count in prep.todo for e in prep.encoded[start:start + count]
                     for i in (*e.source_ids, *(e.target_ids or ())))
    if on_start:
        on_start(prep.skipped, prep.total)
    new = 0
    # Shard k's file is written, fsynced and committed by an I/O thread (which mostly waits on the disk) while
    # shard k+1 is computed; a shard is committed only once its file is durable, and the next shard's bytes
    # are handed over only after that commit (errors surface in order).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnviz-io") as io:
        pending: tuple[Future, int] | None = None
        for start, count in prep.todo:
            results = compute_shard_results(prep.lm, prep.encoded[start:start + count], batch_size=batch_size,
                                            capture=prep.captures, dtype=dtype, classifier=classifier)
            image = shard_image(prep.run, start, results, dtype=dtype, mantissa_bits=prep.mantissa_bits)
            del results
            if pending is not None:
                new += _wait_committed(pending, prep, progress, new)
            path = shard_dir(store, prep.run) / shard_file_name(start, count)
            pending = (io.submit(_persist_shard, prep.writer, prep.run, path, image, prep.total), count)
        if pending is not None:
            new += _wait_committed(pending, prep, progress, new)
    return prep.summary(new)


def _wait_committed(pending: tuple[Future, int], prep: PreparedRun,
                    progress: Callable[[int, int], None] | None, new: int) -> int:
    """Wait for a shard handed to the I/O thread to be committed; report progress; return its example count."""
    future, count = pending
    future.result()
    if progress:
        progress(prep.skipped + new + count, prep.total)
    return count


def store_size(store: str | os.PathLike) -> int:
    """Bytes on disk of the index file and all shard files."""
    total = Path(store).stat().st_size if Path(store).exists() else 0
    folder = Path(f"{os.fspath(store)}{SHARD_DIR_SUFFIX}")
    if folder.exists():
        total += sum(p.stat().st_size for p in folder.rglob("*.h5"))
    return total


__all__ = ["PrecomputeSummary", "PreparedRun", "StoreError", "compute_shard", "compute_shard_results",
           "default_run_name", "parse_capture",
           "plan_shards", "precompute", "prepare_run"]
