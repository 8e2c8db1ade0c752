"""Reading a store: :class:`StoreReader` (lazy, reads only the slices asked for), :class:`ExampleTable`, and
:func:`open_shard` for code that reads a shard file whole (never imports torch).

Every low-level read failure (a damaged chunk, a vanished or swapped file, a missing dataset) is a one-line
:class:`~attnviz.pipeline.store.format.StoreError` that names the shard and the repair.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (registers the codecs the tensors are compressed with)
import numpy as np

from attnviz.pipeline.records import ATTENTION_KINDS, KIND_SIDES, SIDE_OF_KIND
from attnviz.pipeline.store.format import (
    SHARD_READ_ERRORS,
    ExampleOutOfRangeError,
    MissingCaptureError,
    NotAStoreError,
    NotKeptError,
    StoreError,
    UnknownRunError,
    one_line,
    shard_dir,
    shard_problem,
)
from attnviz.pipeline.store.index import RunInfo, ShardEntry, read_index, shard_header
from attnviz.pipeline.store.meta import run_meta


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
                header = shard_header(f, path, run)
            except StoreError:
                raise shard_problem(store, run, entry.file, StoreError(f"not a complete shard of run {run!r}")
                                    ) from None
            if (header.start, header.count) != (entry.start, entry.count):
                raise shard_problem(store, run, entry.file, StoreError(
                    f"it holds examples {header.start}+{header.count}, the index {entry.start}+{entry.count}"))
            yield f
    except StoreError:
        raise
    except SHARD_READ_ERRORS as exc:
        raise shard_problem(store, run, entry.file, exc) from exc


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

    def meta_column(self, name: str) -> list[Any]:
        """One metadata field as a column (None where an example lacks it)."""
        return [m.get(name) for m in self.meta]


@dataclass(frozen=True)
class ExampleWindows:
    """The windows of one long input text (``--long-inputs window``) that an example belongs to.

    For an example that is not a window (its text fitted, or the run truncates), ``examples == (i,)``,
    ``position == 0`` and ``windowed`` is false.
    """

    input_index: int  #: the input example (position among non-blank input lines) the windows cut
    examples: tuple[int, ...]  #: example indices of its windows in the run, in text order (those committed)
    position: int  #: which of ``examples`` the example asked for is (an index into ``examples``)
    token_starts: tuple[int, ...]  #: per window, its first content token's position in the text's tokens
    total: int  #: windows the text was cut into (more than ``len(examples)`` while the run is incomplete)

    @property
    def windowed(self) -> bool:
        """Whether the example is one of several windows of a longer text."""
        return self.total > 1

    def previous(self) -> int | None:
        """The example index of the window before (None for the first)."""
        return self.examples[self.position - 1] if self.position > 0 else None

    def next(self) -> int | None:
        """The example index of the window after (None for the last one committed)."""
        return self.examples[self.position + 1] if self.position + 1 < len(self.examples) else None


def _read_guard(method):  # noqa: ANN001, ANN202 - decorator
    """Turn a low-level read failure (a damaged chunk, a vanished file) into a one-line StoreError."""

    @functools.wraps(method)
    def wrapper(self: StoreReader, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except StoreError:
            raise
        except SHARD_READ_ERRORS as exc:
            raise StoreError(f"cannot read {method.__name__} from {self.path.name} ({one_line(exc)}): the store may "
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
        self._kept: dict[tuple[str, int], np.ndarray] = {}
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
            runs = read_index(self.path)
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
        for key in [k for k in self._kept if k[0] == run]:
            del self._kept[key]

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
        return [s.decode() if isinstance(s, bytes) else s for s in self._token_slice(run, i, side, "strings")]

    @_read_guard
    def token_ids(self, run: str, i: int, side: str = "source") -> np.ndarray:
        """Token ids of example ``i``."""
        return self._token_slice(run, i, side, "ids")

    @_read_guard
    def token_flags(self, run: str, i: int, side: str = "source") -> np.ndarray:
        """Token class bit flags (``attnviz.pipeline.token_classes``) of example ``i``."""
        return self._token_slice(run, i, side, "flags")

    def _token_slice(self, run: str, i: int, side: str, name: str) -> np.ndarray:
        """Example ``i``'s slice of one per-token dataset (``strings``, ``ids`` or ``flags``) of a side."""
        f, j = self._locate(run, i)
        g = self._token_group(run, f, side)
        lo, hi = g["offsets"][j:j + 2]
        return g[name][lo:hi]

    def _token_group(self, run: str, f: h5py.File, side: str) -> h5py.Group:
        if side not in ("source", "target"):
            raise StoreError(f"unknown token side {side!r}: use 'source' or 'target'")
        if f"tokens/{side}" not in f:
            raise MissingCaptureError(f"run {run!r} has no {side} tokens (not an encoder-decoder run)")
        return f[f"tokens/{side}"]

    def _require_kept(self, run: str, f: h5py.File, i: int, j: int) -> None:
        """Raise :class:`NotKeptError` when example ``i`` (row ``j`` of shard ``f``) has no raw tensors."""
        if "example/kept" in f and not bool(f["example/kept"][j]):
            policy = run_meta(self.run_info(run).meta).attention or "all"
            raise NotKeptError(f"example {i} of run {run!r} has metrics but no raw attention (the run kept it for "
                               f"--attention {policy})")

    @_read_guard
    def kept_examples(self, run: str) -> np.ndarray:
        """Indices (int64, ascending) of the examples that kept raw attention, Q/K/V, hidden states and
        embeddings (``--attention``; every example of a run written before the option). Cached per run."""
        info = self.run_info(run)
        key = (run, len(info.shards))
        with self._lock:
            if key in self._kept:
                return self._kept[key]
        parts, pos = [], 0
        for entry in info.shards:
            f = self._file(run, entry)
            flags = f["example/kept"][()].astype(bool) if "example/kept" in f else np.ones(entry.count, bool)
            parts.append(np.flatnonzero(flags) + pos)
            pos += entry.count
        kept = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        kept.flags.writeable = False
        with self._lock:
            self._kept[key] = kept
        return kept

    def has_attention(self, run: str, i: int) -> bool:
        """Whether example ``i`` kept its raw attention (see :meth:`kept_examples`)."""
        f, j = self._locate(run, i)
        return "example/kept" not in f or bool(f["example/kept"][j])

    def nearest_kept(self, run: str, i: int) -> int | None:
        """The example nearest to ``i`` that kept raw attention (the lower one on a tie; ``i`` itself when it
        did), or None when no example of the run did."""
        kept = self.kept_examples(run)
        if kept.size == 0:
            return None
        k = int(np.searchsorted(kept, i))
        candidates = [int(kept[c]) for c in (k - 1, k) if 0 <= c < kept.size]
        return min(candidates, key=lambda c: (abs(c - i), c))

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
        return self._matrices(run, i, layer, head, kind, "attention")

    @_read_guard
    def value_norms(self, run: str, i: int, layer: int | None = None, head: int | None = None,
                    kind: str = "self") -> np.ndarray:
        """Value-weighted norms ``‖a_ij f(x_j)‖`` of example ``i`` as float32 (``--capture norms``; docs/metrics.md),
        shaped as :meth:`attention`; raises MissingCaptureError for a run without them."""
        return self._matrices(run, i, layer, head, kind, "norms")

    def _matrices(self, run: str, i: int, layer: int | None, head: int | None, kind: str, what: str) -> np.ndarray:
        self._require_kind(run, kind)
        f, j = self._locate(run, i)
        if what == "norms" and f"{what}/{kind}" not in f:
            raise MissingCaptureError(f"run {run!r} did not capture value-weighted norms: rerun precompute with "
                                      "--capture attention,norms")
        self._require_kept(run, f, i, j)
        g = f[f"{what}/{kind}"]
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

    def _qkv_group(self, run: str, i: int, kind: str) -> tuple[h5py.File, int, h5py.Group]:
        """Example ``i``'s shard, its row in it and the shard's Q/K/V group; raises MissingCaptureError."""
        self._require_kind(run, kind)
        f, j = self._locate(run, i)
        if f"qkv/{kind}" not in f:
            raise MissingCaptureError(f"run {run!r} did not capture Q/K/V: rerun precompute with --capture "
                                      "attention,qkv")
        self._require_kept(run, f, i, j)
        return f, j, f[f"qkv/{kind}"]

    @_read_guard
    def qkv(self, run: str, i: int, layer: int, head: int, kind: str = "self"
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query, key and value vectors ``[T, d]`` (float32) of one head; raises MissingCaptureError."""
        f, j, g = self._qkv_group(run, i, kind)
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
    def queries_keys(self, run: str, i: int, kind: str = "self") -> tuple[np.ndarray, np.ndarray]:
        """Every head's queries ``[L, H, Tq, d]`` and keys ``[L, H, Tk, d]`` of example ``i`` (float32), in one
        read each; raises MissingCaptureError."""
        f, j, g = self._qkv_group(run, i, kind)
        n_layers, n_heads = self.run_info(run).shape[kind]
        d = int(g.attrs["head_dim"])
        tq, tk = self._lengths(f, j, kind)
        out = []
        for letter, t in (("q", tq), ("k", tk)):
            base = int(g[f"{letter}_offsets"][j])
            out.append(g[letter][base:base + n_layers * n_heads * t * d].astype(np.float32)
                       .reshape(n_layers, n_heads, t, d))
        return out[0], out[1]

    @_read_guard
    def hidden(self, run: str, i: int, side: str = "source") -> np.ndarray:
        """Hidden states ``[L+1, T, D]`` (embedding output first) of one side; raises MissingCaptureError."""
        f, j = self._locate(run, i)
        if f"hidden/{side}" not in f:
            raise MissingCaptureError(f"run {run!r} did not capture hidden states: rerun precompute with "
                                      "--capture attention,hidden")
        self._require_kept(run, f, i, j)
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
        self._require_kept(run, f, i, j)
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

    def neighbours(self, run: str, example: int, position: int, *, k: int = 10, layer: int | None = None) -> list:
        """The ``k`` tokens of the run most similar to token ``position`` of ``example`` (cosine similarity of
        hidden states, from the index ``attnviz analyze`` builds), with their example, position, token and
        sentence: :func:`attnviz.pipeline.statistics.neighbours.search_tokens`."""
        from attnviz.pipeline.statistics.neighbours import search_tokens

        return search_tokens(self, run, example, position, k=k, layer=layer)

    def metrics_frame(self, run: str, kind: str = "self", **options: Any) -> Any:
        """Per-head metrics as a tidy pandas DataFrame (one row per example, layer, head) with the examples'
        columns and metadata fields: :func:`attnviz.pipeline.store.frames.metrics_frame` (``metrics=``,
        ``examples=``, ``with_columns=``)."""
        from attnviz.pipeline.store.frames import metrics_frame

        return metrics_frame(self, run, kind, **options)

    def to_xarray(self, run: str, kind: str = "self", **options: Any) -> Any:
        """The run's metrics as an ``xarray.Dataset`` (needs xarray):
        :func:`attnviz.pipeline.store.frames.run_dataset`."""
        from attnviz.pipeline.store.frames import run_dataset

        return run_dataset(self, run, kind, **options)

    def windows(self, run: str, i: int) -> ExampleWindows:
        """The windows of the long text example ``i`` is a window of (``--long-inputs window``; its siblings are
        consecutive examples, linked by the metadata keys ``window``, ``windows``, ``window_input`` and
        ``window_token_start``), or just ``i`` for an ordinary example."""
        table = self.examples(run)
        n = len(table)
        if not isinstance(i, int | np.integer) or not 0 <= int(i) < n:
            raise ExampleOutOfRangeError(f"example {i} is out of range for run {run!r} (0..{n - 1})")
        i = int(i)
        meta = table.meta[i]
        try:
            k, total, source = int(meta["window"]), int(meta["windows"]), int(meta["window_input"])
        except (KeyError, TypeError, ValueError):
            return ExampleWindows(int(table.input_index[i]), (i,), 0, (0,), 1)
        first = i - k
        members = [j for j in range(max(0, first), min(n, first + total))
                   if table.meta[j].get("window_input") == source and table.meta[j].get("window") == j - first]
        starts = tuple(int(table.meta[j].get("window_token_start", 0)) for j in members)
        return ExampleWindows(source, tuple(members), members.index(i), starts, total)

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

