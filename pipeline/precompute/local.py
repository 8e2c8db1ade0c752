"""``attnviz precompute``: inputs → batches → model → metrics → shards committed to the store."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnviz.pipeline.metrics import METRICS, value_weighted_names
from attnviz.pipeline.models.device import resolve_device
from attnviz.pipeline.models.extract import EncodedExample, TokenClassifier, encode
from attnviz.pipeline.models.info import get_model_info
from attnviz.pipeline.models.loading import LoadedModel, load_model, versions
from attnviz.pipeline.precompute.batch_pool import BatchPool, PendingShard
from attnviz.pipeline.precompute.inputs import (
    InputError,
    InputSet,
    load_input,
    parse_random_spec,
    random_inputs,
    special_token_frame,
)
from attnviz.pipeline.precompute.keep import parse_attention
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.precompute.windows import LongInputs, resolved, split_example
from attnviz.pipeline.records import ExampleResult
from attnviz.pipeline.store import (
    ShardEntry,
    StoreError,
    StoreWriter,
    missing_ranges,
    now_iso,
    shard_dir,
    shard_file_name,
    shard_image,
    store_size,
    write_bytes_atomically,
    write_shard_file,
)
from attnviz.pipeline.store.meta import FINGERPRINT_KEYS, run_meta


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
    #: what the analysis after the last shard did: "computed", "up to date", or "" (not asked, or no examples)
    analysis: str = ""

    def line(self) -> str:
        rate = self.new_examples / self.seconds if self.seconds > 0 else 0.0
        text = (f"run {self.run!r}: {self.examples} examples ({self.new_examples} new, {self.skipped_examples} "
                f"resumed), {self.tokens} tokens, {self.truncated} truncated, {self.blank_lines} blank lines "
                f"skipped, {self.seconds:.1f} s ({rate:.1f} ex/s), store {self.store_bytes / 1e6:.1f} MB")
        if self.analysis:
            text += f"; head similarity and relative positions {self.analysis}"
        return text


def default_run_name(model: str, input_spec: str) -> str:
    """``<model>--<input stem>`` made safe as a run name."""
    stem = "random" if input_spec.startswith("random") else Path(input_spec).stem
    return re.sub(r"[^A-Za-z0-9._+-]", "_", f"{model}--{stem}")[:128]


def plan_shards(encoded: Sequence[EncodedExample], values_per_token_pair: int, shard_size: int,
                max_elements: int, *, offset: int = 0) -> list[tuple[int, int]]:
    """Split examples ``offset ..`` (``encoded`` holds them in order) into (start, count) shards: at most
    ``shard_size`` examples and about ``max_elements`` stored attention values each. Greedy from ``offset``
    and dependent only on the input and the configuration, so a resumed run makes exactly the same shards."""
    shards: list[tuple[int, int]] = []
    start, size = 0, 0
    for k, enc in enumerate(encoded):
        t = enc.size
        cost = values_per_token_pair * t * t
        if k > start and (k - start >= shard_size or size + cost > max_elements):
            shards.append((offset + start, k - start))
            start, size = k, 0
        size += cost
    if len(encoded) > start:
        shards.append((offset + start, len(encoded) - start))
    return shards


def plan_missing(encoded: Sequence[EncodedExample], committed: Sequence[ShardEntry], values_per_token_pair: int,
                 shard_size: int, max_elements: int) -> list[tuple[int, int]]:
    """The shards still to compute: each range of ``encoded`` that no committed shard covers, planned on its own.

    Whatever an earlier command's ``--limit`` was, new shards never overlap committed ones; for a run whose
    committed shards came from the same plan (a resume), the ranges start and end at that plan's boundaries,
    so the same shards are made again.
    """
    return [shard for lo, hi in missing_ranges(committed, len(encoded))
            for shard in plan_shards(encoded[lo:hi], values_per_token_pair, shard_size, max_elements, offset=lo)]


def run_metadata(lm: LoadedModel, inputs: InputSet, *, max_length: int, capture: Sequence[str], dtype: str,
                 mantissa_bits: int | None = None, attention: str = "all",
                 shard_size: int, max_shard_elements: int, planned: int,
                 long_inputs: LongInputs | None = None) -> dict[str, Any]:
    """Everything the store records about a run, as the JSON dict the index stores (see docs/store-format.md;
    read it back with :func:`attnviz.pipeline.store.meta.run_meta`)."""
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
        # None: truncated (the default, and what stores made before this key read as); else "window:STRIDE"
        "long_inputs": long_inputs.spec() if long_inputs is not None and long_inputs.windowed else None,
        "capture": list(capture),
        "kinds": list(shape),
        "shape": {k: list(v) for k, v in shape.items()},
        "metrics": {k: list(METRICS) + (value_weighted_names() if "norms" in capture else []) for k in shape},
        "input": inputs.spec,
        "input_kind": inputs.kind,
        "input_fingerprint": inputs.fingerprint,
        "planned_examples": planned,
        "shard_size": shard_size,
        "max_shard_elements": max_shard_elements,
        "created": now_iso(),
        "attention": parse_attention(attention).meta_value,
        "model_dtype": None if lm.dtype == "float32" else lm.dtype,
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
    shards: list[tuple[int, int]]  #: every (start, count) of the run up to ``total``, committed or not, in order
    todo: list[tuple[int, int]]  #: the shards not committed yet
    skipped: int  #: examples already committed (resume)
    planned: int  #: the run's planned example count after this command (never lowered by a smaller --limit)
    fingerprint: str  #: the run's configuration fingerprint, recorded in every shard file
    created: bool  #: whether this command created the run (it is removed again if no shard commits)
    options: PrecomputeOptions  #: the validated options (``mantissa_bits`` None when it keeps every bit)
    t0: float
    keep: np.ndarray  #: [total] bool: which examples keep raw attention (``--attention``)

    def keep_of(self, start: int, count: int) -> list[bool]:
        """Which examples of the shard ``start .. start+count-1`` keep raw attention."""
        return [bool(k) for k in self.keep[start:start + count]]

    @property
    def total(self) -> int:
        return len(self.encoded)

    def summary(self, new_examples: int, analysis: str = "") -> PrecomputeSummary:
        """The command's summary once ``new_examples`` examples were committed by it (``analysis``: see
        :func:`finish_analysis`)."""
        final = self.writer.runs()[self.run]
        return PrecomputeSummary(
            store=self.store, run=self.run, examples=final.num_examples, new_examples=new_examples,
            skipped_examples=self.skipped, tokens=sum(e.size for e in self.encoded),
            seconds=time.perf_counter() - self.t0, store_bytes=store_size(self.store),
            blank_lines=self.inputs.blank_lines, truncated=sum(e.truncated for e in self.encoded),
            analysis=analysis)


def prepare_run(options: PrecomputeOptions, *, loaded: LoadedModel | None = None,
                model_device: str | None = None) -> PreparedRun:
    """Load the model, encode and plan the input, create or resume the run in the index.

    Everything that can be checked is checked before anything is written: the options (on construction of
    :class:`~attnviz.pipeline.precompute.options.PrecomputeOptions`), the input, the model name, the store
    (schema, existing run's configuration). ``loaded`` reuses an already loaded ``options.model`` (a notebook,
    a benchmark) instead of loading it again; it must be that model with the same overrides.
    ``options.mantissa_bits`` rounds the stored attention weights to that many mantissa bits
    (:func:`attnviz.pipeline.store.round_mantissa`: smaller files, relative error at most ``2**-(bits+1)``); metrics
    are computed before, from float32. ``None`` stores every bit of ``options.dtype``. ``model_device``: load the
    model there instead of ``options.device`` (the dask client, which only tokenizes and plans).
    """
    t0 = time.perf_counter()
    o = options
    described = get_model_info(o.model)  # unknown model / bad file: fail before reading a large input
    if o.long_inputs.windowed and described.family == "encoder-decoder":
        raise InputError(f"--long-inputs window cuts one text into windows, but {o.model} is an encoder-decoder "
                         "model whose target would not follow the windows: use --long-inputs truncate")
    device = model_device or o.device
    if loaded is None:
        resolve_device(device)  # an absent device: fail before reading a large input
    inputs = load_input(o.input)
    writer = StoreWriter(o.store)  # refuses non-stores and newer schemas before any work
    if loaded is not None and (loaded.info.name != o.model or loaded.overrides != o.overrides):
        raise InputError(f"the loaded model is {loaded.info.name!r} with overrides {loaded.overrides}, not "
                         f"{o.model!r} with {o.overrides}: pass the matching model name and --set values")
    lm = loaded or load_model(o.model, o.overrides, threads=o.threads, device=device, dtype=o.model_dtype)
    return plan_run(options, writer, lm, inputs, t0=t0)


def encode_input(lm: LoadedModel, inputs: InputSet | None, options: PrecomputeOptions
                 ) -> tuple[InputSet, list[EncodedExample], int]:
    """The input set (random specs are built with the model's tokenizer), its examples tokenized as the run
    stores them (up to ``options.limit``) and the token limit used."""
    max_len = checked_max_length(lm, options.max_length)
    if inputs is None:
        inputs = random_inputs(lm.tokenizer, options.input)
        check_random_length(lm, options.input)
    examples = inputs.examples[:options.limit] if options.limit else inputs.examples
    long_inputs = resolved(options.long_inputs, lm.tokenizer, max_len)
    return inputs, encode_examples(lm, examples, max_len, long_inputs), max_len


def plan_run(options: PrecomputeOptions, writer: StoreWriter, lm: LoadedModel, inputs: InputSet | None, *,
             t0: float | None = None, encoded: list[EncodedExample] | None = None,
             extra_meta: dict[str, Any] | None = None) -> PreparedRun:
    """Encode and plan the input for an already loaded model, then create or resume the run in the index.

    The second half of :func:`prepare_run`, for callers that hold a model which no model_info file loads (a
    model in training: :mod:`attnviz.pipeline.training`). ``inputs`` None: ``options.input`` is a random spec.
    ``encoded``: the input already tokenized by :func:`encode_input` (not tokenized again). ``extra_meta`` is
    added to the run's metadata (e.g. a checkpoint's ``series`` entry).
    """
    t0 = time.perf_counter() if t0 is None else t0
    o = options
    if encoded is None or inputs is None:
        inputs, encoded, max_len = encode_input(lm, inputs, o)
    else:
        max_len = checked_max_length(lm, o.max_length)
    long_inputs = resolved(o.long_inputs, lm.tokenizer, max_len)
    vals = _values_per_pair(lm) * (1 + 2 * ("qkv" in o.capture) + ("norms" in o.capture))
    run = o.run or default_run_name(o.model, inputs.spec)
    meta = run_metadata(lm, inputs, max_length=max_len, capture=o.capture, dtype=o.dtype,
                        mantissa_bits=o.mantissa_bits, attention=o.attention, shard_size=o.shard_size,
                        max_shard_elements=o.max_shard_elements, planned=len(encoded), long_inputs=long_inputs)
    meta.update(extra_meta or {})
    info = writer.begin_run(run, meta, fingerprint_keys=FINGERPRINT_KEYS)
    stored = run_meta(info.meta)
    todo = plan_missing(encoded, info.shards, vals, o.shard_size, o.max_shard_elements)
    committed = [(s.start, s.count) for s in info.shards if s.start < len(encoded)]
    return PreparedRun(
        store=o.store, run=run, writer=writer, lm=lm, inputs=inputs, encoded=encoded,
        shards=sorted([*committed, *todo]), todo=todo,
        skipped=sum(min(c, len(encoded) - s) for s, c in committed),
        planned=max(len(encoded), stored.planned_examples or 0),
        fingerprint=str(stored.fingerprint), created=not info.shards, options=o, t0=t0,
        keep=parse_attention(o.attention).keep_mask(len(encoded), len(inputs.examples)))


def encode_examples(lm: LoadedModel, examples: Sequence[Any], max_len: int,
                    long_inputs: LongInputs) -> list[EncodedExample]:
    """Tokenize the input examples in order: one example each, truncated to ``max_len`` tokens, or (windowed
    runs, :mod:`.windows`) a text longer than that as consecutive window examples. Example indices are the
    positions in the result (the input index when nothing is windowed)."""
    if not long_inputs.windowed:
        return [encode(lm, ex, max_len) for ex in examples]
    out: list[EncodedExample] = []
    for ex in examples:
        windows = split_example(lm.tokenizer, ex, max_len, long_inputs, len(out))
        if windows:
            out.extend(EncodedExample(window, ids, None, False) for window, ids in windows)
        else:
            out.append(encode(lm, dataclasses.replace(ex, index=len(out)), max_len))
    return out


def checked_max_length(lm: LoadedModel, max_length: int | None) -> int:
    """The token limit a run uses: ``--max-length`` capped at the model's own; refused if it leaves no room for
    one content token beside the tokenizer's special tokens ([CLS] and [SEP] for BERT)."""
    prefix, suffix = special_token_frame(lm.tokenizer)
    smallest = len(prefix) + len(suffix) + 1
    if max_length is not None and max_length < smallest:
        raise InputError(f"--max-length {max_length} leaves no room for a token: {lm.info.name} adds "
                         f"{smallest - 1} special tokens, so use at least {smallest}")
    return min(max_length or lm.max_length, lm.max_length)


