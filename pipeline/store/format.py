"""The store's format: schema version, names, errors, codecs, mantissa rounding, one-line messages.

Layout (documented in ``docs/store-format.md``)::

    STORE.h5                      index: schema version, runs, each run's metadata and its list of shards
    STORE.h5.d/<run>/shard-<start>-<count>.h5   one file per committed block of examples
    STORE.h5.d/<run>/analysis.h5  cached corpus aggregates of a run (``attnviz analyze``)

Inside a shard, ragged per-example tensors are stored flat (examples back to back in one 1-D dataset) with an
``offsets[n+1]`` index, compressed with a fast hdf5plugin codec; per-head metrics are ``[n, L, H]`` float32.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

# Blosc2 compresses and decompresses each chunk with one thread unless told otherwise: its default (one per core)
# starts and joins threads for every 128 KB chunk, which made a shard file's attention 2.3-3.4x slower to
# compress (0.10-0.15 s against 0.04 s for 256 Bible verses on 2 cores) and only competes with the model's own
# threads. The Blosc2 filter reads the variable on every call; a value the user set is kept.
os.environ.setdefault("BLOSC_NTHREADS", "1")

FORMAT_NAME = "attnviz-store"
SHARD_FORMAT_NAME = FORMAT_NAME + "-shard"
SCHEMA_VERSION = 1
SHARD_DIR_SUFFIX = ".d"
CHUNK_ELEMENTS = 1 << 16
STRING_DTYPE = h5py.string_dtype("utf-8")
#: The h5py this process writes with (recorded in every run's metadata).
H5PY_VERSION: str = h5py.__version__
SHARD_NAME = re.compile(r"^shard-(\d{10})-(\d{8})\.h5$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

#: The cached aggregates of a run (``STORE.h5.d/<run>/analysis.h5``).
ANALYSIS_FILE = "analysis.h5"
ANALYSIS_FORMAT = "attnviz-analysis"
ANALYSIS_VERSION = 1


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


class NotKeptError(MissingCaptureError):
    """The example's raw tensors were not kept (``--attention``): it has metrics and tokens only."""


class RunMismatchError(StoreError):
    """Writing to an existing run with a different model or configuration."""


#: What a read of a shard raises when the file is missing, not HDF5, damaged, or lacks a dataset.
SHARD_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type's name."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def shard_problem(store: str | os.PathLike, run: str, file: str, exc: BaseException) -> StoreError:
    """The one-line error for a committed shard that is missing or cannot be read, with the repair to run."""
    what = "is missing (store altered?)" if isinstance(exc, FileNotFoundError) else f"is damaged ({one_line(exc)})"
    return StoreError(f"shard {file} of run {run!r} {what}: run 'attnviz verify --store {os.fspath(store)} "
                      "--repair', then rerun the precompute")


# --------------------------------------------------------------------------------------------------------
# Names on disk
# --------------------------------------------------------------------------------------------------------


def shard_dir(store_path: str | os.PathLike, run: str) -> Path:
    """Folder that holds a run's shard files."""
    return Path(f"{os.fspath(store_path)}{SHARD_DIR_SUFFIX}") / run


def shard_file_name(start: int, count: int) -> str:
    """File name of the shard holding input examples ``start .. start+count-1``."""
    return f"shard-{start:010d}-{count:08d}.h5"


def analysis_path(store: str | os.PathLike, run: str) -> Path:
    """Where a run's cached aggregates live."""
    return shard_dir(store, run) / ANALYSIS_FILE


def store_size(store: str | os.PathLike) -> int:
    """Bytes on disk of the index file and all shard files."""
    total = Path(store).stat().st_size if Path(store).exists() else 0
    folder = Path(f"{os.fspath(store)}{SHARD_DIR_SUFFIX}")
    if folder.exists():
        total += sum(p.stat().st_size for p in folder.rglob("*.h5"))
    return total


def check_run_name(run: str) -> str:
    """Return ``run`` if it is a safe run name (letters, digits, ``._+-``), else raise StoreError."""
    if not _RUN_NAME.match(run or ""):
        raise StoreError(f"invalid run name {run!r}: use letters, digits, '.', '_', '+', '-' (max 128 chars)")
    return run


def now_iso() -> str:
    """Current UTC time as ISO 8601 (for run metadata)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------------------------------------
# Codecs and rounding
# --------------------------------------------------------------------------------------------------------

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
    raw: Any
    drop = total - bits
    exponent_mask = wide(((1 << (8 * values.itemsize - 1 - total)) - 1) << total)
    raw = values.view(uint).astype(wide)
    keep = ~wide((1 << drop) - 1)
    rounded = (raw + wide(1 << (drop - 1))) & keep
    special = (raw & exponent_mask) == exponent_mask  # inf / NaN: unchanged
    overflow = (rounded & exponent_mask) == exponent_mask  # rounded up to inf: truncate instead
    out = np.where(special, raw, np.where(overflow, raw & keep, rounded))
    return out.astype(uint).view(values.dtype)
