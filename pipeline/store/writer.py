"""Writing a store: shard files (built in memory, written atomically) and the :class:`StoreWriter` that
creates runs and commits shards into the index; safe to kill at any moment (no torch here)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np

from attnviz.pipeline.records import ExampleResult, TokenSequence
from attnviz.pipeline.store.atomic import exclusive_lock, h5_image, lock_file, write_bytes_atomically
from attnviz.pipeline.store.format import (
    CHUNK_ELEMENTS,
    DEFAULT_CODEC,
    SCHEMA_VERSION,
    SHARD_FORMAT_NAME,
    SHARD_NAME,
    STRING_DTYPE,
    RunMismatchError,
    StoreError,
    UnknownRunError,
    check_run_name,
    codec,
    one_line,
    round_mantissa,
    shard_dir,
)
from attnviz.pipeline.store.index import (
    RunInfo,
    ShardEntry,
    check_shard_file,
    config_fingerprint,
    fits_run,
    overlapping_shards,
    read_index,
    write_index,
)


class _FlatWriter:
    """Accumulates ragged per-example arrays into one flat array plus offsets."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.offsets: list[int] = [0]

    def add(self, array: np.ndarray) -> None:
        """Append one example's array (any layout: views are copied once, in :meth:`write`)."""
        self.parts.append(array)
        self.offsets.append(self.offsets[-1] + array.size)

    def write(self, group: h5py.Group, name: str, dtype: Any, compression: dict[str, Any],
              mantissa_bits: int | None = None) -> None:
        data = np.empty(self.offsets[-1], dtype=dtype)
        for part, lo, hi in zip(self.parts, self.offsets, self.offsets[1:], strict=False):
            data[lo:hi].reshape(part.shape)[...] = part  # one copy per example, in C order
        if mantissa_bits is not None:
            data = round_mantissa(data, mantissa_bits)
        if data.size:
            group.create_dataset(name, data=data, chunks=(min(CHUNK_ELEMENTS, data.size),), **compression)
        else:  # no example of the shard kept this tensor (--attention): an empty, unchunked dataset
            group.create_dataset(name, data=data)
        group.create_dataset(f"{name}_offsets", data=np.asarray(self.offsets, dtype=np.int64))


def write_shard_file(path: str | os.PathLike, run: str, start: int, results: Sequence[ExampleResult],
                     *, dtype: str = "float16", codec_name: str | None = None,
                     mantissa_bits: int | None = None, fingerprint: str | None = None) -> Path:
    """Write one shard of examples (sorted into input order) to ``path`` atomically; return the final path.

    The file is first written as ``<path>.tmp-<pid>`` and fsynced, then renamed: readers and resumers only
    ever see complete shards. ``codec_name``, ``mantissa_bits`` and ``fingerprint``: see :func:`shard_image`.
    """
    path = Path(path)
    image = shard_image(run, start, results, dtype=dtype, codec_name=codec_name, mantissa_bits=mantissa_bits,
                        fingerprint=fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, image)
    return path


def shard_image(run: str, start: int, results: Sequence[ExampleResult], *, dtype: str = "float16",
                codec_name: str | None = None, mantissa_bits: int | None = None,
                fingerprint: str | None = None) -> bytes:
    """The bytes of the shard file of ``results`` (sorted into input order), built in memory.

    ``mantissa_bits``: attention weights are rounded to that many mantissa bits (:func:`round_mantissa`;
    ``None`` keeps every bit of ``dtype``). ``codec_name`` defaults to zstd for rounded attention (the zeroed
    low bits compress best with it) and to :data:`DEFAULT_CODEC` otherwise. ``fingerprint`` is the run's
    :func:`config_fingerprint`, recorded so that the index only ever adopts shards of the run's configuration.
    """
    results = sorted(results, key=lambda r: r.input_index)
    if not results:
        raise StoreError("refusing to write an empty shard")
    float_dtype = np.dtype(dtype)
    comp = codec(codec_name or ("zstd" if mantissa_bits is not None else DEFAULT_CODEC))
    return h5_image(lambda f: _fill_shard(f, run, start, results, float_dtype, comp, mantissa_bits, fingerprint))