def check_random_length(lm: LoadedModel, input_spec: str) -> None:
    """Refuse random sequences longer than the model accepts (with its special tokens), before building any."""
    params = parse_random_spec(input_spec) or {}
    prefix, suffix = special_token_frame(lm.tokenizer)
    room = lm.max_length - len(prefix) - len(suffix)
    repeat = params.get("repeat", 1)
    if params.get("length", 0) * repeat > room:
        if repeat > 1:
            raise InputError(f"random length {params['length']} repeated {repeat} times is longer than "
                             f"{lm.info.name} accepts: use random:length={room // repeat} or less")
        raise InputError(f"random length {params['length']} is longer than {lm.info.name} accepts: use "
                         f"random:length={room} or less")


def compute_shard_results(lm: LoadedModel, encoded: Sequence[EncodedExample], *, batch_size: int,
                          capture: Sequence[str], dtype: str, classifier: TokenClassifier | None = None,
                          keep: Sequence[bool] | None = None) -> list[ExampleResult]:
    """Run the model over one shard's examples: length batches, forward, metrics and per-example slices, several
    batches side by side on the CPU (:class:`~attnviz.pipeline.precompute.batch_pool.BatchPool`).

    ``keep`` (aligned with ``encoded``; default all): which examples keep their raw tensors."""
    classifier = classifier or TokenClassifier(lm)
    with BatchPool(lm, batch_size=batch_size, longest=max((e.size for e in encoded), default=0)) as pool:
        return pool.submit(encoded, capture=capture, dtype=dtype, classifier=classifier, keep=keep).results()


