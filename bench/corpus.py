"""Corpus tab benchmark: callback latency and server memory at 100k and 1M examples.

For each size, builds (once, cached in ``--dir``) a store with two runs A and B of 6 layers x 12 heads over
the same synthetic inputs (4-8 tokens; per-head metrics random but plausible: each head has its own level,
examples vary around it, B differs from A in a few heads; raw attention kept for every 1000th example, as
``--attention every:1000`` would), runs ``attnviz analyze`` on both (which writes the corpus index), then
measures in a fresh subprocess per size: the app of ``attnviz.dashboard.app.create_app`` served in-process, every
corpus callback called through the Flask test client (``POST /_dash-update-component``, JSON encoding included)
over a grid of metric x aggregate x run B x filter x head, p50/p95 latency per callback; the subprocess's
resident memory is sampled from this process every 10 ms (psutil), from its start to its end.

Usage::

    python bench/corpus.py                       # both sizes
    python bench/corpus.py --sizes 100000 --dir /tmp/corpus-bench
    python bench/corpus.py --measure STORE       # one measurement, prints JSON (used by the parent)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/ itself (bench/dashboard.py would shadow the package)
sys.path.insert(0, str(REPO / "tests"))  # the synthetic runs of the tests

from synthetic import synthetic_meta  # noqa: E402

from attnviz.pipeline.metrics import METRICS  # noqa: E402
from attnviz.pipeline.records import ExampleResult, TokenSequence  # noqa: E402
from attnviz.pipeline.store import StoreWriter, shard_dir, shard_file_name, write_shard_file  # noqa: E402
from attnviz.pipeline.token_classes import CLS_OR_BOS, PUNCTUATION, SEP_OR_EOS, SPECIAL  # noqa: E402

LAYERS, HEADS = 6, 12
SHARD = 5000
CHANGED_HEADS = ((1, 2), (3, 7), (5, 0))  # heads where run B's metrics differ from A's
KEEP_EVERY = 1000  # raw attention kept for every 1000th example
TARGET_P95_MS = 300.0
TARGET_RSS_MB = 500.0


# --------------------------------------------------------------------------------------------------------
# Building the stores
# --------------------------------------------------------------------------------------------------------


def _levels(seed: int) -> dict[str, np.ndarray]:
    """Per-head level of each metric, in its unit's plausible range."""
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(0.05, 0.95, size=(LAYERS, HEADS)) for name in METRICS}


def _shard_metrics(levels: dict[str, np.ndarray], t: np.ndarray, start: int, changed: bool
                   ) -> dict[str, np.ndarray]:
    """``[n, L, H]`` float32 per metric for examples of lengths ``t`` (the same draws for A and B)."""
    rng = np.random.default_rng([11, start])
    out = {}
    for name, spec in METRICS.items():
        base = levels[name]
        if changed:
            base = base.copy()
            for layer, head in CHANGED_HEADS:
                base[layer, head] = 1.0 - base[layer, head]
        x = np.clip(base[None] + 0.08 * rng.standard_normal((t.size, *base.shape)), 0.0, 1.0)
        scale = {"nats": np.log(t), "keys": t, "tokens": t / 3.0}.get(spec.unit, np.ones(t.size))
        out[name] = (x * np.asarray(scale, dtype=np.float64)[:, None, None]).astype(np.float32)
    return out


def _examples(start: int, count: int, levels: dict[str, np.ndarray], changed: bool) -> list[ExampleResult]:
    rng = np.random.default_rng([7, start])
    lengths = rng.integers(4, 9, size=count)
    words_all = rng.integers(0, 5000, size=(count, 5))
    metrics = _shard_metrics(levels, lengths, start, changed)
    results = []
    for j, i in enumerate(range(start, start + count)):
        t = int(lengths[j])
        words = [f"w{int(x)}" for x in words_all[j, :t - 3]]
        flags = np.array([SPECIAL | CLS_OR_BOS, *[0] * len(words), PUNCTUATION, SPECIAL | SEP_OR_EOS],
                         dtype=np.uint8)
        kept = i % KEEP_EVERY == 0
        attn = np.full((LAYERS, HEADS, t, t) if kept else (LAYERS, HEADS, 0, 0), 1.0 / t, dtype=np.float32)
        results.append(ExampleResult(
            input_index=i, text=f"s{i} {' '.join(words)} .",
            source=TokenSequence(ids=np.arange(t, dtype=np.int32), strings=["[CLS]", *words, ".", "[SEP]"],
                                 flags=flags),
            attention={"self": attn}, metrics={"self": {k: v[j] for k, v in metrics.items()}},
            truncated=i % 11 == 0, label=("pos", "neg", "neutral")[i % 3], kept=kept,
            meta={"corpus": "bench", "source": ("alpha", "beta", "gamma")[i % 3 if i % 5 else 0],
                  "length_bucket": "short" if t <= 6 else "long", "line": i + 1}))
    return results


