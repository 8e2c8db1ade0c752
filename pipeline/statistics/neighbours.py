"""Nearest tokens by cosine similarity of a stored representation: the index behind token neighbours.

Vectors are L2-normalized once (:func:`normalize`), so cosine similarity is an inner product. Two backends with
one interface (:class:`NeighbourIndex`):

* ``exact`` (numpy): every stored vector, float16, scanned in blocks of :data:`BLOCK_ROWS` (float32 products);
  exact top-k. Used for small runs, and whenever faiss is not installed.
* ``faiss`` (faiss-cpu, optional extra ``attnviz[neighbours]``): an inverted-file index with 8-bit scalar-quantized
  vectors (``IndexIVFScalarQuantizer``, inner product): one byte per dimension in memory, ``nprobe`` lists of
  ``nlist ≈ 4·√M`` searched; approximate, then re-ranked exactly on the float16 vectors of the candidates.

No torch; numpy, and faiss when installed.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Vectors scanned per block by the exact search (bounds its temporary memory to BLOCK_ROWS × k floats).
BLOCK_ROWS = 65536
#: Runs with more vectors than this get a faiss index (when faiss is installed); fewer are searched exactly.
EXACT_LIMIT = 200_000
#: Candidates re-ranked exactly per neighbour asked for (faiss backend).
RERANK_FACTOR = 4


def faiss_available() -> bool:
    """Whether faiss can be imported."""
    return importlib.util.find_spec("faiss") is not None


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def exact_top_k(vectors: np.ndarray, query: np.ndarray, k: int, *, block: int = BLOCK_ROWS
                ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` ([M, D], normalized) with the largest inner product with ``query`` ([D],
    normalized): (scores, rows), best first; ties to the lower row."""
    k = min(k, vectors.shape[0])
    q = np.asarray(query, dtype=np.float32)
    best_s = np.empty(0, np.float32)
    best_i = np.empty(0, np.int64)
    for lo in range(0, vectors.shape[0], block):
        s = np.asarray(vectors[lo:lo + block], dtype=np.float32) @ q
        take = min(k, s.size)
        part = np.argpartition(-s, take - 1)[:take] if take < s.size else np.arange(s.size)
        best_s = np.concatenate([best_s, s[part]])
        best_i = np.concatenate([best_i, part.astype(np.int64) + lo])
        if best_s.size > k:
            keep = np.lexsort((best_i, -best_s))[:k]
            best_s, best_i = best_s[keep], best_i[keep]
    order = np.lexsort((best_i, -best_s))
    return best_s[order], best_i[order]


def ivf_lists(count: int) -> int:
    """Inverted lists of the faiss index for ``count`` vectors (about 4·√count, at least 1)."""
    return max(1, int(4 * math.sqrt(count)))


