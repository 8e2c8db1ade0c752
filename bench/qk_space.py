"""Query–key space: time and memory of ``build_qk_space`` (what ``attnviz analyze`` adds for a run with Q/K) and of
the Corpus panel's figure, on real MiniLM (6 layers × 12 heads, d = 32).

Builds (once, cached in ``--dir``) a store with ``attnviz precompute --model minilm --capture attention,qkv`` over
the bundled ``data/demo.jsonl`` (300 sentences), then times the projection of every head for sample sizes of
500, 2,000 (the default) and 4,000 tokens (best of ``--repeats``), the peak resident memory added while it runs
(sampled every 10 ms), the file size, and ``space_view`` (one head's figure, as the panel draws it) with its JSON
size. The build reads only the sampled examples, so its cost does not grow with the run (a 1M-example run samples
the same ~2,000 tokens, spread over it).

Usage::

    python bench/qk_space.py [--dir /tmp/qk-bench] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_during(fn):  # noqa: ANN001, ANN201 - a small timing helper
    """(result, seconds, peak RSS increase in MB) of ``fn()``."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    return result, seconds, (peak[0] - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/attnviz-qk-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from attnviz.dashboard.corpus.qk_space import space_view
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions
    from attnviz.pipeline.precompute.qk_space import build_qk_space
    from attnviz.pipeline.store import StoreReader
    from attnviz.pipeline.store.qk_space import load_qk_space

    args.dir.mkdir(parents=True, exist_ok=True)
    store = args.dir / "minilm-qkv.h5"
    if not store.with_suffix(".done").exists():
        precompute(PrecomputeOptions(model="minilm", input=str(REPO / "data/demo.jsonl"), store=store, threads=2,
                                     capture="attention,qkv", analyze=False))
        store.with_suffix(".done").touch()
    run = StoreReader(store).runs()[0]
    print(f"load average {os.getloadavg()[0]:.1f}; run {run}: {StoreReader(store).num_examples(run)} examples, "
          "6 layers × 12 heads")
    print("| sample (tokens asked) | tokens | examples | build (s, best) | peak RSS added (MB) | file (KB) "
          "| one head's figure (ms) | figure JSON (KB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for budget in (500, 2000, 4000):
        best, rss, summary = float("inf"), 0.0, None
        for _ in range(args.repeats):
            summary, seconds, added = peak_during(lambda b=budget: build_qk_space(store, run, sample_tokens=b))
            best, rss = min(best, seconds), max(rss, added)
        space = load_qk_space(store, run)
        assert space is not None and summary is not None
        t0 = time.perf_counter()
        fig = space_view(space, 3, 5, "class")
        fig_ms = (time.perf_counter() - t0) * 1000
        size = len(json.dumps(fig)) / 1024
        print(f"| {budget:,} | {summary.tokens:,} | {summary.examples} | {best:.2f} | {rss:.0f} "
              f"| {summary.path.stat().st_size / 1024:.0f} | {fig_ms:.1f} | {size:.0f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
