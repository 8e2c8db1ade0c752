"""HTML panels of the playground (pure functions: playground records in, Dash components out; no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import dash_bootstrap_components as dbc
import numpy as np
from dash import html

from attnviz.dashboard.example.tokens import display_token, display_tokens, is_byte_level, raw_token
from attnviz.dashboard.playground import ids
from attnviz.pipeline.playground.records import Generation, MaskedPrediction, PlaygroundResult, TokenProb

RANDOM_NOTE = "random weights: these predictions are meaningless (the model was never trained)"


#: Smallest probability written as a number; below it the page says "< 0.0001%".
SMALLEST_PERCENT = 1e-6


def fmt_prob(p: float) -> str:
    """A probability as a percentage with three significant digits, never in scientific notation (``12.7%``,
    ``0.0127%``, ``0.00648%``; ``< 0.0001%`` below that; ``–`` when undefined). The exact value goes in the
    cell's tooltip."""
    if p is None or not math.isfinite(p):
        return "–"
    if p < SMALLEST_PERCENT:
        return "0%" if p <= 0 else "< 0.0001%"
    text = np.format_float_positional(100 * p, precision=3, unique=False, fractional=False, trim="-")
    return f"{text}%"


def _tok(t: TokenProb, byte_level: bool) -> str:
    return display_token(t.token, byte_level=byte_level)


def _token_span(shown: str, raw: str, **kwargs: Any) -> html.Span:
    """A token shown as text, the tokenizer's own string in its tooltip."""
    return html.Span(shown, title=f"token {raw_token(raw)!r}", **kwargs)


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
    prompt = [_token_span(t + " ", raw, className="text-muted") for t, raw in zip(shown[:gen.prompt_length], tokens,
                                                                                 strict=False)]
    new = [html.Span(shown[s.position] + " ", className="fw-bold text-primary",
                     title=f"token {raw_token(tokens[s.position])!r}, p = {fmt_prob(s.chosen.prob)}")
           for s in gen.steps if s.position < len(shown)]
    how = "greedy" if gen.greedy else f"sampled at temperature {gen.temperature:g}, seed {gen.seed}"
    header = html.Div([html.Span(f"{len(gen.steps)} tokens generated ({how})"),
                       html.Span(" · stopped at end-of-sequence" if gen.stopped_at_eos else "")],
                      className="small text-muted")
    rows = []
    for k, s in enumerate(gen.steps):
        alts = ", ".join(f"{_tok(a, byte_level)} {fmt_prob(a.prob)}" for a in s.alternatives)
        rows.append(html.Tr([
            html.Td(str(k + 1)),
            html.Td(_tok(s.chosen, byte_level), className="fw-semibold pg-step-token",
                    title=f"token {raw_token(s.chosen.token)!r} (id {s.chosen.token_id})",
                    **cast(dict[str, Any], {"data-token": str(s.chosen.token_id)})),
            html.Td(fmt_prob(s.chosen.prob), className="text-end pg-step-prob", title=f"{s.chosen.prob:.9g}"),
            html.Td("" if gen.greedy else fmt_prob(s.sampling_prob), className="text-end"),
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
        rows = [html.Tr([html.Td(_tok(p, byte_level), title=f"token {raw_token(p.token)!r}"),
                         html.Td(fmt_prob(p.prob), className="text-end", title=f"{p.prob:.9g}")])
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
    """Dropdown options ``"3: cat"`` for picking a token position (special tokens disabled), the tokenizer's
    own string in each option's tooltip."""
    shown = display_tokens(tokens)
    return [{"label": f"{i}: {t}", "value": i, "title": f"token {raw_token(raw)!r}",
             "disabled": bool(special[i]) if special is not None else False}
            for i, (t, raw) in enumerate(zip(shown, tokens, strict=True))]

