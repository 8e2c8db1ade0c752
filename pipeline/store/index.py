"""The index file (runs, their metadata and shard lists) and what a shard file says about itself.

The index ``STORE.h5`` is rewritten whole, atomically (:func:`~attnviz.pipeline.store.atomic.write_h5_atomically`),
after each change; a shard's header (its run, example range and configuration fingerprint) is what the writer
checks before it adopts or commits a shard and what readers check before they trust one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from attnviz.pipeline.store.atomic import fsync_path, write_h5_atomically
from attnviz.pipeline.store.format import (
    FORMAT_NAME,
    SCHEMA_VERSION,
    SHARD_FORMAT_NAME,
    STRING_DTYPE,
    NotAStoreError,
    SchemaTooNewError,
    StoreError,
    one_line,
)


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
        """Number of committed examples."""
        return sum(s.count for s in self.shards)

    @property
    def kinds(self) -> list[str]:
        """Attention kinds the run stores."""
        return list(self.meta.get("kinds", ["self"]))

    @property
    def shape(self) -> dict[str, tuple[int, int]]:
        """kind -> (layers, heads)."""
        return {k: tuple(v) for k, v in self.meta.get("shape", {}).items()}

    @property
    def capture(self) -> list[str]:
        """What the run captured besides metrics (attention, qkv, hidden, embeddings)."""
        return list(self.meta.get("capture", ["attention"]))

    @property
    def complete(self) -> bool:
        """Whether every planned example is committed."""
        planned = self.meta.get("planned_examples")
        return planned is not None and self.num_examples >= planned


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


# --------------------------------------------------------------------------------------------------------
# The index file
# --------------------------------------------------------------------------------------------------------


def read_index(path: Path) -> dict[str, RunInfo]:
    """The runs an index file lists; a missing, non-HDF5, foreign or newer file is a one-line StoreError."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError as exc:
        raise NotAStoreError(f"store {path} does not exist: run 'attnviz precompute' to create it") from exc
    except OSError as exc:
        raise NotAStoreError(f"{path} is not a readable HDF5 file ({one_line(exc)}): check the path") from exc
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


def write_index(path: Path, runs: dict[str, RunInfo]) -> None:
    """Replace the index file with one listing ``runs`` (atomically; the folder is fsynced after the rename).

    Callers hold the store's lock (:func:`~attnviz.pipeline.store.atomic.exclusive_lock`).
    """
    write_h5_atomically(path, lambda f: _fill_index(f, runs))
    fsync_path(path.parent)


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


# --------------------------------------------------------------------------------------------------------
# Shard headers
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardHeader:
    """What a shard file says about itself: its run, its example range and its run's configuration."""

    start: int
    count: int
    fingerprint: str | None  #: None in shards written before fingerprints were recorded


def shard_header(f: h5py.File, path: Path, run: str) -> ShardHeader:
    """The header of an open shard file, after checking that it is complete and belongs to ``run``."""
    if f.attrs.get("format") != SHARD_FORMAT_NAME or f.attrs.get("run") != run:
        raise StoreError(f"{path} is not a shard of run {run!r}")
    start, count = int(f.attrs["start"]), int(f.attrs["count"])
    if f["example/input_index"].shape[0] != count:
        raise StoreError(f"{path} is incomplete")
    fingerprint = f.attrs.get("fingerprint")
    return ShardHeader(start, count, None if fingerprint is None else str(fingerprint))


def check_shard_file(path: Path, run: str) -> ShardHeader:
    """Open a shard, check that it is complete and belongs to ``run``; return its header."""
    try:
        with h5py.File(path, "r") as f:
            return shard_header(f, path, run)
    except (OSError, KeyError) as exc:
        raise StoreError(f"shard {path.name} of run {run!r} cannot be read ({one_line(exc)})") from exc


def fits_run(header: ShardHeader, info: RunInfo) -> bool:
    """Whether a shard was written with the run's configuration (old shards and runs record none)."""
    expected = info.meta.get("fingerprint")
    return header.fingerprint is None or expected is None or header.fingerprint == expected
