"""Distributed precompute on a real 2-worker dask LocalCluster: same store as one process, worker and client
kills, readers during the run, one model load per worker; and a cluster scan (attnviz.pipeline.scan) of a store much
larger than one task's memory."""

from __future__ import annotations

import contextlib
import importlib
import operator
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster

from attnviz.pipeline.distributed import (
    ClusterError,
    connect,
    local_cluster,
    model_load_count,
    precompute_distributed,
    torch_threads_by_host,
    usable_cores,
)
from attnviz.pipeline.inputs import InputError
from attnviz.pipeline.precompute import PrecomputeSummary, precompute
from attnviz.pipeline.records import ExampleResult, TokenSequence
from attnviz.pipeline.store import StoreReader, StoreWriter, shard_dir, shard_file_name, write_shard_file

TINY = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
TINY_CLI = [arg for k, v in TINY.items() for arg in ("--set", f"{k}={v}")]
N = 80
SHARD = 8
CAPTURE = "attention,embeddings"
COMMON = dict(limit=N, shard_size=SHARD, batch_size=4, capture=CAPTURE, overrides=TINY)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalCluster, Client]]:
    """One 2-worker LocalCluster for the module (workers keep their model between tests)."""
    cl = local_cluster(2)
    client = Client(cl)
    client.wait_for_workers(2, timeout=120)
    yield cl, client
    client.close()
    cl.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process store for the same input and configuration."""
    store = tmp_path_factory.mktemp("reference") / "store.h5"
    precompute("bert-random", "data/demo.jsonl", store, threads=1, **COMMON)
    return store


class _Poller(threading.Thread):
    """A reader that polls the store while a job runs, reads every example it lists, and records the counts."""

    def __init__(self, store: Path) -> None:
        super().__init__(daemon=True)
        self.store, self.stop, self.counts, self.errors = store, threading.Event(), [], []

    def run(self) -> None:
        while not self.store.exists() and not self.stop.is_set():
            time.sleep(0.005)
        with StoreReader(self.store) as reader:
            seen = 0
            while True:
                last = self.stop.is_set()  # one full pass after the job has ended
                reader.refresh()
                for run in reader.runs():
                    n = reader.num_examples(run)
                    try:
                        for i in range(seen, n):
                            att = reader.attention(run, i, 0, 0)
                            assert att.shape == (len(reader.tokens(run, i)),) * 2
                            assert np.isfinite(att).all()
                    except Exception as exc:  # noqa: BLE001 - every failure is a finding
                        self.errors.append(repr(exc))
                    if n != seen:
                        self.counts.append(n)
                    seen = n
                if last:
                    return
                time.sleep(0.01)


@pytest.fixture(scope="module")
def polled_run(cluster: tuple[LocalCluster, Client], tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, PrecomputeSummary, _Poller, list[str]]:
    """A distributed run on the module cluster, with a reader polling the store all along."""
    store = tmp_path_factory.mktemp("distributed") / "store.h5"
    poller, said = _Poller(store), []
    poller.start()
    try:
        summary = precompute_distributed("bert-random", "data/demo.jsonl", store,
                                         scheduler=cluster[0].scheduler_address, say=said.append, **COMMON)
    finally:
        poller.stop.set()
        poller.join(60)
    return store, summary, poller, said


def _assert_same_store(a: Path, b: Path, run_a: str | None = None, run_b: str | None = None) -> None:
    with StoreReader(a) as ra, StoreReader(b) as rb:
        run_a, run_b = run_a or ra.runs()[0], run_b or rb.runs()[0]
        assert ra.num_examples(run_a) == rb.num_examples(run_b) == N
        np.testing.assert_array_equal(ra.examples(run_a).input_index, np.arange(N))
        np.testing.assert_array_equal(rb.examples(run_b).input_index, np.arange(N))
        assert [s.file for s in ra.run_info(run_a).shards] == [s.file for s in rb.run_info(run_b).shards]
        for name in ra.metric_names(run_a):
            np.testing.assert_array_equal(ra.metrics(run_a, name), rb.metrics(run_b, name))
        for i in range(N):
            assert ra.tokens(run_a, i) == rb.tokens(run_b, i)
            np.testing.assert_array_equal(ra.attention(run_a, i), rb.attention(run_b, i))
            np.testing.assert_array_equal(ra.embeddings(run_a, i)[1], rb.embeddings(run_b, i)[1])


def _temp_files(store: Path) -> list[str]:
    return [p.name for p in shard_dir(store, "bert-random--demo").parent.rglob("*.tmp-*")]


# ---- validation happens before any cluster starts --------------------------------------------------------


def test_bad_arguments_fail_before_any_cluster_starts(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    with pytest.raises(ClusterError, match="at least 1"):
        precompute_distributed("bert-random", "data/demo.jsonl", store, workers=0)
    with pytest.raises(ClusterError, match="exactly one"):
        precompute_distributed("bert-random", "data/demo.jsonl", store, workers=2, scheduler="tcp://127.0.0.1:1")
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="does not exist"):
        precompute_distributed("bert-random", str(tmp_path / "missing.txt"), store, workers=2)
    assert time.perf_counter() - t0 < 10, "input errors must be raised before a cluster is started"
    assert not store.exists()


# ---- the distributed store ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sharded_store_equals_single_process_store(reference: Path, polled_run: tuple) -> None:
    store, summary, _, said = polled_run
    assert (summary.examples, summary.new_examples, summary.skipped_examples) == (N, N, 0)
    _assert_same_store(reference, store)
    assert any("dashboard http" in line for line in said), said
    assert _temp_files(store) == []
    # A rerun of a finished run computes nothing and starts no cluster.
    again: list[str] = []
    summary = precompute_distributed("bert-random", "data/demo.jsonl", store, workers=2, say=again.append, **COMMON)
    assert (summary.examples, summary.new_examples, summary.skipped_examples) == (N, 0, N)
    assert again == ["run 'bert-random--demo' is complete in " + str(store) + ": nothing to compute"]


@pytest.mark.slow
def test_polling_reader_sees_only_complete_shards_and_growth(polled_run: tuple) -> None:
    _, _, poller, _ = polled_run
    assert poller.errors == []
    assert poller.counts == sorted(poller.counts), "the committed count never goes back"
    assert len(poller.counts) >= 2 and poller.counts[0] < N, f"the reader should see the run grow: {poller.counts}"
    assert all(c % SHARD == 0 for c in poller.counts), poller.counts
    assert poller.counts[-1] == N


@pytest.mark.slow
def test_workers_load_the_model_once_and_share_the_cores(cluster: tuple[LocalCluster, Client],
                                                         polled_run: tuple) -> None:
    _, client = cluster
    loads = client.run(model_load_count)
    assert sum(loads.values()) <= 2, f"{N // SHARD} tasks, yet the model was loaded {loads} times"
    host = next(iter(client.scheduler_info()["workers"].values()))["host"]
    assert torch_threads_by_host(client) == {host: max(1, usable_cores() // 2)}


@pytest.mark.slow
def test_connect_starts_a_local_cluster_and_closes_it() -> None:
    said: list[str] = []
    with connect(workers=1, say=said.append) as client:
        assert client.submit(operator.add, 1, 2).result() == 3
        assert len(client.scheduler_info()["workers"]) == 1
        cluster = client.cluster
    assert said[0].startswith("dask LocalCluster: 1 worker processes x 1 thread, dashboard http"), said
    assert cluster.status.name == "closed"


def _synthetic_store(store: Path, *, shards: int, per_shard: int, layers: int, heads: int, t: int
                     ) -> tuple[str, np.ndarray]:
    """A run of float16 softmax attention written straight into shard files (no model): example i is
    ``pool[i % 4]``. Returns (run, pool)."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, layers, heads, t, t)).astype(np.float32) * 2
    pool = np.exp(logits - logits.max(-1, keepdims=True))
    pool = (pool / pool.sum(-1, keepdims=True)).astype(np.float16)
    tokens = TokenSequence(np.arange(t, dtype=np.int32), [f"t{k}" for k in range(t)], np.zeros(t, np.uint8))
    writer, run = StoreWriter(store), "synthetic"
    writer.begin_run(run, {"model": "synthetic", "kinds": ["self"], "shape": {"self": [layers, heads]},
                           "metrics": {"self": []}, "capture": ["attention"], "dtype": "float16"},
                     fingerprint_keys=("model",))
    for start in range(0, shards * per_shard, per_shard):
        results = [ExampleResult(input_index=i, text=f"s{i}", source=tokens, attention={"self": pool[i % 4]},
                                 metrics={"self": {}}) for i in range(start, start + per_shard)]
        path = write_shard_file(shard_dir(store, run) / shard_file_name(start, per_shard), run, start, results,
                                codec_name="none")
        writer.commit_shard(run, path)
    return run, pool


