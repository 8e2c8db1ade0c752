"""Training series: one run per recorded checkpoint, grouped by the ``series`` entry of their metadata.

A series is not a separate object on disk: each checkpoint is an ordinary run (same shards, same metrics, same
crash safety) named :func:`checkpoint_run_name` whose metadata carries a ``series`` entry (its series name, the
training step, epoch, loss, learning rate, the probe's fingerprint and the training log since the previous
checkpoint; docs/store-format.md, "Training series"). This module reads and checks those entries from the index
alone (no torch, no dash, no h5py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attnviz.pipeline.store.format import StoreError
from attnviz.pipeline.store.index import RunInfo

#: Key of a checkpoint run's metadata that holds its series entry.
SERIES_KEY = "series"
#: Series names are run names less the ``--stepNNNNNNNN`` suffix.
SERIES_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")
#: Largest training step a run name can hold.
MAX_STEP = 10**8 - 1


class SeriesError(StoreError):
    """A series cannot be written as asked (bad name, another probe, another model): one line saying what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """One recorded checkpoint of a series, as its run's metadata describes it."""

    run: str  #: the checkpoint's run name
    step: int  #: training step (optimizer updates done when it was recorded)
    epoch: float | None  #: training epoch, when known
    loss: float | None  #: the training loss logged at that step, when known
    learning_rate: float | None  #: the learning rate at that step, when known
    probe_fingerprint: str  #: fingerprint of the probe's token ids (equal for every checkpoint of a series)
    model: str  #: the run's model_info name
    complete: bool  #: every probe example is committed
    log: tuple[tuple[int, float | None, float | None], ...] = field(default=())  #: (step, loss, lr) since previous

    @property
    def label(self) -> str:
        """``step 200``: how views name it."""
        return f"step {self.step}"


def check_series_name(name: str) -> str:
    """``name`` if it can name a series (letters, digits, ``._+-``, at most 100 characters), else SeriesError."""
    if not isinstance(name, str) or not SERIES_NAME.match(name):
        raise SeriesError(f"series name {name!r} is not allowed: use 1-100 letters, digits, '.', '_', '+', '-' "
                          "(starting with a letter or digit)")
    return name


def checkpoint_run_name(series: str, step: int) -> str:
    """The run of a series' checkpoint at ``step``: ``<series>--step00000200`` (sorts by step)."""
    check_series_name(series)
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= MAX_STEP:
        raise SeriesError(f"training step {step!r} must be a whole number from 0 to {MAX_STEP}")
    return f"{series}--step{step:08d}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def checkpoint_of(info: RunInfo) -> Checkpoint | None:
    """The checkpoint a run records, or None for a run that is not part of a series."""
    entry = info.meta.get(SERIES_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("step"), int):
        return None
    log = []
    for row in entry.get("log") or []:
        if isinstance(row, list | tuple) and len(row) == 3 and isinstance(row[0], int):
            log.append((int(row[0]), _number(row[1]), _number(row[2])))
    return Checkpoint(run=info.name, step=int(entry["step"]), epoch=_number(entry.get("epoch")),
                      loss=_number(entry.get("loss")), learning_rate=_number(entry.get("learning_rate")),
                      probe_fingerprint=str(entry.get("probe_fingerprint", "")), model=str(info.meta.get("model", "")),
                      complete=info.complete, log=tuple(log))


def series_names(runs: Mapping[str, RunInfo]) -> list[str]:
    """Every series the runs belong to, sorted."""
    return sorted({str(info.meta[SERIES_KEY]["name"]) for info in runs.values()
                   if checkpoint_of(info) is not None})


def series_checkpoints(runs: Mapping[str, RunInfo], series: str, *, complete_only: bool = True
                       ) -> list[Checkpoint]:
    """The checkpoints of ``series`` in step order; by default only complete ones (a checkpoint killed while it
    was being written holds fewer examples than its probe until its step is recorded again)."""
    found = [c for info in runs.values() if (c := checkpoint_of(info)) is not None
             and info.meta[SERIES_KEY]["name"] == series and (c.complete or not complete_only)]
    return sorted(found, key=lambda c: c.step)


def check_series_compatible(runs: Mapping[str, RunInfo], series: str, *, probe_fingerprint: str, model: str,
                            store: str) -> None:
    """Refuse to add a checkpoint to ``series`` when its recorded checkpoints used another probe or model.

    Every checkpoint of a series is computed on the same probe examples (the same token ids), so that a change
    between two steps is a change of the model, never of the input.
    """
    for c in series_checkpoints(runs, series, complete_only=False):
        if c.probe_fingerprint != probe_fingerprint:
            raise SeriesError(
                f"series {series!r} in {store} was recorded on another probe (fingerprint {c.probe_fingerprint} at "
                f"step {c.step}, this probe {probe_fingerprint}): every checkpoint of a series uses the same probe; "
                "pass the series' own probe, or record this one into another series name")
        if c.model != model:
            raise SeriesError(
                f"series {series!r} in {store} records model {c.model!r} (step {c.step}), not {model!r}: record "
                "this model into another series name")


__all__ = ["MAX_STEP", "SERIES_KEY", "Checkpoint", "SeriesError", "check_series_compatible", "check_series_name",
           "checkpoint_of", "checkpoint_run_name", "series_checkpoints", "series_names"]
