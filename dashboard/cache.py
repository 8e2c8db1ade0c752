"""Per-process caches of derived data, shared by every tab: one LRU class and the run stamp that keys it.

Derived data (sorted metric columns, rollouts, pooled matrices, corpus aggregates) is cached per process and
keyed by :func:`run_stamp`, which changes whenever a run's committed shards change or the run is recreated, so a
growing run is re-read and nothing cached outlives the data it was computed from.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from attnviz.pipeline.store import RunInfo

T = TypeVar("T")

#: ``(store, run, creation time, shard files)``: see :func:`run_stamp`.
RunStamp = tuple[str, str, str, tuple[str, ...]]


def run_stamp(store: str, info: RunInfo) -> RunStamp:
    """A key that changes whenever the run's committed shards change, or the run is recreated (a store replaced
    by another with the same run and shard names still differs by creation time)."""
    return (store, info.name, str(info.meta.get("created", "")), tuple(s.file for s in info.shards))


def _nbytes(value: Any) -> int:
    return int(getattr(value, "nbytes", 0))


class LRU:
    """Thread-safe least-recently-used cache that computes each key once (concurrent callers of a key wait for
    the first) and evicts by count and, optionally, by a byte budget (``nbytes`` of the values).

    Nothing is stored when ``compute`` raises, so the next call computes again (after a repair, say).
    ``on_evict(value)`` is called for every value dropped (the playground closes its evicted store readers).
    """

    def __init__(self, max_items: int, max_bytes: int | None = None,
                 on_evict: Callable[[Any], None] | None = None) -> None:
        self.max_items, self.max_bytes, self.on_evict = max_items, max_bytes, on_evict
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value of ``key``, computing (outside the cache's lock) and storing it when absent."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:
                    return self._data[key]
            try:
                value = compute()
            except BaseException:
                with self._lock:
                    self._key_locks.pop(key, None)
                raise
            with self._lock:
                self._data[key] = value
                self._key_locks.pop(key, None)
                self._evict()
            return value

    def has(self, key: Hashable) -> bool:
        """Whether ``key`` is cached (without touching its recency)."""
        with self._lock:
            return key in self._data

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key`` (most recent)."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            self._evict()

    def _evict(self) -> None:
        while len(self._data) > self.max_items or (
                self.max_bytes is not None and len(self._data) > 1
                and sum(_nbytes(v) for v in self._data.values()) > self.max_bytes):
            _, value = self._data.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(value)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()