def build_store(path: Path, n: int) -> float:
    """Write runs A and B of ``n`` examples and analyze them; returns the seconds spent."""
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = StoreWriter(path)
    levels = _levels(3)
    for run, changed in (("A", False), ("B", True)):
        meta = {**synthetic_meta(LAYERS, HEADS, n, model=f"bench-{run}"), "attention": f"every:{KEEP_EVERY}"}
        writer.begin_run(run, meta, fingerprint_keys=[])
        for start in range(0, n, SHARD):
            examples = _examples(start, min(SHARD, n - start), levels, changed)
            shard = shard_dir(path, run) / shard_file_name(start, len(examples))
            write_shard_file(shard, run, start, examples)
            writer.commit_shard(run, shard)
    from attnviz.pipeline.precompute.analyze import analyze

    for run in ("A", "B"):
        summary = analyze(path, run, max_offset=4, similarity_examples=1000, workers=2)
        print(f"  {summary.line()}", flush=True)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------------
# Measuring (in a fresh process)
# --------------------------------------------------------------------------------------------------------


class Caller:
    """Calls the app's callbacks like the browser does (POST /_dash-update-component)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.client = app.server.test_client()
        self.client.get("/")

    def key(self, first_output: str) -> str:
        for key in self.app.callback_map:
            if f"{first_output}." in key.split("...")[0]:
                return key
        raise KeyError(first_output)

    def call(self, first_output: str, values: dict[str, Any]) -> tuple[float, Any]:
        """``(wall ms, response JSON)``; the CPU ms of the call (this thread) is left in ``self.cpu_ms``."""
        key = self.key(first_output)
        spec = self.app.callback_map[key]
        outs = [p.strip(".").rsplit(".", 1) for p in key.split("...")]
        outputs = [{"id": json.loads(i) if i.startswith("{") else i, "property": p} for i, p in outs]

        def entry(item: dict) -> Any:
            cid, prop = item["id"], item["property"]
            if cid.startswith("{"):  # pattern-matching ALL: the concrete components
                return [{"id": {"type": "corpus-field", "field": f}, "property": prop,
                         "value": (v if prop == "value" else {"type": "corpus-field", "field": f})}
                        for f, v in values.get("fields", {}).items()]
            return {"id": cid, "property": prop, "value": values.get(f"{cid}.{prop}")}

        payload = {"output": key, "outputs": outputs if len(outputs) > 1 else outputs[0],
                   "inputs": [entry(i) for i in spec["inputs"]], "state": [entry(s) for s in spec["state"]],
                   "changedPropIds": [f"{spec['inputs'][0]['id']}.{spec['inputs'][0]['property']}"]}
        t0, c0 = time.perf_counter(), time.thread_time()
        response = self.client.post("/_dash-update-component", json=payload)
        ms = (time.perf_counter() - t0) * 1000
        self.cpu_ms = (time.thread_time() - c0) * 1000
        if response.status_code not in (200, 204):
            body = response.get_data(as_text=True)[:300]
            raise RuntimeError(f"{first_output}: HTTP {response.status_code}: {body}")
        return ms, response.get_json(silent=True)


CALLBACKS = ("corpus-heatmap-a", "corpus-diff", "corpus-profile", "corpus-head-table", "corpus-patterns-a",
             "corpus-head-title", "corpus-similarity-a")


def _grid(lo: int, hi: int) -> Iterator[dict[str, Any]]:
    filters = [
        {},
        {"corpus-length.value": [5, 7]},
        {"fields": {"source": ["alpha"]}},
        {"corpus-truncated.value": "no", "fields": {"length_bucket": ["long"], "label": ["pos", "neg"]}},
    ]
    heads = [{"layer": 1, "head": 2}, {"layer": 4, "head": 9}]
    k = 0
    for metric in ("entropy", "mass_prev", "confidence"):
        for agg in ("mean", "median", "std", "p90"):
            for run_b in (None, "B"):
                for filt in filters:
                    values = {"tabs.value": "corpus", "run-select.value": "A", "corpus-run-b.value": run_b,
                              "corpus-kind.value": "self", "corpus-metric.value": metric,
                              "corpus-agg.value": agg,
                              "corpus-length.value": [lo, hi], "corpus-truncated.value": "any",
                              "corpus-length.min": lo, "corpus-length.max": hi,
                              "corpus-head.data": heads[k % 2], "fields": {}}
                    values.update(filt)
                    k += 1
                    yield values


def measure(store: Path) -> dict[str, Any]:
    """Time every corpus callback over the grid; return latencies, cold times and peak RSS."""
    from attnviz.dashboard.app import create_app

    caller = Caller(create_app(store))
    base = {"tabs.value": "corpus", "run-select.value": "A", "corpus-run-b.value": None,
            "corpus-kind.value": "self", "corpus-metric.value": "entropy"}
    cold: dict[str, float] = {}
    cold["runs+filters"] = caller.call("corpus-run-b", base)[0]
    _, filt = caller.call("corpus-length", base)
    lo, hi = filt["response"]["corpus-length"]["min"], filt["response"]["corpus-length"]["max"]
    first = next(_grid(lo, hi))
    for cb in CALLBACKS:  # first view of the tab: reads columns, metric arrays and group sums
        cold[cb] = caller.call(cb, first)[0]
    times: dict[str, list[float]] = {cb: [] for cb in CALLBACKS}
    cpu: dict[str, list[float]] = {cb: [] for cb in CALLBACKS}
    load0 = os.getloadavg()[0]
    for values in _grid(lo, hi):
        for cb in CALLBACKS:
            times[cb].append(caller.call(cb, values)[0])
            cpu[cb].append(caller.cpu_ms)
    every = np.concatenate([np.asarray(v) for v in times.values()])
    every_cpu = np.concatenate([np.asarray(v) for v in cpu.values()])
    return {
        "store": str(store),
        "examples": _examples_in(store),
        "calls": int(every.size),
        "p50_ms": float(np.percentile(every, 50)), "p95_ms": float(np.percentile(every, 95)),
        "max_ms": float(every.max()), "cpu_p95_ms": float(np.percentile(every_cpu, 95)),
        "load_average": [load0, os.getloadavg()[0]], "cpus": os.cpu_count(),
        "per_callback": {cb: {"p50_ms": float(np.percentile(v, 50)), "p95_ms": float(np.percentile(v, 95)),
                              "max_ms": float(np.max(v)), "cpu_p95_ms": float(np.percentile(cpu[cb], 95))}
                         for cb, v in times.items()},
        "cold_ms": cold,
    }


def _examples_in(store: Path) -> int:
    from attnviz.pipeline.store import StoreReader

    with StoreReader(store) as reader:
        return reader.num_examples("A")


def _measure_outside(store: Path) -> dict[str, Any]:
    """Run ``--measure STORE`` in a fresh process and sample its resident memory from here every 10 ms."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, __file__, "--measure", str(store)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak, first = [0], [0]
    done = threading.Event()

    def sample() -> None:
        watched = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = watched.memory_info().rss
            except psutil.Error:
                return
            peak[0] = max(peak[0], rss)
            first[0] = first[0] or rss
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"measurement of {store} failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mb"] = peak[0] / 2**20
    return res


