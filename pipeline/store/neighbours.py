"""The token-neighbour index files of a run (written by ``attnviz analyze`` for runs that captured hidden states).

``STORE.h5.d/<run>/neighbours-hidden-<layer>.h5``:

| path | dtype, shape | content |
|---|---|---|
| `vectors` | float16 [M, D] | the kept examples' hidden states of `layer` (0: embedding output), one row per |
| | | token, L2-normalized (read by rows) |
| `example`, `position` | int64, int32 [M] | the row's example index and token position |

Attributes: ``format = "attnviz-neighbours"``, ``version``, ``run``, ``layer``, ``side``, ``count`` (M), ``dim``,
``shards_json`` (the run's shard files it was built from: stale when they differ), ``backend`` (``exact`` or
``faiss``). With ``backend = faiss`` a sibling ``….faiss`` file holds the faiss index (``faiss.write_index``) over
the same rows. Both are written under temporary names and renamed (the ``.faiss`` file first), so a reader
sees a complete pair or the previous one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from attnviz.pipeline.store.format import StoreError, one_line, shard_dir
from attnviz.pipeline.store.index import RunInfo

NEIGHBOURS_FORMAT = "attnviz-neighbours"
NEIGHBOURS_VERSION = 1
#: Rows of ``vectors`` per HDF5 chunk.
CHUNK_ROWS = 4096


def neighbours_path(store: str | os.PathLike, run: str, layer: int) -> Path:
    """The index file of a run's hidden states of ``layer``."""
    return shard_dir(store, run) / f"neighbours-hidden-{layer}.h5"


def faiss_path(path: Path) -> Path:
    """The faiss index beside an index file."""
    return path.with_suffix(".faiss")


def neighbour_layers(store: str | os.PathLike, run: str) -> list[int]:
    """Layers with an index file for ``run`` (any freshness), sorted."""
    folder = shard_dir(store, run)
    if not folder.exists():
        return []
    found = []
    for entry in folder.glob("neighbours-hidden-*.h5"):
        with contextlib.suppress(ValueError):
            found.append(int(entry.stem.rsplit("-", 1)[1]))
    return sorted(found)


class NeighbourFileWriter:
    """Writes an index file row block by row block (bounded memory) to a temporary name; :meth:`commit` fsyncs and
    renames it (and the faiss file, when given) into place."""

    def __init__(self, store: str | os.PathLike, info: RunInfo, layer: int, side: str, dim: int) -> None:
        self.path = neighbours_path(store, info.name, layer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}-{threading.get_ident()}")
        self.file = h5py.File(self.tmp, "w")
        self.file.attrs.update({"format": NEIGHBOURS_FORMAT, "version": NEIGHBOURS_VERSION, "run": info.name,
                                "layer": layer, "side": side, "dim": dim,
                                "shards_json": json.dumps([s.file for s in info.shards])})
        self.vectors = self.file.create_dataset("vectors", shape=(0, dim), maxshape=(None, dim), dtype=np.float16,
                                                chunks=(CHUNK_ROWS, dim))
        self.example = self.file.create_dataset("example", shape=(0,), maxshape=(None,), dtype=np.int64,
                                                chunks=(CHUNK_ROWS * 4,))
        self.position = self.file.create_dataset("position", shape=(0,), maxshape=(None,), dtype=np.int32,
                                                 chunks=(CHUNK_ROWS * 4,))
        self.count = 0

    def add(self, vectors: np.ndarray, example: np.ndarray, position: np.ndarray) -> None:
        """Append rows (normalized vectors with their example and position)."""
        n = vectors.shape[0]
        for ds in (self.vectors, self.example, self.position):
            ds.resize(self.count + n, axis=0)
        self.vectors[self.count:] = vectors.astype(np.float16)
        self.example[self.count:] = example
        self.position[self.count:] = position
        self.count += n

    def commit(self, backend: str, faiss_bytes: bytes | None = None) -> Path:
        """Close, fsync and rename into place; returns the index file's path."""
        self.file.attrs["count"] = self.count
        self.file.attrs["backend"] = backend
        self.file.close()
        if faiss_bytes is not None:
            target = faiss_path(self.path)
            tmp = target.with_name(f".{target.name}.partial-{os.getpid()}-{threading.get_ident()}")
            with open(tmp, "wb") as f:
                f.write(faiss_bytes)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file."""
        with contextlib.suppress(Exception):
            self.file.close()
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def neighbour_writer(store: str | os.PathLike, info: RunInfo, layer: int, side: str, dim: int
                     ) -> Iterator[NeighbourFileWriter]:
    """A :class:`NeighbourFileWriter` whose temporary file is removed unless it was committed."""
    writer = NeighbourFileWriter(store, info, layer, side, dim)
    try:
        yield writer
    finally:
        if writer.tmp.exists():
            writer.abort()


@dataclass
class NeighbourFile:
    """An open index file: ``vectors`` (an HDF5 dataset, read by rows), ``example``/``position`` in memory."""

    path: Path
    layer: int
    side: str
    shards: list[str]
    backend: str
    vectors: Any
    example: np.ndarray
    position: np.ndarray
    faiss_bytes: bytes | None
    _file: Any

    def is_stale(self, info: RunInfo) -> bool:
        """Whether the run's shards changed since the file was built."""
        return self.shards != [s.file for s in info.shards]

    def close(self) -> None:
        """Close the HDF5 file."""
        with contextlib.suppress(Exception):
            self._file.close()


