"""``AttnvizCallback``: a ``transformers.TrainerCallback`` that records the model's attention every N steps.

When it records, relative to the ``Trainer``'s loop (transformers 4.46+ and 5):

* at ``on_train_begin``: the starting step (step 0 of a new training; the resumed checkpoint's step when it is
  due and missing, e.g. after a kill between the Trainer's checkpoint save and the recording);
* at each step ``s`` with ``s % every == 0``: ``on_step_end`` asks the Trainer to log at that step, and the
  checkpoint is recorded in ``on_log`` with the loss and learning rate just logged (the weights are those of
  step ``s``: logging, saving and evaluating change no weight). Should no log come, it is recorded at the next
  ``on_step_begin`` or ``on_train_end``, before any weight changes;
* at ``on_train_end``: the last step, when ``record_last`` and not recorded yet.

A training resumed from a Trainer checkpoint continues its series (steps already complete are skipped). A new
training (step 0) into a series that already holds later steps is refused, as is another probe or model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from attnviz.pipeline.models.info import ModelInfo
from attnviz.pipeline.store.series import SeriesError, check_series_name
from attnviz.pipeline.training.probe import Probe
from attnviz.pipeline.training.record import CheckpointRecorder, RecordSummary

log = logging.getLogger("attnviz.training")


class AttnvizCallback(TrainerCallback):
    """Record attention on a fixed probe every ``every`` optimizer steps into a series of ``store``.

    Args:
        store: the attnviz store file (created if missing).
        probe: the probe: a sentence file, a random spec (``random:length=24,count=32,seed=0,repeat=2``) or a
            :class:`~attnviz.pipeline.training.probe.Probe`.
        every: record every N optimizer steps (N >= 1).
        series: the series name (default: the name of the Trainer's ``output_dir``).
        tokenizer: the tokenizer (default: the Trainer's ``processing_class``).
        model_info: a model_info name or entry describing the model (default: one named after the series).
        record_first, record_last: also record the starting and the last step.
        capture, batch_size, dtype: as for ``attnviz precompute``.
        on_record: called with each :class:`~attnviz.pipeline.training.record.RecordSummary`.
    """

    def __init__(self, store: str | os.PathLike, probe: Probe | str | os.PathLike, every: int = 100, *,
                 series: str | None = None, tokenizer: Any = None, model_info: str | ModelInfo | None = None,
                 record_first: bool = True, record_last: bool = True,
                 capture: str | Sequence[str] = ("attention",), batch_size: int = 16, dtype: str = "float16",
                 on_record: Callable[[RecordSummary], None] | None = None) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise SeriesError(f"every={every!r}: record every N steps with a whole N of at least 1")
        self.store, self.every = Path(store), every
        self.probe = Probe.of(probe)
        self.series = check_series_name(series) if series is not None else None
        self.tokenizer, self.model_info = tokenizer, model_info
        self.record_first, self.record_last = record_first, record_last
        self.capture, self.batch_size, self.dtype = capture, batch_size, dtype
        self.on_record = on_record
        self.recorder: CheckpointRecorder | None = None
        self.summaries: list[RecordSummary] = []
        self._pending: int | None = None
        self._log_rows: list[tuple[int, float | None, float | None]] = []
        self._last_log: dict[str, Any] = {}

    # ---- helpers --------------------------------------------------------------------------------------

    def _tokenizer(self, kwargs: dict[str, Any]) -> Any:
        tok = self.tokenizer or kwargs.get("processing_class") or kwargs.get("tokenizer")
        if tok is None:
            raise SeriesError("AttnvizCallback needs the tokenizer: pass tokenizer=... or give the Trainer a "
                              "processing_class")
        return tok

    def _recorder(self, args: TrainingArguments) -> CheckpointRecorder:
        if self.recorder is None:
            series = self.series or check_series_name(Path(args.output_dir or "training").name or "training")
            self.series = series
            self.recorder = CheckpointRecorder(self.store, series, self.probe, model_info=self.model_info,
                                               capture=self.capture, batch_size=self.batch_size, dtype=self.dtype)
        return self.recorder

    def _record(self, args: TrainingArguments, state: TrainerState, kwargs: dict[str, Any], step: int) -> None:
        logged = self._last_log if self._last_log.get("step") == step else {}
        summary = self._recorder(args).record(
            kwargs["model"], self._tokenizer(kwargs), step, epoch=state.epoch, loss=logged.get("loss"),
            learning_rate=logged.get("learning_rate"), log_rows=self._log_rows)
        self._log_rows = []
        self.summaries.append(summary)
        log.info(summary.line())
        if self.on_record:
            self.on_record(summary)

    def _flush(self, args: TrainingArguments, state: TrainerState, kwargs: dict[str, Any]) -> None:
        if self._pending is not None:
            step, self._pending = self._pending, None
            self._record(args, state, kwargs, step)

    # ---- TrainerCallback ------------------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        """Check the series (probe, model, a new training into a used series); record the starting step."""
        recorder = self._recorder(args)
        recorder.check(kwargs["model"], self._tokenizer(kwargs))
        steps = recorder.recorded_steps()
        step = state.global_step
        if step == 0 and any(s > 0 for s in steps):
            raise SeriesError(
                f"series {self.series!r} in {self.store} already holds steps up to {max(steps)} of another training; "
                "a new training would mix two runs: choose another series name, or resume that training "
                "(trainer.train(resume_from_checkpoint=True))")
        self._pending = None
        due = (step == 0 and self.record_first) or (step > 0 and step % self.every == 0)
        if due and step not in steps:
            self._record(args, state, kwargs, step)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        """Record a checkpoint still pending (no log came), before this step changes the weights."""
        self._flush(args, state, kwargs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> TrainerControl:
        """At a step to record: ask the Trainer to log now, so the checkpoint carries this step's loss."""
        if state.global_step % self.every == 0:
            self._pending = state.global_step
            control.should_log = True
        return control

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Keep the training log (loss curve); record the pending checkpoint with the loss just logged."""
        logs = logs or {}
        if "loss" in logs:
            row = (state.global_step, logs.get("loss"), logs.get("learning_rate"))
            self._log_rows.append(row)
            self._last_log = {"step": state.global_step, "loss": logs.get("loss"),
                              "learning_rate": logs.get("learning_rate")}
        if self._pending == state.global_step:
            self._flush(args, state, kwargs)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        """Record what is pending, and the last step when ``record_last``."""
        self._flush(args, state, kwargs)
        if self.record_last and state.global_step not in self._recorder(args).recorded_steps():
            self._record(args, state, kwargs, state.global_step)


__all__ = ["AttnvizCallback"]
