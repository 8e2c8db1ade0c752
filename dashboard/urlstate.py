"""The dashboard's selection as a URL query string: parse it tolerantly, format it, link into the Example tab.

Pure functions, no Dash and no store: the app validates a parsed state against the store separately
(run names, layer counts), because only the store knows those bounds.

Query keys::

    tab      example | corpus | playground | training  (default example)
    run      run name                                  (default: the first run of the store)
    example  example index >= 0                        (default 0)
    layer    layer index >= 0                          (default 0)
    head     head index >= 0, or "mean" (all heads)    (default 0)
    step     query position >= 0 (generation step)    (default 0)
    kind     self | decoder | cross                    (default self)
    attn     raw | rollout                             (default raw)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

from attnviz.dashboard.callback_inputs import InputRefusedError

TABS: tuple[str, ...] = ("example", "corpus", "playground", "training")
KINDS: tuple[str, ...] = ("self", "decoder", "cross")
ATTN_MODES: tuple[str, ...] = ("raw", "rollout")
MEAN_HEAD = "mean"  #: URL value of ``head`` for "mean of all heads"
_KEYS = ("tab", "run", "example", "layer", "head", "step", "kind", "attn")


@dataclass(frozen=True)
class ViewState:
    """What the dashboard shows. ``head=None`` means the mean of all heads; ``error`` explains any fallback."""

    tab: str = "example"
    run: str | None = None
    example: int = 0
    layer: int = 0
    head: int | None = 0
    step: int = 0
    kind: str = "self"
    attn: str = "raw"
    errors: tuple[str, ...] = field(default=(), compare=False)

    @property
    def error(self) -> str | None:
        """All fallback messages as one line, or None when the URL was fine."""
        return "; ".join(self.errors) if self.errors else None

    def with_changes(self, **changes: Any) -> ViewState:
        """A copy with some fields replaced (errors kept unless given)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly dict of the selection (for a ``dcc.Store``), without the errors."""
        return {k: getattr(self, k) for k in _KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, object] | None) -> ViewState:
        """Inverse of :meth:`to_dict`; unknown or missing keys fall back to defaults (via the URL parser).

        ``data`` that is neither empty nor an object (the server only ever stores objects, so a client crafted
        it) raises :class:`~attnviz.dashboard.callback_inputs.InputRefusedError` (the app answers 400).
        """
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise InputRefusedError(f"the view state must be an object, not {type(data).__name__}")
        return parse_state(format_state(cls(), **{k: data.get(k) for k in _KEYS if k in data}))


def _first(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    return values[0].strip() if values else None


def _non_negative_int(raw: str, key: str, default: int, errors: list[str]) -> int:
    try:
        value = int(raw)
    except ValueError:
        errors.append(f"{key} {raw!r} is not a whole number: showing {key} {default}")
        return default
    if value < 0:
        errors.append(f"{key} {value} is negative: showing {key} {default}")
        return default
    return value


def parse_state(search: str | None) -> ViewState:
    """Parse a URL query string (with or without the leading ``?``) into a :class:`ViewState`.

    Never raises: a malformed or unknown value falls back to its default and adds a one-line message to
    ``errors``. Range checks that need the store (run name, layer count, example count) are left to the app.
    """
    text = (search or "").lstrip("?")
    params = parse_qs(text, keep_blank_values=True)
    errors: list[str] = []
    d = ViewState()
    values: dict[str, object] = {}

    tab = _first(params, "tab")
    if tab:
        if tab in TABS:
            values["tab"] = tab
        else:
            errors.append(f"unknown tab {tab!r}: use one of {', '.join(TABS)}")
    run = _first(params, "run")
    if run:
        values["run"] = run
    for key in ("example", "layer", "step"):
        raw = _first(params, key)
        if raw:
            values[key] = _non_negative_int(raw, key, getattr(d, key), errors)
    head = _first(params, "head")
    if head:
        if head.lower() in (MEAN_HEAD, "all"):
            values["head"] = None
        else:
            values["head"] = _non_negative_int(head, "head", 0, errors)
    kind = _first(params, "kind")
    if kind:
        if kind in KINDS:
            values["kind"] = kind
        else:
            errors.append(f"unknown attention kind {kind!r}: showing self-attention")
    attn = _first(params, "attn")
    if attn:
        if attn in ATTN_MODES:
            values["attn"] = attn
        else:
            errors.append(f"unknown attn mode {attn!r}: use raw or rollout")
    return ViewState(**values, errors=tuple(errors))  # type: ignore[arg-type]


def format_state(state: ViewState, **changes: object) -> str:
    """The query string (starting with ``?``) for ``state`` with optional field ``changes``.

    ``parse_state(format_state(s)) == s`` for every valid state.
    """
    values = {k: getattr(state, k) for k in _KEYS}
    values.update(changes)
    out: list[tuple[str, str]] = []
    for key in _KEYS:
        value = values[key]
        if key == "run" and value is None:
            continue
        if key == "head":
            value = MEAN_HEAD if value is None else value
        out.append((key, str(value)))
    return "?" + urlencode(out)


def example_href(run: str, example: int, layer: int | None = None, head: int | None = None,
                 kind: str = "self", store: str | None = None) -> str:
    """Relative link (``/?tab=example&...``) that opens the Example tab on one example of a run.

    ``layer`` and ``head`` default to 0 (pass both to open a particular head); ``kind`` is the attention kind;
    ``store`` is the page's ``?store=`` name (kept, so the link opens the same store, also in a new tab).
    """
    state = ViewState(tab="example", run=run, example=int(example),
                      layer=int(layer) if layer is not None else 0,
                      head=int(head) if head is not None else 0, kind=kind)
    href = "/" + format_state(state)
    return href + "&" + urlencode({"store": store}) if store else href
