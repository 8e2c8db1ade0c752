"""The Corpus tab's views: read what a view needs through :mod:`attnviz.dashboard.corpus.data` for a
:class:`~attnviz.dashboard.corpus.selection.Selection` and hand it to the pure figure builders of
:mod:`attnviz.dashboard.corpus.figures` (or the HTML of :mod:`attnviz.dashboard.corpus.panels`). Each returns what
its callback's outputs need; a store that cannot be read raises :class:`attnviz.pipeline.store.StoreError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from dash import html
from dash.exceptions import PreventUpdate

from attnviz.dashboard.corpus import figures as cf
from attnviz.dashboard.corpus import panels
from attnviz.dashboard.corpus.data import (
    HeadValues,
    Run,
    analysis,
    comparison,
    count,
    filter_choices,
    filtered_means,
    head_histogram,
    head_values,
    heat,
    heats,
    pattern_labels,
    profile,
    run_of,
    texts,
)
from attnviz.dashboard.corpus.selection import DEFAULT_METRIC, Selection, make_selection
from attnviz.dashboard.data import current_reader, requested_store
from attnviz.dashboard.figjson import clear_of_toolbar
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.urlstate import CorpusWish, example_href
from attnviz.pipeline.metrics import metric_spec
from attnviz.pipeline.statistics.aggregates import AGGREGATES
from attnviz.pipeline.statistics.filters import ExampleFilter
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS
from attnviz.pipeline.statistics.significance import ALPHA as SIGNIFICANCE_ALPHA
from attnviz.pipeline.statistics.significance import HeadTest
from attnviz.pipeline.store.meta import run_meta

#: Examples listed at each end of a head's ranking in the drill-down.
TOP_EXAMPLES = 5


def _n(run: Run, filt: ExampleFilter) -> int:
    return count(run, filt)


def no_match(run: Run, filt: ExampleFilter, tag: str) -> str:
    """The message shown instead of a view when a filter keeps none of a run's examples."""
    return (f"no example of run {tag} ({run.name}, {run.info.num_examples} examples) matches this filter "
            f"({filt.describe()}): widen it")


def heatmap_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict, str]:
    """Figures of A's and B's heatmaps (shared colour range) and the status line; a run the filter leaves no
    example of shows a message instead of empty axes."""
    agg_label = AGGREGATES[sel.agg].lower()
    has_a = _n(sel.a, sel.filt) > 0
    has_b = sel.b is not None and sel.b_has_kind and _n(sel.b, sel.filt) > 0
    za = heat(sel.a, sel.kind, sel.metric, sel.agg, sel.filt) if has_a else None
    zb = heat(sel.b, sel.kind, sel.metric, sel.agg, sel.filt) if has_b and sel.b is not None else None
    both = np.concatenate([z.ravel() for z in (za, zb) if z is not None] or [np.zeros(0, np.float32)])
    finite = both[np.isfinite(both)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    if za is None:
        fig_a = _message(no_match(sel.a, sel.filt, "A"), title=f"A: {sel.label} ({agg_label})")
    else:
        fig_a = cf.heatmap_figure(za, title=f"A: {sel.label} ({agg_label})", subtitle=sel.a.name, label=sel.label,
                                  zmin=lo, zmax=hi, selected=head)
    if sel.b is None:
        fig_b = _message("pick a run B to compare", title="B")
    elif not sel.b_has_kind:
        fig_b = _message(f"run {sel.b.name!r} has no {sel.kind} {sel.metric}", title="B")
    elif zb is None:
        fig_b = _message(no_match(sel.b, sel.filt, "B"), title=f"B: {sel.label} ({agg_label})")
    else:
        fig_b = cf.heatmap_figure(zb, title=f"B: {sel.label} ({agg_label})", subtitle=sel.b.name, label=sel.label,
                                  zmin=lo, zmax=hi, selected=head if sel.same_grid else None,
                                  selectable=sel.same_grid)
    status = f"A: {sel.a.name} — {_n(sel.a, sel.filt)} of {sel.a.info.num_examples} examples"
    if sel.b is not None:
        status += f"; B: {sel.b.name} — {_n(sel.b, sel.filt)} of {sel.b.info.num_examples} examples"
    status += f"; filter: {sel.filt.describe()}"
    return fig_a, fig_b, status


def heatmap_bundle(sel: Selection, head: tuple[int, int] | None) -> dict[str, list[dict]]:
    """A's and B's heatmap figures for every aggregate of the selected metric (computed in one pass per run),
    what the browser switches between without asking the server again."""
    for run in (sel.a, sel.b if sel.b is not None and sel.b_has_kind else None):
        if run is not None:
            heats(run, sel.kind, sel.metric, sel.filt)
    return {agg: list(heatmap_views(replace(sel, agg=agg), head)[:2]) for agg in AGGREGATES}


def difference_bundle(sel: Selection, head: tuple[int, int] | None) -> dict[str, dict]:
    """The A − B figure for every aggregate of the selected metric (the test is computed once)."""
    return {agg: difference_view(replace(sel, agg=agg), head) for agg in AGGREGATES}


def grid_message(a: tuple[int, int], b: tuple[int, int]) -> str:
    """Why there is no A − B per head between runs whose layer × head grids differ."""
    return (f"A has {a[0]} layers × {a[1]} heads and B {b[0]} × {b[1]}: their heads do not correspond, so there "
            "is no A − B per head. Compare the runs in the per-layer profile below.")


def difference_view(sel: Selection, head: tuple[int, int] | None) -> dict:
    """A − B per head with significance marks; a message when there is nothing to compare head by head (no run
    B, no example left, or head grids that differ)."""
    title = "A − B"
    if sel.b is None:
        return _message("pick a run B to see A − B", title=title)
    if not sel.b_has_kind:
        return _message(f"run {sel.b.name!r} has no {sel.kind} {sel.metric}", title=title)
    for run, tag in ((sel.a, "A"), (sel.b, "B")):
        if _n(run, sel.filt) == 0:
            return _message(no_match(run, sel.filt, tag), title=title)
    if not sel.same_grid:
        return _message(grid_message(sel.a.shape(sel.kind), sel.b.shape(sel.kind)), title=title)
    agg_label = AGGREGATES[sel.agg].lower()
    test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt)
    diff = (heat(sel.a, sel.kind, sel.metric, sel.agg, sel.filt)
            - heat(sel.b, sel.kind, sel.metric, sel.agg, sel.filt))
    shape = diff.shape
    return cf.difference_figure(diff, test.significant.reshape(shape), test.q.reshape(shape),
                                title=f"A − B ({agg_label})", label=sel.label, test=_test_name(test),
                                selected=head)


