"""The Corpus tab's views: read what a view needs through :mod:`attnviz.dashboard.corpus.data` for a
:class:`~attnviz.dashboard.corpus.selection.Selection` and hand it to the pure figure builders of
:mod:`attnviz.dashboard.corpus.figures` (or the HTML of :mod:`attnviz.dashboard.corpus.panels`). Each returns what
its callback's outputs need; a store that cannot be read raises :class:`attnviz.pipeline.store.StoreError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
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
    layer_agg,
    pattern_labels,
    profile,
    run_of,
    texts,
)
from attnviz.dashboard.corpus.selection import DEFAULT_METRIC, Selection, make_selection
from attnviz.dashboard.data import current_reader, requested_store
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.urlstate import example_href
from attnviz.pipeline.metrics import METRICS
from attnviz.pipeline.statistics.aggregates import AGGREGATES
from attnviz.pipeline.statistics.filters import ExampleFilter
from attnviz.pipeline.statistics.patterns import PATTERN_LABELS
from attnviz.pipeline.statistics.significance import HeadTest
from attnviz.pipeline.store.meta import run_meta

#: Examples listed at each end of a head's ranking in the drill-down.
TOP_EXAMPLES = 5


def _title(run: Run, text: str) -> str:
    return f"{text} — {run.name}"


def _n(run: Run, filt: ExampleFilter) -> int:
    return count(run, filt)


def heatmap_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict, str]:
    """Figures of A's and B's heatmaps (shared colour range) and the status line."""
    agg_label = AGGREGATES[sel.agg].lower()
    za = heat(sel.a, sel.kind, sel.metric, sel.agg, sel.filt)
    zb = heat(sel.b, sel.kind, sel.metric, sel.agg, sel.filt) if sel.b is not None and sel.b_has_kind else None
    both = np.concatenate([za.ravel(), zb.ravel()]) if zb is not None else za.ravel()
    finite = both[np.isfinite(both)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    fig_a = cf.heatmap_figure(za, title=_title(sel.a, f"A: {sel.label} ({agg_label})"), label=sel.label,
                              zmin=lo, zmax=hi, selected=head)
    if sel.b is None:
        fig_b = message_figure("pick a run B to compare", title="B")
    elif zb is None:
        fig_b = message_figure(f"run {sel.b.name!r} has no {sel.kind} {sel.metric}", title="B")
    else:
        fig_b = cf.heatmap_figure(zb, title=_title(sel.b, f"B: {sel.label} ({agg_label})"), label=sel.label,
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


def difference_view(sel: Selection, head: tuple[int, int] | None) -> dict:
    """A − B per head with significance marks, per layer when the head grids differ."""
    if sel.b is None:
        return message_figure("pick a run B to see A − B", title="A − B")
    if not sel.b_has_kind:
        return message_figure(f"run {sel.b.name!r} has no {sel.kind} {sel.metric}", title="A − B")
    if _n(sel.a, sel.filt) == 0 or _n(sel.b, sel.filt) == 0:
        return message_figure("no examples left in A or B with this filter", title="A − B")
    agg_label = AGGREGATES[sel.agg].lower()
    if sel.same_grid:
        test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt, per_layer=False)
        diff = (heat(sel.a, sel.kind, sel.metric, sel.agg, sel.filt)
                - heat(sel.b, sel.kind, sel.metric, sel.agg, sel.filt))
        shape = diff.shape
        return cf.difference_figure(diff, test.significant.reshape(shape), test.q.reshape(shape),
                                    title=f"A − B ({agg_label})", label=sel.label, test=_test_name(test),
                                    selected=head)
    la, lb = sel.a.shape(sel.kind)[0], sel.b.shape(sel.kind)[0]
    if la != lb:
        return message_figure(f"A has {la} layers and B {lb}: compare the per-layer profiles",
                                 title="A − B")
    test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt, per_layer=True)
    diff = layer_agg(sel.a, sel.kind, sel.metric, sel.agg, sel.filt) - layer_agg(
        sel.b, sel.kind, sel.metric, sel.agg, sel.filt)
    return cf.layer_difference_figure(diff, test.significant, test.q, label=sel.label, test=_test_name(test),
                                      title=f"A − B per layer (mean over heads, {agg_label})")


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
        return message_figure("no examples left with this filter", title="Per layer")
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
            {"field": "layer", "pinned": "left", "width": 80, "filter": "agNumberColumnFilter"},
            {"field": "head", "pinned": "left", "width": 80, "filter": "agNumberColumnFilter"},
            {"field": "pattern", "filter": "agTextColumnFilter"},
        ]
        cols += [{"field": f"{sel.metric} {k}", "headerName": f"A {sel.metric} ({k})", **num} for k in AGGREGATES]
        if compared:
            cols += [{"field": f"B {agg}", "headerName": f"B {sel.metric} ({agg})", **num},
                     {"field": f"A - B {agg}", "headerName": f"A − B ({agg})", **num},
                     {"field": "q", "headerName": "q (BH)", **num},
                     {"field": "significant", "filter": "agTextColumnFilter"}]
        cols += [{"field": f"mean {m}", "headerName": f"mean {m}", "headerTooltip": METRICS[m].description
                  if m in METRICS else m, **num} for m in means]
        out[agg] = cols
    return out


def table_rows(sel: Selection) -> list[dict]:
    """The head table's rows: one per head of A, with every aggregate of A's (and, compared, B's) metric."""
    n_layers, n_heads = sel.a.shape(sel.kind)
    labels = pattern_labels(sel.a, sel.kind, sel.filt)
    means = filtered_means(sel.a, sel.kind, sel.filt)
    aggs = heats(sel.a, sel.kind, sel.metric, sel.filt)
    zb, test = None, None
    if _compared(sel) and sel.b is not None:
        zb = heats(sel.b, sel.kind, sel.metric, sel.filt)
        test = comparison(sel.a, sel.b, sel.kind, sel.metric, sel.filt, per_layer=False)
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
            out.append(message_figure("pick a run B to see its head patterns", title="B: head patterns"))
        elif sel.kind not in run.info.kinds:
            out.append(message_figure(f"run {run.name!r} has no {sel.kind} attention", title=f"{tag}"))
        elif _n(run, sel.filt) == 0:
            out.append(message_figure("no examples left with this filter", title=f"{tag}: head patterns"))
        else:
            same = tag == "A" or sel.same_grid
            out.append(cf.pattern_figure(pattern_labels(run, sel.kind, sel.filt),
                                         selected=head if same else None, selectable=same,
                                         title=_title(run, f"{tag}: head patterns")))
    return out[0], out[1]


def _analyze_hint(run: Run) -> str:
    return f"not computed yet: run  attnviz analyze --store {run.store} --run {run.name}"


def similarity_views(sel: Selection, head: tuple[int, int] | None) -> tuple[dict, dict]:
    """Clustered head-similarity maps of A and B (from analysis.h5)."""
    out = []
    for run, tag in ((sel.a, "A"), (sel.b, "B")):
        title = f"{tag}: head similarity"
        if run is None:
            out.append(message_figure("pick a run B to see its head similarity", title=title))
            continue
        cached = analysis(run)
        ka = cached.kinds.get(sel.kind) if cached else None
        if ka is None or ka.similarity is None or ka.order is None:
            out.append(message_figure(_analyze_hint(run), title=title))
            continue
        note = " (stale: rerun attnviz analyze)" if cached is not None and cached.is_stale(run.info) else ""
        text = f"{title}, JS distance over {ka.similarity_examples} examples{note}"
        out.append(cf.similarity_figure(ka.similarity, ka.order, ka.heads, selected=head,
                                        title=_title(run, text)))
    return out[0], out[1]


def relpos_view(sel: Selection, head: tuple[int, int] | None) -> dict:
    """Mean attention by relative offset of the selected head, A and B (from analysis.h5)."""
    if head is None:
        return message_figure("click a head to see its relative-position profile",
                                 title="Relative position")
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
        return message_figure("\n".join(hints) or "no profile for this head", title="Relative position")
    return cf.relpos_figure(curves, k, title=f"Layer {layer} head {h}: attention by relative position")


def drill_views(sel: Selection, head: tuple[int, int] | None) -> tuple[str, dict, Any]:
    """Title, distribution figure and top/bottom example tables of the selected head."""
    if head is None:
        return "", message_figure("click a heatmap cell to see that head over the examples",
                                  title="Head drill-down"), ""
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
        return title, message_figure("this head is not in the runs shown", title=""), ""
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


def filter_controls(run_a: str | None, run_b: str | None, values: Sequence[Any], field_ids: Sequence[dict]
                    ) -> tuple[int, int, list[int], dict, list]:
    """Length slider bounds/value/marks and one multi-select per metadata field, from runs A and B.

    Chosen field values are kept when the runs change; the length range is reset to the full range.
    """
    runs = [r for r in (run_of(run_a), run_of(run_b)) if r is not None]
    if not runs:
        raise PreventUpdate
    choices = [filter_choices(r) for r in runs if r.info.num_examples]
    lo = min((c[0] for c in choices), default=0)
    hi = max((c[1] for c in choices), default=1)
    hi = max(hi, lo + 1)
    chosen = {i["field"]: v for i, v in zip(field_ids, values, strict=False)}
    options: dict[str, set[str]] = {}
    for _, _, fields in choices:
        for name, field_values in fields.items():
            options.setdefault(name, set()).update(field_values)
    return lo, hi, [lo, hi], {lo: str(lo), hi: str(hi)}, panels.field_filters(options, chosen)


def run_choices(run_a: str | None, run_b: str | None, kind: str | None, metric: str | None
                ) -> tuple[list[dict], str | None, list[dict], str, list[dict], str]:
    """Run B's options and value, the kinds of run A and the kind shown, its metrics and the metric shown
    (kept when run A has them, else the first kind and the default metric); no update while A is unknown."""
    reader = current_reader()
    if run_a not in reader.runs():
        raise PreventUpdate
    info = reader.run_info(run_a)
    others = [{"label": r, "value": r} for r in reader.runs() if r != run_a]
    kind_ = kind if kind in info.kinds else info.kinds[0]
    names = run_meta(info.meta).metrics_of(kind_)
    metric_ = metric if metric in names else (DEFAULT_METRIC if DEFAULT_METRIC in names else names[0])
    metric_options = [{"label": f"{METRICS[m].label} ({METRICS[m].unit})" if m in METRICS else m,
                       "value": m} for m in names]
    kind_options = [{"label": k, "value": k} for k in info.kinds]
    return others, (run_b if run_b != run_a else None), kind_options, kind_, metric_options, metric_


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
