"""Record one checkpoint of a model in training: its attention and metrics on the series' probe, written as one
run of the series through the precompute pipeline (same metrics, same shards, same crash safety and resume).

The model is run in eval mode, without gradients (``torch.inference_mode``), with eager attention, and put back
as it was (training mode, attention implementation). Recording does not touch any random number generator, so a
training run gives the same weights with and without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from attnviz.pipeline.models.info import ModelInfo, get_model_info
from attnviz.pipeline.models.loading import LoadedModel
from attnviz.pipeline.precompute.local import plan_run, run_prepared
from attnviz.pipeline.store import StoreWriter, now_iso
from attnviz.pipeline.store.series import (
    SERIES_KEY,
    check_series_compatible,
    check_series_name,
    checkpoint_run_name,
    series_checkpoints,
)
from attnviz.pipeline.training.probe import Probe

log = logging.getLogger("attnviz.training")


@dataclass
class RecordSummary:
    """What recording one checkpoint did."""

    series: str
    step: int
    run: str
    examples: int  #: probe examples in the checkpoint's run
    seconds: float
    already_recorded: bool  #: the step was complete in the store already (a resumed training): nothing computed
    loss: float | None = None  #: the training loss recorded with it

    def line(self) -> str:
        what = "already recorded" if self.already_recorded else f"{self.examples} probe examples"
        loss = f", loss {self.loss:.3f}" if self.loss is not None else ""
        return f"series {self.series!r} step {self.step}{loss}: run {self.run!r}, {what}, {self.seconds:.2f} s"


def _family(model: torch.nn.Module) -> str:
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    name = type(model).__name__
    if getattr(config, "is_decoder", False) or "CausalLM" in name or "LMHead" in name:
        return "decoder"
    return "encoder"


def model_info_for(model: torch.nn.Module, name: str, *, path: str | None = None) -> ModelInfo:
    """A model_info entry describing a model in training (recorded with each checkpoint; never loaded from)."""
    return ModelInfo.model_validate({
        "name": name, "family": _family(model), "tokenizer": "same", "tasks": ["language-modeling"],
        "description": f"{type(model).__name__} in training (checkpoints recorded by attnviz)",
        "source": {"kind": "local", "path": path or "(in memory, in training)"}})


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode with eager attention (attention weights are only returned by eager attention),
    restored afterwards (training mode and attention implementation)."""
    was_training = model.training
    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", None)
    switch = implementation not in (None, "eager") and hasattr(model, "set_attn_implementation")
    model.eval()
    if switch:
        model.set_attn_implementation("eager")  # type: ignore[operator]
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(implementation)  # type: ignore[operator]
        model.train(was_training)


