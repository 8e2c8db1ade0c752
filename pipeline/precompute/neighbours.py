"""Build a run's token-neighbour index (``attnviz analyze``): its kept examples' hidden states of one layer,
normalized, streamed shard by shard into ``neighbours-hidden-<layer>.h5`` (:mod:`attnviz.pipeline.store.neighbours`),
plus a faiss index for large runs (:mod:`attnviz.pipeline.statistics.neighbours`). Memory: one shard's hidden
states, and for faiss the training sample and one byte per dimension per token."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnviz.pipeline.statistics.neighbours import EXACT_LIMIT, faiss_available, normalize, train_faiss
from attnviz.pipeline.store import StoreError, StoreReader, run_meta
from attnviz.pipeline.store.neighbours import hidden_layer_blocks, neighbour_writer, open_neighbours

#: Vectors the faiss index is trained on (a spread sample of the run's rows).
TRAIN_SAMPLE = 65536
#: Rows added to faiss per block (read back from the index file).
ADD_BLOCK = 65536
BACKENDS = ("auto", "exact", "faiss")


@dataclass
class NeighbourSummary:
    """What one build did."""

    run: str
    path: Path
    layer: int
    tokens: int
    backend: str
    seconds: float

    def line(self) -> str:
        return (f"run {self.run!r}: token neighbours of hidden layer {self.layer} over {self.tokens} tokens "
                f"({self.backend}), {self.seconds:.1f} s -> {self.path}")


def default_layer(store: str | os.PathLike, run: str) -> int:
    """The last layer's output (hidden state ``L``)."""
    with StoreReader(store) as reader:
        return int(reader.run_info(run).shape["self"][0])


def neighbours_needed(store: str | os.PathLike, run: str) -> bool:
    """Whether ``run`` kept hidden states and has no fresh index of any layer."""
    from attnviz.pipeline.store.neighbours import neighbour_layers

    with StoreReader(store) as reader:
        info = reader.run_info(run)
        if info.num_examples == 0 or "hidden" not in (info.meta.get("capture") or []):
            return False
        if reader.kept_examples(run).size == 0:
            return False  # --attention none: no hidden state to index (analyze builds none)
    for layer in neighbour_layers(store, run):
        try:
            found = open_neighbours(store, run, layer)
        except StoreError:
            continue
        if found is not None:
            stale = found.is_stale(info)
            found.close()
            if not stale:
                return False
    return True


def build_neighbours(store: str | os.PathLike, run: str, layer: int | None = None, *, backend: str = "auto"
                     ) -> NeighbourSummary:
    """Write the token-neighbour index of ``run`` over its hidden states of ``layer`` (default: the last layer's
    output). ``backend``: ``auto`` (faiss above :data:`EXACT_LIMIT` tokens when installed, else exact), ``exact``
    or ``faiss``. A one-line StoreError when the run has no hidden states or faiss is asked for but missing."""
    t0 = time.perf_counter()
    if backend not in BACKENDS:
        raise StoreError(f"--neighbours-backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "faiss" and not faiss_available():
        raise StoreError("the faiss neighbour index needs faiss-cpu: pip install faiss-cpu (or use the exact one)")
    with StoreReader(store) as reader:
        info = reader.run_info(run)
    meta = run_meta(info.meta)
    if "hidden" not in meta.capture:
        raise StoreError(f"run {run!r} did not capture hidden states: rerun precompute with --capture "
                         "attention,hidden to find token neighbours")
    side = "source"
    if layer is None:
        layer = int(info.shape["self"][0])
    with neighbour_writer(store, info, layer, side, _hidden_size(store, run)) as writer:
        for vectors, example, position in hidden_layer_blocks(store, info, layer, side):
            writer.add(normalize(vectors), example, position)
        count = writer.count
        if count == 0:
            raise StoreError(f"run {run!r} kept no hidden states (--attention): nothing to index")
        use_faiss = backend == "faiss" or (backend == "auto" and count > EXACT_LIMIT and faiss_available())
        faiss_bytes = _faiss_bytes(writer.vectors, count) if use_faiss else None
        path = writer.commit("faiss" if use_faiss else "exact", faiss_bytes)
    return NeighbourSummary(run=run, path=path, layer=layer, tokens=count, backend="faiss" if use_faiss else "exact",
                            seconds=time.perf_counter() - t0)


def _hidden_size(store: str | os.PathLike, run: str) -> int:
    with StoreReader(store) as reader:
        kept = reader.kept_examples(run)
        if kept.size == 0:
            raise StoreError(f"run {run!r} kept no hidden states (--attention): nothing to index")
        return int(reader.hidden(run, int(kept[0])).shape[-1])


def _faiss_bytes(vectors: object, count: int) -> bytes:
    import faiss

    rows = np.unique(np.linspace(0, count - 1, min(count, TRAIN_SAMPLE)).astype(np.int64))
    sample = np.asarray(vectors[rows], dtype=np.float32)  # type: ignore[index]
    index = train_faiss(sample, count)
    for lo in range(0, count, ADD_BLOCK):
        index.add(np.ascontiguousarray(vectors[lo:lo + ADD_BLOCK], dtype=np.float32))  # type: ignore[index]
    return faiss.serialize_index(index).tobytes()
