"""What the Training tab reads from the store: a series' checkpoints and, per metric, the ``[S, L, H]`` corpus
means over the probe of every checkpoint (cached per process, keyed by the checkpoints' run stamps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.dashboard.cache import LRU, run_stamp
from attnviz.pipeline.metrics import METRICS
from attnviz.pipeline.statistics.patterns import PATTERN_METRICS
from attnviz.pipeline.statistics.training import series_labels, series_means
from attnviz.pipeline.store import Checkpoint, StoreError, StoreReader, series_checkpoints, series_names

#: Cached ``[S, L, H]`` means per (store, series, metric, checkpoint stamps).
_MEANS = LRU(max_items=256, max_bytes=64 << 20)


@dataclass(frozen=True)
class Series:
    """A series' complete checkpoints, in step order, and its head grid."""

    name: str
    checkpoints: tuple[Checkpoint, ...]
    shape: tuple[int, int]  #: (layers, heads) of its self-attention
    metrics: tuple[str, ...]  #: the metrics its checkpoints store

    @property
    def steps(self) -> np.ndarray:
        """``[S]`` training steps."""
        return np.array([c.step for c in self.checkpoints], dtype=np.int64)

    def run_at(self, step: int) -> str | None:
        """The run of the checkpoint at ``step`` (None when there is none)."""
        return next((c.run for c in self.checkpoints if c.step == step), None)


def all_series(reader: StoreReader) -> list[str]:
    """Names of every series in the store."""
    return series_names({run: reader.run_info(run) for run in reader.runs()})


def load_series(reader: StoreReader, name: str) -> Series:
    """The complete checkpoints of series ``name``; StoreError when it has none."""
    runs = {run: reader.run_info(run) for run in reader.runs()}
    checkpoints = series_checkpoints(runs, name)
    if not checkpoints:
        raise StoreError(f"series {name!r} has no complete checkpoint in this store")
    meta = runs[checkpoints[0].run].meta
    shape = tuple(meta.get("shape", {}).get("self", (0, 0)))
    names = tuple(m for m in meta.get("metrics", {}).get("self", []) if m in METRICS)
    return Series(name, tuple(checkpoints), (int(shape[0]), int(shape[1])), names)


def metric_means(reader: StoreReader, series: Series, metric: str) -> np.ndarray:
    """``[S, L, H]`` corpus means (over the probe, NaN-ignoring) of ``metric`` at every checkpoint."""
    stamps = tuple(run_stamp(str(reader.path), reader.run_info(c.run)) for c in series.checkpoints)
    key = (str(reader.path), series.name, metric, stamps)
    return _MEANS.get(key, lambda: series_means([reader.metrics(c.run, metric) for c in series.checkpoints]))


def labels(reader: StoreReader, series: Series) -> np.ndarray:
    """``[S, L, H]`` pattern labels of every checkpoint (from the corpus means of the classifier's metrics)."""
    return series_labels({m: metric_means(reader, series, m) for m in PATTERN_METRICS if m in series.metrics})


def loss_rows(series: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(step, loss, learning rate)`` of the training log kept with the checkpoints, in step order (NaN where
    unknown)."""
    rows = sorted({r[0]: r for c in series.checkpoints for r in c.log}.values())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    steps = np.array([r[0] for r in rows], dtype=np.int64)
    loss = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    rate = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)
    return steps, loss, rate
