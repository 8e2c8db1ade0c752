"""Scale-out benchmark: distributed precompute with 1 and 2 workers, and an out-of-core scan of a > 5 GB store.

precompute  Starts a 1-worker and a 2-worker LocalCluster, warms each (workers load the model once), then times
            interleaved runs of the same input: 1 worker x 1 torch thread, 1 worker x all cores (the default rule
            threads = cores // workers), 2 workers x (cores // 2), and the single-process command for reference.
            Throughput is examples / (first task submitted -> last shard committed); prints the paired 2-worker
            ratios (target >= 1.6x one worker) and per-example time and bytes.
scan        Writes a synthetic store (float16 softmax attention, T=128, 12 layers x 12 heads) larger than --gb
            with write_shard_file/commit_shard, scans it with attnviz.pipeline.scan.scan_run (relative-position profile
            and head similarity) on a LocalCluster while sampling the RSS of the client and its worker processes
            (psutil), checks the result against a numpy loop over the written examples, prints GB/s and peak
            memory (target < 1 GB), and deletes the store.

Each part runs in its own process (``all`` runs both): the scan client never imports torch.

Usage: python bench/scale.py [all|precompute|scan] [--model bert-random] [--input data/english_sentences.txt]
       [--n 400] [--shard-size 25] [--repeats 3] [--gb 5.2] [--dir /tmp] [--scan-workers 2] [--similarity 0]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from distributed import Client  # noqa: E402

from attnviz.pipeline.precompute.distributed import local_cluster, precompute_distributed, usable_cores  # noqa: E402
from attnviz.pipeline.precompute.options import PrecomputeOptions  # noqa: E402
from attnviz.pipeline.records import ExampleResult, TokenSequence  # noqa: E402
from attnviz.pipeline.store import StoreReader, StoreWriter, shard_dir, shard_file_name, write_shard_file  # noqa: E402

RUN = "synthetic"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {usable_cores()} cores"


# --------------------------------------------------------------------------------------------------------
# Precompute
# --------------------------------------------------------------------------------------------------------


class _Timer:
    """on_start/progress callbacks that time a run from its first submitted task to its last commit."""

    def __init__(self) -> None:
        self.t_start = self.t_end = 0.0

    def on_start(self, done: int, total: int) -> None:
        self.t_start = time.perf_counter()

    def progress(self, done: int, total: int) -> None:
        self.t_end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.t_end - self.t_start


def bench_precompute(args: argparse.Namespace) -> None:
    """Time distributed precompute with 1 and 2 workers (and one process) on the same input."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.store import store_size

    cores = usable_cores()
    common = dict(limit=args.n, shard_size=args.shard_size, batch_size=args.batch_size, capture="attention",
                  analyze=False)  # the shards alone: the analysis after them is a scan, timed by 'scan' below
    print(f"precompute: model {args.model}, {args.n} examples of {args.input}, shard size {args.shard_size}, "
          f"batch {args.batch_size}, {_load()}")
    tmp = Path(tempfile.mkdtemp(prefix="attnviz-scale-"))
    clusters = {w: local_cluster(w) for w in (1, 2)}
    clients = {w: Client(c) for w, c in clusters.items()}
    try:
        for w, client in clients.items():  # warm: every worker loads the model (once per process)
            client.wait_for_workers(w)
            t0 = time.perf_counter()
            precompute_distributed(PrecomputeOptions(model=args.model, input=args.input, store=tmp / f"warm-{w}.h5",
                                                     **{**common, "limit": args.shard_size * w}), client=client)
            print(f"  {w} worker(s): cluster up, model loaded in {time.perf_counter() - t0:.1f} s")
        configs = {  # name -> callable(store, timer) -> summary
            "1 worker x 1 thread": (clients[1], 1),
            f"1 worker x {cores} threads": (clients[1], None),
            f"2 workers x {max(1, cores // 2)} thread(s)": (clients[2], None),
        }
        rates: dict[str, list[float]] = {name: [] for name in [*configs, f"single process x {cores} threads"]}
        last = {}
        for rep in range(args.repeats):
            for name, (client, threads) in configs.items():
                timer, store = _Timer(), tmp / f"{rep}-{len(rates[name])}-{name.replace(' ', '_')}.h5"
                summary = precompute_distributed(PrecomputeOptions(model=args.model, input=args.input, store=store,
                                                                   threads=threads, **common), client=client,
                                                 on_start=timer.on_start, progress=timer.progress)
                rates[name].append(summary.new_examples / timer.seconds)
                last[name] = (summary, store_size(store))
                print(f"  rep {rep}: {name:<26} {rates[name][-1]:6.1f} ex/s  ({_load()})", flush=True)
            name = f"single process x {cores} threads"
            timer, store = _Timer(), tmp / f"{rep}-single.h5"
            summary = precompute(PrecomputeOptions(model=args.model, input=args.input, store=store, threads=cores,
                                                   **common), on_start=timer.on_start, progress=timer.progress)
            rates[name].append(summary.new_examples / timer.seconds)
            print(f"  rep {rep}: {name:<26} {rates[name][-1]:6.1f} ex/s", flush=True)
    finally:
        for w in clients:
            clients[w].close()
            clusters[w].close()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {name: statistics.median(r) for name, r in rates.items()}
    names = list(configs)
    print("\nprecompute examples/s, median of the repeats (every run is listed above):")
    for name, rate in med.items():
        print(f"  {name:<28} {rate:7.1f}")
    for base in names[:2]:
        paired = [b / a for a, b in zip(rates[base], rates[names[2]], strict=True)]
        print(f"  ratio 2 workers / {base}: median {statistics.median(paired):.2f}x over {len(paired)} paired "
              f"repeats (min {min(paired):.2f}, max {max(paired):.2f}); target >= 1.6x")
    summary, nbytes = last[names[2]]
    per_ex = 2 / med[names[2]]
    print(f"  per example: {per_ex * 1e3:.1f} ms of one worker, {nbytes / summary.examples / 1e3:.1f} kB on disk, "
          f"{summary.tokens / summary.examples:.1f} tokens (extrapolate: N examples on W such workers "
          f"~ N x {per_ex * 1e3:.1f} ms / W)")


