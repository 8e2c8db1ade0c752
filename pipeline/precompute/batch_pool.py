"""Whole batches computed side by side on the CPU: forward, metrics and slices of several batches at once.

A batch's work after its forward pass (metrics, the float16 copy, per-example slices: numpy, one thread) leaves
all but one core idle, and torch's intra-op threads spin rather than yield, so a helper thread doing that work
beside a multi-threaded forward slows both down. Instead, each of ``workers`` threads runs whole batches (its
forward with ``threads // workers`` intra-op threads, then its collection), so one worker's numpy work overlaps
the others' forward passes and every core stays busy: on 2 cores, 2 workers of 1 thread each ran the bare
forward of 512 Bible verses 1.2-1.3x faster than one 2-thread loop (``bench/precompute.py``).

The number of workers is bounded by memory (:data:`BATCH_MEMORY_BUDGET` for the batches in flight), and an
accelerator gets one worker (the device runs batches one after the other anyway). The batches are those of the
one-batch-at-a-time loop (:func:`~attnviz.pipeline.models.extract.length_batches`), so a shard file holds
exactly what that loop made of it (the file is written in input order).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

import torch

from attnviz.pipeline.models.extract import (
    EncodedExample,
    TokenClassifier,
    collect_batch,
    forward_batch,
    length_batches,
)
from attnviz.pipeline.models.loading import LoadedModel
from attnviz.pipeline.records import ExampleResult

#: Bytes of the batches in flight at most (attention in float32 and its copies, about 3x the weights), which
#: bounds the number of workers: long inputs of a large model run one batch at a time, as before.
BATCH_MEMORY_BUDGET = 1 << 30


def batch_bytes(lm: LoadedModel, batch_size: int, longest: int) -> int:
    """About the memory one batch of ``batch_size`` examples of ``longest`` tokens holds while it is computed:
    the model's float32 attention of every head, its store copy and the metrics' temporaries."""
    heads = sum(layers * per_layer for layers, per_layer in lm.shape().values())
    return 3 * 4 * batch_size * heads * longest * longest


def worker_count(lm: LoadedModel, threads: int, batch_size: int, longest: int) -> int:
    """How many batches to compute side by side: one per thread on the CPU, fewer when their memory would pass
    :data:`BATCH_MEMORY_BUDGET`; one on an accelerator."""
    if lm.device.type != "cpu" or threads < 2:
        return 1
    return max(1, min(threads, BATCH_MEMORY_BUDGET // max(1, batch_bytes(lm, batch_size, longest))))


class PendingShard:
    """The batches of one shard, submitted to a :class:`BatchPool`; :meth:`results` waits for them."""

    def __init__(self, futures: list[Future[list[ExampleResult]]]) -> None:
        self._futures = futures

    def results(self) -> list[ExampleResult]:
        """Every example's result, batch after batch in submission order (longest batch first)."""
        return [result for future in self._futures for result in future.result()]

    def cancel(self) -> None:
        """Cancel the batches not started yet (after an error elsewhere)."""
        for future in self._futures:
            future.cancel()


class BatchPool:
    """Threads that compute whole batches of one loaded model (see the module docstring); a context manager
    that sets torch's intra-op threads to each worker's share and restores them on exit.

    ``threads``: the cores to use (default: torch's current thread count). ``longest``: the most tokens of an
    example the pool will see (bounds the workers by memory; 0: unknown, no bound)."""

    def __init__(self, lm: LoadedModel, *, batch_size: int, threads: int | None = None, longest: int = 0) -> None:
        self.lm = lm
        self.batch_size = batch_size
        self.threads = threads or torch.get_num_threads()
        self.workers = worker_count(lm, self.threads, batch_size, longest)
        self._executor: ThreadPoolExecutor | None = None
        self._restore_threads = torch.get_num_threads()

    def __enter__(self) -> BatchPool:
        if self.workers > 1:
            torch.set_num_threads(max(1, self.threads // self.workers))
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="attnviz-batch")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
            torch.set_num_threads(self._restore_threads)

    def submit(self, encoded: Sequence[EncodedExample], *, capture: Sequence[str], dtype: str,
               classifier: TokenClassifier, keep: Sequence[bool] | None = None) -> PendingShard:
        """Start computing one shard's examples (``keep`` aligned with ``encoded``; default all keep their raw
        tensors). Without worker threads (one worker) the shard is computed here, before this returns."""
        classifier.learn(i for e in encoded for i in (*e.source_ids, *(e.target_ids or ())))  # no tokenizer in threads
        kept = {id(e): True for e in encoded} if keep is None else {id(e): bool(k) for e, k in
                                                                    zip(encoded, keep, strict=True)}
        futures: list[Future[list[ExampleResult]]] = []
        # Longest batches first: the shortest are last, so the workers finish a run within a short batch of each
        # other instead of one idling while another computes the longest batch.
        for batch in reversed(list(length_batches(encoded, self.batch_size))):
            batch_keep = [kept[id(e)] for e in batch]
            if self._executor is None:
                done: Future[list[ExampleResult]] = Future()
                done.set_result(self._compute(batch, batch_keep, capture, dtype, classifier))
                futures.append(done)
            else:
                futures.append(self._executor.submit(self._compute, batch, batch_keep, capture, dtype, classifier))
        return PendingShard(futures)

    def _compute(self, batch: list[EncodedExample], keep: list[bool], capture: Sequence[str], dtype: str,
                 classifier: TokenClassifier) -> list[ExampleResult]:
        out = forward_batch(self.lm, batch, capture=capture, keep=keep)
        return collect_batch(self.lm, batch, out, capture=capture, store_dtype=dtype, classifier=classifier,
                             keep=keep)


__all__ = ["BATCH_MEMORY_BUDGET", "BatchPool", "PendingShard", "batch_bytes", "worker_count"]
