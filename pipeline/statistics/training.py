"""Heads over training (pure numpy): per-checkpoint corpus means, pattern labels per checkpoint and the steps at
which they change, and the entropy-collapse alert (definitions in ``docs/metrics.md``, "Training series")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from attnviz.pipeline.statistics.patterns import PATTERN_LABELS, classify_heads

#: A head's corpus-mean entropy (nats) below this is collapsed: e.g. 0.1 nats is a row with about 98% of its
#: weight on one key and the rest spread over a few others.
COLLAPSE_ENTROPY = 0.1
#: A fall of more than this fraction of a head's corpus-mean entropy between two consecutive checkpoints.
COLLAPSE_DROP = 0.5


def series_means(rows: Sequence[np.ndarray]) -> np.ndarray:
    """``[S, L, H]`` corpus means (NaN-ignoring; NaN where a head has no defined value) of one metric's
    per-checkpoint ``[N, L, H]`` rows."""
    out = []
    for r in rows:
        r = np.asarray(r, dtype=np.float64)
        defined = (~np.isnan(r)).sum(axis=0)
        total = np.nansum(r, axis=0)
        out.append(np.divide(total, defined, out=np.full(total.shape, np.nan), where=defined > 0))
    return np.stack(out) if out else np.zeros((0, 0, 0))


def series_labels(means: Mapping[str, np.ndarray]) -> np.ndarray:
    """``[S, L, H]`` pattern labels (keys of ``PATTERN_LABELS``) of every checkpoint, from the ``[S, L, H]``
    corpus means of each metric the classifier reads."""
    some = next(iter(means.values()))
    return np.stack([classify_heads({k: v[s] for k, v in means.items()}) for s in range(len(some))]) \
        if len(some) else np.zeros((0, 0, 0), dtype=object)


@dataclass(frozen=True)
class LabelChange:
    """A head whose pattern label at ``step`` differs from its label at the previous checkpoint."""

    layer: int
    head: int
    step: int
    before: str  #: label key at the previous checkpoint ("" when undefined)
    after: str  #: label key from ``step`` on

    def line(self) -> str:
        """``L0H2 step 300: broad → previous token``."""
        return (f"L{self.layer}H{self.head} step {self.step}: {PATTERN_LABELS.get(self.before, 'undefined')} → "
                f"{PATTERN_LABELS.get(self.after, 'undefined')}")


def label_changes(steps: Sequence[int] | np.ndarray, labels: np.ndarray) -> list[LabelChange]:
    """Every change of a head's label between consecutive checkpoints, in step order, then layer and head."""
    labels = np.asarray(labels, dtype=object)
    out = []
    for s in range(1, len(steps)):
        for layer, head in zip(*np.nonzero(labels[s] != labels[s - 1]), strict=True):
            out.append(LabelChange(int(layer), int(head), int(steps[s]), str(labels[s - 1, layer, head]),
                                   str(labels[s, layer, head])))
    return out


@dataclass(frozen=True)
class CollapseAlert:
    """A head whose corpus-mean entropy collapsed: fell below :data:`COLLAPSE_ENTROPY` (``rule="below"``) or
    by more than :data:`COLLAPSE_DROP` of its value between two consecutive checkpoints (``rule="drop"``)."""

    layer: int
    head: int
    step: int  #: the first checkpoint at which the rule held
    entropy: float  #: its corpus-mean entropy there (nats)
    previous: float | None  #: at the checkpoint before (None at the first checkpoint)
    previous_step: int | None
    rule: str  #: "below" or "drop"

    def line(self) -> str:
        """One sentence saying what happened, for the alert."""
        head = f"L{self.layer}H{self.head}"
        if self.rule == "below":
            return f"{head}: entropy {self.entropy:.3f} nats at step {self.step} (below {COLLAPSE_ENTROPY:g})"
        fell = 1 - self.entropy / (self.previous or 1)
        return (f"{head}: entropy fell {fell:.0%} from {self.previous:.3f} at step {self.previous_step} to "
                f"{self.entropy:.3f} nats at step {self.step}")


def collapse_alerts(steps: Sequence[int] | np.ndarray, entropy: np.ndarray, *, floor: float = COLLAPSE_ENTROPY,
                    drop: float = COLLAPSE_DROP) -> list[CollapseAlert]:
    """Heads whose corpus-mean entropy (``[S, L, H]``, nats, checkpoints in step order) collapsed: at most one
    alert per head and rule, at the first checkpoint where it held. NaN values never alert."""
    entropy = np.asarray(entropy, dtype=np.float64)
    out: list[CollapseAlert] = []
    if entropy.size == 0:
        return out
    _, n_layers, n_heads = entropy.shape
    for layer in range(n_layers):
        for head in range(n_heads):
            h = entropy[:, layer, head]
            below = np.flatnonzero(h < floor)  # NaN compares False
            if below.size:
                s = int(below[0])
                prev = None if s == 0 else float(h[s - 1])
                out.append(CollapseAlert(layer, head, int(steps[s]), float(h[s]), prev,
                                         None if s == 0 else int(steps[s - 1]), "below"))
            fell = np.flatnonzero(h[1:] < (1 - drop) * h[:-1]) + 1 if len(h) > 1 else np.array([], int)
            if fell.size:
                s = int(fell[0])
                out.append(CollapseAlert(layer, head, int(steps[s]), float(h[s]), float(h[s - 1]),
                                         int(steps[s - 1]), "drop"))
    return sorted(out, key=lambda a: (a.step, a.layer, a.head, a.rule))


__all__ = ["COLLAPSE_DROP", "COLLAPSE_ENTROPY", "CollapseAlert", "LabelChange", "collapse_alerts",
           "label_changes", "series_labels", "series_means"]
