"""A run's corpus index on disk: what the Corpus tab reads instead of the per-example metric arrays.

Written by ``attnviz analyze`` beside the run's shards, one file per metric so that an interrupted analyze resumes
with the metrics it had not finished (every file is built in memory, written under a temporary name, fsynced and
renamed)::

    STORE.h5.d/<run>/index-columns.h5              the run's filter groups and its test sample
    STORE.h5.d/<run>/index-<kind>-<metric>.h5      one metric's ``MetricIndex`` (statistics.corpus_index)

Each file records the shard list it was computed from and the groups' hash; a file that does not match the run's
shards now (or the columns file's groups) is stale and ignored. Layout: ``docs/store-format.md``. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from attnviz.pipeline.statistics.corpus_index import MetricIndex
from attnviz.pipeline.statistics.filters import ExampleColumns
from attnviz.pipeline.store.atomic import write_h5_atomically
from attnviz.pipeline.store.corpus import _read_columns_group, _write_columns
from attnviz.pipeline.store.format import DEFAULT_CODEC, StoreError, codec, one_line, shard_dir
from attnviz.pipeline.store.index import RunInfo

INDEX_FORMAT = "attnviz-corpus-index"
INDEX_VERSION = 1
COLUMNS_FILE = "index-columns.h5"
#: Parts of a metric index the server may load without the rest (``load_metric_index(parts=...)``).
MOMENTS = ("counts", "sums", "m2")
SUMMARY = (*MOMENTS, "edges", "cells", "top_values", "top_index", "bottom_values", "bottom_index")


def metric_file(kind: str, metric: str) -> str:
    """File name of one metric's index."""
    return f"index-{kind}-{metric}.h5"


def index_path(store: str | os.PathLike, run: str, kind: str | None = None, metric: str | None = None) -> Path:
    """Where a run's index columns (no ``kind``/``metric``) or one metric's index live."""
    name = COLUMNS_FILE if kind is None or metric is None else metric_file(kind, metric)
    return shard_dir(store, run) / name