#: Characters per line of a message in a Corpus view (a third of the page's width at 14 px).
MESSAGE_WRAP = 52


def _message(text: str, *, title: str = "") -> dict:
    """A message figure whose lines fit a third of the page and whose title keeps clear of the toolbar (as the
    Corpus figures' do)."""
    return clear_of_toolbar(message_figure(text, title=title, wrap=MESSAGE_WRAP))


def _test_name(test: HeadTest) -> str:
    paired = test.method == "paired-bootstrap"
    name = f"paired bootstrap, {test.n_pairs} pairs" if paired else "Mann–Whitney U"
    return f"q < {test.alpha:g} ({name}, Benjamini–Hochberg)"


def profile_view(sel: Selection) -> dict:
    """The metric per layer for A and B (mean line, interquartile band)."""
    curves = []
    for run, colour, tag in ((sel.a, cf.COLOUR_A, "A"), (sel.b, cf.COLOUR_B, "B")):
        if run is None or (tag == "B" and not sel.b_has_kind) or _n(run, sel.filt) == 0:
            continue
        curves.append((f"{tag}: {run.name}", profile(run, sel.kind, sel.metric, sel.filt), colour))
    if not curves:
        return _message(no_match(sel.a, sel.filt, "A"), title="Per layer")
    return cf.profile_figure(curves, title=f"{sel.label} per layer (mean over heads)", label=sel.label)


def _round(value: float, digits: int = 5) -> float | None:
    return None if not np.isfinite(value) else float(f"{value:.{digits}g}")


def table_view(sel: Selection) -> tuple[list[dict], list[dict]]:
    """Rows (one per head of A) and column definitions of the head table; the rows hold B and A − B for every
    aggregate (fields ``"B <agg>"``, ``"A - B <agg>"``), the columns show those of the selected one."""
    return table_rows(sel), table_columns(sel)[sel.agg]


def _compared(sel: Selection) -> bool:
    return sel.same_grid and sel.b is not None and bool(_n(sel.a, sel.filt)) and bool(_n(sel.b, sel.filt))


