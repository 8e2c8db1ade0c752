"""Data access of the Playground tab in the server process (no torch, no pickle): where the playground lives,
jobs submitted to the model worker through :mod:`attnviz.pipeline.playground.client`, a result's records
(arrays + JSON) and its one-example store, and the store a result is added to."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnviz.dashboard.cache import LRU
from attnviz.dashboard.data import data_dir_of
from attnviz.dashboard.security import resolve_store
from attnviz.pipeline.playground import client
from attnviz.pipeline.playground.records import (
    DEFAULT_TIMEOUT_S,
    PlaygroundError,
    PlaygroundResult,
    result_store_path,
)
from attnviz.pipeline.store import StoreReader

#: Flask config keys the app may set (else the environment, else defaults).
CONFIG_DIR_KEY = "ATTNVIZ_PLAYGROUND_DIR"
CONFIG_TIMEOUT_KEY = "ATTNVIZ_PLAYGROUND_TIMEOUT"
CONFIG_STORE_KEY = "ATTNVIZ_STORE"
#: Result stores kept open per process.
READERS_KEPT = 8
#: Results' records kept in memory per process (a result never changes once written).
RESULTS_KEPT = 8


class _Config:
    """Where the playground keeps its worker and results, set once by :func:`configure` (background jobs are
    forked from the server and inherit it)."""

    folder: Path | None = None
    owner_pid: int = 0
    timeout: float = DEFAULT_TIMEOUT_S


CONFIG = _Config()


def configure(folder: str | os.PathLike, timeout: float) -> Path:
    """Set the playground folder (created, mode 0700) and job time limit of this process; return the folder."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    CONFIG.folder = path
    CONFIG.owner_pid = os.getpid()
    CONFIG.timeout = float(timeout)
    return path


def default_folder() -> Path:
    """The playground folder when the app sets none (``$ATTNVIZ_PLAYGROUND_DIR`` or a per-user temp folder)."""
    return client.playground_dir()


def call(op: str, args: dict[str, Any], session: str | None, progress: Callable[[float, str], None] | None = None,
         fast: float | None = None) -> Any:
    """Run one job on the model worker: from a background job's process, or with ``fast`` (seconds) from a plain
    callback, which gets SlowJobError at once when the job cannot run that quickly (see
    :func:`attnviz.pipeline.playground.client.call`)."""
    return client.call(op, args, folder=CONFIG.folder, session=session or "", timeout=CONFIG.timeout,
                       owner_pid=CONFIG.owner_pid, progress=progress, fast=fast)


#: Recent results' records, by (process, folder, id).
_results = LRU(RESULTS_KEPT)


def read_result(result_id: str) -> PlaygroundResult:
    """A result's records, as the worker wrote them (raises PlaygroundError when it is gone); a few recent
    ones are kept in memory."""
    folder = _folder()
    return _results.get((os.getpid(), str(folder), result_id), lambda: client.read_result(folder, result_id))


def _folder() -> Path:
    if CONFIG.folder is None:
        raise PlaygroundError("the playground is not set up (register_callbacks was not called)")
    return CONFIG.folder


#: Readers of recent results' one-example stores, kept open (closed when evicted).
_readers = LRU(READERS_KEPT, on_evict=lambda reader: reader.close())


def result_reader(result_id: str) -> StoreReader:
    """A reader of a result's one-example store (a few kept open per process)."""
    path = result_store_path(_folder(), result_id)

    def open_reader() -> StoreReader:
        if not path.exists():
            raise PlaygroundError("this playground result is no longer available: run the model again")
        return StoreReader(path)

    return _readers.get((os.getpid(), str(path)), open_reader)


def target_store(config: Any, store_name: Any) -> Path:
    """The store to add to: the page's ``?store=`` name resolved inside the data directory (refused outside
    it), or the app's store."""
    if store_name is None:
        return Path(str(config[CONFIG_STORE_KEY]))
    return resolve_store(data_dir_of(config), store_name)
