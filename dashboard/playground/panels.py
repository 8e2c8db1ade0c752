"""HTML panels of the playground (pure functions: playground records in, Dash components out; no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import dash_bootstrap_components as dbc
from dash import html

from attnviz.dashboard.example.tokens import display_token, display_tokens, is_byte_level
from attnviz.dashboard.playground import ids
from attnviz.pipeline.playground.records import Generation, MaskedPrediction, PlaygroundResult, TokenProb

RANDOM_NOTE = "random weights: these predictions are meaningless (the model was never trained)"


def _pct(p: float) -> str:
    return f"{100 * p:.3g}%" if p >= 1e-4 else f"{p:.2e}"


def _tok(t: TokenProb, byte_level: bool) -> str:
    return display_token(t.token, byte_level=byte_level)


def result_summary(result: PlaygroundResult) -> html.Div:
    """What was run: the model (with its configuration), the input text, token counts and flags."""
    ex = result.example
    badges = [dbc.Badge(f"{len(ex.source)} tokens", color="secondary", className="me-1")]
    if ex.target is not None:
        badges.append(dbc.Badge(f"{len(ex.target)} target tokens", color="secondary", className="me-1"))
    if result.random_weights:
        badges.append(dbc.Badge("random weights", color="danger", className="me-1"))
    shape = ", ".join(f"{k}: {layers} layers × {heads} heads" for k, (layers, heads) in result.shape.items())
    badges.append(dbc.Badge(shape, color="light", text_color="dark", className="me-1"))
    badges.append(dbc.Badge(f"{result.seconds:.1f} s", color="light", text_color="dark", className="me-1"))
    parts = [html.Div(result.choice.label(), className="text-muted small", id=ids.SUMMARY_MODEL),
             html.Div(ex.text, className="fw-semibold", id=ids.SUMMARY_TEXT)]
    if ex.target_text:
        parts.append(html.Div(["→ ", ex.target_text], className="text-muted"))
    parts.append(html.Div(badges, className="mt-1"))
    return html.Div(parts)


def generation_panel(gen: Generation, tokens: Sequence[str], random_weights: bool) -> html.Div:
    """The generated sentence (new tokens highlighted), then per step: the chosen token, the model's probability
    of it, the probability it was drawn with, and the top alternatives."""
    byte_level = is_byte_level(tokens)
    shown = display_tokens(tokens)
    prompt = [html.Span(t + " ", className="text-muted") for t in shown[:gen.prompt_length]]
    new = [html.Span(shown[s.position] + " ", className="fw-bold text-primary", title=f"p = {_pct(s.chosen.prob)}")
           for s in gen.steps if s.position < len(shown)]
    how = "greedy" if gen.greedy else f"sampled at temperature {gen.temperature:g}, seed {gen.seed}"
    header = html.Div([html.Span(f"{len(gen.steps)} tokens generated ({how})"),
                       html.Span(" · stopped at end-of-sequence" if gen.stopped_at_eos else "")],
                      className="small text-muted")
    rows = []
    for k, s in enumerate(gen.steps):
        alts = ", ".join(f"{_tok(a, byte_level)} {_pct(a.prob)}" for a in s.alternatives)
        rows.append(html.Tr([
            html.Td(str(k + 1)),
            html.Td(_tok(s.chosen, byte_level), className="fw-semibold pg-step-token",
                    **cast(dict[str, Any], {"data-token": str(s.chosen.token_id)})),
            html.Td(_pct(s.chosen.prob), className="text-end pg-step-prob", title=f"{s.chosen.prob:.9g}"),
            html.Td("" if gen.greedy else _pct(s.sampling_prob), className="text-end"),
            html.Td(alts, className="small"),
        ], id={"type": ids.STEP_ROW, "index": k}))
    table = dbc.Table([
        html.Thead(html.Tr([html.Th("step"), html.Th("token"), html.Th("p(token)", className="text-end"),
                            html.Th("p drawn" if not gen.greedy else "", className="text-end"),
                            html.Th("top alternatives (model probability)")])),
        html.Tbody(rows)], size="sm", striped=True, className="small mb-1", id=ids.STEPS_TABLE)
    parts = [html.H6("Predicted output words", className="mb-1"),
             html.Div(prompt + new, id=ids.GENERATED_TEXT, className="mb-1"),
             html.Div(gen.text, id=ids.GENERATED_RAW, className="d-none"), header, table]
    if random_weights:
        parts.append(dbc.Alert(RANDOM_NOTE, color="danger", className="py-1 small mb-0"))
    return html.Div(parts)


def masked_panel(masked: MaskedPrediction, tokens: Sequence[str]) -> html.Div:
    """Top predictions for every masked position."""
    byte_level = is_byte_level(tokens)
    shown = display_tokens(tokens)
    blocks = []
    for m in masked.positions:
        where = f"position {m.position}" + (f" (was “{display_token(m.original, byte_level=byte_level)}”)"
                                            if m.original else f" ({shown[m.position]})")
        rows = [html.Tr([html.Td(_tok(p, byte_level)), html.Td(_pct(p.prob), className="text-end")])
                for p in m.predictions]
        blocks.append(html.Div([
            html.Div(where, className="fw-semibold small"),
            dbc.Table([html.Thead(html.Tr([html.Th("prediction"), html.Th("p", className="text-end")])),
                       html.Tbody(rows)], size="sm", striped=True, className="small mb-2",
                      id={"type": ids.MASK_TABLE, "index": m.position}),
        ]))
    parts = [html.H6("Masked-token predictions", className="mb-1"), *blocks]
    if masked.random_weights:
        parts.append(dbc.Alert(RANDOM_NOTE, color="danger", className="py-1 small mb-0"))
    return html.Div(parts, id=ids.MASKED_PANEL)


def token_options(tokens: Sequence[str], special: Sequence[bool] | None = None) -> list[dict]:
    """Dropdown options ``"3 · cat"`` for picking a token position (special tokens disabled)."""
    shown = display_tokens(tokens)
    return [{"label": f"{i} · {t}", "value": i, "disabled": bool(special[i]) if special is not None else False}
            for i, t in enumerate(shown)]