def table_columns(sel: Selection) -> dict[str, list[dict]]:
    """The head table's column definitions for each aggregate (they differ in B's and A − B's columns)."""
    means = filtered_means(sel.a, sel.kind, sel.filt)
    compared = _compared(sel)
    num = {"filter": "agNumberColumnFilter", "type": "numericColumn"}
    out = {}
    for agg in AGGREGATES:
        cols: list[dict] = [
            {"field": "layer", "headerName": "Layer", "pinned": "left", "width": 80,
             "filter": "agNumberColumnFilter"},
            {"field": "head", "headerName": "Head", "pinned": "left", "width": 80, "filter": "agNumberColumnFilter"},
            {"field": "pattern", "headerName": "Pattern", "filter": "agTextColumnFilter"},
        ]
        cols += [{"field": f"{sel.metric} {k}", "headerName": f"A {sel.label} ({k})", **num} for k in AGGREGATES]
        if compared:
            cols += [{"field": f"B {agg}", "headerName": f"B {sel.label} ({agg})", **num},
                     {"field": f"A - B {agg}", "headerName": f"A − B {sel.label} ({agg})", **num},
                     {"field": "q", "headerName": "q-value (Benjamini–Hochberg)", **num},
                     {"field": "significant", "headerName": f"Significant (q < {SIGNIFICANCE_ALPHA:g})",
                      "filter": "agTextColumnFilter"}]
        cols += [{"field": f"mean {m}", "headerName": f"Mean {metric_label(m)}",
                  "headerTooltip": getattr(metric_spec(m), "description", m), **num} for m in means]
        out[agg] = cols
    return out


def metric_label(name: str) -> str:
    """A metric's readable label with its unit (``Entropy (nats)``), or its name when unknown."""
    spec = metric_spec(name)
    return f"{spec.label} ({spec.unit})" if spec else name


def table_rows(sel: Selection) -> list[dict]:
    """The head table's rows: one per head of A, with every aggregate of A's (and, compared, B's) metric."""
    n_layers, n_heads = sel.a.shape(sel.kind)
    labels = pattern_labels(sel.a, sel.kind, sel.filt)
    means = filtered_means(sel.a, sel.kind, sel.filt)
    aggs = heats(sel.a, sel.kind, sel.metric, sel.filt)
    zb, test = None, None
    if _compared(sel) and sel.b is not None:
        zb = heats(sel.b, sel.kind, sel.metric, sel.filt)
        test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt)
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            c = layer * n_heads + head
            row: dict[str, Any] = {"layer": layer, "head": head,
                                   "pattern": PATTERN_LABELS.get(labels[layer, head], "undefined")}
            for k, z in aggs.items():
                row[f"{sel.metric} {k}"] = _round(z[layer, head])
            if test is not None and zb is not None:
                for k in AGGREGATES:
                    row[f"B {k}"] = _round(zb[k][layer, head])
                    row[f"A - B {k}"] = _round(aggs[k][layer, head] - zb[k][layer, head])
                row["q"] = _round(test.q[c], 3)
                row["significant"] = "yes" if test.significant[c] else "no"
            for m, z in means.items():
                row[f"mean {m}"] = _round(z[layer, head])
            rows.append(row)
    return rows


def pattern_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict]:
    """Pattern maps of A and B."""
    out = []
    for run, tag in ((sel.a, "A"), (sel.b, "B")):
        if run is None:
            out.append(_message("pick a run B to see its head patterns", title="B: head patterns"))
        elif sel.kind not in run.info.kinds:
            out.append(_message(f"run {run.name!r} has no {sel.kind} attention", title=f"{tag}"))
        elif _n(run, sel.filt) == 0:
            out.append(_message(no_match(run, sel.filt, tag), title=f"{tag}: head patterns"))
        else:
            same = tag == "A" or sel.same_grid
            out.append(cf.pattern_figure(pattern_labels(run, sel.kind, sel.filt),
                                         selected=head if same else None, selectable=same,
                                         title=f"{tag}: head patterns", subtitle=run.name))
    return out[0], out[1]


def _analyze_hint(run: Run) -> str:
    return (f"not computed yet (a run made before precompute cached it): run  attnviz analyze --store {run.store} "
            f"--run {run.name}")


def similarity_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict]:
    """Clustered head-similarity maps of A and B (from analysis.h5)."""
    out = []
    for run, tag in ((sel.a, "A"), (sel.b, "B")):
        title = f"{tag}: head similarity"
        if run is None:
            out.append(_message("pick a run B to see its head similarity", title=title))
            continue
        cached = analysis(run)
        ka = cached.kinds.get(sel.kind) if cached else None
        if ka is None or ka.similarity is None or ka.order is None:
            out.append(_message(_analyze_hint(run), title=title))
            continue
        note = (" (stale: rerun the precompute command or attnviz analyze)"
                if cached is not None and cached.is_stale(run.info) else "")
        text = f"{title}: Jensen–Shannon distance over {ka.similarity_examples} examples{note}"
        out.append(cf.similarity_figure(ka.similarity, ka.order, ka.heads, selected=head, title=text,
                                        subtitle=run.name))
    return out[0], out[1]


