"""The attnviz HDF5 store: format constants, the writer and the reader (no torch here).

Layout (documented in ``docs/store-format.md``)::

    STORE.h5                      index: schema version, runs, each run's metadata and its list of shards
    STORE.h5.d/<run>/shard-<start>-<count>.h5   one file per committed block of examples

Every file is written under a temporary name and moved into place with ``os.replace``; the index is
rewritten the same way (under a lock file) after each shard is final. A kill at any moment therefore leaves
the index and every shard it lists complete and readable; a half-written shard is only ever a ``*.tmp`` file
that the next writer removes.

Inside a shard, ragged per-example tensors are stored flat (examples back to back in one 1-D dataset) with an
``offsets[n+1]`` index, compressed with a fast hdf5plugin codec; per-head metrics are ``[n, L, H]`` float32.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from attnviz.pipeline.records import ATTENTION_KINDS, KIND_SIDES, SIDE_OF_KIND, ExampleResult
from attnviz.pipeline.run_meta import run_meta

FORMAT_NAME = "attnviz-store"
SCHEMA_VERSION = 1
SHARD_DIR_SUFFIX = ".d"
CHUNK_ELEMENTS = 1 << 16
STRING_DTYPE = h5py.string_dtype("utf-8")
_SHARD_NAME = re.compile(r"^shard-(\d{10})-(\d{8})\.h5$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_IMAGE_IDS = itertools.count()  # unique names of in-memory HDF5 files


class StoreError(Exception):
    """A problem with a store, worded as one line that says what to do."""


class NotAStoreError(StoreError):
    """The file is missing, not HDF5, or not an attnviz store."""


class SchemaTooNewError(StoreError):
    """The store was written by a newer attnviz."""


class UnknownRunError(StoreError, KeyError):
    """No run of that name in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ExampleOutOfRangeError(StoreError, IndexError):
    """Example index outside the run."""


class MissingCaptureError(StoreError):
    """The run did not capture what was asked for (Q/K/V, hidden states, embeddings, an attention kind)."""


class RunMismatchError(StoreError):
    """Writing to an existing run with a different model or configuration."""


#: The codec of the float tensors unless told otherwise: on real float16 attention, Blosc2 lz4 with bit-shuffle
#: stores 1.74 bytes per weight in about half the time of zstd level 5 (1.73), and decodes faster.
DEFAULT_CODEC = "lz4"


def codec(name: str = DEFAULT_CODEC) -> dict[str, Any]:
    """h5py ``create_dataset`` keyword arguments for a named compression codec (hdf5plugin filters)."""
    if name == "zstd":
        return dict(hdf5plugin.Blosc2(cname="zstd", clevel=5, filters=hdf5plugin.Blosc2.BITSHUFFLE))
    if name == "lz4":
        return dict(hdf5plugin.Blosc2(cname="lz4", clevel=9, filters=hdf5plugin.Blosc2.BITSHUFFLE))
    if name == "none":
        return {}
    raise StoreError(f"unknown codec {name!r}: use zstd, lz4 or none")


def shard_dir(store_path: str | os.PathLike, run: str) -> Path:
    """Folder that holds a run's shard files."""
    return Path(f"{os.fspath(store_path)}{SHARD_DIR_SUFFIX}") / run


def shard_file_name(start: int, count: int) -> str:
    """File name of the shard holding input examples ``start .. start+count-1``."""
    return f"shard-{start:010d}-{count:08d}.h5"


def store_size(store: str | os.PathLike) -> int:
    """Bytes on disk of the index file and all shard files."""
    total = Path(store).stat().st_size if Path(store).exists() else 0
    folder = Path(f"{os.fspath(store)}{SHARD_DIR_SUFFIX}")
    if folder.exists():
        total += sum(p.stat().st_size for p in folder.rglob("*.h5"))
    return total


