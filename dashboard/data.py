"""Store access for the dashboard: one lazily opened :class:`StoreReader` per process, plus small caches.

Gunicorn forks its workers after importing the app, and an h5py file handle must not cross a fork, so the
reader is opened on first use in each process (the cache is keyed by pid). The index is re-read at most every
``REFRESH_SECONDS`` so shards committed by a running precompute appear without a restart.

Callbacks of any tab get the app's reader with :func:`current_reader` (the store path lives in the Flask
config under ``ATTNVIZ_STORE``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipeline.store import StoreReader

REFRESH_SECONDS = 2.0
CONFIG_STORE_KEY = "ATTNVIZ_STORE"
CONFIG_DATA_DIR_KEY = "ATTNVIZ_DATA_DIR"

_lock = threading.Lock()
_readers: dict[tuple[int, str], StoreReader] = {}
_last_refresh: dict[tuple[int, str], float] = {}

T = TypeVar("T")


def get_reader(path: str | os.PathLike) -> StoreReader:
    """The reader of ``path`` for this process, opened on first use; refreshed at most every 2 s.

    Raises ``pipeline.store.StoreError`` (one line) when the store is missing or unreadable.
    """
    key = (os.getpid(), str(Path(path).resolve()))
    now = time.monotonic()
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            for stale in [k for k in _readers if k[0] != key[0]]:  # inherited across a fork: never reuse
                _readers.pop(stale, None)
                _last_refresh.pop(stale, None)
            reader = StoreReader(key[1])
            _readers[key] = reader
            _last_refresh[key] = now
            return reader
        if now - _last_refresh.get(key, 0.0) >= REFRESH_SECONDS:
            _last_refresh[key] = now
            reader.refresh()
    return reader


def current_store_path() -> str:
    """The store path of the Dash app handling the current request (from the Flask config)."""
    import flask

    return str(flask.current_app.config[CONFIG_STORE_KEY])


def current_reader() -> StoreReader:
    """:func:`get_reader` for the store of the app handling the current request."""
    return get_reader(current_store_path())


class LRU:
    """A small thread-safe least-recently-used cache of computed values."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value of ``key``, computing (outside the lock) and storing it when absent."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()


def run_stamp(reader: StoreReader, run: str) -> tuple:
    """A key that changes whenever the run's committed shards change (for caches of derived data)."""
    info = reader.run_info(run)
    return (str(reader.path), run, tuple(s.file for s in info.shards))


_sorted_metrics = LRU(64)


def metric_distribution(reader: StoreReader, run: str, name: str, kind: str) -> np.ndarray:
    """One metric for every example, sorted per head along the example axis: ``[N, L, H]`` float32 with NaNs
    moved to the end (``np.sort``), cached per run version."""
    def compute() -> np.ndarray:
        return np.sort(reader.metrics(run, name, kind), axis=0)

    return _sorted_metrics.get_or_compute((run_stamp(reader, run), name, kind), compute)


def run_label(reader: StoreReader, run: str) -> str:
    """Run selector label: run name, model, and "(random weights)" for untrained models."""
    meta = reader.run_info(run).meta
    model = meta.get("model", "?")
    label = f"{run} — {model}"
    if meta.get("random_weights"):
        label += " (random weights)"
    return label
