"""Corpus tab (placeholder until the corpus issue lands)."""

from __future__ import annotations

import dash
from dash import html


def layout() -> html.Div:
    """The tab's content."""
    return html.Div("Corpus comparison: not built yet.", id="corpus-placeholder")


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""