def compute_shard(lm: LoadedModel, encoded: Sequence[EncodedExample], start: int, store: str | os.PathLike,
                  run: str, *, batch_size: int, capture: Sequence[str], dtype: str,
                  classifier: TokenClassifier | None = None, mantissa_bits: int | None = None,
                  fingerprint: str | None = None, keep: Sequence[bool] | None = None) -> Path:
    """Run the model over one shard's examples (input ``start .. start+len-1``) and write its shard file.

    The file is written under a temporary name and renamed (``write_shard_file``), so it is either absent or
    complete; it is not registered in the index (the caller commits it). Returns the shard file's path. This is
    the one per-shard computation, shared by the single-process and the distributed precompute. ``fingerprint``:
    the run's configuration fingerprint (:attr:`PreparedRun.fingerprint`), recorded in the file. ``keep``: which
    examples keep their raw tensors (:meth:`PreparedRun.keep_of`; default all).
    """
    results = compute_shard_results(lm, encoded, batch_size=batch_size, capture=capture, dtype=dtype,
                                    classifier=classifier, keep=keep)
    path = shard_dir(store, run) / shard_file_name(start, len(encoded))
    return write_shard_file(path, run, start, results, dtype=dtype, mantissa_bits=mantissa_bits,
                            fingerprint=fingerprint)


