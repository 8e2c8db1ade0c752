"""An example's attention as the browser needs it: read once per (run, example, kind, attn), sent to the page,
and switched there (layer, head, query position, pinned token) by the Example tab's client-side views
(``dashboard/assets/example.js``).

Attention goes as the store's own float16 values (base64 of little-endian IEEE half floats: exact, half the bytes
of float32); the rollout, which the dashboard computes, as float32. An example whose attention fits in
:data:`BUDGET_BYTES` is sent whole (every layer and head: ``detail = "all"``); a longer one one layer at a time,
with the chosen query position's rows of every layer for the time-step view (``detail = "layer"``: its key then
names the layer; another query position's rows come on their own, see :mod:`.transport`).

The page fetches payloads from :mod:`.transport`'s route as raw bytes (no base64, no JSON parse of the arrays);
the Dash callback ``example-payload`` answers the same question as JSON with base64 arrays.

The model view is built here (pooled tiles, server-side) and only its selection outline moves in the page; the
page asks for it on its own (:func:`model_view_payload`) when it shows it.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from attnviz.dashboard.data import requested_store
from attnviz.dashboard.example import data, figures, views
from attnviz.dashboard.example.analysis import HEAD_VIEW_EDGES
from attnviz.dashboard.style import SELECT_COLOUR
from attnviz.dashboard.urlstate import ViewState, example_href, playground_href
from attnviz.pipeline.records import KIND_SIDES
from attnviz.pipeline.store import MissingCaptureError, StoreReader
from attnviz.pipeline.store.meta import run_meta

#: Largest attention payload (float16 bytes, before base64) sent for all layers at once: 8 MiB holds a 6 x 12
#: model up to ~240 tokens and a 12 x 12 one up to ~170; longer examples go one layer at a time.
BUDGET_BYTES = 8 * 2**20

#: Environment variable that overrides :data:`BUDGET_BYTES` (a browser short of memory; the tests' long path).
BUDGET_ENV = "ATTNVIZ_PAYLOAD_BUDGET_BYTES"

#: Examples whose whole attention (float16) is kept for the rows of another query position (at most 2 x ~38 MB for
#: 6 x 12 heads at T = 512); their view templates and model view (~0.3 MB) for :data:`_KEPT_VIEWS` examples: an
#: example sent one layer at a time is asked for again at each layer, the page's neighbours in advance.
_KEPT_EXAMPLES = 2
_KEPT_VIEWS = 12
_kept: OrderedDict[tuple[int, str, int, str], dict[str, Any]] = OrderedDict()
_kept_lock = threading.Lock()


def _example_arrays(reader: StoreReader, run: str, i: int, kind: str, build: Any) -> Any:
    """``build()`` for this reader, run, example and kind (a kind ending in ``|…`` is a small view: kept for
    :data:`_KEPT_VIEWS`, else :data:`_KEPT_EXAMPLES` asks; a store's examples never change once written, a reader
    reopened after a repair is another key)."""
    key = (id(reader), run, i, kind)
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    value = build()
    with _kept_lock:
        _kept[key] = value
        for small in (False, True):
            keys = [k for k in _kept if ("|" in k[3]) == small]
            for old in keys[:max(0, len(keys) - (_KEPT_VIEWS if small else _KEPT_EXAMPLES))]:
                del _kept[old]
    return value


def _whole_if_kept(reader: StoreReader, run: str, i: int, kind: str) -> np.ndarray | None:
    """The example's whole attention (float16) if it is kept, else None (nothing is read)."""
    with _kept_lock:
        value = _kept.get((id(reader), run, i, kind))
    return None if value is None else value["attention"]


def budget_bytes() -> int:
    """:data:`BUDGET_BYTES`, or the whole number of bytes in :data:`BUDGET_ENV` when it is set."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    return int(raw) if raw.isdigit() else BUDGET_BYTES


#: Default of :func:`example_payload`'s ``store``: the ``?store=`` of the callback request being answered.
_PAGE_STORE: Any = object()

#: Fields of the view state that decide which data the page needs (``detail = "layer"`` adds the layer).
KEY_FIELDS: tuple[str, ...] = ("run", "example", "kind", "attn")


def encode(array: np.ndarray, dtype: str) -> dict[str, Any]:
    """``array`` as ``{"dtype": "f2"|"f4", "shape": [...], "bdata": base64}`` (little-endian, C order)."""
    arr = np.ascontiguousarray(array, dtype={"f2": "<f2", "f4": "<f4"}[dtype])
    return {"dtype": dtype, "shape": list(arr.shape), "bdata": base64.b64encode(arr.tobytes()).decode("ascii")}


def decode(spec: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode`."""
    raw = np.frombuffer(base64.b64decode(spec["bdata"]), dtype={"f2": "<f2", "f4": "<f4"}[spec["dtype"]])
    return raw.reshape(spec["shape"])