def train_faiss(sample: np.ndarray, count: int) -> Any:
    """An empty trained ``IndexIVFScalarQuantizer`` (8-bit, inner product) for ``count`` vectors, trained on
    ``sample`` ([S, D] normalized float32)."""
    import faiss

    d = sample.shape[1]
    nlist = min(ivf_lists(count), max(1, sample.shape[0] // 39))  # faiss wants ~39 training points per list
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


@dataclass
class NeighbourIndex:
    """Searchable vectors of a run: ``vectors`` [M, D] normalized (float16 array or an HDF5 dataset read in
    blocks) and, for large runs, a faiss index over the same rows."""

    vectors: Any
    faiss_index: Any = None
    nprobe: int = 16

    @property
    def backend(self) -> str:
        """``faiss`` or ``exact``."""
        return "exact" if self.faiss_index is None else "faiss"

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities, rows) of the ``k`` nearest rows to ``query`` ([D], any norm), best first."""
        q = normalize(np.asarray(query, dtype=np.float32)[None])[0]
        if self.faiss_index is None:
            return exact_top_k(self.vectors, q, k)
        self.faiss_index.nprobe = self.nprobe
        _scores, rows = self.faiss_index.search(q[None], k * RERANK_FACTOR)
        rows = np.unique(rows[0][rows[0] >= 0])
        if rows.size == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        exact = np.asarray(self.vectors[np.sort(rows)], dtype=np.float32) @ q  # h5py wants increasing rows
        rows = np.sort(rows)
        order = np.lexsort((rows, -exact))[:k]
        return exact[order], rows[order].astype(np.int64)


@dataclass(frozen=True)
class TokenNeighbour:
    """One token found near the query token."""

    example: int  #: example index in the run
    position: int  #: token position in the example
    token: str  #: the tokenizer's token string
    score: float  #: cosine similarity to the query token's vector
    text: str  #: the example's text (its sentence)


_open: dict[tuple[str, str, int], tuple[tuple[str, ...], Any, NeighbourIndex]] = {}


def _index_of(reader: Any, run: str, layer: int) -> tuple[Any, NeighbourIndex]:
    """The run's open index file of ``layer`` and its search index, kept open per store, run and layer until the
    run's shards change."""
    from attnviz.pipeline.store import StoreError
    from attnviz.pipeline.store.neighbours import open_neighbours

    info = reader.run_info(run)
    key = (str(reader.path), run, layer)
    shards = tuple(s.file for s in info.shards)
    cached = _open.get(key)
    if cached is not None and cached[0] == shards:
        return cached[1], cached[2]
    found = open_neighbours(reader.path, run, layer)
    if found is None:
        raise StoreError(f"run {run!r} has no token-neighbour index of hidden layer {layer}: run 'attnviz analyze "
                         f"--store {reader.path} --run {run} --neighbours-layer {layer}'")
    if found.is_stale(info):
        found.close()
        raise StoreError(f"the token-neighbour index of run {run!r} is older than its shards: run 'attnviz analyze "
                         f"--store {reader.path} --run {run}' again")
    faiss_index = None
    if found.faiss_bytes is not None:
        import faiss

        faiss_index = faiss.deserialize_index(np.frombuffer(found.faiss_bytes, dtype=np.uint8))
    if cached is not None:
        cached[1].close()
    index = NeighbourIndex(found.vectors, faiss_index)
    _open[key] = (shards, found, index)
    return found, index


def search_tokens(reader: Any, run: str, example: int, position: int, *, k: int = 10, layer: int | None = None
                  ) -> list[TokenNeighbour]:
    """The ``k`` tokens of the run nearest to token ``position`` of ``example`` by cosine similarity of their
    hidden states of ``layer`` (default: the layer of the run's only index, else the last layer), the token
    itself left out; best first. One-line StoreErrors for a missing index, an example without hidden states."""
    from attnviz.pipeline.store import StoreError
    from attnviz.pipeline.store.neighbours import neighbour_layers

    if layer is None:
        layers = neighbour_layers(reader.path, run)
        last = int(reader.run_info(run).shape["self"][0])
        layer = layers[0] if len(layers) == 1 else last
    found, index = _index_of(reader, run, layer)
    lo, hi = np.searchsorted(found.example, [example, example + 1])
    if hi == lo:
        raise StoreError(f"example {example} of run {run!r} has no stored hidden states (--attention kept others): "
                         "pick a kept example")
    if not 0 <= position < hi - lo:
        raise StoreError(f"token {position} is out of range for example {example} (0..{hi - lo - 1})")
    row = int(lo + position)
    query = np.asarray(found.vectors[row], dtype=np.float32)
    scores, rows = index.search(query, k + 1)
    keep = rows != row
    scores, rows = scores[keep][:k], rows[keep][:k]
    texts = reader.examples(run).text
    out = []
    for score, r in zip(scores, rows, strict=True):
        ex, pos = int(found.example[r]), int(found.position[r])
        out.append(TokenNeighbour(ex, pos, reader.tokens(run, ex)[pos], float(score), texts[ex]))
    return out