def _tree_rss() -> int:
    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


@pytest.mark.slow
def test_scan_run_on_a_store_much_larger_than_a_task_keeps_memory_bounded_and_equals_a_numpy_loop(
        cluster: tuple[LocalCluster, Client], tmp_path: Path) -> None:
    from attnviz.pipeline.scan import scan_run

    layers, heads, t, per_shard, shards, k = 4, 8, 96, 16, 40, 8
    store = tmp_path / "synthetic.h5"
    run, pool = _synthetic_store(store, shards=shards, per_shard=per_shard, layers=layers, heads=heads, t=t)
    raw = shards * per_shard * layers * heads * t * t * 2  # bytes of float16 attention: ~380 MB
    _, client = cluster
    client.run(importlib.import_module, "attnviz.pipeline.scan")  # module imports are baseline, not scan memory
    with StoreReader(store) as reader:
        info = reader.run_info(run)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss())
            time.sleep(0.02)

    idle = _tree_rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = scan_run(store, info, kinds=["self"], max_offset=k, similarity_examples=4, client=client)["self"]
    finally:
        stop.set()
        sampler.join()
    growth = peak[0] - idle
    assert growth < raw / 4, f"scan grew client + workers by {growth / 1e6:.0f} MB on a {raw / 1e6:.0f} MB store"

    # The same sums by a plain loop over what was written (each pool example appears n / 4 times).
    sums, counts = np.zeros((layers * heads, 2 * k + 1)), np.zeros(2 * k + 1, dtype=np.int64)
    for a in pool.reshape(4, layers * heads, t, t).astype(np.float64):
        for o in range(-k, k + 1):
            q = np.arange(max(0, -o), min(t, t - o))
            sums[:, o + k] += a[:, q, q + o].sum(axis=1) * (shards * per_shard // 4)
            counts[o + k] += len(q) * (shards * per_shard // 4)
    assert result.n_examples == shards * per_shard and result.js_examples == 4
    np.testing.assert_array_equal(result.relpos_counts, counts)
    np.testing.assert_allclose(result.relpos_sums, sums, rtol=1e-9)


# ---- failures -----------------------------------------------------------------------------------------------


def _cli(store: Path, *cluster_args: str) -> list[str]:
    return [sys.executable, "-m", "attnviz.pipeline.cli", "precompute", "--model", "bert-random",
            "--input", "data/demo.jsonl",
            "--store", str(store), "--limit", str(N), "--shard-size", str(SHARD), "--batch-size", "4",
            "--capture", CAPTURE, *TINY_CLI, *cluster_args]


def _committed(store: Path) -> int:
    try:
        with StoreReader(store) as reader:
            return sum(reader.num_examples(r) for r in reader.runs())
    except Exception:  # noqa: BLE001 - the index does not exist yet
        return 0


@pytest.mark.slow
def test_client_killed_then_rerun_resumes_to_the_same_store(cluster: tuple[LocalCluster, Client], reference: Path,
                                                           tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    store = tmp_path / "store.h5"
    # The CLI on the module's (warm) cluster: a LocalCluster of its own would spend a minute loading torch.
    proc = subprocess.Popen(_cli(store, "--scheduler", cluster[0].scheduler_address), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while _committed(store) < 2 * SHARD and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the command finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed = _committed(store)
    assert 2 * SHARD <= committed < N
    # Rerun the same command (in-process here): it adopts what the dead run's tasks finished, computes the rest.
    summary = precompute_distributed("bert-random", "data/demo.jsonl", store, scheduler=cluster[0].scheduler_address,
                                     **COMMON)
    assert summary.skipped_examples >= committed and summary.skipped_examples + summary.new_examples == N
    _assert_same_store(reference, store)
    assert _temp_files(store) == []


@pytest.mark.slow
def test_worker_killed_mid_task_still_gives_a_complete_store(cluster: tuple[LocalCluster, Client], reference: Path,
                                                            tmp_path: Path) -> None:
    # Last in the file: the restarted worker is cold (it would load the model again for a later test).
    _, client = cluster
    pids_before = set(client.run(os.getpid).values())
    killed: list[tuple[str, int, list]] = []

    def kill_a_busy_worker(done: int, total: int) -> None:
        if killed:
            return
        pids = client.run(os.getpid)
        for address, keys in client.processing().items():
            if keys and address in pids:
                os.kill(pids[address], signal.SIGKILL)
                killed.append((address, pids[address], list(keys)))
                return

    store = tmp_path / "store.h5"
    summary = precompute_distributed("bert-random", "data/demo.jsonl", store, scheduler=cluster[0].scheduler_address,
                                     progress=kill_a_busy_worker, **COMMON)
    assert killed, "no worker was busy when the first shard was committed"
    assert killed[0][1] in pids_before
    assert summary.examples == N
    _assert_same_store(reference, store)
    assert _temp_files(store) == []
    # The nanny restarts the killed worker: two workers again, one of them a new process.
    client.wait_for_workers(2, timeout=120)
    pids_after = set(client.run(os.getpid).values())
    assert killed[0][1] not in pids_after and len(pids_after) == 2