def _fill_shard(f: h5py.File, run: str, start: int, results: Sequence[ExampleResult],
                float_dtype: np.dtype, comp: dict[str, Any], mantissa_bits: int | None = None,
                fingerprint: str | None = None) -> None:
    f.attrs["format"] = SHARD_FORMAT_NAME
    if fingerprint:
        f.attrs["fingerprint"] = fingerprint
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["run"] = run
    f.attrs["start"] = start
    f.attrs["count"] = len(results)
    ex = f.create_group("example")
    ex.create_dataset("input_index", data=np.array([r.input_index for r in results], dtype=np.int64))
    ex.create_dataset("truncated", data=np.array([r.truncated for r in results], dtype=bool))
    ex.create_dataset("kept", data=np.array([r.kept for r in results], dtype=bool))
    for name, values in (("text", [r.text for r in results]), ("target_text", [r.target_text for r in results]),
                         ("label", [r.label for r in results]),
                         ("meta_json", [json.dumps(r.meta, sort_keys=True) if r.meta else "{}" for r in results])):
        ex.create_dataset(name, data=values, dtype=STRING_DTYPE)

    sides = ["source"] + (["target"] if results[0].target is not None else [])
    for side in sides:
        seqs = [r.source if side == "source" else cast(TokenSequence, r.target) for r in results]
        g = f.create_group(f"tokens/{side}")
        g.create_dataset("ids", data=np.concatenate([s.ids for s in seqs]).astype(np.int32))
        g.create_dataset("flags", data=np.concatenate([s.flags for s in seqs]).astype(np.uint8))
        g.create_dataset("strings", data=[t for s in seqs for t in s.strings], dtype=STRING_DTYPE)
        g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64))

    # Dimension attributes come from an example that kept its tensors (the others hold empty arrays).
    model = next((r for r in results if r.kept), results[0])
    for kind in results[0].attention:
        g = f.create_group(f"attention/{kind}")
        flat = _FlatWriter()
        for r in results:
            flat.add(r.attention[kind])
        flat.write(g, "data", float_dtype, comp, mantissa_bits)
        layers, heads = results[0].attention[kind].shape[:2]
        g.attrs["layers"], g.attrs["heads"] = layers, heads
        m = f.create_group(f"metrics/{kind}")
        for name in results[0].metrics[kind]:  # [n, L, H] per metric
            m.create_dataset(name, data=np.stack([r.metrics[kind][name] for r in results]).astype(np.float32))

    for kind in results[0].norms:  # value-weighted norms: laid out as attention (never mantissa-rounded)
        g = f.create_group(f"norms/{kind}")
        flat = _FlatWriter()
        for r in results:
            flat.add(r.norms[kind])
        flat.write(g, "data", float_dtype, comp)
        g.attrs["layers"], g.attrs["heads"] = results[0].norms[kind].shape[:2]

    for kind in results[0].qkv:
        g = f.create_group(f"qkv/{kind}")
        for idx, letter in enumerate("qkv"):
            flat = _FlatWriter()
            for r in results:
                flat.add(r.qkv[kind][idx])
            flat.write(g, letter, float_dtype, comp)
        g.attrs["head_dim"] = model.qkv[kind][0].shape[-1]

    for side in results[0].hidden:
        g = f.create_group(f"hidden/{side}")
        flat = _FlatWriter()
        for r in results:
            flat.add(r.hidden[side])
        flat.write(g, "data", float_dtype, comp)
        g.attrs["hidden_size"] = model.hidden[side].shape[-1]

    for side in results[0].embeddings:
        g = f.create_group(f"embeddings/{side}")
        for idx, name in enumerate(("input", "output")):
            flat = _FlatWriter()
            for r in results:
                flat.add(r.embeddings[side][idx])
            flat.write(g, name, float_dtype, comp)
        g.attrs["hidden_size"] = model.embeddings[side][0].shape[-1]


