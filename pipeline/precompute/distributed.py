"""Scale-out on dask.distributed: precompute with one task per shard, each committed to the index as it finishes.

Precompute: the client validates, encodes and plans the input exactly like the single-process command
(``prepare_run``), then submits one task per planned shard. A task gets only picklable values (model name,
overrides, store path, run, shard start and the shard's encoded token ids); it loads the model once per worker
process (``_model_cache``), runs the shared per-shard computation (``compute_shard``: temp file, then atomic
rename) and returns a small :class:`ShardDone`. The client registers each finished shard in the index as it
completes (``StoreWriter.commit_shard``, which checks the file), so readers see new shards appear, never a
half-written one. Workers write shard files and the client writes the index: the store must sit on a
filesystem that every worker and the client see at the same path (``docs/scaling.md``).

Scans of raw attention over a cluster are ``attnviz.pipeline.scan.scan_run`` (same cluster options). torch is imported
only inside precompute tasks, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
from distributed import Client, Future, KilledWorker, LocalCluster, as_completed, get_worker
from distributed.comm import get_address_host

from attnviz.pipeline.models.info import ModelInfo
from attnviz.pipeline.precompute.inputs import InputError
from attnviz.pipeline.store import shard_dir, shard_file_name
from attnviz.pipeline.store.format import one_line

if TYPE_CHECKING:
    from attnviz.pipeline.models.extract import EncodedExample, TokenClassifier
    from attnviz.pipeline.models.loading import LoadedModel
    from attnviz.pipeline.precompute.local import PrecomputeSummary, PreparedRun
    from attnviz.pipeline.precompute.options import PrecomputeOptions

#: How many times the scheduler may lose a worker while it runs one task before giving up on the task
#: (``distributed.scheduler.allowed-failures``, set on clusters this module starts; dask's default is 3).
ALLOWED_FAILURES = 10
#: How many times a task that raised is re-run (``retries=`` of ``Client.submit``).
TASK_RETRIES = 2
#: Models kept per worker process (each is a few hundred MB for base-size models).
MODEL_CACHE_SIZE = 2
#: Tasks in flight per worker thread: enough to keep workers busy, few enough that the scheduler never holds
#: the whole encoded corpus.
TASKS_PER_THREAD = 4
TASK_PREFIX = "attnviz-shard"

Say = Callable[[str], Any]


class ClusterError(InputError):
    """The dask cluster cannot be used (unreachable scheduler, bad worker count, workers dying)."""


# --------------------------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------------------------


def usable_cores() -> int:
    """CPU cores this process may run on (affinity/cgroup-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_cluster(workers: int, *, dashboard_address: str = ":0") -> LocalCluster:
    """A LocalCluster of ``workers`` worker processes with one thread each, restarted by their nanny on death."""
    if workers < 1:
        raise ClusterError(f"--workers must be at least 1 (got {workers})")
    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        return LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                            dashboard_address=dashboard_address, silence_logs=logging.ERROR)


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None, *, client: Client | None = None,
            say: Say | None = None) -> Iterator[Client]:
    """A dask client: ``client`` as given, or connected to ``scheduler``, or to a new LocalCluster of ``workers``.

    Exactly one of them must be given. A cluster started here is closed on exit; a given one is left running.
    """
    if sum(x is not None for x in (workers, scheduler, client)) != 1:
        raise ClusterError("give exactly one of --workers N (a local cluster) or --scheduler ADDRESS")
    if client is not None:
        yield client
        return
    if scheduler is not None:
        try:
            remote = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the dask scheduler at {scheduler} ({one_line(exc)}): start one with "
                               "'dask scheduler' or use --workers N") from exc
        try:
            _say(say, f"dask scheduler {scheduler}: {len(remote.scheduler_info()['workers'])} workers, "
                      f"dashboard {_dashboard(remote)}")
            yield remote
        finally:
            remote.close()
        return
    assert workers is not None
    cluster = local_cluster(workers)
    try:
        with Client(cluster) as local:
            local.wait_for_workers(workers, timeout=300)
            _say(say, f"dask LocalCluster: {workers} worker processes x 1 thread, dashboard {_dashboard(local)}")
            yield local
    finally:
        cluster.close()