def relpos_view(sel: Selection, head: tuple[int, int] | None) -> dict:
    """Mean attention by relative offset of the selected head, A and B (from analysis.h5)."""
    if head is None:
        return _message("click a head to see its relative-position profile", title="Relative position")
    layer, h = head
    curves, k, hints = [], 0, []
    for run, colour, tag in ((sel.a, cf.COLOUR_A, "A"), (sel.b, cf.COLOUR_B, "B")):
        if run is None:
            continue
        cached = analysis(run)
        ka = cached.kinds.get(sel.kind) if cached else None
        if ka is None or ka.relpos is None:
            hints.append(_analyze_hint(run) if ka is None else f"{run.name}: no relative positions for "
                                                                 f"{sel.kind} attention")
            continue
        if layer >= ka.layers or h >= ka.heads:
            continue
        if k and ka.max_offset != k:
            continue
        k = ka.max_offset
        curves.append((f"{tag}: {run.name}", ka.relpos[layer * ka.heads + h], colour))
    if not curves:
        return _message("<br>".join(hints) or "no profile for this head", title="Relative position")
    return cf.relpos_figure(curves, k, title=f"Layer {layer} head {h}: attention by relative position")


def drill_views(sel: Selection, head: tuple[int, int] | None) -> tuple[str, dict, Any]:
    """Title, distribution figure and top/bottom example tables of the selected head."""
    if head is None:
        return "", _message("click a heatmap cell to see that head over the examples", title="Head drill-down"), ""
    layer, h = head
    shown, tables = [], []
    for run, colour, tag in ((sel.a, cf.COLOUR_A, "A"), (sel.b, cf.COLOUR_B, "B")):
        if run is None or sel.kind not in run.info.kinds or (tag == "B" and not sel.b_has_kind):
            continue
        n_layers, n_heads = run.shape(sel.kind)
        if layer >= n_layers or h >= n_heads:
            continue
        row = layer * n_heads + h
        found = head_values(run, sel.kind, sel.metric, sel.filt, row, TOP_EXAMPLES)
        shown.append((run, colour, tag, row, found))
        tables.append(_examples_table(run, tag, sel, layer, h, found))
    title = f"Layer {layer}, head {h}: {sel.label} over the selected examples"
    if not shown:
        return title, _message("this head is not in the runs shown"), ""
    if not any(s.n for *_, s in shown):
        return title, _message(no_match(sel.a, sel.filt, "A") if not _n(sel.a, sel.filt)
                               else "no defined value for this head in the selected examples"), ""
    edges = cf.shared_edges([(s.lo, s.hi) for *_, s in shown if s.n])
    hists = [(f"{tag}: {run.name}", head_histogram(run, sel.kind, sel.metric, sel.filt, row, edges)
              if s.n else np.zeros(max(0, edges.size - 1), np.int64), colour)
             for run, colour, tag, row, s in shown]
    return title, cf.histogram_figure(hists, edges, title="", label=sel.label), html.Div(tables)


def _examples_table(run: Run, tag: str, sel: Selection, layer: int, head: int, found: HeadValues) -> html.Div:
    (top, top_values), (bottom, bottom_values) = found.top, found.bottom  # ties: lowest example first
    k = top.size
    if k == 0:
        return panels.examples_table(tag, run.name, sel.metric, 0, [])
    picked = np.concatenate([top, bottom])
    values = np.concatenate([top_values, bottom_values])
    page_store = requested_store()  # keep the page's ?store= in the links
    page_store = page_store if isinstance(page_store, str) else None
    rows = []
    for rank, (example, value, text) in enumerate(zip(picked.tolist(), values, texts(run, picked.tolist()),
                                                      strict=True)):
        href = example_href(run.name, example, layer, head, kind=sel.kind, store=page_store)
        rows.append(panels.RankedExample("top" if rank < k else "bottom", float(value), example, href, text))
    return panels.examples_table(tag, run.name, sel.metric, k, rows)


