"""Head pattern labels (previous token, [CLS] sink, broad, ...) from the corpus means of a head's metrics
(rule in ``docs/metrics.md``, section "Head pattern labels")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatternRule:
    """A head pattern: a head qualifies when the largest corpus mean of ``metrics`` reaches ``threshold``."""

    key: str
    label: str
    metrics: tuple[str, ...]
    threshold: float


#: Mass and head-detector patterns, in tie-break order; among the qualifying rules, the one whose value is the
#: largest multiple of its threshold wins (for the mass rules, all at 0.5: the largest mass).
MASS_PATTERNS: tuple[PatternRule, ...] = (
    PatternRule("previous", "previous token", ("mass_prev",), 0.5),
    PatternRule("next", "next token", ("mass_next",), 0.5),
    PatternRule("self", "diagonal / self", ("mass_self",), 0.5),
    PatternRule("first", "first token / [CLS] sink", ("mass_first", "mass_cls"), 0.5),
    PatternRule("sep", "[SEP] sink", ("mass_sep",), 0.5),
    PatternRule("punct", "punctuation", ("mass_punct",), 0.5),
    # TransformerLens's head-detector scores: on a sequence repeated twice only the second copy's queries have a
    # target, so a perfect head scores about 0.5 there; 0.25 is half of that (docs/metrics.md).
    PatternRule("induction", "induction", ("induction",), 0.25),
    PatternRule("duplicate", "duplicate token", ("duplicate_token",), 0.25),
)
#: A head with no mass pattern is "broad" when its corpus mean normalized entropy is at least this.
BROAD_ENTROPY = 0.8
#: Every label, in legend order: key -> label.
PATTERN_LABELS: dict[str, str] = {
    **{r.key: r.label for r in MASS_PATTERNS},
    "broad": "broad",
    "heterogeneous": "heterogeneous",
}
#: Metrics the classifier reads.
PATTERN_METRICS: tuple[str, ...] = tuple(dict.fromkeys(
    [m for r in MASS_PATTERNS for m in r.metrics] + ["entropy_norm"]))


def classify_heads(means: Mapping[str, np.ndarray]) -> np.ndarray:
    """Label each head from the corpus means of its metrics (``name -> [C]`` or ``[L, H]``).

    Returns an array of the same shape of keys of :data:`PATTERN_LABELS` (object dtype), "" where the head
    has no defined value at all. Rule (docs/metrics.md): among the :data:`MASS_PATTERNS` whose value reaches
    its threshold, the one with the largest value relative to its threshold (the largest mass among the mass
    rules); else "broad" when ``entropy_norm >= BROAD_ENTROPY``; else "heterogeneous". Metrics missing from
    ``means`` or NaN never qualify.
    """
    some = next(iter(means.values()))
    shape = np.shape(some)
    best = np.full(shape, -np.inf)
    label = np.full(shape, "heterogeneous", dtype=object)
    defined = np.zeros(shape, dtype=bool)

    def get(name: str) -> np.ndarray:
        v = means.get(name)
        return np.full(shape, np.nan) if v is None else np.asarray(v, dtype=np.float64)

    for rule in MASS_PATTERNS:
        mass = np.full(shape, np.nan)
        for name in rule.metrics:
            mass = np.fmax(mass, get(name))
        defined |= ~np.isnan(mass)
        ratio = mass / rule.threshold
        win = (np.nan_to_num(mass, nan=-np.inf) >= rule.threshold) & (ratio > best)
        label[win] = rule.key
        best = np.where(win, ratio, best)
    ent = get("entropy_norm")
    defined |= ~np.isnan(ent)
    label[np.isinf(best) & (np.nan_to_num(ent, nan=-1.0) >= BROAD_ENTROPY)] = "broad"
    label[~defined] = ""
    return label
