"""The dashboard's one cache (dashboard/cache.py): LRU by count and bytes, each key computed once, nothing kept
when the computation fails, evicted values handed to ``on_evict`` (the playground closes its store readers)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from attnviz.dashboard.cache import LRU


def test_least_recently_used_goes_first_and_on_evict_sees_it() -> None:
    evicted: list[str] = []
    cache = LRU(2, on_evict=evicted.append)
    cache.get("a", lambda: "A")
    cache.get("b", lambda: "B")
    cache.get("a", lambda: "never")  # a is now the most recent
    cache.get("c", lambda: "C")
    assert evicted == ["B"]
    assert cache.has("a") and cache.has("c") and not cache.has("b")


def test_the_byte_budget_evicts_but_keeps_the_newest() -> None:
    evicted: list[int] = []
    cache = LRU(10, max_bytes=1000, on_evict=lambda v: evicted.append(v.nbytes))
    cache.get(1, lambda: np.zeros(100, np.float32))  # 400 bytes
    cache.get(2, lambda: np.zeros(100, np.float32))
    cache.get(3, lambda: np.zeros(500, np.float32))  # 2000 bytes alone: kept, the others go
    assert evicted == [400, 400] and cache.has(3)


def test_a_failed_computation_is_not_kept() -> None:
    cache = LRU(4)
    with pytest.raises(OSError):
        cache.get("k", lambda: (_ for _ in ()).throw(OSError("shard missing")))
    assert cache.get("k", lambda: 7) == 7


def test_concurrent_callers_of_a_key_compute_it_once() -> None:
    cache, calls = LRU(4), []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.05)
        return 42

    threads = [threading.Thread(target=cache.get, args=("k", slow)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and cache.get("k", lambda: 0) == 42