def filter_controls(run_a: str | None, run_b: str | None, values: Sequence[Any], field_ids: Sequence[dict],
                    wish: CorpusWish | None = None) -> tuple[int, int, list[int], dict, list]:
    """Length slider bounds/value/marks and one multi-select per metadata field, from runs A and B.

    The URL fragment's ``wish`` (which mirrors the controls once the page shows them) gives the length range
    when it lies within the runs' lengths and the chosen field values; without one, chosen field values are kept
    when the runs change and the length range is the full range.
    """
    runs = [r for r in (run_of(run_a), run_of(run_b)) if r is not None]
    if not runs:
        raise PreventUpdate
    choices = [filter_choices(r) for r in runs if r.info.num_examples]
    lo = min((c[0] for c in choices), default=0)
    hi = max((c[1] for c in choices), default=1)
    hi = max(hi, lo + 1)
    if wish is not None and wish.present:
        chosen: dict[str, Any] = wish.field_values()
    else:
        chosen = {i["field"]: v for i, v in zip(field_ids, values, strict=False)}
    value = [lo, hi]
    if wish is not None and wish.length is not None and lo <= wish.length[0] <= wish.length[1] <= hi:
        value = list(wish.length)
    options: dict[str, set[str]] = {}
    for _, _, fields in choices:
        for name, field_values in fields.items():
            options.setdefault(name, set()).update(field_values)
    return lo, hi, value, {lo: str(lo), hi: str(hi)}, panels.field_filters(options, chosen)


def run_choices(run_a: str | None, run_b: str | None, kind: str | None, metric: str | None,
                wish: CorpusWish | None = None) -> RunChoices:
    """Run B's options and value, the kinds of run A and the kind shown, its metrics and the metric shown
    (kept when run A has them, else the first kind and the default metric); no update while A is unknown.

    The URL fragment's ``wish`` (which mirrors the controls once the page shows them) takes precedence for run B,
    the kind and the metric; a run B the store lacks is dropped with a ``note``."""
    reader = current_reader()
    runs = reader.runs()
    if run_a not in runs:
        raise PreventUpdate
    note = ""
    if wish is not None and wish.present:
        run_b, kind, metric = wish.run_b, wish.kind or kind, wish.metric or metric
        if run_b is not None and run_b not in runs:
            note = f"run B {run_b!r} of this link is not in this store: pick another run B"
            run_b = None
    info = reader.run_info(run_a)
    others = [{"label": r, "value": r} for r in runs if r != run_a]
    kind_ = kind if kind in info.kinds else info.kinds[0]
    names = run_meta(info.meta).metrics_of(kind_)
    metric_ = metric if metric in names else (DEFAULT_METRIC if DEFAULT_METRIC in names else names[0])
    metric_options = [{"label": metric_label(m), "value": m} for m in names]
    kind_options = [{"label": k, "value": k} for k in info.kinds]
    return RunChoices(others, run_b if run_b != run_a else None, kind_options, kind_, metric_options, metric_,
                      note)


@dataclass(frozen=True)
class RunChoices:
    """What :func:`run_choices` picked: run B's options and value, the kind's, the metric's, and a note for the
    tab's alert ("" when none)."""

    run_b_options: list[dict]
    run_b: str | None
    kind_options: list[dict]
    kind: str
    metric_options: list[dict]
    metric: str
    note: str = ""


def wished_head(wish: CorpusWish, run_a: str | None, kind: str) -> dict[str, int] | None:
    """The picked head a fragment asks for, when run A has it (the ``corpus-head`` store's value), else None."""
    a = run_of(run_a)
    if wish.head is None or a is None or kind not in a.info.kinds:
        return None
    layer, head = wish.head
    n_layers, n_heads = a.shape(kind)
    return {"layer": layer, "head": head} if layer < n_layers and head < n_heads else None


def analysis_views(run_a: str | None, run_b: str | None, kind: str | None, head: tuple[int, int] | None
                   ) -> tuple[dict, dict, dict]:
    """The head-similarity maps of A and B and the relative-position profile of the selected head (these read
    ``analysis.h5`` only, so they ignore the metric and the filters)."""
    sel = make_selection(run_a, run_b, kind, DEFAULT_METRIC, "mean", None, None, None, [], [])
    sim_a, sim_b = similarity_views(sel, head)
    return sim_a, sim_b, relpos_view(sel, head)


def analysis_similarity(run_a: str | None, run_b: str | None, kind: str | None, head: tuple[int, int] | None
                        ) -> tuple[dict, dict]:
    """The head-similarity maps of A and B (from ``analysis.h5``), ``head`` marked."""
    return similarity_views(make_selection(run_a, run_b, kind, DEFAULT_METRIC, "mean", None, None, None, [], []),
                            head)


def analysis_relpos(run_a: str | None, run_b: str | None, kind: str | None, head: tuple[int, int] | None) -> dict:
    """The relative-position profile of the selected head in A and B (from ``analysis.h5``)."""
    return relpos_view(make_selection(run_a, run_b, kind, DEFAULT_METRIC, "mean", None, None, None, [], []), head)