class CheckpointRecorder:
    """Records checkpoints of one model in training into one series of a store.

    ``probe``: the series' :class:`~attnviz.pipeline.training.probe.Probe` (or its spec); every checkpoint of a
    series must use the same probe (its token ids' fingerprint is recorded and checked) and the same model name.
    ``model_info``: a model_info name or entry describing the model (default: one made from the model's class,
    named after the series). ``capture``, ``batch_size``, ``dtype``: as for ``attnviz precompute``.
    """

    def __init__(self, store: str | os.PathLike, series: str, probe: Probe | str | os.PathLike, *,
                 model_info: str | ModelInfo | None = None, capture: str | Sequence[str] = ("attention",),
                 batch_size: int = 16, dtype: str = "float16") -> None:
        self.store = Path(store)
        self.series = check_series_name(series)
        self.probe = Probe.of(probe)
        self.model_info = get_model_info(model_info) if isinstance(model_info, str) else model_info
        self.capture, self.batch_size, self.dtype = capture, batch_size, dtype
        self.writer = StoreWriter(self.store)  # refuses a non-store, a newer schema, a read-only folder
        self._loaded: LoadedModel | None = None

    def _lm(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> LoadedModel:
        lm = self._loaded
        if lm is None or lm.model is not model or lm.tokenizer is not tokenizer:
            if tokenizer.pad_token_id is None:  # GPT-2 has none; padded positions are masked, any id works
                tokenizer.pad_token = tokenizer.eos_token
            info = self.model_info or model_info_for(model, self.series)
            lm = LoadedModel(info=info, model=model, tokenizer=tokenizer, has_lm_head=_family(model) != "encoder")
            self._loaded = lm
        return lm

    def recorded_steps(self) -> list[int]:
        """Steps of the series whose checkpoint is complete in the store."""
        return [c.step for c in series_checkpoints(self.writer.runs(), self.series)]

    def check(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
        """Refuse (:class:`~attnviz.pipeline.store.series.SeriesError`) a probe or model other than the series'."""
        lm = self._lm(model, tokenizer)
        check_series_compatible(self.writer.runs(), self.series, probe_fingerprint=self.probe.prepare(lm).fingerprint,
                                model=lm.info.name, store=str(self.store))

    def record(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, step: int, *,
               epoch: float | None = None, loss: float | None = None, learning_rate: float | None = None,
               log_rows: Sequence[tuple[int, float | None, float | None]] = ()) -> RecordSummary:
        """Record ``model`` (its current weights) as the checkpoint at training ``step``.

        A step already complete in the series is not recorded again (a resumed training passes it again); one
        killed while it was written is completed. ``log_rows``: the training log since the previous checkpoint,
        ``(step, loss, learning rate)`` rows, kept for the loss curve.
        """
        t0 = time.perf_counter()
        run = checkpoint_run_name(self.series, step)
        lm = self._lm(model, tokenizer)
        probe = self.probe.prepare(lm)
        runs = self.writer.runs()
        check_series_compatible(runs, self.series, probe_fingerprint=probe.fingerprint, model=lm.info.name,
                                store=str(self.store))
        if run in runs and runs[run].complete:
            return RecordSummary(self.series, step, run, runs[run].num_examples, time.perf_counter() - t0, True)
        loss = _finite(loss)
        entry = {"name": self.series, "step": step, "epoch": _finite(epoch), "loss": loss,
                 "learning_rate": _finite(learning_rate),
                 "probe_fingerprint": probe.fingerprint, "recorded": now_iso(),
                 "log": [[int(s), _finite(v), _finite(r)] for s, v, r in log_rows]}
        options = self.probe.options(model=lm.info.name, store=self.store, run=run, capture=self.capture,
                                     batch_size=self.batch_size, dtype=self.dtype)
        with evaluating(model):
            prep = plan_run(options, self.writer, lm, probe.inputs, encoded=probe.encoded,
                            extra_meta={SERIES_KEY: entry})
            summary = run_prepared(prep, classifier=probe.classifier)
        return RecordSummary(self.series, step, run, summary.examples, time.perf_counter() - t0, False, loss)


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value and abs(value) != float("inf"):
        return float(value)
    return None


def record_checkpoint(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, store: str | os.PathLike,
                      series: str, step: int, probe: Probe | str | os.PathLike, *, epoch: float | None = None,
                      loss: float | None = None, learning_rate: float | None = None,
                      model_info: str | ModelInfo | None = None, capture: str | Sequence[str] = ("attention",),
                      batch_size: int = 16, dtype: str = "float16") -> RecordSummary:
    """Record one checkpoint of a model in a custom training loop (see :class:`CheckpointRecorder`).

    Call it every N steps with the same ``store``, ``series`` and ``probe``: each call writes the run
    ``<series>--step<NNNNNNNN>``. Pass the same :class:`~attnviz.pipeline.training.probe.Probe` object each time
    to tokenize the probe once. A different probe or model for an existing series is refused
    (:class:`~attnviz.pipeline.store.series.SeriesError`, one line); a step already recorded is skipped.
    """
    recorder = CheckpointRecorder(store, series, probe, model_info=model_info, capture=capture,
                                  batch_size=batch_size, dtype=dtype)
    return recorder.record(model, tokenizer, step, epoch=epoch, loss=loss, learning_rate=learning_rate)


__all__ = ["CheckpointRecorder", "RecordSummary", "evaluating", "model_info_for", "record_checkpoint"]
