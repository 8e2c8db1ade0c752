"""Reading a run's shard files for corpus analysis, and the cached aggregates file ``analysis.h5``.

* Corpus views read only small per-example columns (:func:`read_columns`) and per-head metric arrays
  (:func:`read_metric_rows`, :func:`read_group_sums`), never raw attention; :func:`read_texts` reads a few texts.
* Scans of raw attention (:mod:`attnviz.pipeline.scan`) read it one shard at a time through
  :func:`iter_attention`.
* Every shard is opened through :func:`~attnviz.pipeline.store.reader.open_shard`: a missing or damaged shard, or
  one that lacks a dataset, is a one-line :class:`~attnviz.pipeline.store.format.StoreError` naming the shard and
  the repair (as for :class:`~attnviz.pipeline.store.reader.StoreReader`).
* :func:`write_analysis` / :func:`load_analysis` store cached aggregates beside the run's shards as
  ``STORE.h5.d/<run>/analysis.h5`` (built in memory, written to a temporary name, fsynced, ``os.replace``).

No torch here.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from attnviz.pipeline.records import KIND_SIDES
from attnviz.pipeline.statistics.aggregates import Groups, group_sums
from attnviz.pipeline.statistics.filters import (
    MAX_FIELD_VALUES,
    MISSING,
    Categorical,
    ExampleColumns,
    text_key,
    value_text,
)
from attnviz.pipeline.store.atomic import write_h5_atomically
from attnviz.pipeline.store.format import (
    ANALYSIS_FILE,
    ANALYSIS_FORMAT,
    ANALYSIS_VERSION,
    STRING_DTYPE,
    StoreError,
    analysis_path,
    now_iso,
    one_line,
)
from attnviz.pipeline.store.index import RunInfo, ShardEntry
from attnviz.pipeline.store.meta import run_meta
from attnviz.pipeline.store.reader import open_shard


def _decode(values: Sequence[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


# --------------------------------------------------------------------------------------------------------
# Columns, metrics and texts
# --------------------------------------------------------------------------------------------------------


def read_columns(store: str | os.PathLike, info: RunInfo) -> ExampleColumns:
    """The filter/pairing columns of every committed example of a run, read shard by shard.

    Texts are reduced to 64-bit keys and metadata to small integer codes as each shard is read, so memory
    stays proportional to a few numbers per example (never all texts or metadata dicts at once). A field is
    dropped as soon as it has more than :data:`~attnviz.pipeline.statistics.filters.MAX_FIELD_VALUES` distinct
    values.
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("input_index", "n_tokens", "truncated", "key")}
    coders: dict[str, dict[str, int]] = {}
    codes: dict[str, list[np.ndarray]] = {}
    dropped: set[str] = set()
    seen = 0
    for entry in info.shards:
        with open_shard(store, info.name, entry) as f:
            ex = f["example"]
            count = int(ex["input_index"].shape[0])
            parts["input_index"].append(ex["input_index"][()].astype(np.int64))
            parts["truncated"].append(ex["truncated"][()].astype(bool))
            parts["n_tokens"].append(np.diff(f["tokens/source/offsets"][()]).astype(np.int64))
            texts, targets = _decode(ex["text"][()]), _decode(ex["target_text"][()])
            parts["key"].append(np.fromiter((text_key(t, g) for t, g in zip(texts, targets, strict=True)),
                                            dtype=np.uint64, count=count))
            labels = _decode(ex["label"][()])
            metas = [json.loads(m) for m in ex["meta_json"][()]]
        columns = {name: [value_text(m.get(name)) for m in metas] for name in {k for m in metas for k in m}}
        if any(labels) or "label" in coders:
            columns["label"] = [x if x != "" else MISSING for x in labels]
        for name in set(coders) - set(columns) - dropped:  # a field absent from this whole shard
            columns[name] = [MISSING] * count
        for name, values in columns.items():
            if name in dropped:
                continue
            if name not in coders:  # first seen here: earlier examples do not have it
                coders[name] = {MISSING: 0} if seen else {}
                codes[name] = [np.zeros(seen, dtype=np.int32)] if seen else []
            coder = coders[name]
            codes[name].append(np.fromiter((coder.setdefault(v, len(coder)) for v in values), dtype=np.int32,
                                           count=count))
            if len(coder) > MAX_FIELD_VALUES:
                dropped.add(name)
                del coders[name], codes[name]
        seen += count
    fields = {}
    for name, coder in coders.items():
        values = sorted(coder, key=coder.__getitem__)
        order = np.argsort(values)  # store the values sorted, as ExampleColumns.build does
        remap = np.empty(len(values), dtype=np.int32)
        remap[order] = np.arange(len(values), dtype=np.int32)
        fields[name] = Categorical(codes=remap[np.concatenate(codes[name])] if codes[name] else
                                   np.zeros(0, np.int32), values=tuple(values[j] for j in order))
    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[name]).astype(dtype) if parts[name] else np.zeros(0, dtype)

    return ExampleColumns(input_index=cat("input_index", np.int64), n_tokens=cat("n_tokens", np.int64),
                          truncated=cat("truncated", bool), key=cat("key", np.uint64), fields=dict(sorted(
                              fields.items())))