# --------------------------------------------------------------------------------------------------------
# Scan
# --------------------------------------------------------------------------------------------------------


class _RssSampler(threading.Thread):
    """Samples the summed RSS of this process and all its descendants (the cluster's workers) every 50 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop, self.peak, self.peak_one = threading.Event(), 0, 0

    def sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                rss = p.memory_info().rss
                total += rss
                self.peak_one = max(self.peak_one, rss)
        return total

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(0.05)


def _pool(rng: np.random.Generator, layers: int, heads: int, t: int, size: int) -> np.ndarray:
    """``size`` distinct float16 softmax attention tensors [size, L, H, T, T]; head h gets sharper with h."""
    sharp = (0.5 + np.arange(heads, dtype=np.float32) / 2)[None, :, None, None]
    out = np.empty((size, layers, heads, t, t), dtype=np.float16)
    for n in range(size):
        logits = rng.standard_normal((layers, heads, t, t), dtype=np.float32) * sharp
        logits -= logits.max(axis=-1, keepdims=True)
        a = np.exp(logits)
        out[n] = a / a.sum(axis=-1, keepdims=True)
    return out


def _example(index: int, attention: np.ndarray) -> ExampleResult:
    t = attention.shape[-1]
    tokens = TokenSequence(np.arange(t, dtype=np.int32), [f"t{k}" for k in range(t)], np.zeros(t, np.uint8))
    return ExampleResult(input_index=index, text=f"synthetic {index}", source=tokens,
                         attention={"self": attention}, metrics={"self": {}})


def build_synthetic_store(folder: Path, gb: float, *, layers: int = 12, heads: int = 12, t: int = 128,
                          per_shard: int = 28, pool_size: int = 8) -> tuple[Path, int, np.ndarray, float]:
    """Write a run of float16 attention (example i is ``pool[i % pool_size]``) until its shard files take more
    than ``gb`` GB on disk (compressed), committing each shard like precompute does; 28 examples of T=128 is
    what ``plan_shards`` puts in one shard at this size. Returns (store, examples, pool, seconds)."""
    pool = _pool(np.random.default_rng(0), layers, heads, t, pool_size)
    store = folder / "scan.h5"
    writer = StoreWriter(store)
    meta = {"model": "synthetic", "kinds": ["self"], "shape": {"self": [layers, heads]}, "metrics": {"self": []},
            "capture": ["attention"], "dtype": "float16"}
    writer.begin_run(RUN, meta, fingerprint_keys=("model",))
    t0 = time.perf_counter()
    n, on_disk = 0, 0
    while on_disk <= gb * 1e9:
        results = [_example(i, pool[i % pool_size]) for i in range(n, n + per_shard)]
        path = write_shard_file(shard_dir(store, RUN) / shard_file_name(n, per_shard), RUN, n, results)
        writer.commit_shard(RUN, path, meta_update={"planned_examples": n + per_shard})
        n, on_disk = n + per_shard, on_disk + path.stat().st_size
    return store, n, pool, time.perf_counter() - t0


def expected_relpos(pool: np.ndarray, n: int, max_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative-position sums and counts of the synthetic run, by a plain loop over its distinct examples."""
    size, layers, heads, t, _ = pool.shape
    k = max_offset
    sums, counts = np.zeros((layers * heads, 2 * k + 1)), np.zeros(2 * k + 1, dtype=np.int64)
    for m, a in enumerate(pool.reshape(size, layers * heads, t, t)):
        times = len(range(m, n, size))
        for o in range(-k, k + 1):
            q = np.arange(max(0, -o), min(t, t - o))
            sums[:, o + k] += a[:, q, q + o].astype(np.float64).sum(axis=1) * times
            counts[o + k] += len(q) * times
    return sums, counts


