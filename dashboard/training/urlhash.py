"""The Training tab's selection in the URL's fragment: ``#series=NAME&metric=NAME&view=layers|heatmap``.

The query string (``?tab=training&run=…``) belongs to the app's other tabs (``dashboard/urlstate.py``, written by
the Example tab's page code); the Training tab keeps its own keys in the fragment, which the browser keeps when the
query string changes, so a shared URL opens the same series, metric and view. Pure functions, no Dash, no store.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

VIEWS: tuple[str, ...] = ("layers", "heatmap")
_KEYS = ("series", "metric", "view")


@dataclass(frozen=True)
class TrainingState:
    """What the Training tab shows; ``None`` fields are resolved against the store (first series, default
    metric, the view that suits the model's size)."""

    series: str | None = None
    metric: str | None = None
    view: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """JSON-friendly dict (for a ``dcc.Store``)."""
        return {k: getattr(self, k) for k in _KEYS}

    @classmethod
    def from_dict(cls, data: object) -> TrainingState:
        """Inverse of :meth:`to_dict`; anything but an object of texts gives the empty state."""
        if not isinstance(data, dict):
            return cls()
        return cls(**{k: data[k] if isinstance(data.get(k), str) else None for k in _KEYS})


def parse_hash(fragment: str | None) -> TrainingState:
    """The state a URL fragment names (with or without ``#``); unknown keys are ignored, a view other than
    ``layers``/``heatmap`` is left unset. Never raises."""
    params = parse_qs((fragment or "").lstrip("#"), keep_blank_values=False)
    values = {k: params[k][0].strip() for k in _KEYS if params.get(k) and params[k][0].strip()}
    if values.get("view") not in VIEWS:
        values.pop("view", None)
    return TrainingState(**values)


def format_hash(state: TrainingState) -> str:
    """``#series=…&metric=…&view=…`` (unset fields left out; ``""`` when all are unset).
    ``parse_hash(format_hash(s)) == s`` for every state with a valid view."""
    pairs = [(k, getattr(state, k)) for k in _KEYS if getattr(state, k)]
    return "#" + urlencode(pairs) if pairs else ""