def _dashboard(client: Client) -> str:
    if "dashboard" not in client.scheduler_info().get("services", {}):
        return "not running"
    link = client.dashboard_link
    return link if find_spec("bokeh") else f"{link} (pip install bokeh for the task stream and graphs)"


def _say(say: Say | None, message: str) -> None:
    if say is not None:
        say(message)


def torch_threads_by_host(client: Client) -> dict[str, int]:
    """Torch threads per task on each host: ``max(1, cores // worker threads on that host)``, so that the
    workers of one machine together use its cores without oversubscribing them."""
    info = client.scheduler_info()["workers"]
    if not info:
        return {}
    cores = client.run(usable_cores)
    threads: dict[str, int] = {}
    slots: dict[str, int] = {}
    for address, w in info.items():
        host = w.get("host") or get_address_host(address)
        slots[host] = slots.get(host, 0) + int(w.get("nthreads", 1))
        threads[host] = int(cores.get(address, 1))
    return {host: max(1, threads[host] // slots[host]) for host in threads}


# --------------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to compute one shard (picklable: no models, no open files)."""

    model: ModelInfo  #: the model_info entry itself, so workers need no model_info folder
    overrides: dict[str, Any]
    store: str
    run: str
    start: int
    encoded: list[EncodedExample]  #: the shard's examples, already tokenized by the client
    batch_size: int
    capture: tuple[str, ...]
    dtype: str
    mantissa_bits: int | None
    threads_by_host: dict[str, int]  #: torch threads per task, by worker host
    threads: int | None = None  #: explicit torch threads per task (overrides ``threads_by_host``)
    fingerprint: str | None = None  #: the run's configuration fingerprint, recorded in the shard file
    keep: tuple[bool, ...] | None = None  #: which of the shard's examples keep raw attention (None: all)
    device: str = "cpu"  #: ``--device`` as asked; each worker pins one device (:func:`worker_device`)
    model_dtype: str = "float32"  #: ``--model-dtype``

    @property
    def count(self) -> int:
        return len(self.encoded)


@dataclass(frozen=True)
class ShardDone:
    """What a finished task sends back: where its shard file is, and who made it how fast."""

    start: int
    count: int
    path: str
    seconds: float
    pid: int
    torch_threads: int


_MODEL_LOCK = threading.Lock()
_MODEL_CACHE: OrderedDict[str, tuple[LoadedModel, TokenClassifier]] = OrderedDict()
_MODEL_LOADS = [0]


def _model_cache(model: ModelInfo, overrides: dict[str, Any], device: str = "cpu", dtype: str = "float32"
                 ) -> tuple[LoadedModel, TokenClassifier]:
    """The model (and its token classifier) for this worker process, loaded on first use, then reused.

    Keyed by the model_info entry, the config overrides, the device and the dtype.
    """
    from attnviz.pipeline.models.extract import TokenClassifier
    from attnviz.pipeline.models.loading import load_model

    key = json.dumps([model.name, json.loads(model.model_dump_json()), overrides, device, dtype], sort_keys=True)
    with _MODEL_LOCK:
        hit = _MODEL_CACHE.get(key)
        if hit is None:
            lm = load_model(model, overrides, device=device, dtype=dtype)
            _MODEL_LOADS[0] += 1
            hit = _MODEL_CACHE[key] = (lm, TokenClassifier(lm))
            while len(_MODEL_CACHE) > MODEL_CACHE_SIZE:
                _MODEL_CACHE.popitem(last=False)
        _MODEL_CACHE.move_to_end(key)
        return hit


def loaded_model_keys() -> list[str]:
    """Cache keys of the models loaded in this process (run on workers with ``client.run``)."""
    with _MODEL_LOCK:
        return list(_MODEL_CACHE)


def model_load_count() -> int:
    """How many times this process has loaded a model for a shard task (run on workers with ``client.run``)."""
    return _MODEL_LOADS[0]


def _task_threads(task: ShardTask) -> int:
    if task.threads:
        return task.threads
    try:
        worker = get_worker()
    except ValueError:  # called outside a worker
        return max(1, usable_cores())
    host = get_address_host(worker.address)
    return task.threads_by_host.get(host) or max(1, usable_cores() // max(1, worker.state.nthreads))


def worker_device(requested: str) -> str:
    """The device this worker runs the model on: with several CUDA devices and ``--device auto`` or ``cuda``,
    worker *k* of the cluster (its name in a LocalCluster, else its position among the scheduler's workers)
    takes ``cuda:(k mod count)`` (:func:`attnviz.pipeline.models.device.pin_device`)."""
    from attnviz.pipeline.models.device import cuda_count, pin_device

    count = cuda_count()
    if count < 2 or requested not in ("auto", "cuda"):
        return requested
    try:
        worker = get_worker()
    except ValueError:  # called outside a worker
        return requested
    name = worker.name
    if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
        ordinal = int(name)
    else:  # a worker started by hand: a stable number from its address
        ordinal = zlib.crc32(str(worker.address).encode())
    return pin_device(requested, ordinal, count)


def run_shard_task(task: ShardTask) -> ShardDone:
    """Worker task: compute one shard and write its file (temp name, then atomic rename); do not touch the index."""
    import torch

    from attnviz.pipeline.precompute.local import compute_shard

    t0 = time.perf_counter()
    threads = _task_threads(task)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    lm, classifier = _model_cache(task.model, task.overrides, worker_device(task.device), task.model_dtype)
    path = compute_shard(lm, task.encoded, task.start, task.store, task.run, batch_size=task.batch_size,
                         capture=task.capture, dtype=task.dtype, classifier=classifier,
                         mantissa_bits=task.mantissa_bits, fingerprint=task.fingerprint, keep=task.keep)
    return ShardDone(start=task.start, count=task.count, path=os.fspath(path), seconds=time.perf_counter() - t0,
                     pid=os.getpid(), torch_threads=threads)


# --------------------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------------------


def precompute_distributed(options: PrecomputeOptions, *, client: Client | None = None,
                           retries: int = TASK_RETRIES, progress: Callable[[int, int], None] | None = None,
                           on_start: Callable[[int, int], None] | None = None, say: Say | None = None
                           ) -> PrecomputeSummary:
    """``precompute`` on a dask cluster: one task per shard, each committed to the index as it finishes.

    The cluster is a new LocalCluster of ``options.workers`` processes, the scheduler at ``options.scheduler``,
    or ``client`` (then neither option is set). Validation, planning and resume are those of the single-process
    command, so the store is the same whatever the worker count; a rerun skips committed shards.
    ``options.threads`` forces torch threads per task (default: cores // worker threads on each host).
    ``progress``/``on_start`` as in ``precompute``; ``say`` gets one-line messages (cluster, dashboard link).
    """
    from attnviz.pipeline.precompute.local import finish_analysis, forget_if_empty, prepare_run

    workers, scheduler = options.workers, options.scheduler
    if sum(x is not None for x in (workers, scheduler, client)) != 1:
        raise ClusterError("give exactly one of --workers N (a local cluster) or --scheduler ADDRESS")
    with contextlib.ExitStack() as stack:
        # An existing cluster is checked first (cheap); a LocalCluster starts only once the input is valid.
        dask_client = None if workers else stack.enter_context(connect(None, scheduler, client=client, say=say))
        if workers:  # the workers run on this machine: refuse an absent --device before starting them
            from attnviz.pipeline.models.device import resolve_device

            resolve_device(options.device)
        prep = prepare_run(options, model_device="cpu")  # the client only tokenizes: its model stays on the CPU
        if not prep.todo:  # a finished run: nothing to start a cluster for (its analysis runs in this process)
            _say(say, f"run {prep.run!r} is complete in {prep.store}: nothing to compute")
            if on_start:
                on_start(prep.skipped, prep.total)
            return prep.summary(0, finish_analysis(prep, client=dask_client))
        if dask_client is None:
            dask_client = stack.enter_context(connect(workers, say=say))
        if on_start:
            on_start(prep.skipped, prep.total)
        try:
            new = _run_tasks(dask_client, prep, retries=retries, progress=progress)
        except BaseException:
            forget_if_empty(prep)
            raise
        analysis = finish_analysis(prep, client=dask_client)
    _remove_stale_temps(prep)
    return prep.summary(new, analysis)


def _run_tasks(client: Client, prep: PreparedRun, *, retries: int,
               progress: Callable[[int, int], None] | None) -> int:
    """Submit the shards not committed yet (a bounded window at a time), commit each as it completes."""
    threads_by_host = torch_threads_by_host(client)
    slots = sum(int(w.get("nthreads", 1)) for w in client.scheduler_info()["workers"].values())
    window = max(8, TASKS_PER_THREAD * slots)
    token = uuid.uuid4().hex[:12]
    o = prep.options
    tasks = (ShardTask(model=prep.lm.info, overrides=prep.lm.overrides, store=os.fspath(prep.store),
                       run=prep.run, start=start, encoded=prep.encoded[start:start + count],
                       batch_size=o.batch_size, capture=o.capture, dtype=o.dtype,
                       mantissa_bits=o.mantissa_bits, threads_by_host=threads_by_host, threads=o.threads,
                       fingerprint=prep.fingerprint, keep=tuple(prep.keep_of(start, count)), device=o.device,
                       model_dtype=o.model_dtype)
             for start, count in prep.todo)

    def submit(task: ShardTask) -> Future:
        return client.submit(run_shard_task, task, key=f"{TASK_PREFIX}-{token}-{task.start}", retries=retries,
                             pure=False)

    inflight = {submit(t) for t in islice(tasks, window)}
    queue = as_completed(inflight)
    expected = dict(prep.todo)
    new = 0
    try:
        for future in queue:
            inflight.discard(future)
            done = _result(future)
            if expected.get(done.start) != done.count or Path(done.path).name != shard_file_name(done.start,
                                                                                                   done.count):
                raise ClusterError(f"a worker returned an unexpected shard {done.path}: mixed attnviz versions?")
            prep.writer.commit_shard(prep.run, done.path, meta_update={"planned_examples": prep.planned})
            new += done.count
            if progress:
                progress(prep.skipped + new, prep.total)
            future.release()
            nxt = next(tasks, None)
            if nxt is not None:
                following = submit(nxt)
                inflight.add(following)
                queue.add(following)
    except BaseException:
        client.cancel(list(inflight))
        raise
    return new


def _result(future: Future) -> ShardDone:
    try:
        return future.result()
    except KilledWorker as exc:
        raise ClusterError(f"shard task {future.key} killed more workers than distributed.scheduler.allowed-failures "
                           "allows (out of memory? see the worker logs); committed shards are kept: rerun to resume"
                           ) from exc


def _remove_stale_temps(prep: PreparedRun) -> None:
    """Remove temp files that killed workers left for this run's shards (all its tasks are over now)."""
    folder = shard_dir(prep.store, prep.run)
    if not folder.exists():
        return
    names = {shard_file_name(s, c) for s, c in prep.shards}
    for entry in folder.iterdir():
        if ".tmp-" in entry.name and entry.name.split(".tmp-")[0] in names:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


__all__ = ["ALLOWED_FAILURES", "ClusterError", "ShardDone", "ShardTask", "connect", "loaded_model_keys",
           "local_cluster", "model_load_count", "precompute_distributed", "run_shard_task", "torch_threads_by_host",
           "usable_cores"]