def detail_level(reader: StoreReader, state: ViewState) -> str:
    """``"all"`` when the example's attention of ``state.kind`` fits :func:`budget_bytes`, else ``"layer"``
    (also ``"all"`` when the selection cannot be drawn: the payload then only carries the message)."""
    try:
        run = views.require_run(state)
        info = reader.run_info(run)
        n_layers, n_heads = info.shape[state.kind]
        table = reader.examples(run)
        q_side, k_side = KIND_SIDES[state.kind]
        lengths = {"source": table.n_tokens, "target": table.n_target_tokens}
        tq, tk = int(lengths[q_side][state.example]), int(lengths[k_side][state.example])
    except (KeyError, IndexError, ValueError, views.ViewError):
        return "all"
    return "all" if 2 * n_layers * n_heads * tq * tk <= budget_bytes() else "layer"


def payload_key(state: ViewState, detail: str) -> dict[str, Any]:
    """What the page asks the server for: :data:`KEY_FIELDS` of ``state`` (plus the layer when
    ``detail == "layer"``) and the detail level. The page computes the same key (``keyOf`` in ``example.js``); a
    key may also name a ``step`` (the query position whose rows of every layer a one-layer payload carries)."""
    key: dict[str, Any] = {k: getattr(state, k) for k in KEY_FIELDS}
    key["detail"] = detail
    if detail == "layer":
        key["layer"] = state.layer
    return key


def state_of_key(key: dict[str, Any]) -> tuple[ViewState, str]:
    """The selection and detail level a key names (malformed fields fall back as in a URL)."""
    state = ViewState.from_dict({k: key[k] for k in (*KEY_FIELDS, "layer", "step") if k in key})
    detail = key.get("detail")
    return state, detail if detail in ("all", "layer") else "all"


def _without(fig: dict[str, Any], *fields: str) -> dict[str, Any]:
    """``fig`` with the first trace's numeric ``fields`` removed (the page fills them in)."""
    for name in fields:
        fig["data"][0].pop(name, None)
    return fig


def templates(q: list[str], k: list[str], query_axis: str, key_axis: str, n_layers: int,
              raw: tuple[list[str], list[str]] | None = None) -> dict[str, Any]:
    """The attention views built by the figure builders of :mod:`.figures` with their numbers left out: the
    page copies one, fills in the arrays of the selection and sets its title and outline, so layout, axes, hover
    and colours have one definition (the Python builders). With ``raw`` (raw token labels) the hovers show
    them: the head view's token columns carry them, the matrix's cells are filled by the page (from the
    payload's ``q_raw`` and ``k_raw``)."""
    zeros_qk = np.zeros((len(q), len(k)), dtype=np.float32)
    matrix = {bar: _without(figures.attention_matrix_figure(zeros_qk, q, k, colorbar_title=bar, query_axis=query_axis,
                                                            key_axis=key_axis, raw=raw, fill_raw=False), "z")
              for bar in ("weight", "rollout", views.VALUE_WEIGHTED_BAR)}
    head = {mode: figures.head_view_figure(zeros_qk if mode == "one" else zeros_qk[None].repeat(2, 0), q, k,
                                           raw=raw)
            for mode in ("one", "all")}
    for fig in head.values():
        for trace in fig["data"][:2]:
            trace.pop("hovertext", None)
            trace["marker"].pop("color", None)
    return {
        "matrix": matrix, "head_view": head,
        "timestep_bars": _without(figures.timestep_bars_figure(np.zeros(len(k)), k, key_axis=key_axis), "y"),
        "timestep_layers": _without(figures.timestep_layers_figure(np.zeros((n_layers, len(k))), k,
                                                                   key_axis=key_axis), "z"),
        "head_edges": {"one": list(HEAD_VIEW_EDGES), "all": list(figures.MULTI_HEAD_EDGES)},
        "head_colours": list(figures.HEAD_COLOURS), "select_colour": SELECT_COLOUR,
        "max_segments": figures.HEAD_VIEW_MAX_SEGMENTS, "matrix_config": figures.image_config("matrix"),
    }


