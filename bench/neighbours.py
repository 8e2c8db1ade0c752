"""Token-neighbour search at 100k examples: index build time and memory, search latency (p50/p95) of
``StoreReader.neighbours`` for the faiss and the exact backend.

Builds (once, cached in ``--dir``) a store with the real pipeline: a random-weight BERT (2 layers, 4 heads, hidden
64) over ``random:length=12,count=N,seed=0`` (14 tokens per example with [CLS]/[SEP]), ``--capture
attention,hidden``, ``--attention none`` for the attention weights would drop the hidden states too, so every
example keeps them; precompute's own analysis is skipped and the neighbour index is built here, once per backend
(layer 2, the last). Then ``--queries`` random (example, token) pairs are searched with k = 10 through a fresh
reader, after one warm-up query (which loads the run's example table and opens the index); the time includes the
tokens and sentences of the 10 neighbours. Peak resident memory of this process is sampled every 10 ms.

Usage::

    python bench/neighbours.py                         # 100,000 examples, 200 queries
    python bench/neighbours.py --examples 20000 --dir /tmp/nbench
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

OVERRIDES = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}


class PeakRss:
    """Samples this process's resident memory every 10 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.peak = psutil.Process().memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def build_store(path: Path, examples: int) -> str:
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions
    from attnviz.pipeline.store import StoreReader

    done = path.with_suffix(".done")
    if not done.exists():
        t0 = time.perf_counter()
        precompute(PrecomputeOptions(model="bert-random", input=f"random:length=12,count={examples},seed=0",
                                     store=path, threads=2, batch_size=64, capture="attention,hidden",
                                     overrides=OVERRIDES, analyze=False, shard_size=4096))
        print(f"store: {examples} examples precomputed in {time.perf_counter() - t0:.0f} s", flush=True)
        done.touch()
    return StoreReader(path).runs()[0]


def measure(path: Path, run: str, backend: str, queries: int, seed: int = 0) -> dict[str, float]:
    from attnviz.pipeline.precompute.neighbours import build_neighbours
    from attnviz.pipeline.statistics import neighbours as nb
    from attnviz.pipeline.store import StoreReader

    with PeakRss() as build_rss:
        summary = build_neighbours(path, run, 2, backend=backend)
    nb._open.clear()
    reader = StoreReader(path)
    n = reader.num_examples(run)
    rng = np.random.default_rng(seed)
    lengths = reader.examples(run).n_tokens
    reader.neighbours(run, 0, 1, k=10)  # warm-up: example table, index opened
    times = []
    with PeakRss() as search_rss:
        for _ in range(queries):
            i = int(rng.integers(n))
            p = int(rng.integers(lengths[i]))
            t0 = time.perf_counter()
            found = reader.neighbours(run, i, p, k=10)
            times.append(time.perf_counter() - t0)
            assert len(found) == 10
    ms = np.asarray(times) * 1000
    return {"tokens": summary.tokens, "build_s": summary.seconds, "build_peak_mb": build_rss.peak / 2**20,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "max_ms": float(ms.max()), "search_peak_mb": search_rss.peak / 2**20,
            "index_mb": sum(f.stat().st_size for f in path.with_name(path.name + ".d").glob(f"{run}/neighbours-*"))
            / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/attnviz-neighbours-bench"))
    parser.add_argument("--backends", default="faiss,exact")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"neighbours-{args.examples}.h5"
    run = build_store(path, args.examples)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.examples} examples, k=10, {args.queries} queries")
    print("| backend | tokens | build (s) | build peak RSS (MB) | index on disk (MB) | p50 (ms) | p95 (ms) | max (ms) "
          "| search peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        r = measure(path, run, backend, args.queries)
        print(f"| {backend} | {r['tokens']:,} | {r['build_s']:.1f} | {r['build_peak_mb']:.0f} | {r['index_mb']:.0f} "
              f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} | {r['search_peak_mb']:.0f} |",
              flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
