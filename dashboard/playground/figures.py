"""The Playground tab's figures (pure: a result's one-example store in, plotly figures out), drawn by the
Example tab's own views (:mod:`attnviz.dashboard.views` over :mod:`attnviz.dashboard.figures`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attnviz.dashboard.example import views
from attnviz.dashboard.figjson import clear_of_toolbar
from attnviz.dashboard.messages import message_figure
from attnviz.dashboard.playground import ids
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.store import StoreError, StoreReader

#: What every graph shows before a result exists.
EMPTY_TEXT = "Run a model to see its attention."
EMPTY_HEIGHT = 200


def empty() -> Any:
    """The placeholder figure of a graph without a result."""
    return message_figure(EMPTY_TEXT, height=EMPTY_HEIGHT)


def messages(text: str) -> list[Any]:
    """``text`` in place of each of the six graphs."""
    return [message_figure(text)] * len(ids.GRAPHS)


def _attempt(build: Callable[[], Any], n: int = 1) -> list[Any]:
    try:
        value = build()
    except (views.ViewError, StoreError, ValueError) as exc:
        return [message_figure(str(exc))] * n
    return list(value) if n > 1 else [value]


def draw(reader: StoreReader, state: ViewState) -> list[Any]:
    """The six figures of a result, in the order of :data:`ids.GRAPHS` (matrix, head view, model view, time
    step bars and layers, embeddings), each title below Plotly's toolbar; a view that cannot draw shows why in
    its place."""
    figures = [*_attempt(lambda: views.matrix_view(reader, state)[0]),
               *_attempt(lambda: views.head_view(reader, state)),
               *_attempt(lambda: views.model_view(reader, state)),
               *_attempt(lambda: views.timestep_view(reader, state), 2),
               *_attempt(lambda: views.embeddings_view(reader, state))]
    return [clear_of_toolbar(fig) if isinstance(fig, dict) else fig for fig in figures]