def groups_hash(of_example: np.ndarray) -> str:
    """A short hash of the examples' group numbers: every metric file of a run must share its columns file's."""
    return hashlib.sha256(np.ascontiguousarray(of_example, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass
class IndexColumns:
    """A run's filter groups (one representative row each: ``statistics.aggregates.Groups`` without the
    per-example numbers) and its test sample (``statistics.corpus_index.hash_sample``)."""

    shards: list[str]
    n_examples: int
    groups_hash: str
    keys: ExampleColumns  #: one row per group: what a filter is evaluated on
    size: np.ndarray  #: [G] int64 examples per group
    sample_index: np.ndarray  #: [S] int64 sampled examples (ascending)
    sample_group: np.ndarray  #: [S] int64 their groups
    sample_key: np.ndarray  #: [S] uint64 their input keys (to pair the samples of two runs)

    def is_stale(self, info: RunInfo) -> bool:
        """Whether the run's shards changed since the index was computed."""
        return self.shards != [s.file for s in info.shards]


def _tmp(path: Path) -> Path:
    # Not a ``*.tmp-*`` name: a resuming precompute removes those from the run's folder.
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{threading.get_ident()}")


def _header(f: h5py.File, run: str, shards: Sequence[str], ghash: str) -> None:
    f.attrs["format"] = INDEX_FORMAT
    f.attrs["version"] = INDEX_VERSION
    f.attrs["run"] = run
    f.attrs["shards_json"] = json.dumps(list(shards))
    f.attrs["groups_hash"] = ghash


def write_index_columns(store: str | os.PathLike, run: str, cols: IndexColumns) -> Path:
    """Write a run's index columns atomically; return the path."""
    path = index_path(store, run)

    def fill(f: h5py.File) -> None:
        _header(f, run, cols.shards, cols.groups_hash)
        f.attrs["n_examples"] = cols.n_examples
        _write_columns(f.create_group("keys"), cols.keys)
        f.create_dataset("size", data=np.asarray(cols.size, np.int64))
        for name in ("sample_index", "sample_group", "sample_key"):
            f.create_dataset(name, data=getattr(cols, name))

    write_h5_atomically(path, fill, tmp=_tmp(path))
    return path


def _open(path: Path) -> h5py.File | None:
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{path} is unreadable ({one_line(exc)}): rerun 'attnviz analyze'") from exc
    if f.attrs.get("format") != INDEX_FORMAT or int(f.attrs.get("version", 0)) != INDEX_VERSION:
        f.close()
        return None  # another version's file: as if absent (analyze rewrites it)
    return f


def load_index_columns(store: str | os.PathLike, run: str) -> IndexColumns | None:
    """A run's index columns, or None when analyze has not written them (a damaged file: one-line StoreError)."""
    path = index_path(store, run)
    f = _open(path)
    if f is None:
        return None
    try:
        with f:
            return IndexColumns(
                shards=json.loads(f.attrs["shards_json"]), n_examples=int(f.attrs["n_examples"]),
                groups_hash=str(f.attrs["groups_hash"]), keys=_read_columns_group(f["keys"]), size=f["size"][()],
                sample_index=f["sample_index"][()], sample_group=f["sample_group"][()],
                sample_key=f["sample_key"][()])
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise StoreError(f"{path} is damaged ({one_line(exc)}): rerun 'attnviz analyze'") from exc


def write_metric_index(store: str | os.PathLike, run: str, kind: str, metric: str, index: MetricIndex,
                       values: Sequence[np.ndarray], *, shards: Sequence[str], ghash: str,
                       shape: tuple[int, int]) -> Path:
    """Write one metric's index (its summary arrays, the sample's values and the stored values, cell after cell)
    atomically; return the path."""
    path = index_path(store, run, kind, metric)

    def fill(f: h5py.File) -> None:
        _header(f, run, shards, ghash)
        f.attrs["kind"], f.attrs["metric"] = kind, metric
        f.attrs["layers"], f.attrs["heads"] = shape
        f.attrs["head_rows"] = index.head_rows
        for name in SUMMARY:
            data = getattr(index, name)
            if name == "cells":  # int32 in memory too; mostly small counts and zeros: compressed
                f.create_dataset(name, data=data.astype(np.int32), chunks=True, **codec(DEFAULT_CODEC))
            else:
                f.create_dataset(name, data=data)
        if index.sample is not None:
            f.create_dataset("sample", data=index.sample)
        flat = np.concatenate(list(values)) if values else np.zeros(0, np.float32)
        f.create_dataset("values", data=flat.astype(np.float32, copy=False))  # contiguous: slices read directly

    write_h5_atomically(path, fill, tmp=_tmp(path))
    return path


@dataclass
class MetricIndexFile:
    """A loaded metric index and what it was computed from."""

    index: MetricIndex
    shards: list[str]
    groups_hash: str
    shape: tuple[int, int]
    path: Path

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (for the server's cache budget)."""
        arrays = [getattr(self.index, name) for name in SUMMARY] + [self.index.sample]
        return sum(int(a.nbytes) for a in arrays if a is not None)

    def fresh(self, info: RunInfo, cols: IndexColumns) -> bool:
        """Whether it matches the run's shards and the columns' groups."""
        return self.shards == [s.file for s in info.shards] and self.groups_hash == cols.groups_hash


def load_metric_index(store: str | os.PathLike, run: str, kind: str, metric: str, *,
                      parts: Sequence[str] = SUMMARY, sample: bool = True) -> MetricIndexFile | None:
    """One metric's index without its stored values (those are read with :func:`read_index_values`); ``parts``
    (default every summary array; :data:`MOMENTS` for the filtered means only) and ``sample`` choose what is read.
    None when absent; a damaged file is a one-line StoreError."""
    path = index_path(store, run, kind, metric)
    f = _open(path)
    if f is None:
        return None
    try:
        with f:
            arrays = {name: f[name][()] if name in parts else np.zeros((0,) * f[name].ndim, dtype=f[name].dtype)
                      for name in SUMMARY}
            index = MetricIndex(**arrays, head_rows=int(f.attrs["head_rows"]),
                                sample=f["sample"][()] if sample and "sample" in f else None)
            return MetricIndexFile(index=index, shards=json.loads(f.attrs["shards_json"]),
                                   groups_hash=str(f.attrs["groups_hash"]),
                                   shape=(int(f.attrs["layers"]), int(f.attrs["heads"])), path=path)
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise StoreError(f"{path} is damaged ({one_line(exc)}): rerun 'attnviz analyze'") from exc


def read_index_values(path: Path, spans: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """The stored values of each ``(lo, hi)`` range of a metric index file (opened once for all of them)."""
    try:
        with h5py.File(path, "r") as f:
            ds = f["values"]
            out = []
            for lo, hi in spans:
                buf = np.empty(hi - lo, dtype=np.float32)
                if hi > lo:
                    ds.read_direct(buf, source_sel=np.s_[lo:hi])
                out.append(buf)
            return out
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise StoreError(f"{path} is unreadable ({one_line(exc)}): rerun 'attnviz analyze'") from exc


__all__ = ["COLUMNS_FILE", "INDEX_FORMAT", "INDEX_VERSION", "MOMENTS", "SUMMARY", "IndexColumns", "MetricIndexFile",
           "groups_hash", "index_path", "load_index_columns", "load_metric_index", "metric_file",
           "read_index_values", "write_index_columns", "write_metric_index"]