def bench_scan(args: argparse.Namespace) -> None:
    """Build a > ``args.gb`` GB store, scan it with ``attnviz.pipeline.scan.scan_run`` on a LocalCluster, delete it."""
    from attnviz.pipeline.scan import scan_run
    from attnviz.pipeline.statistics.similarity import js_distance

    assert "torch" not in sys.modules, "the scan client must not import torch"
    free = shutil.disk_usage(args.dir).free
    if free < args.gb * 1e9 * 1.3:
        sys.exit(f"scan: only {free / 1e9:.1f} GB free in {args.dir}; need {args.gb * 1.3:.1f} GB (use --dir)")
    folder = Path(tempfile.mkdtemp(prefix="attnviz-scan-", dir=args.dir))
    try:
        print(f"scan: building a synthetic store > {args.gb} GB in {folder} ({free / 1e9:.0f} GB free), {_load()}",
              flush=True)
        store, n, pool, build_s = build_synthetic_store(folder, args.gb)
        on_disk = sum(p.stat().st_size for p in folder.rglob("*.h5"))
        raw = n * pool[0].size * 2
        print(f"  {n} examples (T=128, 12 layers x 12 heads), {raw / 1e9:.2f} GB of float16 attention, "
              f"{on_disk / 1e9:.2f} GB on disk (zstd), written in {build_s:.0f} s ({on_disk / build_s / 1e6:.0f} MB/s)",
              flush=True)
        with StoreReader(store) as reader:
            info = reader.run_info(RUN)
        cluster = local_cluster(args.scan_workers)
        client = Client(cluster)
        try:
            client.wait_for_workers(args.scan_workers)
            client.run(importlib.import_module, "attnviz.pipeline.scan")
            sampler = _RssSampler()
            idle = sampler.sample()
            sampler.start()
            t0 = time.perf_counter()
            got = scan_run(store, info, kinds=["self"], max_offset=args.max_offset,
                           similarity_examples=args.similarity, client=client)["self"]
            seconds = time.perf_counter() - t0
            sampler.stop.set()
            sampler.join()
        finally:
            client.close()
            cluster.close()
        sums, counts = expected_relpos(pool, n, args.max_offset)
        np.testing.assert_array_equal(got.relpos_counts, counts)
        np.testing.assert_allclose(got.relpos_sums, sums, rtol=1e-9)
        assert got.n_examples == n and got.js_examples == args.similarity
        t0 = time.perf_counter()
        js_distance(pool[0].astype(np.float32).reshape(-1, 128, 128))
        js_s = time.perf_counter() - t0
        print(f"  attnviz.pipeline.scan.scan_run (relative-position profile, +-{args.max_offset}; head similarity "
              f"on the first {args.similarity} examples) on {args.scan_workers} workers: {seconds:.1f} s, "
              f"{raw / seconds / 1e9:.2f} GB/s of float16 attention, {n / seconds:.1f} examples/s, "
              f"{seconds * args.scan_workers / n * 1e3:.0f} ms per example per worker")
        print(f"  head similarity (js_distance, 144 heads, T=128): {js_s:.1f} s per example on one core")
        print(f"  peak RSS, client + {args.scan_workers} workers: {sampler.peak / 1e6:.0f} MB (idle cluster "
              f"{idle / 1e6:.0f} MB; largest single process {sampler.peak_one / 1e6:.0f} MB; target < 1000 MB)")
        print(f"  result equals a numpy loop over the written examples; per example {on_disk / n / 1e6:.2f} MB on disk")
        print("  note: the store fits in this machine's page cache, so this measures decode + compute, not disk")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"  deleted {folder}")


def main() -> None:
    """Command line: run one part, or both in separate processes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", default="all", choices=("all", "precompute", "scan"))
    parser.add_argument("--model", default="bert-random")
    parser.add_argument("--input", default="data/english_sentences.txt")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--shard-size", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gb", type=float, default=5.2)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--scan-workers", type=int, default=2)
    parser.add_argument("--max-offset", type=int, default=16)
    parser.add_argument("--similarity", type=int, default=0,
                        help="scan_run's similarity_examples (head similarity costs seconds per example at 144 heads)")
    args = parser.parse_args()
    if args.part == "precompute":
        bench_precompute(args)
    elif args.part == "scan":
        bench_scan(args)
    else:
        for part in ("precompute", "scan"):
            subprocess.run([sys.executable, __file__, part, *[a for a in sys.argv[1:] if a != "all"]], check=True)


if __name__ == "__main__":
    main()
