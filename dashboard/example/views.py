"""The Example tab's views: read exactly the slices a view draws from the store and hand them to the pure
figure builders. This is the I/O edge; every function takes a reader and a resolved :class:`ViewState`.

Errors a user can cause (missing capture, example out of range, a kind the run lacks) raise
``attnviz.pipeline.store.StoreError`` or :class:`ViewError` with a one-line message; the callbacks show it in place of
the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnviz.dashboard.example import analysis, data, figures
from attnviz.dashboard.figjson import Figure
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.metrics import metric_spec
from attnviz.pipeline.records import KIND_SIDES, SIDE_OF_KIND
from attnviz.pipeline.store import StoreReader
from attnviz.pipeline.store.meta import run_meta

MODEL_VIEW_TILE = 24
#: Colour-bar title of the value-weighted matrix (``attn=value-weighted``; docs/metrics.md).
VALUE_WEIGHTED_BAR = "‖α·f(x)‖"


class ViewError(ValueError):
    """A selection the dashboard cannot draw (worded as one line for the page)."""


KIND_LABELS = {"self": "self-attention", "decoder": "decoder self-attention",
               "cross": "cross-attention (decoder → encoder)"}


def kind_label(kind: str, family: str) -> str:
    """Human name of an attention kind for a model family."""
    if kind == "self" and family == "encoder-decoder":
        return "encoder self-attention"
    if kind == "self" and family == "decoder":
        return "causal self-attention"
    return KIND_LABELS.get(kind, kind)


def head_label(head: int | None) -> str:
    """``"head 3"`` or ``"mean of all heads"``."""
    return "mean of all heads" if head is None else f"head {head}"


def require_run(state: ViewState) -> str:
    """The selected run, or a :class:`ViewError` when the store has none."""
    if state.run is None:
        raise ViewError("the store has no runs yet: run 'attnviz precompute' first")
    return state.run


def check_example(reader: StoreReader, state: ViewState) -> None:
    """A :class:`ViewError` naming the valid range when the selected example is not in the run."""
    n = reader.num_examples(require_run(state))
    if not 0 <= state.example < n:
        raise ViewError(f"example {state.example} is out of range for run {state.run!r} (0..{n - 1})")


def file_stem(state: ViewState, suffix: str = "") -> str:
    """Image file name ``<run>_ex<i>_L<l>_H<h>`` (plus the kind when not self, and a view suffix)."""
    h = "mean" if state.head is None else str(state.head)
    stem = f"{state.run}_ex{state.example}_L{state.layer}_H{h}"
    if state.kind != "self":
        stem += f"_{state.kind}"
    return stem + (f"_{suffix}" if suffix else "")


def rollout(reader: StoreReader, run: str, example: int, kind: str) -> np.ndarray:
    """Attention rollout ``[L, T, T]`` of an example (mean over heads, with the residual), cached."""
    if KIND_SIDES[kind][0] != KIND_SIDES[kind][1]:
        raise ViewError("attention rollout is defined for self-attention only: pick the self or decoder kind")
    return data.rollout(reader, run, example, kind)


def axis_names(kind: str) -> tuple[str, str]:
    """Axis titles (query, key) of an attention kind."""
    if kind == "cross":
        return "query (decoder)", "key (encoder)"
    return "query", "key"


def matrix_view(reader: StoreReader, state: ViewState) -> tuple[Figure, dict]:
    """The T×T attention matrix (raw, rollout or value-weighted norms) and its graph config (image file name)."""
    run = require_run(state)
    i, layer, head, kind = state.example, state.layer, state.head, state.kind
    if state.attn == "rollout":
        weights = rollout(reader, run, i, kind)
        if not 0 <= layer < weights.shape[0]:
            raise ViewError(f"layer {layer} is out of range (0..{weights.shape[0] - 1})")
        weights = weights[layer]
        title = f"Attention rollout through layer {layer} (mean of heads, with residual)"
        bar = "rollout"
    elif state.attn == "value-weighted":
        weights = (analysis.mean_heads(reader.value_norms(run, i, layer, kind=kind)) if head is None
                   else reader.value_norms(run, i, layer, head, kind))
        title = (f"Layer {layer}, {head_label(head)} — value-weighted ‖α·f(x)‖, "
                 f"{kind_label(kind, data.family(reader, run))}")
        bar = VALUE_WEIGHTED_BAR
    else:
        weights = (analysis.mean_heads(reader.attention(run, i, layer, kind=kind)) if head is None
                   else reader.attention(run, i, layer, head, kind))
        title = f"Layer {layer}, {head_label(head)} — {kind_label(kind, data.family(reader, run))}"
        bar = "weight"
    q, k = data.kind_tokens(reader, run, i, kind)
    qa, ka = axis_names(kind)
    fig = figures.attention_matrix_figure(weights, q, k, title=title, step=state.step, colorbar_title=bar,
                                          query_axis=qa, key_axis=ka, raw=data.kind_tokens(reader, run, i, kind,
                                                                                           raw=True))
    suffix = {"rollout": "rollout", "value-weighted": "norms"}.get(state.attn, "")
    return fig, figures.image_config(file_stem(state, suffix))


def head_view(reader: StoreReader, state: ViewState, selected: tuple[str, int] | None = None) -> Figure:
    """bertviz-style lines for one head, or every head of the layer in its own colour (mean mode)."""
    run = require_run(state)
    i, layer, head, kind = state.example, state.layer, state.head, state.kind
    q, k = data.kind_tokens(reader, run, i, kind)
    if selected is not None:
        side_len = len(q) if selected[0] == "query" else len(k)
        if not 0 <= selected[1] < side_len:
            selected = None
    if head is None:
        weights = reader.attention(run, i, layer, kind=kind)
        title = f"Head view — layer {layer}, all heads"
    else:
        weights = reader.attention(run, i, layer, head, kind)
        title = f"Head view — layer {layer}, head {head}"
    hint = " · click a token for its lines" if selected is None else " · click it again for all"
    return figures.head_view_figure(weights, q, k, selected=selected, title=title + hint,
                                    raw=data.kind_tokens(reader, run, i, kind, raw=True))


def model_view(reader: StoreReader, state: ViewState) -> Figure:
    """All layers × heads of the example as small matrices (pooled when long); the selection outlined."""
    run = require_run(state)
    i, kind = state.example, state.kind
    pooled = data.pooled_attention(reader, run, i, kind, MODEL_VIEW_TILE)
    selected = (state.layer, state.head) if state.head is not None else None
    q, _ = data.kind_tokens(reader, run, i, kind)
    note = f" (pooled to {pooled.shape[-2]}×{pooled.shape[-1]})" if pooled.shape[-2] < len(q) else ""
    return figures.model_view_figure(pooled, tile=MODEL_VIEW_TILE, selected=selected,
                                     title=f"Model view — every layer × head{note} · click one to select it")


def timestep_view(reader: StoreReader, state: ViewState) -> tuple[Figure, Figure]:
    """For the chosen query position: its attention over the keys (bars), and across layers (heatmap)."""
    run = require_run(state)
    i, layer, head, kind, step = state.example, state.layer, state.head, state.kind, state.step
    q, k = data.kind_tokens(reader, run, i, kind)
    if not 0 <= step < len(q):
        raise ViewError(f"time step {step} is out of range for this example (0..{len(q) - 1})")
    full = reader.attention(run, i, kind=kind) if head is None else reader.attention(run, i, head=head, kind=kind)
    by_layer = full[:, :, step, :].mean(axis=1) if head is None else full[:, step, :]
    what = "generation step" if data.is_causal(reader, run, kind) else "query position"
    _, ka = axis_names(kind)
    bars = figures.timestep_bars_figure(
        by_layer[layer], k, key_axis=ka,
        title=f"{what.capitalize()} {step} ({q[step]}) — layer {layer}, {head_label(head)}")
    layers = figures.timestep_layers_figure(
        by_layer, k, selected_layer=layer, key_axis=ka,
        title=f"{what.capitalize()} {step} ({q[step]}) across layers — {head_label(head)}")
    return bars, layers


@dataclass(frozen=True)
class MetricsTable:
    """An example's per-head metrics of one layer with corpus percentiles (rows: metrics; columns: heads)."""

    names: list[str]
    labels: list[str]
    descriptions: list[str]
    values: np.ndarray  #: [M, H] this example's values
    percentiles: np.ndarray  #: [M, H] percentile within that head's distribution over the run's examples
    mean_values: np.ndarray  #: [M] mean over heads
    mean_percentiles: np.ndarray  #: [M] percentile of the mean among the examples' head-means
    head: int | None
    n_examples: int


