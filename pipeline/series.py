"""A training series read from the store and summarised (``attnviz series``; no torch, no dash): its checkpoints,
loss, each head's pattern label at the last checkpoint and the step it got it, every label change, and the
entropy-collapse alert (rules in ``docs/metrics.md``, "Training series")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.pipeline.statistics.patterns import PATTERN_LABELS, PATTERN_METRICS
from attnviz.pipeline.statistics.training import (
    CollapseAlert,
    LabelChange,
    collapse_alerts,
    label_changes,
    series_labels,
    series_means,
)
from attnviz.pipeline.store import Checkpoint, StoreError, StoreReader, series_checkpoints, series_names


@dataclass
class SeriesSummary:
    """What a series shows, computed from its complete checkpoints."""

    name: str
    checkpoints: list[Checkpoint]
    means: dict[str, np.ndarray]  #: metric -> [S, L, H] corpus means over the probe
    labels: np.ndarray  #: [S, L, H] pattern label keys
    changes: list[LabelChange]
    alerts: list[CollapseAlert]

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]


def summarise_series(reader: StoreReader, name: str, metrics: tuple[str, ...] = ()) -> SeriesSummary:
    """Read series ``name`` (its complete checkpoints) and compute its labels, changes and alerts; ``metrics``:
    further metrics whose means to keep besides the classifier's and ``entropy``."""
    runs = {run: reader.run_info(run) for run in reader.runs()}
    checkpoints = series_checkpoints(runs, name)
    if not checkpoints:
        known = ", ".join(series_names(runs)) or "none"
        raise StoreError(f"series {name!r} has no complete checkpoint in {reader.path} (series: {known})")
    stored = set(runs[checkpoints[0].run].meta.get("metrics", {}).get("self", []))
    wanted = [m for m in dict.fromkeys([*PATTERN_METRICS, "entropy", "induction", "duplicate_token", *metrics])
              if m in stored]
    means = {m: series_means([reader.metrics(c.run, m) for c in checkpoints]) for m in wanted}
    steps = [c.step for c in checkpoints]
    labels = series_labels({m: v for m, v in means.items() if m in PATTERN_METRICS})
    entropy = means.get("entropy", np.zeros((0, 0, 0)))
    return SeriesSummary(name, checkpoints, means, labels, label_changes(steps, labels),
                         collapse_alerts(steps, entropy))


def _label_since(summary: SeriesSummary, layer: int, head: int) -> int:
    """The step from which a head has held its last label without change."""
    labels = summary.labels[:, layer, head]
    s = len(labels) - 1
    while s > 0 and labels[s - 1] == labels[-1]:
        s -= 1
    return summary.steps[s]


def series_report(reader: StoreReader, name: str | None = None) -> str:
    """``attnviz series``: the list of series, or one series' report as plain text."""
    runs = {run: reader.run_info(run) for run in reader.runs()}
    if name is None:
        lines = [f"{n}: steps {', '.join(str(c.step) for c in series_checkpoints(runs, n))}"
                 for n in series_names(runs)]
        return "\n".join(lines) if lines else f"{reader.path}: no training series"
    s = summarise_series(reader, name)
    first, last = s.checkpoints[0], s.checkpoints[-1]
    lines = [f"series {name!r}: {len(s.checkpoints)} checkpoints, steps {first.step}..{last.step}, model "
             f"{last.model!r}, probe {last.probe_fingerprint}"]
    losses = [(c.step, c.loss) for c in s.checkpoints if c.loss is not None]
    if losses:
        lines.append("loss at checkpoints: " + ", ".join(f"{step}: {loss:.3f}" for step, loss in losses))
    _, n_layers, n_heads = s.labels.shape
    lines.append("heads at the last checkpoint (label, since step; prev-token mass, induction, duplicate-token, "
                 "entropy):")
    for layer in range(n_layers):
        for head in range(n_heads):
            values = [s.means[m][-1, layer, head] if m in s.means else np.nan
                      for m in ("mass_prev", "induction", "duplicate_token", "entropy")]
            label = PATTERN_LABELS.get(str(s.labels[-1, layer, head]), "undefined")
            lines.append(f"  L{layer}H{head}: {label} since step {_label_since(s, layer, head)}; "
                         + ", ".join("nan" if np.isnan(v) else f"{v:.3f}" for v in values))
    lines.append(f"label changes ({len(s.changes)}):")
    lines += [f"  {c.line()}" for c in s.changes] or ["  none"]
    lines.append(f"entropy-collapse alerts ({len(s.alerts)}):")
    lines += [f"  {a.line()}" for a in s.alerts] or ["  none"]
    return "\n".join(lines)


__all__ = ["SeriesSummary", "series_report", "summarise_series"]