def not_kept_message(reader: StoreReader, run: str, example: int) -> tuple[str, int | None]:
    """The one-line message for an example whose raw attention the run did not keep (``--attention``), and the
    nearest example that has it (None when no example of the run has)."""
    policy = run_meta(reader.run_info(run).meta).attention or "all"
    nearest = reader.nearest_kept(run, example)
    where = (f"the nearest example with attention is {nearest}" if nearest is not None
             else "no example of this run has it (recompute one in the Playground)")
    return (f"Example {example} has metrics but no raw attention (run {run!r} kept attention for "
            f"--attention {policy}): {where}."), nearest


def recompute_href(reader: StoreReader, run: str, state: ViewState, store: str | None) -> str | None:
    """A link that recomputes example ``state.example`` of ``run`` in the Playground (its text typed, with a
    pair's second sentence or a translation's target, on the run's model, shown at the state's kind, layer and
    head); None for a run of random token sequences or without a model name."""
    meta = run_meta(reader.run_info(run).meta)
    if not meta.model or meta.input_kind == "random":
        return None
    table = reader.examples(run)
    text, second = str(table.text[state.example]), str(table.target_text[state.example])
    task = ("translation" if meta.family == "encoder-decoder" else "pair") if second else None
    settings = {}  # random weights: the Playground builds the same model from the same seed at this size
    if meta.random_weights:
        for what, keys in (("layers", ("num_hidden_layers", "n_layer", "encoder_layers")),
                           ("heads", ("num_attention_heads", "n_head", "encoder_attention_heads")),
                           ("hidden", ("hidden_size", "n_embd", "d_model"))):
            value = next((meta.config[k] for k in keys if isinstance(meta.config.get(k), int)), None)
            if value is not None:
                settings[what] = int(value)
    return playground_href(meta.model, text, second, task, kind=state.kind, layer=state.layer,
                           head="mean" if state.head is None else state.head, store=store, settings=settings)


def example_payload(reader: StoreReader, key: dict[str, Any], *, store: Any = _PAGE_STORE,
                    pack: Callable[[np.ndarray, str], Any] = encode, rows: bool = True,
                    model_view: bool = True) -> dict[str, Any]:
    """Everything the page's attention views draw for one key; selection errors (an example out of range, a
    kind the run lacks, a rollout of cross-attention) become one-line messages in the payload, never
    exceptions. Store errors propagate (the callback shows them).

    An example whose raw attention the run did not keep (``--attention``) gets ``error`` (one line, naming the
    nearest example that has it), ``nearest`` (that example, or None), ``nearest_href`` (a link opening it
    on the key's layer, head and kind, keeping the page's ``?store=``) and ``recompute_href`` (the Playground
    running it again: :func:`recompute_href`); its metrics panel still draws. The page shows both links at the
    layer and head it shows (``paintNote`` in ``assets/example.js``).

    ``store`` is the page's ``?store=`` name for that link (default: the one the callback request names);
    ``pack(array, dtype)`` turns each array into what the payload carries (default: :func:`encode`, base64 for
    Dash's JSON; :mod:`.transport` keeps the arrays and sends them as raw bytes). A one-layer payload carries the
    rows of the key's ``step`` in every layer (``step``, ``step_rows``); with ``rows=False`` only when the example's
    whole attention is kept from an earlier ask (else the layer alone is read, and ``step_rows`` is None). With
    ``model_view=False`` the model view (which reads every head of the example: ~0.5 s at T = 512) is left out
    (``model_view`` is None): the page asks for it on its own (:func:`model_view_payload`) when it shows it, so
    that the first screen never waits for it.
    """
    state, detail = state_of_key(key)
    out: dict[str, Any] = {"key": key, "error": None}
    try:
        run = views.require_run(state)
        views.check_example(reader, state)
        info = reader.run_info(run)
        if state.kind not in info.shape:
            raise views.ViewError(f"run {run!r} has no {state.kind!r} attention (it has {', '.join(info.kinds)})")
    except views.ViewError as exc:
        out["error"] = str(exc)
        return out
    if not reader.has_attention(run, state.example):
        out["error"], nearest = not_kept_message(reader, run, state.example)
        out["nearest"] = nearest
        page_store = requested_store() if store is _PAGE_STORE else store
        page_store = page_store if isinstance(page_store, str) else None
        out["nearest_href"] = None if nearest is None else example_href(
            run, nearest, state.layer, state.head, kind=state.kind, store=page_store)
        out["recompute_href"] = recompute_href(reader, run, state, page_store)
        return out
    i, kind = state.example, state.kind
    n_layers, n_heads = info.shape[kind]
    q, k = data.kind_tokens(reader, run, i, kind)
    raw = data.kind_tokens(reader, run, i, kind, raw=True)
    qa, ka = views.axis_names(kind)
    causal = data.is_causal(reader, run, kind)
    out.update({
        "run": run, "example": i, "kind": kind, "detail": detail, "n_layers": n_layers, "n_heads": n_heads,
        "tq": len(q), "tk": len(k), "q_tokens": q, "k_tokens": k, "q_raw": raw[0], "k_raw": raw[1],
        "kind_label": views.kind_label(kind, data.family(reader, run)),
        "step_word": "generation step" if causal else "query position",
        "model_view": _model_view(reader, run, i, state) if model_view else None,
        "templates": _example_arrays(reader, run, i, kind + "|templates",
                                     lambda: templates(q, k, qa, ka, n_layers, raw)),
    })
    if detail == "all":
        out["layers"] = list(range(n_layers))
        out["attention"] = pack(reader.attention(run, i, kind=kind), "f2")
        out["step_rows"] = None
    else:
        layer = min(max(state.layer, 0), n_layers - 1)
        step = min(max(state.step, 0), len(q) - 1)
        whole = _whole_if_kept(reader, run, i, kind) if not rows else _example_arrays(
            reader, run, i, kind, lambda: {"attention": reader.attention(run, i, kind=kind).astype(np.float16)}
        )["attention"]
        out["layers"] = [layer]
        if whole is None:  # one layer read from the store; the rows of the query position come on their own
            out["attention"] = pack(reader.attention(run, i, layer=layer, kind=kind)[None], "f2")
            out["step_rows"] = None
        else:
            out["attention"] = pack(whole[layer][None], "f2")
            out["step"] = step
            out["step_rows"] = pack(whole[:, :, step, :], "f2")
    out["norms"], out["norms_error"] = None, None
    if state.attn == "value-weighted":  # the layers sent of ‖α·f(x)‖ (--capture norms), as attention's
        try:
            norms = reader.value_norms(run, i, kind=kind)
            out["norms"] = pack(norms if detail == "all" else norms[out["layers"][0]][None], "f4")
        except MissingCaptureError as exc:
            out["norms_error"] = str(exc)
    out["rollout"], out["rollout_error"] = None, None
    if state.attn == "rollout":
        try:
            out["rollout"] = pack(views.rollout(reader, run, i, kind), "f4")
        except views.ViewError as exc:
            out["rollout_error"] = str(exc)
    return out