def metrics_table(reader: StoreReader, state: ViewState) -> MetricsTable:
    """This example's metrics for every head of the selected layer, with their corpus percentiles."""
    run = require_run(state)
    i, layer, kind = state.example, state.layer, state.kind
    names = reader.metric_names(run, kind)
    n = reader.num_examples(run)
    if not 0 <= i < n:
        raise ViewError(f"example {i} is out of range for run {run!r} (0..{n - 1})")
    n_heads = reader.run_info(run).shape[kind][1]
    values = np.full((len(names), n_heads), np.nan, dtype=np.float32)
    pct = np.full_like(values, np.nan)
    mean_v = np.full(len(names), np.nan, dtype=np.float32)
    mean_p = np.full_like(mean_v, np.nan)
    for m, name in enumerate(names):
        arr = reader.metrics(run, name, kind)
        dist = data.metric_distribution(reader, run, name, kind)
        values[m] = arr[i, layer]
        for h in range(n_heads):
            col = dist[:, layer, h]
            pct[m, h] = analysis.percentile_of(col[np.isfinite(col)], float(values[m, h]))
        with np.errstate(all="ignore"):
            means = np.nanmean(arr[:, layer, :], axis=1) if np.isfinite(arr[:, layer, :]).any() else None
        if means is not None:
            mean_v[m] = means[i]
            mean_p[m] = analysis.percentile_of(analysis.sorted_finite(means), float(means[i]))
    specs = [metric_spec(nm) for nm in names]
    return MetricsTable(
        names=names, labels=[s.label if s else nm for s, nm in zip(specs, names, strict=True)],
        descriptions=[s.description if s else "" for s in specs], values=values, percentiles=pct,
        mean_values=mean_v, mean_percentiles=mean_p, head=state.head, n_examples=n)


