"""The Corpus tab's controls parsed into one :class:`Selection`: runs A and B, attention kind, metric,
aggregate and example filter (run A is the header's run, ``run-select``; run B is picked in the tab)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dash.exceptions import PreventUpdate

from attnviz.dashboard.corpus.data import Run, run_of
from attnviz.pipeline.metrics import metric_spec
from attnviz.pipeline.statistics.aggregates import AGGREGATES
from attnviz.pipeline.statistics.filters import ExampleFilter
from attnviz.pipeline.store.meta import run_meta

DEFAULT_METRIC = "entropy"


@dataclass(frozen=True)
class Selection:
    """What the corpus views show, parsed from the controls."""

    a: Run
    b: Run | None
    kind: str
    metric: str
    agg: str
    filt: ExampleFilter

    @property
    def same_grid(self) -> bool:
        """Whether B shows the same kind with the same layers × heads as A."""
        return self.b is not None and self.b_has_kind and self.a.shape(self.kind) == self.b.shape(self.kind)

    @property
    def b_has_kind(self) -> bool:
        """Whether B has the selected kind and metric."""
        return self.b is not None and self.kind in self.b.info.kinds and self.metric in run_meta(
            self.b.info.meta).metrics_of(self.kind)

    @property
    def label(self) -> str:
        """The metric's readable label."""
        spec = metric_spec(self.metric)
        return spec.label if spec else self.metric


def parse_filter(length: Sequence[int] | None, length_bounds: tuple[int, int] | None, truncated: str | None,
                 field_ids: Sequence[dict], field_values: Sequence[Any]) -> ExampleFilter:
    """The filter the controls describe (a length range equal to the full range filters nothing)."""
    lo = hi = None
    if length and len(length) == 2 and length_bounds:
        lo = int(length[0]) if int(length[0]) > length_bounds[0] else None
        hi = int(length[1]) if int(length[1]) < length_bounds[1] else None
    trunc = {"yes": True, "no": False}.get(truncated or "any")
    fields = {i["field"]: list(v) for i, v in zip(field_ids, field_values, strict=False) if v}
    return ExampleFilter.make(lo, hi, trunc, fields)


def make_selection(run_a: str | None, run_b: str | None, kind: str | None, metric: str | None, agg: str | None,
               length: Any, length_bounds: Any, truncated: str | None, field_ids: Sequence[dict],
               field_values: Sequence[Any]) -> Selection:
    """The selection of the controls' values; nothing to show (no update) while run A is unknown."""
    a = run_of(run_a)
    if a is None:
        raise PreventUpdate
    kind = kind if kind in a.info.kinds else a.info.kinds[0]
    names = run_meta(a.info.meta).metrics_of(kind)
    if metric not in names:
        metric = DEFAULT_METRIC if DEFAULT_METRIC in names else (names[0] if names else "")
    b = run_of(run_b) if run_b and run_b != run_a else None
    bounds = tuple(length_bounds) if length_bounds else None
    filt = parse_filter(length, bounds, truncated, field_ids, field_values)
    return Selection(a, b, kind, metric, agg if agg in AGGREGATES else "mean", filt)