def _disk_mb(store: Path) -> tuple[float, float]:
    """(shards + index file, corpus index files) in MB."""
    files = [store, *Path(f"{store}.d").rglob("*.h5")]
    total = sum(f.stat().st_size for f in files if f.exists())
    index = sum(f.stat().st_size for f in Path(f"{store}.d").rglob("index-*.h5"))
    return (total - index) / 1e6, index / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma list of example counts")
    parser.add_argument("--dir", default=str(REPO / "bench" / "out" / "corpus"), help="where the stores are kept")
    parser.add_argument("--delete", action="store_true", help="delete each store after measuring it")
    parser.add_argument("--measure", help="measure one store in this process (prints JSON)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        store = Path(args.dir) / f"corpus-{n}.h5"
        built = None
        if not store.exists():
            print(f"building {store} ({n} examples x 2 runs) ...", flush=True)
            built = build_store(store, n)
            print(f"  built in {built:.0f} s", flush=True)
        res = _measure_outside(store)
        res["build_s"] = built
        res["shards_mb"], res["index_mb"] = _disk_mb(store)
        results.append(res)
        load = ", ".join(f"{x:.1f}" for x in res["load_average"])
        worst = max(v["p95_ms"] for v in res["per_callback"].values())
        print(f"\n{n} examples x 2 runs, {res['calls']} callback calls: p50 {res['p50_ms']:.1f} ms, "
              f"p95 {res['p95_ms']:.1f} ms, slowest callback's p95 {worst:.1f} ms (target <= {TARGET_P95_MS:.0f} "
              f"for every callback), max {res['max_ms']:.0f} ms, CPU p95 {res['cpu_p95_ms']:.1f} ms; peak RSS of "
              f"the server process {res['peak_rss_mb']:.0f} MB sampled from outside (target < "
              f"{TARGET_RSS_MB:.0f}); load average {load} on {res['cpus']} CPUs")
        print(f"  disk: shards {res['shards_mb']:.0f} MB, corpus index {res['index_mb']:.0f} MB"
              + (f"; built (shards + analyze) in {built:.0f} s" if built else ""))
        for cb, v in res["per_callback"].items():
            print(f"  {cb:22s} p50 {v['p50_ms']:7.1f}  p95 {v['p95_ms']:7.1f}  max {v['max_ms']:7.1f} ms  "
                  f"CPU p95 {v['cpu_p95_ms']:7.1f} ms  first view {res['cold_ms'][cb]:7.0f} ms")
        if args.delete:
            store.unlink()
            shutil.rmtree(f"{store}.d", ignore_errors=True)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    Path(args.dir, "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