def _model_view(reader: StoreReader, run: str, i: int, state: ViewState) -> dict[str, Any]:
    """The example's model view (every layer and head pooled; kept for :data:`_KEPT_VIEWS` examples)."""
    return _example_arrays(reader, run, i, state.kind + "|model_view",
                           lambda: views.model_view(reader, state.with_changes(layer=0, head=None)))


def _attention_example(reader: StoreReader, key: dict[str, Any]) -> tuple[ViewState, str, dict[str, Any]]:
    """The view state and run of the example ``key`` names, and the answer to fill (``error`` set, run ``""``, when
    the example cannot be drawn: no such run or example, or no raw attention of the key's kind)."""
    state, _ = state_of_key(key)
    out: dict[str, Any] = {"key": key, "error": None}
    try:
        run = views.require_run(state)
        views.check_example(reader, state)
        if state.kind not in reader.run_info(run).shape or not reader.has_attention(run, state.example):
            raise views.ViewError(f"example {state.example} has no {state.kind!r} attention in run {run!r}")
    except views.ViewError as exc:
        out["error"] = str(exc)
        return state, "", out
    return state, run, out


def model_view_payload(reader: StoreReader, key: dict[str, Any]) -> dict[str, Any]:
    """The model view of the example ``key`` names (``model_view``), asked for on its own by the page when the
    view is shown; a selection that cannot be drawn gives ``error``."""
    state, run, out = _attention_example(reader, key)
    if out["error"]:
        return out
    out["model_view"] = _model_view(reader, run, state.example, state)
    return out


def step_rows_payload(reader: StoreReader, key: dict[str, Any], step: int, *,
                      pack: Callable[[np.ndarray, str], Any] = encode) -> dict[str, Any]:
    """The rows of query position ``step`` in every layer and head (``[L, H, Tk]``, float16) of the example ``key``
    names: what the time-step view of an example sent one layer at a time needs when the position changes.
    ``step`` is clamped to the example's query positions; a selection that cannot be drawn gives ``error``."""
    state, run, out = _attention_example(reader, key)
    if out["error"]:
        return out
    i, kind = state.example, state.kind
    whole = _example_arrays(reader, run, i, kind, lambda: {
        "attention": reader.attention(run, i, kind=kind).astype(np.float16)})["attention"]
    out["step"] = min(max(step, 0), whole.shape[2] - 1)
    out["step_rows"] = pack(whole[:, :, out["step"], :], "f2")
    return out
