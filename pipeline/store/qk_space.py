"""The query–key space file of a run (``STORE.h5.d/<run>/qk-space-<kind>.h5``, written by ``attnviz analyze`` for
runs that captured Q/K): a fixed sample of tokens, and for every layer and head their queries and keys projected
together to 2-D (``pipeline/statistics/qk_space.py``).

| path | dtype, shape | content |
|---|---|---|
| `example`, `position` | int64, int32 [S] | the sampled tokens (every token of the sampled examples) |
| `token` | str [S] | their token strings |
| `flags` | uint8 [S] | their token classes (``pipeline/token_classes.py``) |
| `queries`, `keys` | float32 [L, H, S, 2] | the 2-D points of each token's query and key, per layer and head |
| `explained` | float32 [L, H, 2] | PCA's variance share of the two axes (NaN for UMAP) |

Attributes: ``format = "attnviz-qk-space"``, ``version``, ``run``, ``kind``, ``method`` (``pca`` or ``umap``),
``examples`` (sampled), ``shards_json`` (stale when the run's shards differ). Written atomically.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnviz.pipeline.store.atomic import write_h5_atomically
from attnviz.pipeline.store.format import STRING_DTYPE, StoreError, one_line, shard_dir
from attnviz.pipeline.store.index import RunInfo

QK_FORMAT = "attnviz-qk-space"
QK_VERSION = 1


def qk_space_path(store: str | os.PathLike, run: str, kind: str = "self") -> Path:
    """The query–key space file of a run and attention kind."""
    return shard_dir(store, run) / f"qk-space-{kind}.h5"


@dataclass
class QKSpace:
    """A run's query–key space (see the module doc)."""

    run: str
    kind: str
    method: str
    shards: list[str]
    example: np.ndarray
    position: np.ndarray
    token: list[str]
    flags: np.ndarray
    queries: np.ndarray
    keys: np.ndarray
    explained: np.ndarray

    def is_stale(self, info: RunInfo) -> bool:
        """Whether the run's shards changed since the file was built."""
        return self.shards != [s.file for s in info.shards]


def write_qk_space(store: str | os.PathLike, space: QKSpace) -> Path:
    """Write ``space`` atomically; return its path."""
    path = qk_space_path(store, space.run, space.kind)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fill(f) -> None:  # noqa: ANN001 - h5py.File
        f.attrs.update({"format": QK_FORMAT, "version": QK_VERSION, "run": space.run, "kind": space.kind,
                        "method": space.method, "examples": int(np.unique(space.example).size),
                        "shards_json": json.dumps(space.shards)})
        f.create_dataset("example", data=space.example.astype(np.int64))
        f.create_dataset("position", data=space.position.astype(np.int32))
        f.create_dataset("token", data=space.token, dtype=STRING_DTYPE)
        f.create_dataset("flags", data=space.flags.astype(np.uint8))
        f.create_dataset("queries", data=space.queries.astype(np.float32))
        f.create_dataset("keys", data=space.keys.astype(np.float32))
        f.create_dataset("explained", data=space.explained.astype(np.float32))

    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{threading.get_ident()}")
    write_h5_atomically(path, fill, tmp=tmp)
    return path


def load_qk_space(store: str | os.PathLike, run: str, kind: str = "self") -> QKSpace | None:
    """The run's query–key space, None when there is none (a one-line StoreError when unreadable)."""
    import h5py

    path = qk_space_path(store, run, kind)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != QK_FORMAT:
                raise StoreError(f"{path.name} is not a query–key space file")
            return QKSpace(run=run, kind=kind, method=str(f.attrs["method"]),
                           shards=json.loads(f.attrs["shards_json"]), example=f["example"][()],
                           position=f["position"][()],
                           token=[t.decode() if isinstance(t, bytes) else t for t in f["token"][()]],
                           flags=f["flags"][()], queries=f["queries"][()], keys=f["keys"][()],
                           explained=f["explained"][()])
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"cannot read {path.name} ({one_line(exc)}): run 'attnviz analyze --store {store} --run "
                         f"{run}' again") from exc