def config_fingerprint(meta: dict[str, Any], keys: Sequence[str]) -> str:
    """A short hash of the ``keys`` entries of a run's metadata: what a shard file and its run must share."""
    chosen = json.dumps({k: meta.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(chosen.encode()).hexdigest()[:16]


def overlapping_shards(shards: Sequence[ShardEntry]) -> list[tuple[ShardEntry, ShardEntry]]:
    """Pairs of shards whose example ranges ``[start, start+count)`` intersect (each pair once)."""
    ordered = sorted(shards, key=lambda e: (e.start, e.count))
    pairs: list[tuple[ShardEntry, ShardEntry]] = []
    for k, a in enumerate(ordered):
        for b in ordered[k + 1:]:
            if b.start >= a.start + a.count:
                break
            pairs.append((a, b))
    return pairs


def missing_ranges(shards: Sequence[ShardEntry], total: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of ``[0, total)`` that no shard covers, in order."""
    gaps: list[tuple[int, int]] = []
    pos = 0
    for entry in sorted(shards, key=lambda e: e.start):
        if entry.start > pos:
            gaps.append((pos, min(entry.start, total)))
        pos = max(pos, entry.start + entry.count)
        if pos >= total:
            break
    if pos < total:
        gaps.append((pos, total))
    return [(a, b) for a, b in gaps if a < b]


def check_run_name(run: str) -> str:
    """Return ``run`` if it is a safe run name (letters, digits, ``._+-``), else raise StoreError."""
    if not _RUN_NAME.match(run or ""):
        raise StoreError(f"invalid run name {run!r}: use letters, digits, '.', '_', '+', '-' (max 128 chars)")
    return run


# --------------------------------------------------------------------------------------------------------
# Index metadata
# --------------------------------------------------------------------------------------------------------


@dataclass
class ShardEntry:
    """One committed shard of a run."""

    file: str  #: file name inside the run's shard folder
    start: int  #: input index of its first example
    count: int  #: number of examples


@dataclass
class RunInfo:
    """A run's metadata as stored in the index (``meta`` holds everything the writer recorded)."""

    name: str
    meta: dict[str, Any]
    shards: list[ShardEntry] = field(default_factory=list)

    @property
    def num_examples(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def kinds(self) -> list[str]:
        return list(self.meta.get("kinds", ["self"]))

    @property
    def shape(self) -> dict[str, tuple[int, int]]:
        """kind -> (layers, heads)."""
        return {k: tuple(v) for k, v in self.meta.get("shape", {}).items()}

    @property
    def capture(self) -> list[str]:
        return list(self.meta.get("capture", ["attention"]))

    @property
    def complete(self) -> bool:
        planned = self.meta.get("planned_examples")
        return planned is not None and self.num_examples >= planned


def _read_index(path: Path) -> dict[str, RunInfo]:
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError as exc:
        raise NotAStoreError(f"store {path} does not exist: run 'attnviz precompute' to create it") from exc
    except OSError as exc:
        raise NotAStoreError(f"{path} is not a readable HDF5 file ({_short(exc)}): check the path") from exc
    with f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise NotAStoreError(f"{path} is an HDF5 file but not an attnviz store (no format attribute)")
        version = int(f.attrs.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"store {path} has schema version {version}; this attnviz reads up to {SCHEMA_VERSION}: "
                "upgrade attnviz"
            )
        runs: dict[str, RunInfo] = {}
        for name, group in f.get("runs", {}).items():
            meta = json.loads(group.attrs["meta_json"])
            shards = [
                ShardEntry(file=fn.decode() if isinstance(fn, bytes) else str(fn), start=int(s), count=int(c))
                for fn, s, c in zip(group["shard_files"][()], group["shard_start"][()],
                                    group["shard_count"][()], strict=True)
            ]
            runs[name] = RunInfo(name=name, meta=meta, shards=sorted(shards, key=lambda e: e.start))
        return runs


def _write_index(path: Path, runs: dict[str, RunInfo]) -> None:
    write_h5_atomically(path, lambda f: _fill_index(f, runs))
    _fsync_path(path.parent)


def write_h5_atomically(path: Path, fill: Callable[[h5py.File], None]) -> None:
    """Build an HDF5 file in memory with ``fill``, then write it to ``path.tmp-…``, fsync and rename.

    HDF5 never writes to the disk itself, so a full disk is a clean ``OSError`` from Python's own write (HDF5 2.0
    crashed on closing a file after ENOSPC), and the previous file at ``path`` stays intact whatever happens.
    """
    try:
        image = h5_image(fill)
    except BaseException as exc:
        raise _disk_error(exc, path) from exc
    write_bytes_atomically(path, image)


def h5_image(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file built in memory by ``fill`` (nothing touches the disk)."""
    name = f"attnviz-{os.getpid()}-{threading.get_ident()}-{next(_IMAGE_IDS)}.mem"
    with h5py.File(name, "w", driver="core", backing_store=False) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def write_bytes_atomically(path: Path, image: bytes) -> None:
    """Write ``image`` to ``path.tmp-…``, fsync and rename it to ``path``: ``path`` is either the old file or
    the complete new one, whatever happens (a full disk is a StoreError that says so)."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as out:
            out.write(image)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise _disk_error(exc, path) from exc


def _disk_error(exc: BaseException, path: Path) -> BaseException:
    """A full disk (or file-size limit) as a StoreError that says the store is intact; other errors unchanged."""
    text = str(exc)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    if full or "No space left" in text or "File too large" in text or "Disk quota" in text:
        return StoreError(f"no space left on the device writing {path.name}: the store is intact up to the last "
                          "committed shard; free space (or use another --store) and rerun the same command to resume")
    return exc


def _fill_index(f: h5py.File, runs: dict[str, RunInfo]) -> None:
    f.attrs["format"] = FORMAT_NAME
    f.attrs["schema_version"] = SCHEMA_VERSION
    root = f.create_group("runs")
    for name, info in runs.items():
        g = root.create_group(name)
        g.attrs["meta_json"] = json.dumps(info.meta, sort_keys=True)
        for key in ("model", "family", "created"):
            if key in info.meta:
                g.attrs[key] = str(info.meta[key])
        g.attrs["random_weights"] = bool(info.meta.get("random_weights", False))
        g.create_dataset("shard_files", data=[s.file for s in info.shards], dtype=STRING_DTYPE)
        g.create_dataset("shard_start", data=np.array([s.start for s in info.shards], dtype=np.int64))
        g.create_dataset("shard_count", data=np.array([s.count for s in info.shards], dtype=np.int64))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------


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
        chunks = (max(1, min(CHUNK_ELEMENTS, data.size)),)
        group.create_dataset(name, data=data, chunks=chunks, **compression)
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


#: Mantissa bits of each float dtype the store writes.
MANTISSA_BITS = {"float16": 10, "float32": 23}


def round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """``values`` (float16 or float32) rounded to the nearest number with ``bits`` mantissa bits (ties away
    from zero), as the same dtype; the dropped low bits are zero, so they compress away.

    The relative error of every normal number is at most ``2**-(bits + 1)``; subnormals keep an absolute error
    below ``2**-(bits + 1)`` times the smallest normal. Zeros, infinities and NaN are unchanged; a value that
    would round up to infinity is truncated instead.
    """
    name = values.dtype.name
    if name not in MANTISSA_BITS:
        raise StoreError(f"cannot round {name} mantissas: use float16 or float32")
    total = MANTISSA_BITS[name]
    if not 1 <= bits <= total:
        raise StoreError(f"--mantissa-bits must be between 1 and {total} for {name}, got {bits}")
    if bits == total:
        return values
    uint, wide = (np.uint16, np.uint32) if name == "float16" else (np.uint32, np.uint64)
    drop = total - bits
    exponent_mask = wide(((1 << (8 * values.itemsize - 1 - total)) - 1) << total)
    raw = values.view(uint).astype(wide)
    keep = ~wide((1 << drop) - 1)
    rounded = (raw + wide(1 << (drop - 1))) & keep
    special = (raw & exponent_mask) == exponent_mask  # inf / NaN: unchanged
    overflow = (rounded & exponent_mask) == exponent_mask  # rounded up to inf: truncate instead
    out = np.where(special, raw, np.where(overflow, raw & keep, rounded))
    return out.astype(uint).view(values.dtype)


def _fill_shard(f: h5py.File, run: str, start: int, results: Sequence[ExampleResult],
                float_dtype: np.dtype, comp: dict[str, Any], mantissa_bits: int | None = None,
                fingerprint: str | None = None) -> None:
    f.attrs["format"] = FORMAT_NAME + "-shard"
    if fingerprint:
        f.attrs["fingerprint"] = fingerprint
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["run"] = run
    f.attrs["start"] = start
    f.attrs["count"] = len(results)
    ex = f.create_group("example")
    ex.create_dataset("input_index", data=np.array([r.input_index for r in results], dtype=np.int64))
    ex.create_dataset("truncated", data=np.array([r.truncated for r in results], dtype=bool))
    for name, values in (("text", [r.text for r in results]), ("target_text", [r.target_text for r in results]),
                         ("label", [r.label for r in results]),
                         ("meta_json", [json.dumps(r.meta, sort_keys=True) if r.meta else "{}" for r in results])):
        ex.create_dataset(name, data=values, dtype=STRING_DTYPE)

    sides = ["source"] + (["target"] if results[0].target is not None else [])
    for side in sides:
        seqs = [r.source if side == "source" else r.target for r in results]
        g = f.create_group(f"tokens/{side}")
        g.create_dataset("ids", data=np.concatenate([s.ids for s in seqs]).astype(np.int32))
        g.create_dataset("flags", data=np.concatenate([s.flags for s in seqs]).astype(np.uint8))
        g.create_dataset("strings", data=[t for s in seqs for t in s.strings], dtype=STRING_DTYPE)
        g.create_dataset("offsets", data=np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64))

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

    for kind in results[0].qkv:
        g = f.create_group(f"qkv/{kind}")
        for idx, letter in enumerate("qkv"):
            flat = _FlatWriter()
            for r in results:
                flat.add(r.qkv[kind][idx])
            flat.write(g, letter, float_dtype, comp)
        g.attrs["head_dim"] = results[0].qkv[kind][0].shape[-1]

    for side in results[0].hidden:
        g = f.create_group(f"hidden/{side}")
        flat = _FlatWriter()
        for r in results:
            flat.add(r.hidden[side])
        flat.write(g, "data", float_dtype, comp)
        g.attrs["hidden_size"] = results[0].hidden[side].shape[-1]

    for side in results[0].embeddings:
        g = f.create_group(f"embeddings/{side}")
        for idx, name in enumerate(("input", "output")):
            flat = _FlatWriter()
            for r in results:
                flat.add(r.embeddings[side][idx])
            flat.write(g, name, float_dtype, comp)
        g.attrs["hidden_size"] = results[0].embeddings[side][0].shape[-1]


@dataclass(frozen=True)
class ShardHeader:
    """What a shard file says about itself: its run, its example range and its run's configuration."""

    start: int
    count: int
    fingerprint: str | None  #: None in shards written before fingerprints were recorded


def _shard_header(f: h5py.File, path: Path, run: str) -> ShardHeader:
    """The header of an open shard file, after checking that it is complete and belongs to ``run``."""
    if f.attrs.get("format") != FORMAT_NAME + "-shard" or f.attrs.get("run") != run:
        raise StoreError(f"{path} is not a shard of run {run!r}")
    start, count = int(f.attrs["start"]), int(f.attrs["count"])
    if f["example/input_index"].shape[0] != count:
        raise StoreError(f"{path} is incomplete")
    fingerprint = f.attrs.get("fingerprint")
    return ShardHeader(start, count, None if fingerprint is None else str(fingerprint))


def _check_shard_file(path: Path, run: str) -> ShardHeader:
    """Open a shard, check that it is complete and belongs to ``run``; return its header."""
    try:
        with h5py.File(path, "r") as f:
            return _shard_header(f, path, run)
    except (OSError, KeyError) as exc:
        raise StoreError(f"shard {path.name} of run {run!r} cannot be read ({_short(exc)})") from exc


#: What a read of a shard raises when the file is missing, not HDF5, damaged, or lacks a dataset.
_SHARD_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError)


def shard_problem(store: str | os.PathLike, run: str, file: str, exc: BaseException) -> StoreError:
    """The one-line error for a committed shard that is missing or cannot be read, with the repair to run."""
    what = "is missing (store altered?)" if isinstance(exc, FileNotFoundError) else f"is damaged ({_short(exc)})"
    return StoreError(f"shard {file} of run {run!r} {what}: run 'attnviz verify --store {os.fspath(store)} "
                      "--repair', then rerun the precompute")


@contextlib.contextmanager
def open_shard(store: str | os.PathLike, run: str, entry: ShardEntry) -> Iterator[h5py.File]:
    """Open one committed shard of ``run`` for reading, closed when the ``with`` block ends.

    The file must be the shard the index lists (its run and example range). A missing file, a file that is not
    HDF5 or is damaged, another shard in its place, and any read inside the block that fails (a missing
    dataset, a damaged chunk) raise :class:`StoreError` with one line that names the shard and the repair.
    """
    path = shard_dir(store, run) / entry.file
    try:
        with h5py.File(path, "r") as f:
            try:
                header = _shard_header(f, path, run)
            except StoreError:
                raise shard_problem(store, run, entry.file, StoreError(f"not a complete shard of run {run!r}")
                                    ) from None
            if (header.start, header.count) != (entry.start, entry.count):
                raise shard_problem(store, run, entry.file, StoreError(
                    f"it holds examples {header.start}+{header.count}, the index {entry.start}+{entry.count}"))
            yield f
    except StoreError:
        raise
    except _SHARD_READ_ERRORS as exc:
        raise shard_problem(store, run, entry.file, exc) from exc


def _fits_run(header: ShardHeader, info: RunInfo) -> bool:
    """Whether a shard was written with the run's configuration (old shards and runs record none)."""
    expected = info.meta.get("fingerprint")
    return header.fingerprint is None or expected is None or header.fingerprint == expected


class StoreWriter:
    """Creates runs and commits shards into a store; safe to kill at any moment.

    Every change to the index happens under an exclusive ``fcntl`` lock on ``STORE.lock`` and is written to a
    temporary file that replaces the index atomically. Several writer processes may share one store.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"--store {self.path} is a folder: give a file name such as {self.path / 'store.h5'}")
        if self.path.exists():
            _read_index(self.path)  # refuse a non-store or a newer schema before writing anything
        self.check_writable()

    def check_writable(self) -> None:
        """Raise a one-line StoreError unless the store's folder, lock file and shard folder can be written
        (checked before any model loads, so that a read-only store costs nothing)."""
        with self._lock_file():
            pass
        probe = self.path.parent / f".{self.path.name}.probe-{os.getpid()}-{threading.get_ident()}"
        try:
            probe.touch()
            probe.unlink()
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise PermissionError(errno.EACCES, "the index file is read-only")
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.path} ({exc.strerror or _short(exc)}): give a --store in "
                             "a writable folder") from exc

    @contextlib.contextmanager
    def _lock_file(self) -> Iterator[Any]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(lock_path, "a+")  # noqa: SIM115 - closed below, after the lock is released
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {lock_path} for the store ({exc.strerror or _short(exc)}): "
                             "give a --store in a writable folder") from exc
        with lock:
            yield lock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, RunInfo]]:
        with self._lock_file() as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield _read_index(self.path) if self.path.exists() else {}
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def runs(self) -> dict[str, RunInfo]:
        """The runs as the index lists them now."""
        return _read_index(self.path) if self.path.exists() else {}

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
            _write_index(self.path, runs)
            return info

    def _adopt_orphans(self, info: RunInfo) -> None:
        folder = shard_dir(self.path, info.name)
        if not folder.exists():
            return
        known = {s.file for s in info.shards}
        for entry in sorted(folder.iterdir()):
            if entry.name in known or not (".tmp-" in entry.name or _SHARD_NAME.match(entry.name)):
                continue
            try:
                header = None if ".tmp-" in entry.name else _check_shard_file(entry, info.name)
            except StoreError:
                continue  # unreadable: left for 'attnviz verify' to report
            candidate = None if header is None else ShardEntry(entry.name, header.start, header.count)
            if candidate is None or not _fits_run(header, info) or overlapping_shards([*info.shards, candidate]):
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
        header = _check_shard_file(shard_path, run)
        with self._locked() as runs:
            if run not in runs:
                raise UnknownRunError(f"run {run!r} is not in {self.path}: call begin_run first")
            info = runs[run]
            if all(s.file != shard_path.name for s in info.shards):
                if not _fits_run(header, info):
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
            _write_index(self.path, runs)
            return info

    def write_shard(self, run: str, start: int, results: Sequence[ExampleResult], *, dtype: str = "float16",
                    codec_name: str | None = None) -> RunInfo:
        """Write ``results`` as the shard starting at ``start`` and commit it to the index."""
        path = shard_dir(self.path, run) / shard_file_name(start, len(results))
        write_shard_file(path, run, start, results, dtype=dtype, codec_name=codec_name)
        return self.commit_shard(run, path)

    def update_meta(self, run: str, **values: Any) -> None:
        """Merge ``values`` into a run's metadata."""
        with self._locked() as runs:
            if run not in runs:
                raise UnknownRunError(f"run {run!r} is not in {self.path}")
            runs[run].meta.update(values)
            _write_index(self.path, runs)

    def drop_shards(self, run: str, files: Sequence[str]) -> None:
        """Remove shards from a run's index (their examples will be recomputed by the next precompute)."""
        with self._locked() as runs:
            if run not in runs:
                raise UnknownRunError(f"run {run!r} is not in {self.path}")
            runs[run].shards = [s for s in runs[run].shards if s.file not in set(files)]
            _write_index(self.path, runs)

    def delete_run(self, run: str) -> None:
        """Remove a run from the index (its shard files are removed afterwards)."""
        with self._locked() as runs:
            if run not in runs:
                raise UnknownRunError(f"run {run!r} is not in {self.path}")
            del runs[run]
            _write_index(self.path, runs)
        folder = shard_dir(self.path, run)
        if folder.exists():
            for entry in folder.iterdir():
                entry.unlink()
            folder.rmdir()


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


@dataclass
class ExampleTable:
    """Per-example columns of a run, in input order (row i = example i)."""

    input_index: np.ndarray
    text: list[str]
    target_text: list[str]
    label: list[str]
    truncated: np.ndarray
    n_tokens: np.ndarray
    n_target_tokens: np.ndarray
    meta: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.input_index.shape[0])

    def meta_fields(self) -> list[str]:
        """Names of metadata fields present in at least one example."""
        names: set[str] = set()
        for m in self.meta:
            names.update(m)
        return sorted(names)

    def meta_column(self, name: str) -> list[Any]:
        """One metadata field as a column (None where an example lacks it)."""
        return [m.get(name) for m in self.meta]


def _read_guard(method):  # noqa: ANN001, ANN202 - decorator
    """Turn a low-level read failure (a damaged chunk, a vanished file) into a one-line StoreError."""

    @functools.wraps(method)
    def wrapper(self: StoreReader, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise StoreError(f"cannot read {method.__name__} from {self.path.name} ({_short(exc)}): the store may "
                             f"be damaged; run 'attnviz verify --store {self.path}'") from exc

    return wrapper


class StoreReader:
    """Read-only, lazy access to a store: reads only the slices asked for. Never imports torch.

    Example indices ``i`` are positions among the run's committed examples in input order (for a finished run,
    the input index). Call :meth:`refresh` to see shards committed since the reader opened.
    """

    def __init__(self, path: str | os.PathLike, *, max_open_files: int = 32, metric_cache: int = 16) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._files: OrderedDict[Path, h5py.File] = OrderedDict()
        self._max_open = max_open_files
        self._metric_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._metric_cache_size = metric_cache
        self._tables: dict[tuple[str, int], ExampleTable] = {}
        self._stamp: tuple[int, int] | None = None
        self._runs: dict[str, RunInfo] = {}
        self.refresh(force=True)

    # ---- index ------------------------------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the index if it changed on disk; return True if it did."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError as exc:
                raise NotAStoreError(f"store {self.path} does not exist (moved or deleted?)") from exc
            stamp = (st.st_ino, st.st_mtime_ns)
            if not force and stamp == self._stamp:
                return False
            runs = _read_index(self.path)
            if not force:
                for name, info in runs.items():
                    old = self._runs.get(name)
                    if old is None or [s.file for s in old.shards] != [s.file for s in info.shards]:
                        self._drop_caches(name)
                for name in set(self._runs) - set(runs):
                    self._drop_caches(name)
            self._runs, self._stamp = runs, stamp
            return True

    def _drop_caches(self, run: str) -> None:
        for key in [k for k in self._metric_cache if k[0] == run]:
            del self._metric_cache[key]
        for key in [k for k in self._tables if k[0] == run]:
            del self._tables[key]

    def runs(self) -> list[str]:
        """Names of the runs in the store."""
        return sorted(self._runs)

    def run_info(self, run: str) -> RunInfo:
        """Metadata and shard list of a run."""
        try:
            return self._runs[run]
        except KeyError:
            known = ", ".join(sorted(self._runs)) or "none"
            raise UnknownRunError(f"run {run!r} is not in {self.path} (runs: {known})") from None

    def num_examples(self, run: str) -> int:
        """Number of committed examples of a run."""
        return self.run_info(run).num_examples

    # ---- shards -----------------------------------------------------------------------------------------
    def _file(self, run: str, entry: ShardEntry) -> h5py.File:
        path = shard_dir(self.path, run) / entry.file
        with self._lock:
            f = self._files.get(path)
            if f is not None and f.id.valid:
                self._files.move_to_end(path)
                return f
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise shard_problem(self.path, run, entry.file, exc) from exc
            self._files[path] = f
            while len(self._files) > self._max_open:
                _, old = self._files.popitem(last=False)
                old.close()
            return f

    def _locate(self, run: str, i: int) -> tuple[h5py.File, int]:
        info = self.run_info(run)
        n = info.num_examples
        if not isinstance(i, int | np.integer) or not 0 <= int(i) < n:
            raise ExampleOutOfRangeError(f"example {i} is out of range for run {run!r} (0..{n - 1})")
        starts = np.cumsum([0] + [s.count for s in info.shards])
        k = bisect.bisect_right(starts, int(i)) - 1
        return self._file(run, info.shards[k]), int(i) - int(starts[k])

    def _require_kind(self, run: str, kind: str) -> None:
        if kind not in ATTENTION_KINDS:
            raise StoreError(f"unknown attention kind {kind!r}: use one of {', '.join(ATTENTION_KINDS)}")
        if kind not in self.run_info(run).kinds:
            raise MissingCaptureError(
                f"run {run!r} has no {kind!r} attention (it has {', '.join(self.run_info(run).kinds)})")

    # ---- per example ------------------------------------------------------------------------------------
    @_read_guard
    def tokens(self, run: str, i: int, side: str = "source") -> list[str]:
        """Token strings of example ``i`` (``side`` = "source" or "target")."""
        f, j = self._locate(run, i)
        g = self._token_group(run, f, side)
        lo, hi = g["offsets"][j:j + 2]
        return [s.decode() if isinstance(s, bytes) else s for s in g["strings"][lo:hi]]

    @_read_guard
    def token_ids(self, run: str, i: int, side: str = "source") -> np.ndarray:
        """Token ids of example ``i``."""
        f, j = self._locate(run, i)
        g = self._token_group(run, f, side)
        lo, hi = g["offsets"][j:j + 2]
        return g["ids"][lo:hi]

    @_read_guard
    def token_flags(self, run: str, i: int, side: str = "source") -> np.ndarray:
        """Token class bit flags (``attnviz.pipeline.token_classes``) of example ``i``."""
        f, j = self._locate(run, i)
        g = self._token_group(run, f, side)
        lo, hi = g["offsets"][j:j + 2]
        return g["flags"][lo:hi]

    def _token_group(self, run: str, f: h5py.File, side: str) -> h5py.Group:
        if side not in ("source", "target"):
            raise StoreError(f"unknown token side {side!r}: use 'source' or 'target'")
        if f"tokens/{side}" not in f:
            raise MissingCaptureError(f"run {run!r} has no {side} tokens (not an encoder-decoder run)")
        return f[f"tokens/{side}"]

    def _lengths(self, f: h5py.File, j: int, kind: str) -> tuple[int, int]:
        q_side, k_side = KIND_SIDES[kind]
        q_off = f[f"tokens/{q_side}/offsets"][j:j + 2]
        k_off = f[f"tokens/{k_side}/offsets"][j:j + 2]
        return int(q_off[1] - q_off[0]), int(k_off[1] - k_off[0])

    @_read_guard
    def attention(self, run: str, i: int, layer: int | None = None, head: int | None = None,
                  kind: str = "self") -> np.ndarray:
        """Attention weights of example ``i`` as float32.

        Shapes: both None → [L, H, Tq, Tk]; layer only → [H, Tq, Tk]; head only → [L, Tq, Tk]; both → [Tq, Tk].
        Only the requested slice is read from disk.
        """
        self._require_kind(run, kind)
        f, j = self._locate(run, i)
        g = f[f"attention/{kind}"]
        n_layers, n_heads = int(g.attrs["layers"]), int(g.attrs["heads"])
        _check_index("layer", layer, n_layers)
        _check_index("head", head, n_heads)
        tq, tk = self._lengths(f, j, kind)
        base = int(g["data_offsets"][j])
        block = tq * tk
        data = g["data"]
        if layer is not None and head is not None:
            lo = base + (layer * n_heads + head) * block
            return data[lo:lo + block].astype(np.float32).reshape(tq, tk)
        if layer is not None:
            lo = base + layer * n_heads * block
            return data[lo:lo + n_heads * block].astype(np.float32).reshape(n_heads, tq, tk)
        full = data[base:base + n_layers * n_heads * block].astype(np.float32).reshape(n_layers, n_heads, tq, tk)
        return full[:, head] if head is not None else full

    @_read_guard
    def qkv(self, run: str, i: int, layer: int, head: int, kind: str = "self"
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query, key and value vectors ``[T, d]`` (float32) of one head; raises MissingCaptureError."""
        self._require_kind(run, kind)
        f, j = self._locate(run, i)
        if f"qkv/{kind}" not in f:
            raise MissingCaptureError(f"run {run!r} did not capture Q/K/V: rerun precompute with --capture "
                                      "attention,qkv")
        g = f[f"qkv/{kind}"]
        n_layers, n_heads = self.run_info(run).shape[kind]
        _check_index("layer", layer, n_layers)
        _check_index("head", head, n_heads)
        d = int(g.attrs["head_dim"])
        tq, tk = self._lengths(f, j, kind)
        out = []
        for letter, t in (("q", tq), ("k", tk), ("v", tk)):
            base = int(g[f"{letter}_offsets"][j])
            lo = base + (layer * n_heads + head) * t * d
            out.append(g[letter][lo:lo + t * d].astype(np.float32).reshape(t, d))
        return out[0], out[1], out[2]

    @_read_guard
    def hidden(self, run: str, i: int, side: str = "source") -> np.ndarray:
        """Hidden states ``[L+1, T, D]`` (embedding output first) of one side; raises MissingCaptureError."""
        f, j = self._locate(run, i)
        if f"hidden/{side}" not in f:
            raise MissingCaptureError(f"run {run!r} did not capture hidden states: rerun precompute with "
                                      "--capture attention,hidden")
        g = f[f"hidden/{side}"]
        lo, hi = (int(x) for x in g["data_offsets"][j:j + 2])
        d = int(g.attrs["hidden_size"])
        t = len(self.token_ids(run, i, side))
        return g["data"][lo:hi].astype(np.float32).reshape(-1, t, d)

    @_read_guard
    def embeddings(self, run: str, i: int, side: str = "source") -> tuple[np.ndarray, np.ndarray]:
        """Input and output embeddings ``([T, D], [T, D])`` of one side; raises MissingCaptureError."""
        f, j = self._locate(run, i)
        if f"embeddings/{side}" not in f:
            raise MissingCaptureError(f"run {run!r} did not capture embeddings: rerun precompute with "
                                      "--capture attention,embeddings")
        g = f[f"embeddings/{side}"]
        d = int(g.attrs["hidden_size"])
        out = []
        for name in ("input", "output"):
            lo, hi = (int(x) for x in g[f"{name}_offsets"][j:j + 2])
            out.append(g[name][lo:hi].astype(np.float32).reshape(-1, d))
        return out[0], out[1]

    @_read_guard
    def has_capture(self, run: str, what: str, kind_or_side: str = "self") -> bool:
        """Whether the run stored ``what`` ("qkv", "hidden", "embeddings") for a kind (qkv) or side."""
        info = self.run_info(run)
        if info.num_examples == 0:
            return False
        f = self._file(run, info.shards[0])
        key = kind_or_side if what == "qkv" else (SIDE_OF_KIND.get(kind_or_side, kind_or_side))
        return f"{what}/{key}" in f

    # ---- corpus -----------------------------------------------------------------------------------------
    def metric_names(self, run: str, kind: str = "self") -> list[str]:
        """Metric names stored for a kind of attention."""
        self._require_kind(run, kind)
        return run_meta(self.run_info(run).meta).metrics_of(kind)

    @_read_guard
    def metrics(self, run: str, name: str, kind: str = "self") -> np.ndarray:
        """One metric for every committed example: ``[N, L, H]`` float32 (cached; read-only array)."""
        self._require_kind(run, kind)
        if name not in self.metric_names(run, kind):
            raise StoreError(f"run {run!r} has no metric {name!r} (has: {', '.join(self.metric_names(run, kind))})")
        info = self.run_info(run)
        key = (run, kind, name, len(info.shards), info.num_examples)
        with self._lock:
            cached = self._metric_cache.get(key)
            if cached is not None:
                self._metric_cache.move_to_end(key)
                return cached
        layers, heads = info.shape[kind]
        out = np.empty((info.num_examples, layers, heads), dtype=np.float32)
        pos = 0
        for entry in info.shards:
            ds = self._file(run, entry)[f"metrics/{kind}/{name}"]
            ds.read_direct(out, dest_sel=np.s_[pos:pos + entry.count])
            pos += entry.count
        out.flags.writeable = False
        with self._lock:
            self._metric_cache[key] = out
            while len(self._metric_cache) > self._metric_cache_size:
                self._metric_cache.popitem(last=False)
        return out

    @_read_guard
    def examples(self, run: str) -> ExampleTable:
        """Per-example columns (text, lengths, truncation, label, metadata) of all committed examples."""
        info = self.run_info(run)
        key = (run, len(info.shards))
        with self._lock:
            if key in self._tables:
                return self._tables[key]
        cols: dict[str, list] = {k: [] for k in ("input_index", "text", "target_text", "label", "truncated",
                                                 "n_tokens", "n_target_tokens", "meta")}
        for entry in info.shards:
            f = self._file(run, entry)
            ex = f["example"]
            cols["input_index"].append(ex["input_index"][()])
            cols["truncated"].append(ex["truncated"][()])
            for name in ("text", "target_text", "label"):
                cols[name].extend(s.decode() if isinstance(s, bytes) else s for s in ex[name][()])
            cols["meta"].extend(json.loads(s) for s in ex["meta_json"][()])
            cols["n_tokens"].append(np.diff(f["tokens/source/offsets"][()]))
            if "tokens/target" in f:
                cols["n_target_tokens"].append(np.diff(f["tokens/target/offsets"][()]))
            else:
                cols["n_target_tokens"].append(np.zeros(entry.count, dtype=np.int64))

        def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        table = ExampleTable(
            input_index=cat(cols["input_index"], np.int64), text=cols["text"], target_text=cols["target_text"],
            label=cols["label"], truncated=cat(cols["truncated"], bool), n_tokens=cat(cols["n_tokens"], np.int64),
            n_target_tokens=cat(cols["n_target_tokens"], np.int64), meta=cols["meta"],
        )
        with self._lock:
            self._tables[key] = table
        return table

    def close(self) -> None:
        """Close every open shard file."""
        with self._lock:
            for f in self._files.values():
                with contextlib.suppress(Exception):
                    f.close()
            self._files.clear()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_index(what: str, value: int | None, size: int) -> None:
    if value is not None and not (isinstance(value, int | np.integer) and 0 <= int(value) < size):
        raise StoreError(f"{what} {value} is out of range (0..{size - 1})")


def now_iso() -> str:
    """Current UTC time as ISO 8601 (for run metadata)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read_dataset(_name: str, obj: h5py.HLObject) -> None:
    """visititems callback reading a whole dataset (returns None so the visit goes on)."""
    if isinstance(obj, h5py.Dataset):
        obj[()]


@dataclass
class StoreCheck:
    """What :func:`verify_store` found: ``problems`` (damage: the store's content would be wrong or unreadable)
    and ``incomplete`` (examples a run planned but has not committed yet: rerun its precompute)."""

    problems: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def _check_shard_content(file: Path, run: str, entry: ShardEntry, info: RunInfo) -> np.ndarray:
    """Read every dataset of one shard and check it against its index entry; return its input indices."""
    with h5py.File(file, "r") as f:
        f.visititems(_read_dataset)
        if int(f.attrs["count"]) != entry.count or int(f.attrs["start"]) != entry.start:
            raise StoreError(f"example range {int(f.attrs['start'])}+{int(f.attrs['count'])} differs from the "
                             f"index ({entry.start}+{entry.count})")
        fingerprint = f.attrs.get("fingerprint")
        header = ShardHeader(entry.start, entry.count, None if fingerprint is None else str(fingerprint))
        if not _fits_run(header, info):
            raise StoreError("written with another configuration than the run")
        indices = f["example/input_index"][()].astype(np.int64)
    if not np.array_equal(indices, np.arange(entry.start, entry.start + entry.count)):
        raise StoreError(f"duplicated or misplaced example indices (expected {entry.start}..."
                         f"{entry.start + entry.count - 1})")
    return indices


def _keep_disjoint(shards: Sequence[ShardEntry]) -> list[ShardEntry]:
    """A largest-first set of shards that do not overlap (the shards an overlap repair keeps)."""
    kept: list[ShardEntry] = []
    for entry in sorted(shards, key=lambda e: (e.start, -e.count)):
        if not kept or entry.start >= kept[-1].start + kept[-1].count:
            kept.append(entry)
    return kept


def verify_store(path: str | os.PathLike, *, repair: bool = False) -> StoreCheck:
    """Read every dataset of every shard and check that each run lists every example once.

    Problems: an unreadable or damaged shard, a shard whose range, configuration or example indices differ
    from the index, shards that overlap (an example listed twice), and a run with no shard. With ``repair``:
    damaged shards are dropped from the index and renamed ``*.damaged`` (the same precompute command then
    recomputes exactly them), of overlapping shards the largest are kept and the rest dropped and renamed
    ``*.dropped``, and runs without any shard are removed.
    """
    path = Path(path)
    check = StoreCheck()
    runs = _read_index(path)
    for run, info in runs.items():
        if not info.shards:
            check.problems.append(f"run {run!r} has no shard (a precompute that failed before its first shard): "
                                  "rerun it, or --repair removes the run")
            if repair:
                StoreWriter(path).delete_run(run)
            continue
        damaged: list[str] = []
        for entry in info.shards:
            try:
                _check_shard_content(shard_dir(path, run) / entry.file, run, entry, info)
            except (OSError, KeyError, RuntimeError, StoreError) as exc:
                check.problems.append(f"run {run!r}: shard {entry.file}: {_short(exc)}")
                damaged.append(entry.file)
        healthy = [e for e in info.shards if e.file not in damaged]
        kept = _keep_disjoint(healthy)
        redundant = [e.file for e in healthy if e not in kept]
        for a, b in overlapping_shards(healthy):
            check.problems.append(f"run {run!r}: shards {a.file} and {b.file} overlap (examples "
                                  f"{max(a.start, b.start)}..{min(a.start + a.count, b.start + b.count) - 1} "
                                  "listed twice)")
        planned = int(info.meta.get("planned_examples") or 0)
        for lo, hi in missing_ranges(kept, max(planned, max(e.start + e.count for e in kept) if kept else 0)):
            check.incomplete.append(f"run {run!r}: examples {lo}..{hi - 1} not computed yet: rerun its precompute")
        if repair and (damaged or redundant):
            StoreWriter(path).drop_shards(run, [*damaged, *redundant])
            for names, suffix in ((damaged, ".damaged"), (redundant, ".dropped")):
                for name in names:
                    file = shard_dir(path, run) / name
                    if file.exists():
                        os.replace(file, file.with_name(name + suffix))
    return check