def debug_view(reader: StoreReader, state: ViewState) -> Figure:
    """Histograms of hidden states, Q, K, V, attention weights and pre-softmax scores of the selection."""
    run = require_run(state)
    i, layer, head, kind = state.example, state.layer, state.head, state.kind
    meta = run_meta(reader.run_info(run).meta)
    n_heads = reader.run_info(run).shape[kind][1] if kind in reader.run_info(run).shape else 0
    heads = list(range(n_heads)) if head is None else [head]
    qkv = [reader.qkv(run, i, layer, h, kind) for h in heads]  # raises MissingCaptureError with the fix
    d_k = qkv[0][0].shape[-1]
    scale, why = analysis.score_multiplier(meta.model_info.get("score_scale"), d_k)
    causal = data.is_causal(reader, run, kind)
    scores = np.stack([analysis.attention_scores(q, k, scale, causal=causal) for q, k, _ in qkv])
    attn = (reader.attention(run, i, layer, kind=kind) if head is None
            else reader.attention(run, i, layer, head, kind)[None])
    recon = np.stack([analysis.softmax_rows(s) for s in scores])
    valid = np.isfinite(scores)
    err = float(np.abs(recon - attn)[valid].max()) if valid.any() else float("nan")
    hists: dict[str, analysis.Histogram] = {}
    side = SIDE_OF_KIND[kind]
    if reader.has_capture(run, "hidden", side):
        hidden = reader.hidden(run, i, side)
        if layer + 1 < hidden.shape[0]:
            hists[f"hidden state after layer {layer}"] = analysis.histogram(hidden[layer + 1])
    hists["Q"] = analysis.histogram(np.stack([t[0] for t in qkv]))
    hists["K"] = analysis.histogram(np.stack([t[1] for t in qkv]))
    hists["V"] = analysis.histogram(np.stack([t[2] for t in qkv]))
    attn_vals = attn[valid] if causal else attn
    hists["attention weights"] = analysis.histogram(attn_vals)
    hists[f"scores QKᵀ·{scale:.4g}"] = analysis.histogram(scores)
    title = (f"Layer {layer}, {head_label(head)} — attention score multiplier {scale:.4g} ({why})<br>"
             f"<sup>check: max |softmax(scores) − stored attention| = {err:.2g}</sup>")
    return figures.histograms_figure(hists, title=title)


def embeddings_view(reader: StoreReader, state: ViewState) -> Figure:
    """Input and output embeddings of the example's tokens in 2-D (PCA), coloured by position."""
    run = require_run(state)
    side = SIDE_OF_KIND[state.kind]
    inp, out = reader.embeddings(run, state.example, side)
    tokens = data.tokens_for(reader, run, state.example, side)
    return figures.embeddings_figure(analysis.pca_2d(inp), analysis.pca_2d(out), tokens,
                                     title=f"Embeddings of the {side} tokens")


def norms_view(reader: StoreReader, state: ViewState) -> Figure:
    """Token strip coloured by hidden-state norm, one row per layer."""
    run = require_run(state)
    side = SIDE_OF_KIND[state.kind]
    hidden = reader.hidden(run, state.example, side)
    tokens = data.tokens_for(reader, run, state.example, side)
    return figures.norm_strip_figure(analysis.activation_norms(hidden), tokens,
                                     title=f"Activation norm per layer ({side} tokens)")