def read_metric_rows(store: str | os.PathLike, info: RunInfo, kind: str, name: str) -> np.ndarray:
    """One metric of every committed example in head-major layout: ``[L*H, N]`` float32 (row ``l*H + h``)."""
    if name not in run_meta(info.meta).metrics_of(kind):
        raise StoreError(f"run {info.name!r} has no {kind!r} metric {name!r}")
    n_layers, n_heads = info.shape[kind]
    return _fill_rows(np.empty((n_layers * n_heads, info.num_examples), dtype=np.float32), store, info, kind,
                      name)


def _fill_rows(out: np.ndarray, store: str | os.PathLike, info: RunInfo, kind: str, name: str) -> np.ndarray:
    """Read one metric of every example into ``out`` ``[L*H, N]`` (transposed shard by shard)."""
    pos = 0
    for entry in info.shards:
        with open_shard(store, info.name, entry) as f:
            block = f[f"metrics/{kind}/{name}"][()]
            rows = block.reshape(entry.count, -1).T  # a block of another shape is damage too
        out[:, pos:pos + entry.count] = rows
        pos += entry.count
    return out


def read_group_sums(store: str | os.PathLike, info: RunInfo, kind: str, names: Sequence[str], groups: Groups
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-group sums and counts (:func:`~attnviz.pipeline.statistics.aggregates.group_sums`) of several
    metrics, reading one metric at a time into one reused buffer."""
    n_layers, n_heads = info.shape[kind]
    buf = np.empty((n_layers * n_heads, info.num_examples), dtype=np.float32)
    return {name: group_sums(_fill_rows(buf, store, info, kind, name), groups) for name in names}


def read_texts(store: str | os.PathLike, info: RunInfo, indices: Sequence[int]) -> list[str]:
    """The texts of a few examples (positions in the run), opening each shard involved once."""
    starts = np.cumsum([0] + [s.count for s in info.shards])
    shard_of = {int(i): int(np.searchsorted(starts, int(i), side="right")) - 1 for i in indices}
    texts: dict[int, str] = {}
    for k in sorted(set(shard_of.values())):
        with open_shard(store, info.name, info.shards[k]) as f:
            ds = f["example/text"]
            for i in (i for i, s in shard_of.items() if s == k):
                value = ds[i - int(starts[k])]
                texts[i] = value.decode() if isinstance(value, bytes) else str(value)
    return [texts[int(i)] for i in indices]


# --------------------------------------------------------------------------------------------------------
# Raw attention, for scans
# --------------------------------------------------------------------------------------------------------


def iter_attention(store: str | os.PathLike, run: str, entry: ShardEntry, kinds: Sequence[str]
                   ) -> Iterator[tuple[str, int, np.ndarray]]:
    """The attention of every example of one shard that kept it (``--attention``), kind by kind:
    ``(kind, j, [L, H, Tq, Tk] float32)`` with ``j`` the example's position in the shard. The shard is opened once
    and each kind's data read whole."""
    with open_shard(store, run, entry) as f:
        kept = f["example/kept"][()].astype(bool) if "example/kept" in f else np.ones(entry.count, dtype=bool)
        for kind in kinds:
            g = f[f"attention/{kind}"]
            n_layers, n_heads = int(g.attrs["layers"]), int(g.attrs["heads"])
            q_side, k_side = KIND_SIDES[kind]
            q_len = np.diff(f[f"tokens/{q_side}/offsets"][()])
            k_len = np.diff(f[f"tokens/{k_side}/offsets"][()])
            offsets = g["data_offsets"][()]
            data = g["data"][()]
            for j in np.flatnonzero(kept).tolist():
                tq, tk = int(q_len[j]), int(k_len[j])
                yield kind, j, data[offsets[j]:offsets[j + 1]].astype(np.float32).reshape(n_layers, n_heads, tq, tk)


# --------------------------------------------------------------------------------------------------------
# The cached aggregates file (STORE.h5.d/<run>/analysis.h5)
# --------------------------------------------------------------------------------------------------------


@dataclass
class KindAnalysis:
    """Cached aggregates of one attention kind of a run."""

    kind: str
    layers: int
    heads: int
    similarity: np.ndarray | None = None  #: [C, C] mean Jensen–Shannon distance between heads
    order: np.ndarray | None = None  #: [C] clustered order of the heads (row l*H + h)
    similarity_examples: int = 0
    relpos: np.ndarray | None = None  #: [C, 2k+1] mean attention by offset −k..k
    relpos_counts: np.ndarray | None = None  #: [2k+1] queries that had each offset
    max_offset: int = 0
    #: metric -> per-group (sums [G, C] float64, counts [G, C] int64) over the groups of ``Analysis.columns``
    group_sums: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class Analysis:
    """The cached aggregates of a run, and the shards they were computed from."""

    run: str
    shards: list[str]
    n_examples: int
    created: str
    kinds: dict[str, KindAnalysis] = field(default_factory=dict)
    columns: ExampleColumns | None = None  #: the run's filter/pairing columns (saves re-reading metadata)

    def is_stale(self, info: RunInfo) -> bool:
        """True when the run's shards changed since the aggregates were computed."""
        return self.shards != [s.file for s in info.shards]


def write_analysis(store: str | os.PathLike, analysis: Analysis) -> Path:
    """Write ``analysis`` atomically (built in memory, temporary file, fsync, ``os.replace``); return its path."""
    path = analysis_path(store, analysis.run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{ANALYSIS_FILE}.partial-{os.getpid()}-{threading.get_ident()}")
    write_h5_atomically(path, lambda f: _fill_analysis(f, analysis), tmp=tmp)
    return path


def _fill_analysis(f: h5py.File, analysis: Analysis) -> None:
    f.attrs["format"] = ANALYSIS_FORMAT
    f.attrs["version"] = ANALYSIS_VERSION
    f.attrs["run"] = analysis.run
    f.attrs["n_examples"] = analysis.n_examples
    f.attrs["created"] = analysis.created or now_iso()
    f.attrs["shards_json"] = json.dumps(analysis.shards)
    for kind, ka in analysis.kinds.items():
        g = f.create_group(f"kinds/{kind}")
        g.attrs["layers"], g.attrs["heads"] = ka.layers, ka.heads
        g.attrs["similarity_examples"] = ka.similarity_examples
        g.attrs["max_offset"] = ka.max_offset
        for name in ("similarity", "order", "relpos", "relpos_counts"):
            value = getattr(ka, name)
            if value is not None:
                g.create_dataset(name, data=value)
        for metric, (sums, counts) in ka.group_sums.items():
            g.create_dataset(f"group_sums/{metric}/sums", data=sums)
            g.create_dataset(f"group_sums/{metric}/counts", data=counts.astype(np.int64))
    if analysis.columns is not None:
        _write_columns(f.create_group("columns"), analysis.columns)


def load_analysis(store: str | os.PathLike, run: str, *, columns: bool = True) -> Analysis | None:
    """A run's cached aggregates, or None when ``attnviz analyze`` has not been run for it.

    ``columns=False`` leaves out the per-example filter columns (``Analysis.columns`` is None: a view that only
    draws head similarity or relative positions need not hold a number per example).
    An unreadable or damaged file (not HDF5, a missing dataset or attribute) is a one-line :class:`StoreError`.
    """
    path = analysis_path(store, run)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{path} is unreadable ({one_line(exc)}): rerun 'attnviz analyze'") from exc
    try:
        with f:
            return _read_analysis(f, path, columns)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise StoreError(f"{path} is damaged ({one_line(exc)}): rerun 'attnviz analyze'") from exc


def _read_analysis(f: h5py.File, path: Path, columns: bool = True) -> Analysis:
    if f.attrs.get("format") != ANALYSIS_FORMAT:
        raise StoreError(f"{path} is not an attnviz analysis file: remove it and rerun 'attnviz analyze'")
    out = Analysis(run=str(f.attrs["run"]), shards=json.loads(f.attrs["shards_json"]),
                   n_examples=int(f.attrs["n_examples"]), created=str(f.attrs["created"]))
    for kind, g in f.get("kinds", {}).items():
        ka = KindAnalysis(kind=kind, layers=int(g.attrs["layers"]), heads=int(g.attrs["heads"]),
                          similarity_examples=int(g.attrs["similarity_examples"]),
                          max_offset=int(g.attrs["max_offset"]))
        for name in ("similarity", "order", "relpos", "relpos_counts"):
            if name in g:
                setattr(ka, name, g[name][()])
        for metric, m in g.get("group_sums", {}).items():
            ka.group_sums[metric] = (m["sums"][()], m["counts"][()])
        out.kinds[kind] = ka
    if columns and "columns" in f:
        out.columns = _read_columns_group(f["columns"])
    return out


def _write_columns(g: h5py.Group, cols: ExampleColumns) -> None:
    for name in ("input_index", "n_tokens", "truncated", "key"):
        g.create_dataset(name, data=getattr(cols, name))
    for name, column in cols.fields.items():
        fg = g.create_group(f"fields/{name}")
        fg.create_dataset("codes", data=column.codes)
        fg.create_dataset("values", data=list(column.values), dtype=STRING_DTYPE)


def _read_columns_group(g: h5py.Group) -> ExampleColumns:
    fields = {name: Categorical(codes=fg["codes"][()], values=tuple(_decode(fg["values"][()])))
              for name, fg in g.get("fields", {}).items()}
    return ExampleColumns(input_index=g["input_index"][()], n_tokens=g["n_tokens"][()],
                          truncated=g["truncated"][()].astype(bool), key=g["key"][()],
                          fields=dict(sorted(fields.items())))
