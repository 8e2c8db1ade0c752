"""Playground tab (placeholder until the playground issue lands)."""

from __future__ import annotations

import dash
from dash import html


def layout() -> html.Div:
    """The tab's content."""
    return html.Div("Playground: not built yet.", id="playground-placeholder")


def register_callbacks(app: dash.Dash) -> None:
    """Attach the tab's callbacks to ``app``."""
