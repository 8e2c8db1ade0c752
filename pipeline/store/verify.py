"""``attnviz verify``: read every dataset of every shard, check each run lists every example once, and repair."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the codecs the tensors are compressed with)
import numpy as np

from attnviz.pipeline.store.format import StoreError, one_line, shard_dir
from attnviz.pipeline.store.index import (
    RunInfo,
    ShardEntry,
    ShardHeader,
    fits_run,
    missing_ranges,
    overlapping_shards,
    read_index,
)
from attnviz.pipeline.store.writer import StoreWriter


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
        if not fits_run(header, info):
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
    runs = read_index(path)
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
                check.problems.append(f"run {run!r}: shard {entry.file}: {one_line(exc)}")
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

