"""Reading a run's shard files for corpus analysis, and dask scans of raw attention.

* Corpus views read only small per-example columns (:func:`read_columns`) and per-head metric arrays
  (:func:`read_metric_rows`, :func:`read_group_sums`), never raw attention.
* :func:`scan_run` scans the raw attention of a run once, one task per shard file (the task opens the file
  itself: h5py objects cannot be pickled), and returns relative-position sums and head-similarity sums.
* Every shard is opened through :func:`attnviz.pipeline.store.open_shard`: a missing or damaged shard, or one that
  lacks a dataset, is a one-line :class:`~attnviz.pipeline.store.StoreError` naming the shard and the repair.
* :func:`write_analysis` / :func:`load_analysis` store those cached aggregates beside the run's shards as
  ``STORE.h5.d/<run>/analysis.h5`` (written to a temporary name, then ``os.replace``).

No torch here; dask is imported only by :func:`scan_run`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the codecs the attention data is compressed with)
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
from attnviz.pipeline.statistics.relpos import relpos_sums
from attnviz.pipeline.statistics.similarity import js_distance
from attnviz.pipeline.store import RunInfo, ShardEntry, StoreError, now_iso, open_shard, shard_dir

ANALYSIS_FILE = "analysis.h5"
ANALYSIS_FORMAT = "attnviz-analysis"
ANALYSIS_VERSION = 1
#: Kinds whose queries and keys index the same tokens (relative positions are defined).
SELF_KINDS = ("self", "decoder")


def shard_paths(store: str | os.PathLike, info: RunInfo) -> list[Path]:
    """Paths of a run's committed shard files, in example order."""
    folder = shard_dir(store, info.name)
    return [folder / s.file for s in info.shards]