class StoreWriter:
    """Creates runs and commits shards into a store; safe to kill at any moment.

    Every change to the index happens under an exclusive ``fcntl`` lock on ``STORE.h5.lock`` and is written to a
    temporary file that replaces the index atomically. Several writer processes may share one store.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"--store {self.path} is a folder: give a file name such as {self.path / 'store.h5'}")
        if self.path.exists():
            read_index(self.path)  # refuse a non-store or a newer schema before writing anything
        self.check_writable()

    def check_writable(self) -> None:
        """Raise a one-line StoreError unless the store's folder, lock file and shard folder can be written
        (checked before any model loads, so that a read-only store costs nothing)."""
        with lock_file(self.path):
            pass
        probe = self.path.parent / f".{self.path.name}.probe-{os.getpid()}-{threading.get_ident()}"
        try:
            probe.touch()
            probe.unlink()
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise PermissionError(errno.EACCES, "the index file is read-only")
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.path} ({exc.strerror or one_line(exc)}): give a --store in "
                             "a writable folder") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, RunInfo]]:
        """The index's runs, read under the store's exclusive lock (held until the ``with`` block ends)."""
        with exclusive_lock(self.path):
            yield read_index(self.path) if self.path.exists() else {}

    def runs(self) -> dict[str, RunInfo]:
        """The runs as the index lists them now."""
        return read_index(self.path) if self.path.exists() else {}

    def begin_run(self, run: str, meta: dict[str, Any], *, fingerprint_keys: Sequence[str]) -> RunInfo:
        """Create ``run`` with ``meta``, or resume it if it exists with the same fingerprint.

        ``fingerprint_keys`` name the ``meta`` entries that must match an existing run (model, config, input,
        dtype, ...); their :func:`config_fingerprint` is recorded as ``meta["fingerprint"]`` and in every shard
        file. A mismatch with a run that holds examples raises :class:`RunMismatchError`; a run without any
        shard (a command that failed before its first shard) holds nothing, so it takes the new configuration.
        Finished shards found on disk but missing from the index (a kill between the shard's rename and the
        index update) are adopted if they were written with the run's configuration and overlap no committed
        shard; temp files and shards that can never be adopted are removed.
        """
        check_run_name(run)
        meta = {**meta, "fingerprint": config_fingerprint(meta, fingerprint_keys)}
        with self._locked() as runs:
            old = runs.get(run)
            if old is not None and old.shards:
                diffs = [k for k in fingerprint_keys if old.meta.get(k) != meta.get(k)]
                if diffs:
                    shown = ", ".join(f"{k}: stored {old.meta.get(k)!r} vs asked {meta.get(k)!r}"
                                      for k in diffs[:3])
                    raise RunMismatchError(
                        f"run {run!r} in {self.path} was made with a different configuration ({shown}): "
                        "choose another --run name or another --store"
                    )
                old.meta.setdefault("fingerprint", meta["fingerprint"])
                info = old
            else:
                info = RunInfo(name=run, meta=dict(meta), shards=[])
                runs[run] = info
            self._adopt_orphans(info)
            write_index(self.path, runs)
            return info

    def _adopt_orphans(self, info: RunInfo) -> None:
        folder = shard_dir(self.path, info.name)
        if not folder.exists():
            return
        known = {s.file for s in info.shards}
        for entry in sorted(folder.iterdir()):
            if entry.name in known or not (".tmp-" in entry.name or SHARD_NAME.match(entry.name)):
                continue
            try:
                header = None if ".tmp-" in entry.name else check_shard_file(entry, info.name)
            except StoreError:
                continue  # unreadable: left for 'attnviz verify' to report
            candidate = None if header is None else ShardEntry(entry.name, header.start, header.count)
            if (header is None or candidate is None or not fits_run(header, info)
                    or overlapping_shards([*info.shards, candidate])):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()  # a temp file, or a shard of another configuration or plan: never adoptable
                continue
            info.shards.append(candidate)
        info.shards.sort(key=lambda s: s.start)

    def commit_shard(self, run: str, shard_path: str | os.PathLike, meta_update: dict[str, Any] | None = None
                     ) -> RunInfo:
        """Register a finished shard file (already in the run's folder) in the index; return the run.

        Refuses (StoreError) a shard written with another configuration than the run's, and one whose examples
        overlap a committed shard: the index never lists an example twice. Committing the same file again is a
        no-op.
        """
        shard_path = Path(shard_path)
        header = check_shard_file(shard_path, run)
        with self._locked() as runs:
            if run not in runs:
                raise UnknownRunError(f"run {run!r} is not in {self.path}: call begin_run first")
            info = runs[run]
            if all(s.file != shard_path.name for s in info.shards):
                if not fits_run(header, info):
                    raise RunMismatchError(f"shard {shard_path.name} was written with another configuration than "
                                           f"run {run!r} in {self.path}: rerun the precompute")
                entry = ShardEntry(shard_path.name, header.start, header.count)
                clash = overlapping_shards([*info.shards, entry])
                if clash:
                    a, b = clash[0]
                    raise StoreError(f"shard {entry.file} overlaps committed shard "
                                     f"{(b if a is entry else a).file} of run {run!r}: refusing to list an example "
                                     "twice (run 'attnviz verify' on the store)")
                info.shards.append(entry)
                info.shards.sort(key=lambda s: s.start)
            if meta_update:
                info.meta.update(meta_update)
            write_index(self.path, runs)
            return info

    def drop_shards(self, run: str, files: Sequence[str]) -> None:
        """Remove shards from a run's index (their examples will be recomputed by the next precompute)."""
        with self._locked() as runs:
            if run not in runs:
                raise UnknownRunError(f"run {run!r} is not in {self.path}")
            runs[run].shards = [s for s in runs[run].shards if s.file not in set(files)]
            write_index(self.path, runs)

    def delete_run(self, run: str) -> None:
        """Remove a run from the index (its shard files are removed afterwards)."""
        with self._locked() as runs:
            if run not in runs:
                raise UnknownRunError(f"run {run!r} is not in {self.path}")
            del runs[run]
            write_index(self.path, runs)
        folder = shard_dir(self.path, run)
        if folder.exists():
            for entry in folder.iterdir():
                entry.unlink()
            folder.rmdir()