def _persist_shard(writer: StoreWriter, run: str, path: Path, image: bytes, planned: int) -> None:
    """Write a shard file's bytes durably, then register the shard in the index (in that order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, image)
    writer.commit_shard(run, path, meta_update={"planned_examples": planned})


def precompute(options: PrecomputeOptions, *, progress: Callable[[int, int], None] | None = None,
               on_start: Callable[[int, int], None] | None = None,
               loaded: LoadedModel | None = None) -> PrecomputeSummary:
    """Compute and store attention as ``options`` asks, in this process; resume if the run exists.

    The defaults are those of :class:`~attnviz.pipeline.precompute.options.PrecomputeOptions`, the same as the
    command line's: attention and embeddings are captured unless ``capture`` says otherwise.

    Everything that can be checked is checked before anything is written (see :func:`prepare_run`).
    ``progress(done, total)`` is called after each committed shard and ``on_start(already_done, total)`` once
    before the first. ``loaded``: an already loaded model to reuse (see :func:`prepare_run`). Options asking
    for a dask run (``workers``/``scheduler``) are refused: that is
    :func:`attnviz.pipeline.precompute.distributed.precompute_distributed`.
    """
    if options.distributed:
        raise InputError("these options ask for a dask run (--workers/--scheduler): use precompute_distributed")
    return run_prepared(prepare_run(options, loaded=loaded), progress=progress, on_start=on_start)


def run_prepared(prep: PreparedRun, *, progress: Callable[[int, int], None] | None = None,
                 on_start: Callable[[int, int], None] | None = None,
                 classifier: TokenClassifier | None = None) -> PrecomputeSummary:
    """Compute and commit every shard a prepared run still lacks, in this process (see :func:`precompute`).

    ``classifier``: token flags and strings already read for this model's tokenizer (reused, e.g. by every
    checkpoint of a training series); the ids still to compute are added to it.
    """
    # Token flags and strings of every id still to compute, read now with the preparation, not batch by batch.
    classifier = classifier or TokenClassifier(prep.lm)
    classifier.learn(i for start, count in prep.todo for e in prep.encoded[start:start + count]
                     for i in (*e.source_ids, *(e.target_ids or ())))
    try:
        if on_start:
            on_start(prep.skipped, prep.total)
        new = _compute_and_commit(prep, classifier, progress)
    except BaseException:
        forget_if_empty(prep)
        raise
    return prep.summary(new, finish_analysis(prep))


def finish_analysis(prep: PreparedRun, *, client: Any = None) -> str:
    """After the last shard: cache the run's head similarity and relative positions (``attnviz analyze``) unless
    the cache is up to date, in this process (or on ``client``'s dask cluster). Resumable: the cache is written
    atomically, so a command killed here computes it on its next run, which finds no shard left to compute.
    Returns ``"computed"``, ``"up to date"`` or ``""`` (not asked: ``options.analyze`` is false)."""
    if not prep.options.analyze:
        return ""
    from attnviz.pipeline.precompute.analyze import ensure_analysis

    done = ensure_analysis(prep.store, prep.run, workers=0, client=client)
    return "computed" if done is not None else "up to date"


def forget_if_empty(prep: PreparedRun) -> None:
    """Remove the run a failed command created if it still has no shard, so that it blocks no later command."""
    if prep.created:
        with contextlib.suppress(StoreError, OSError):
            if not prep.writer.runs()[prep.run].shards:
                prep.writer.delete_run(prep.run)


def _compute_and_commit(prep: PreparedRun, classifier: TokenClassifier,
                        progress: Callable[[int, int], None] | None) -> int:
    """Compute and commit every shard still to do, in order; return the number of examples committed."""
    new = 0
    o = prep.options
    todo = list(prep.todo)
    longest = max((e.size for start, count in todo for e in prep.encoded[start:start + count]), default=0)

    def submit(k: int) -> PendingShard | None:
        if k >= len(todo):
            return None
        start, count = todo[k]
        return pool.submit(prep.encoded[start:start + count], capture=o.capture, dtype=o.dtype,
                           classifier=classifier, keep=prep.keep_of(start, count))

    # Shard k+1's batches are queued before shard k's are awaited (no worker idles at a shard's end) and compute
    # (BatchPool) while shard k's file is built here; shard k's file is written, fsynced and committed by an I/O
    # thread (which mostly waits on the disk). A shard is committed only once its file is durable, and the next
    # shard's bytes are handed over only after that commit (errors surface in order).
    with BatchPool(prep.lm, batch_size=o.batch_size, longest=longest) as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnviz-io") as io:
        pending: tuple[Future, int] | None = None
        computing = submit(0)
        try:
            for k, (start, count) in enumerate(todo):
                assert computing is not None
                current, computing = computing, submit(k + 1)
                results = current.results()
                image = shard_image(prep.run, start, results, dtype=o.dtype, mantissa_bits=o.mantissa_bits,
                                    fingerprint=prep.fingerprint)
                del results
                if pending is not None:
                    new += _wait_committed(pending, prep, progress, new)
                path = shard_dir(prep.store, prep.run) / shard_file_name(start, count)
                pending = (io.submit(_persist_shard, prep.writer, prep.run, path, image, prep.planned), count)
            if pending is not None:
                new += _wait_committed(pending, prep, progress, new)
        finally:
            if computing is not None:
                computing.cancel()
    return new


def _wait_committed(pending: tuple[Future, int], prep: PreparedRun,
                    progress: Callable[[int, int], None] | None, new: int) -> int:
    """Wait for a shard handed to the I/O thread to be committed; report progress; return its example count."""
    future, count = pending
    future.result()
    if progress:
        progress(prep.skipped + new + count, prep.total)
    return count


__all__ = ["PrecomputeSummary", "PreparedRun", "StoreError", "compute_shard", "compute_shard_results",
           "default_run_name", "encode_input", "plan_run", "plan_shards", "precompute", "prepare_run",
           "run_metadata", "run_prepared"]
