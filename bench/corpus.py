"""Corpus tab benchmark: callback latency and server memory at 10k and 100k examples.

For each size, builds (once, cached in ``--dir``) a store with two runs A and B of 6 layers x 12 heads over
the same synthetic inputs (4-8 tokens, uniform attention, so shards stay small; per-head metrics random but
plausible: each head has its own level, examples vary around it, B differs from A in a few heads), runs
``attnviz analyze`` on both, then measures in a fresh subprocess per size: the app of
``attnviz.dashboard.app.create_app`` served in-process, every corpus callback called through the Flask test client
(``POST /_dash-update-component``, JSON encoding included) over a grid of metric x aggregate x run B x
filter x head, p50/p95 latency per callback, and the process's peak RSS (``resource.getrusage``).

Usage::

    python bench/corpus.py                       # both sizes
    python bench/corpus.py --sizes 10000 --dir /tmp/corpus-bench
    python bench/corpus.py --measure STORE       # one measurement, prints JSON (used by the parent)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

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
TARGET_P95_MS = 150.0
TARGET_RSS_MB = 500.0


# --------------------------------------------------------------------------------------------------------
# Building the stores
# --------------------------------------------------------------------------------------------------------


def _levels(seed: int) -> dict[str, np.ndarray]:
    """Per-head level of each metric, in its unit's plausible range."""
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(0.05, 0.95, size=(LAYERS, HEADS)) for name in METRICS}


def _metrics(levels: dict[str, np.ndarray], t: int, rng: np.random.Generator, changed: bool
             ) -> dict[str, np.ndarray]:
    out = {}
    for name, spec in METRICS.items():
        base = levels[name]
        if changed:
            base = base.copy()
            for layer, head in CHANGED_HEADS:
                base[layer, head] = 1.0 - base[layer, head]
        x = np.clip(base + 0.08 * rng.standard_normal(base.shape), 0.0, 1.0)
        scale = {"nats": np.log(t), "keys": t, "tokens": t / 3.0}.get(spec.unit, 1.0)
        out[name] = (x * scale).astype(np.float32)
    return out


def _examples(start: int, count: int, levels: dict[str, np.ndarray], changed: bool) -> list[ExampleResult]:
    results = []
    for i in range(start, start + count):
        rng = np.random.default_rng([7, i])
        t = int(rng.integers(4, 9))
        words = [f"w{int(x)}" for x in rng.integers(0, 5000, size=t - 3)]
        flags = np.array([SPECIAL | CLS_OR_BOS, *[0] * len(words), PUNCTUATION, SPECIAL | SEP_OR_EOS],
                         dtype=np.uint8)
        attn = np.full((LAYERS, HEADS, t, t), 1.0 / t, dtype=np.float32)
        metric_rng = np.random.default_rng([11, i])  # the same draws for A and B
        results.append(ExampleResult(
            input_index=i, text=f"s{i} {' '.join(words)} .",
            source=TokenSequence(ids=np.arange(t, dtype=np.int32), strings=["[CLS]", *words, ".", "[SEP]"],
                                 flags=flags),
            attention={"self": attn}, metrics={"self": _metrics(levels, t, metric_rng, changed)},
            truncated=i % 11 == 0, label=("pos", "neg", "neutral")[i % 3],
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
        writer.begin_run(run, synthetic_meta(LAYERS, HEADS, n, model=f"bench-{run}"), fingerprint_keys=[])
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

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
        "rss_start_mb": rss0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _examples_in(store: Path) -> int:
    from attnviz.pipeline.store import StoreReader

    with StoreReader(store) as reader:
        return reader.num_examples("A")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma list of example counts")
    parser.add_argument("--dir", default="/var/tmp/attnviz-corpus-bench", help="where the stores are kept")
    parser.add_argument("--measure", help="measure one store in this process (prints JSON)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        store = Path(args.dir) / f"corpus-{n}.h5"
        if not store.exists():
            print(f"building {store} ({n} examples x 2 runs) ...", flush=True)
            print(f"  built in {build_store(store, n):.0f} s", flush=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, __file__, "--measure", str(store)], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"measurement of {store} failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        load = ", ".join(f"{x:.1f}" for x in res["load_average"])
        print(f"\n{n} examples x 2 runs, {res['calls']} callback calls: p50 {res['p50_ms']:.1f} ms, "
              f"p95 {res['p95_ms']:.1f} ms (target <= {TARGET_P95_MS:.0f}), max {res['max_ms']:.0f} ms, "
              f"CPU p95 {res['cpu_p95_ms']:.1f} ms; peak RSS {res['peak_rss_mb']:.0f} MB (target < "
              f"{TARGET_RSS_MB:.0f}; {res['rss_start_mb']:.0f} MB before the app); load average {load} on "
              f"{res['cpus']} CPUs")
        for cb, v in res["per_callback"].items():
            print(f"  {cb:22s} p50 {v['p50_ms']:7.1f}  p95 {v['p95_ms']:7.1f}  max {v['max_ms']:7.1f} ms  "
                  f"CPU p95 {v['cpu_p95_ms']:7.1f} ms  first view {res['cold_ms'][cb]:7.0f} ms")
    Path(args.dir, "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