def open_neighbours(store: str | os.PathLike, run: str, layer: int) -> NeighbourFile | None:
    """The index file of ``run`` and ``layer`` (None when there is none; a one-line StoreError when unreadable)."""
    path = neighbours_path(store, run, layer)
    if not path.exists():
        return None
    try:
        f = h5py.File(path, "r")
        if f.attrs.get("format") != NEIGHBOURS_FORMAT:
            raise StoreError(f"{path.name} is not a neighbour index")
        backend = str(f.attrs["backend"])
        fpath = faiss_path(path)
        faiss_bytes = fpath.read_bytes() if backend == "faiss" and fpath.exists() else None
        return NeighbourFile(path=path, layer=int(f.attrs["layer"]), side=str(f.attrs["side"]),
                             shards=json.loads(f.attrs["shards_json"]), backend=backend, vectors=f["vectors"],
                             example=f["example"][()], position=f["position"][()], faiss_bytes=faiss_bytes, _file=f)
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"cannot read the neighbour index {path.name} ({one_line(exc)}): run 'attnviz analyze "
                         f"--store {store} --run {run}' again") from exc


def hidden_layer_blocks(store: str | os.PathLike, info: RunInfo, layer: int, side: str = "source"
                        ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per shard, the hidden states of ``layer`` of its kept examples: (vectors [n, D] float32, example [n],
    position [n]). A shard's hidden states are read whole (at most the shard plan's ~64 M values): memory is
    bounded by one shard."""
    from attnviz.pipeline.store.reader import open_shard

    pos = 0
    for entry in info.shards:
        with open_shard(store, info.name, entry) as f:
            if f"hidden/{side}" not in f:
                raise StoreError(f"run {info.name!r} did not capture hidden states: rerun precompute with "
                                 "--capture attention,hidden")
            g = f[f"hidden/{side}"]
            dim = int(g.attrs["hidden_size"])
            offsets = g["data_offsets"][()]
            tok = np.diff(f[f"tokens/{side}/offsets"][()])
            data = g["data"][()]
            vecs, exs, poss = [], [], []
            for j in range(entry.count):
                lo, hi, t = int(offsets[j]), int(offsets[j + 1]), int(tok[j])
                if hi == lo or t == 0:
                    continue  # not kept (--attention)
                layers = (hi - lo) // (t * dim)
                if not 0 <= layer < layers:
                    raise StoreError(f"layer {layer} is out of range for the hidden states (0..{layers - 1})")
                start = lo + layer * t * dim
                vecs.append(data[start:start + t * dim].astype(np.float32).reshape(t, dim))
                exs.append(np.full(t, pos + j, dtype=np.int64))
                poss.append(np.arange(t, dtype=np.int32))
            pos += entry.count
            if vecs:
                yield np.concatenate(vecs), np.concatenate(exs), np.concatenate(poss)