def _decode(values: Sequence[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


# --------------------------------------------------------------------------------------------------------
# Columns and metrics
# --------------------------------------------------------------------------------------------------------


def read_columns(store: str | os.PathLike, info: RunInfo) -> ExampleColumns:
    """The filter/pairing columns of every committed example of a run, read shard by shard.

    Texts are reduced to 64-bit keys and metadata to small integer codes as each shard is read, so memory
    stays proportional to a few numbers per example (never all texts or metadata dicts at once). A field
    is dropped as soon as it has more than :data:`attnviz.pipeline.statistics.filters.MAX_FIELD_VALUES` distinct values.
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
        values = sorted(coder, key=coder.get)
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
    if name not in info.meta.get("metrics", {}).get(kind, []):
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
    """Per-group sums and counts (:func:`.aggregates.group_sums`) of several metrics, reading one metric
    at a time into one reused buffer."""
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
# Scans of raw attention
# --------------------------------------------------------------------------------------------------------


@dataclass
class ScanPartial:
    """Sums over some examples of one attention kind (add partials with :meth:`add`)."""

    kind: str
    n_examples: int = 0
    relpos_sums: np.ndarray | None = None  #: [C, 2k+1] float64 (self-attention kinds only)
    relpos_counts: np.ndarray | None = None  #: [2k+1] int64
    js_sum: np.ndarray | None = None  #: [C, C] float64 sum over examples of the per-example distance
    js_examples: int = 0

    def add(self, other: ScanPartial) -> ScanPartial:
        """Sum of two partials of the same kind."""

        def plus(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
            return y if x is None else x if y is None else x + y

        return ScanPartial(self.kind, self.n_examples + other.n_examples,
                           plus(self.relpos_sums, other.relpos_sums),
                           plus(self.relpos_counts, other.relpos_counts),
                           plus(self.js_sum, other.js_sum), self.js_examples + other.js_examples)


def scan_shard(store: str, run: str, entry: ShardEntry, kinds: Sequence[str], max_offset: int,
               similarity_limit: int) -> dict[str, ScanPartial]:
    """Scan one shard file of ``run`` (opened here, so the task pickles as plain arguments).

    For every example and every kind: relative-position sums (:func:`.relpos.relpos_sums`, self
    and decoder attention) and, for the first ``similarity_limit`` examples of the shard, the per-example
    head-similarity matrix (:func:`attnviz.pipeline.statistics.similarity.js_distance`).
    """
    out: dict[str, ScanPartial] = {}
    with open_shard(store, run, entry) as f:
        count = entry.count
        for kind in kinds:
            g = f[f"attention/{kind}"]
            n_layers, n_heads = int(g.attrs["layers"]), int(g.attrs["heads"])
            q_side, k_side = KIND_SIDES[kind]
            q_len = np.diff(f[f"tokens/{q_side}/offsets"][()])
            k_len = np.diff(f[f"tokens/{k_side}/offsets"][()])
            offsets = g["data_offsets"][()]
            data = g["data"][()]
            part = ScanPartial(kind)
            for j in range(count):
                tq, tk = int(q_len[j]), int(k_len[j])
                attn = data[offsets[j]:offsets[j + 1]].astype(np.float32).reshape(n_layers, n_heads, tq, tk)
                if kind in SELF_KINDS and tq > 0:
                    s, c = relpos_sums(attn, max_offset)
                    part = part.add(ScanPartial(kind, 0, s, c))
                if j < similarity_limit and tq > 0:
                    js = js_distance(attn.reshape(-1, tq, tk))
                    part = part.add(ScanPartial(kind, js_sum=js, js_examples=1))
                part.n_examples += 1
            out[kind] = part
    return out


def scan_run(store: str | os.PathLike, info: RunInfo, *, kinds: Sequence[str] | None = None,
             max_offset: int = 16, similarity_examples: int | None = 1000, workers: int | None = None,
             scheduler: str | None = None, client: Any = None,
             progress: Callable[[int, int], None] | None = None) -> dict[str, ScanPartial]:
    """Scan a run's raw attention: one task per shard; returns the summed :class:`ScanPartial` of each kind.

    ``similarity_examples`` limits the head-similarity average to the run's first N examples (None: all).
    Execution: an existing dask ``client``, else a dask scheduler address (``scheduler``), else a
    ``LocalCluster`` of ``workers`` processes; ``workers=0`` runs the tasks in this process (no dask).
    ``progress(done, total)`` is called as shards finish.
    """
    kinds = list(kinds or info.kinds)
    store = os.fspath(store)
    limit = info.num_examples if similarity_examples is None else int(similarity_examples)
    limits, seen = [], 0
    for entry in info.shards:
        limits.append(max(0, min(entry.count, limit - seen)))
        seen += entry.count
    total = len(info.shards)
    results: dict[str, ScanPartial] = {k: ScanPartial(k) for k in kinds}

    def merge(partials: dict[str, ScanPartial]) -> None:
        for k, p in partials.items():
            results[k] = results[k].add(p)

    if progress:
        progress(0, total)
    if workers == 0 and client is None and scheduler is None:
        for done, (entry, lim) in enumerate(zip(info.shards, limits, strict=True), start=1):
            merge(scan_shard(store, info.name, entry, kinds, max_offset, lim))
            if progress:
                progress(done, total)
        return results

    from distributed import Client, LocalCluster, as_completed

    own_cluster = None
    own_client = None
    if client is None:
        if scheduler:
            own_client = client = Client(scheduler)
        else:
            own_cluster = LocalCluster(n_workers=workers or min(4, os.cpu_count() or 1), threads_per_worker=1,
                                       processes=True, dashboard_address=None)
            own_client = client = Client(own_cluster)
    try:
        futures = client.map(scan_shard, [store] * total, [info.name] * total, info.shards, [kinds] * total,
                             [max_offset] * total, limits, pure=False)
        for done, future in enumerate(as_completed(futures), start=1):
            merge(future.result())
            if progress:
                progress(done, total)
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    return results


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


def analysis_path(store: str | os.PathLike, run: str) -> Path:
    """Where a run's cached aggregates live."""
    return shard_dir(store, run) / ANALYSIS_FILE


def write_analysis(store: str | os.PathLike, analysis: Analysis) -> Path:
    """Write ``analysis`` atomically (temporary file, fsync, ``os.replace``); return its path."""
    path = analysis_path(store, analysis.run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{ANALYSIS_FILE}.partial-{os.getpid()}-{threading.get_ident()}")
    try:
        with h5py.File(tmp, "w") as f:
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
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_analysis(store: str | os.PathLike, run: str) -> Analysis | None:
    """A run's cached aggregates, or None when ``attnviz analyze`` has not been run for it.

    An unreadable or damaged file (not HDF5, a missing dataset or attribute) is a one-line :class:`StoreError`.
    """
    path = analysis_path(store, run)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{path} is unreadable ({_first_line(exc)}): rerun 'attnviz analyze'") from exc
    try:
        with f:
            return _read_analysis(f, path)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise StoreError(f"{path} is damaged ({_first_line(exc)}): rerun 'attnviz analyze'") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _read_analysis(f: h5py.File, path: Path) -> Analysis:
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
    if "columns" in f:
        out.columns = _read_columns_group(f["columns"])
    return out


def _write_columns(g: h5py.Group, cols: ExampleColumns) -> None:
    for name in ("input_index", "n_tokens", "truncated", "key"):
        g.create_dataset(name, data=getattr(cols, name))
    for name, column in cols.fields.items():
        fg = g.create_group(f"fields/{name}")
        fg.create_dataset("codes", data=column.codes)
        fg.create_dataset("values", data=list(column.values), dtype=h5py.string_dtype("utf-8"))


def _read_columns_group(g: h5py.Group) -> ExampleColumns:
    fields = {name: Categorical(codes=fg["codes"][()], values=tuple(_decode(fg["values"][()])))
              for name, fg in g.get("fields", {}).items()}
    return ExampleColumns(input_index=g["input_index"][()], n_tokens=g["n_tokens"][()],
                          truncated=g["truncated"][()].astype(bool), key=g["key"][()],
                          fields=dict(sorted(fields.items())))
