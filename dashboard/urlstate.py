"""The dashboard's state in the URL: the Example tab's selection as the query string (parse it tolerantly,
format it, link into the Example tab) and the Corpus tab's and the Playground's in the fragment (below).

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
    attn     raw | rollout | value-weighted            (default raw)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

from attnviz.dashboard.callback_inputs import InputRefusedError

TABS: tuple[str, ...] = ("example", "corpus", "playground", "training")
KINDS: tuple[str, ...] = ("self", "decoder", "cross")
ATTN_MODES: tuple[str, ...] = ("raw", "rollout", "value-weighted")
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
            errors.append(f"unknown attn mode {attn!r}: use raw, rollout or value-weighted")
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


# --------------------------------------------------------------------------------------------------------
# The fragment (``#...``): the Corpus tab's and the Playground's state
# --------------------------------------------------------------------------------------------------------
#
# The query string belongs to the Example tab (``example.js`` rewrites it whole), so the other tabs keep their
# state in the fragment, which every URL change keeps: ``corpus.<key>`` and ``pg.<key>`` entries, written by the
# page (``assets/state.js``, with ``history.replaceState``: changing them adds no history entry) and read back
# here when a page opens. Run A of the Corpus tab is the query string's ``run``.
#
#   corpus.b        run B                                pg.model, pg.layers, pg.heads, pg.hidden, pg.seed
#   corpus.kind     attention kind                       pg.task, pg.src, pg.tgt      (translation languages)
#   corpus.metric   metric name                          pg.input        typed | random
#   corpus.agg      mean | median | std | p90            pg.text, pg.second           (typed input)
#   corpus.length   LO-HI (tokens; absent: all)          pg.length, pg.rseed          (random input)
#   corpus.truncated  yes | no (absent: any)             pg.gen_n, pg.mode, pg.temp, pg.gen_seed, pg.mask
#   corpus.f.NAME   a chosen value of metadata field     pg.result       run | predict (a result was shown:
#                   NAME (repeated for several)                          it is computed again on opening)
#   corpus.head     LAYER.HEAD (the picked head)         pg.kind, pg.layer, pg.head, pg.step (its view)

CORPUS_PREFIX = "corpus."
PLAYGROUND_PREFIX = "pg."
#: The Playground's fragment keys (after ``pg.``) that hold its inputs and settings, in the page's order.
PLAYGROUND_KEYS: tuple[str, ...] = (
    "model", "layers", "heads", "hidden", "seed", "task", "src", "tgt", "input", "text", "second", "length",
    "rseed", "gen_n", "mode", "temp", "gen_seed", "mask", "result", "kind", "layer", "head", "step")


def parse_fragment(fragment: str | None) -> dict[str, list[str]]:
    """The entries of a URL fragment (with or without ``#``), values in order."""
    return parse_qs((fragment or "").lstrip("#"), keep_blank_values=True)


def format_fragment(entries: list[tuple[str, str]]) -> str:
    """A fragment (``#...``, or ``""`` when empty) holding ``entries`` in order (``assets/state.js`` writes the
    same, Corpus entries first)."""
    text = urlencode(entries)
    return "#" + text if text else ""


def _int_pair(raw: str | None, sep: str) -> tuple[int, int] | None:
    if not raw:
        return None
    lo, found, hi = raw.partition(sep)
    if not found or not lo.strip().isdigit() or not hi.strip().isdigit():
        return None
    return int(lo), int(hi)


@dataclass(frozen=True)
class CorpusWish:
    """The Corpus tab's state a URL fragment asks for (``present``: it has any ``corpus.`` entry). Values are as
    given: the tab checks them against the runs (an unknown run or metric falls back as if absent)."""

    present: bool = False
    run_b: str | None = None
    kind: str | None = None
    metric: str | None = None
    agg: str | None = None
    length: tuple[int, int] | None = None
    truncated: str | None = None
    fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    head: tuple[int, int] | None = None

    def field_values(self) -> dict[str, list[str]]:
        """The chosen metadata filter values by field."""
        return {name: list(values) for name, values in self.fields}


def corpus_wish(fragment: str | None) -> CorpusWish:
    """The :class:`CorpusWish` of a fragment; malformed entries are left out (never raises)."""
    params = parse_fragment(fragment)
    entries = {k[len(CORPUS_PREFIX):]: v for k, v in params.items() if k.startswith(CORPUS_PREFIX)}
    if not entries:
        return CorpusWish()

    def first(key: str) -> str | None:
        values = entries.get(key)
        return values[0].strip() or None if values else None

    length = _int_pair(first("length"), "-")
    head = _int_pair(first("head"), ".")
    truncated = first("truncated")
    fields = tuple((k[2:], tuple(v for v in values if v != "")) for k, values in entries.items()
                   if k.startswith("f.") and len(k) > 2 and any(values))
    return CorpusWish(present=True, run_b=first("b"), kind=first("kind"), metric=first("metric"),
                      agg=first("agg"), length=length if length and length[0] <= length[1] else None,
                      truncated=truncated if truncated in ("yes", "no") else None, fields=fields, head=head)


def corpus_fragment(wish: CorpusWish) -> list[tuple[str, str]]:
    """The ``corpus.`` entries of a wish, in the order ``assets/state.js`` writes them."""
    out: list[tuple[str, str]] = []
    for key, value in (("b", wish.run_b), ("kind", wish.kind), ("metric", wish.metric), ("agg", wish.agg)):
        if value:
            out.append((CORPUS_PREFIX + key, value))
    if wish.length is not None:
        out.append((CORPUS_PREFIX + "length", f"{wish.length[0]}-{wish.length[1]}"))
    if wish.truncated in ("yes", "no"):
        out.append((CORPUS_PREFIX + "truncated", wish.truncated))
    for name, values in wish.fields:
        out.extend((f"{CORPUS_PREFIX}f.{name}", v) for v in values)
    if wish.head is not None:
        out.append((CORPUS_PREFIX + "head", f"{wish.head[0]}.{wish.head[1]}"))
    return out


def playground_href(model: str, text: str, second: str = "", task: str | None = None, kind: str = "self",
                    layer: int = 0, head: int | str = 0, store: str | None = None,
                    settings: dict[str, int] | None = None) -> str:
    """Relative link (``/?tab=playground…#pg.…``) that opens the Playground on ``model`` with ``text`` typed (and
    ``second``: a pair's second sentence or a translation's target) and runs it at once (``pg.result=run``),
    showing ``kind``, ``layer`` and ``head`` (or ``"mean"``); ``task`` None leaves the model's default. ``store`` as in
    :func:`example_href`; ``settings``: a random-weights model's ``layers``, ``heads``, ``hidden``. The Playground
    checks every entry as it checks a copied link's (an unknown model: a note)."""
    entries = [("model", model), *[(k, str(v)) for k, v in (settings or {}).items()],
               *([("task", task)] if task else []), ("input", "typed"), ("text", text),
               *([("second", second)] if second else []), ("result", "run"), ("kind", kind), ("layer", str(layer)),
               ("head", str(head))]
    query = "?" + urlencode({"tab": "playground", **({"store": store} if store else {})})
    return "/" + query + format_fragment([(PLAYGROUND_PREFIX + k, v) for k, v in entries])


def playground_wish(fragment: str | None) -> dict[str, str]:
    """The Playground's entries of a fragment (key without ``pg.`` -> its first value); unknown keys left out."""
    params = parse_fragment(fragment)
    return {key: params[PLAYGROUND_PREFIX + key][0] for key in PLAYGROUND_KEYS if PLAYGROUND_PREFIX + key in params}
