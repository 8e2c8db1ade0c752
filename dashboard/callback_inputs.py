"""What a callback request may carry: its shape, and values of the types its components' properties declare.

The browser only ever sends ``/_dash-update-component`` bodies that match a callback of the app: one
``{"id", "property", "value"}`` entry per declared input and state, in order, with values the component can
hold. Anything else was crafted, and the server refuses it on purpose (400, one log line, no traceback):

* :func:`body_problem` checks a parsed body against the server-side callback it names (its ``inputs``,
  ``state``, ``outputs`` and ``changedPropIds``) and each value against :func:`declared_types`, the type hints
  of the Dash component classes in the layout (``dcc.Input.value``: text or number; ``html.Button.n_clicks``: a
  number; ``dcc.Location.search``: text; ``dcc.Store.data``: any JSON). Unknown or unresolvable hints accept
  anything: only what is known to be wrong is refused.
* :class:`InputRefusedError` is what a tab's own validators raise for a value of the right JSON type but the wrong
  shape (a ``dcc.Store`` the server wrote, sent back as a number); the app's error handler turns it into the
  same 400 (see :mod:`attnviz.dashboard.observability` and :func:`attnviz.dashboard.security.install_request_checks`).

Pure: no Flask, no store.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

#: Longest text of a refusal (it goes back to the client and into the log).
MAX_REASON = 200


class InputRefusedError(ValueError):
    """A callback input the server refuses on purpose (crafted: no page sends it); answered with a 400."""


def _walk(component: Any) -> Iterator[Any]:
    """Every Dash component under ``component`` (children and component-valued props), iteratively."""
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
            continue
        if not hasattr(node, "_prop_names"):
            continue
        yield node
        for name in node._prop_names:
            value = getattr(node, name, None)
            if isinstance(value, (list, tuple)) or hasattr(value, "_prop_names"):
                stack.append(value)


def declared_types(layout: Any) -> dict[tuple[str, str], Any]:
    """``(component id, property) -> type hint`` for every component with a text id in ``layout``, from the
    component class's ``__init__`` annotations (Dash 3+ generates them), ``value`` narrowed to what the
    component as configured sends (see :func:`_as_configured`). Components made later by callbacks
    (pattern-matching ids) are not in it and go unchecked."""
    out: dict[tuple[str, str], Any] = {}
    for node in _walk(layout):
        cid = getattr(node, "id", None)
        if not isinstance(cid, str):
            continue
        try:
            params = inspect.signature(type(node).__init__).parameters
        except (TypeError, ValueError):
            continue
        for name, param in params.items():
            if param.annotation is not inspect.Parameter.empty and name not in ("self", "children"):
                out[(cid, name)] = _as_configured(node, name, param.annotation)
    return out


class PlotlyEvent(typing.TypedDict, total=False):
    """What a graph sends as ``clickData``/``hoverData``/``selectedData``: the points hit, each an object."""

    points: list[dict]


_GRAPH_EVENTS = ("clickData", "hoverData", "selectedData")


def _as_configured(component: Any, prop: str, hint: Any) -> Any:
    """A property's hint narrowed to what ``component`` as configured sends: a graph's click/hover/selection is
    a :class:`PlotlyEvent`; a dropdown without ``multi`` sends one value, not a list; a text field (an input
    whose ``type`` is not ``number``/``range``) sends text."""
    names = getattr(component, "_prop_names", ())
    if prop in _GRAPH_EVENTS and "figure" in names:
        return PlotlyEvent | None
    if prop != "value":
        return hint
    if "type" in names and "debounce" in names and getattr(component, "type", None) not in ("number", "range"):
        return str | None
    if "multi" in names and not getattr(component, "multi", False):
        origin = typing.get_origin(hint)
        if origin is typing.Union or origin is types.UnionType:
            arms = [a for a in typing.get_args(hint) if typing.get_origin(a) not in (
                collections.abc.Sequence, list) and a not in (typing.Sequence, list)]
            return typing.Union[tuple(arms)] if arms else hint  # noqa: UP007 (built at run time)
    return hint


_NUMBER_PROTOCOLS = (typing.SupportsFloat, typing.SupportsInt, typing.SupportsComplex, typing.SupportsIndex)


def fits(value: Any, hint: Any) -> bool:
    """Whether a JSON ``value`` can be what ``hint`` (a component property's type hint) declares.

    Numbers are ``int``/``float`` (not ``bool``, unless ``bool`` is allowed too); a sequence is a JSON list; a
    ``dict``/mapping is a JSON object (its fields are not checked); a ``TypedDict`` is an object whose declared
    fields fit their hints (other keys are not checked). Hints this function does not
    understand (forward references, component classes, ``Any``) accept every value.
    """
    if hint is Any or isinstance(hint, (str, typing.ForwardRef)):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return fits(value, typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(fits(value, arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in typing.get_args(hint))
    if hint in _NUMBER_PROTOCOLS or hint in (int, float, complex):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.is_typeddict(hint):
        try:
            fields = typing.get_type_hints(hint)
        except (NameError, TypeError):  # a forward reference this module cannot resolve: accept
            return isinstance(value, dict)
        return isinstance(value, dict) and all(fits(v, fields[k]) for k, v in value.items() if k in fields)
    if hint in (dict, Mapping, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if hint in (list, tuple, typing.Sequence, collections.abc.Sequence) or origin in (
            list, tuple, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        args = typing.get_args(hint)
        item = args[0] if args and origin is not tuple else Any
        return all(fits(v, item) for v in value)
    return True


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)[:80]
    return text[:80]


def _entry_problem(entry: Any, declared: Mapping[str, Any], where: str, types_of: Mapping[tuple[str, str], Any]
                   ) -> str | None:
    """Why one ``inputs``/``state`` entry does not match the dependency ``declared`` (``{"id", "property"}``)."""
    cid, prop = declared["id"], declared["property"]
    if isinstance(cid, str) and cid.startswith("{"):  # ``callback_map`` keeps pattern-matching ids as JSON text
        cid = json.loads(cid)
    if isinstance(cid, dict):  # pattern-matching: ALL/ALLSMALLER send a list of entries, MATCH one entry
        items = entry if isinstance(entry, list) else [entry]
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("id"), dict) and item.get("property") == prop):
                return f"{where}: expected entries {{'id': {{…}}, 'property': {prop!r}}}"
        return None
    if not isinstance(entry, dict) or "id" not in entry or "property" not in entry:
        return f"{where}: expected an object with 'id' and 'property'"
    if entry["id"] != cid or entry["property"] != prop:
        return f"{where} is {_clip(entry['id'])}.{_clip(entry['property'])}, this callback takes {cid}.{prop}"
    hint = types_of.get((cid, prop))
    if hint is not None and not fits(entry.get("value"), hint):
        return f"{where} ({cid}.{prop}) is not a value this component can hold: {_clip(entry.get('value'))}"
    return None


def _outputs_problem(outputs: Any, count: int) -> str | None:
    """Why ``outputs`` is not what the browser sends for a callback of ``count`` outputs."""
    if outputs is None:
        return None
    items = outputs if isinstance(outputs, list) else [outputs]
    if count > 1 and (not isinstance(outputs, list) or len(outputs) != count):
        return f"'outputs' must list the callback's {count} outputs"
    for item in items:
        group = item if isinstance(item, list) else [item]
        for one in group:
            if not (isinstance(one, dict) and isinstance(one.get("id"), (str, dict))
                    and isinstance(one.get("property"), str)):
                return "'outputs' entries must be objects with 'id' and 'property'"
    return None


def body_problem(body: Mapping[str, Any], callback: Mapping[str, Any],
                 types_of: Mapping[tuple[str, str], Any]) -> str | None:
    """Why a callback request ``body`` cannot be a request for ``callback`` (an entry of ``app.callback_map``), as
    one line, or None when it fits: one entry per declared input and state, in order, each with ``id`` and
    ``property`` and a value its component's property can hold, ``outputs`` shaped like the callback's, and
    ``changedPropIds`` a list of texts."""
    for part in ("inputs", "state"):
        declared = callback.get(part, [])
        sent = body.get(part, [])
        if not isinstance(sent, list) or len(sent) != len(declared):
            return f"'{part}' must list the callback's {len(declared)} {part} entries"
        for i, (entry, dep) in enumerate(zip(sent, declared, strict=True)):
            problem = _entry_problem(entry, dep, f"{part}[{i}]", types_of)
            if problem:
                return problem[:MAX_REASON]
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return "'changedPropIds' must be a list of texts"
    key = str(body.get("output", ""))
    count = len(key[2:-2].split("...")) if key.startswith("..") else 1
    if callback.get("no_output"):
        count = 0
    return _outputs_problem(body.get("outputs"), count)
