"""What a tab shows instead of a view it cannot draw: one line of text, as an alert or as a figure.

Every tab turns an error into page text through :func:`error_text` (expected errors: their first line) or
:func:`describe_error` (unexpected ones are logged with their traceback and named by type); the page never shows
a traceback.
"""

from __future__ import annotations

import logging
import textwrap

import dash_bootstrap_components as dbc

from attnviz.dashboard.figjson import Figure, figure


def error_text(exc: BaseException) -> str:
    """One line for the page: the first line of the error's message, or its type name when it has none."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def describe_error(exc: BaseException, expected: tuple[type[BaseException], ...], doing: str,
                   log: logging.Logger) -> str:
    """The page's line for an error raised while ``doing`` something: an ``expected`` one (a store that cannot
    be read, a selection that cannot be drawn) says itself; any other is logged with its traceback and shown as
    ``could not <doing> (<type>: <message>)``."""
    if isinstance(exc, expected):
        return error_text(exc)
    log.exception("could not %s", doing)
    return f"could not {doing} ({type(exc).__name__}: {error_text(exc)})"


def message(text: str, color: str = "warning", id_: str | None = None) -> dbc.Alert:
    """A one-line notice in place of a panel."""
    kwargs = {"id": id_} if id_ else {}
    return dbc.Alert(text, color=color, className="mb-0 py-2 small", **kwargs)


def message_figure(text: str, *, title: str | None = None, height: int = 260, wrap: int | None = None) -> Figure:
    """An empty figure that shows ``text`` in its middle (missing captures, bad selections, errors); ``wrap``
    breaks it into lines of at most that many characters (a narrow figure would cut a long line on both sides).
    ``layout.meta.message`` keeps the text as given."""
    shown = text
    if wrap:
        shown = "<br>".join("<br>".join(textwrap.wrap(line, wrap, break_long_words=False)) or line
                            for line in text.split("<br>"))
    return figure(
        [], title=title or "", height=height, xaxis={"visible": False}, yaxis={"visible": False},
        meta={"message": text},
        annotations=[{"text": shown, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper", "showarrow": False,
                      "font": {"size": 14, "color": "#8a4b00"}, "align": "center"}],
    )
