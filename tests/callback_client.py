"""Call Dash callbacks the way the browser does: POST ``/_dash-update-component`` with the real payload.

The callback list comes from the app itself (``/_dash-dependencies``, the same data as ``app.callback_map``),
so tests and the load bench need not know any tab's internals beyond the component ids they set. Works with
Flask's test client (in-process) and with any base URL over HTTP (``requests``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CALLBACK_PATH = "/_dash-update-component"


def split_outputs(key: str) -> list[dict[str, Any]]:
    """``"..a.b...c.d.."`` (or ``"a.b"``) -> ``[{"id": "a", "property": "b"}, …]``; JSON ids are decoded."""
    parts = key[2:-2].split("...") if key.startswith("..") else [key]
    out = []
    for part in parts:
        cid, prop = part.rsplit(".", 1)
        prop = prop.split("@", 1)[0]  # allow_duplicate outputs carry a hash suffix
        out.append({"id": json.loads(cid) if cid.startswith("{") else cid, "property": prop})
    return out


def _is_pattern(cid: Any) -> bool:
    return isinstance(cid, dict) or (isinstance(cid, str) and cid.startswith("{"))


@dataclass
class Callback:
    """One entry of ``/_dash-dependencies``."""

    spec: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.spec["output"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        if self.spec.get("no_output") or "." not in self.key:  # a callback without outputs: its key is a hash
            return []
        return split_outputs(self.key)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.spec.get("inputs", []))

    @property
    def state(self) -> list[dict[str, Any]]:
        return list(self.spec.get("state", []))

    @property
    def clientside(self) -> bool:
        return self.spec.get("clientside_function") is not None

    def output_ids(self) -> set[str]:
        return {o["id"] for o in self.outputs if isinstance(o["id"], str)}

    def payload(self, values: Mapping[str, Any], changed: Sequence[str] | None = None,
                store: str | None = None) -> dict[str, Any]:
        """The request body for input/state ``values`` (``"id.prop" -> value``; missing ones are None;
        pattern-matching ALL inputs are empty lists). ``changed`` defaults to the first input."""

        def item(dep: dict[str, Any]) -> Any:
            cid, prop = dep["id"], dep["property"]
            if _is_pattern(cid):
                return []
            return {"id": cid, "property": prop, "value": values.get(f"{cid}.{prop}")}

        inputs = [item(d) for d in self.inputs]
        first = next((f"{d['id']}.{d['property']}" for d in self.inputs if not _is_pattern(d["id"])), None)
        body: dict[str, Any] = {
            "output": self.key,
            "outputs": self.outputs if self.key.startswith("..") else (self.outputs[0] if self.outputs else []),
            "inputs": inputs,
            "changedPropIds": list(changed) if changed is not None else ([first] if first else []),
            "state": [item(d) for d in self.state],
        }
        if store is not None:
            body["attnviz_store"] = store
        return body


def callbacks(dependencies: list[dict[str, Any]]) -> list[Callback]:
    """Server-side callbacks of an app's ``/_dash-dependencies`` list (clientside ones dropped)."""
    return [c for c in (Callback(d) for d in dependencies) if not c.clientside]


def find(cbs: Sequence[Callback], output: str) -> Callback:
    """The callback whose output key is ``output`` (e.g. ``"example-payload.data"``, also as a duplicate output
    ``output@<hash>``), else the one whose key contains it."""
    matches = [c for c in cbs if c.key == output or c.key.startswith(output + "@")] or [
        c for c in cbs if output in c.key]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} callbacks write {output!r}")
    return matches[0]


def response_props(body: Any) -> dict[str, dict[str, Any]]:
    """``{component id: {prop: value}}`` of a callback response, side updates (``set_props``) included
    (empty for 204 / no body)."""
    if not body:
        return {}
    data = json.loads(body) if isinstance(body, (bytes, str)) else body
    if not isinstance(data, dict):
        return {}
    props: dict[str, dict[str, Any]] = {}
    for part in (data.get("sideUpdate") or {}, data.get("response") or {}):
        for cid, values in part.items():
            props.setdefault(cid, {}).update(values)
    return props


# ---- the Example tab: the sync callback (URL <-> controls) and the example's data --------------------------------

#: The sync callback's input that a page opened at (or sent back/forward to) a URL writes: ``{"search", "at"}``.
URL_REQUEST = "example-url-request.data"
#: The callback that sends one example's attention to the page (its input is :data:`PAYLOAD_KEY`).
PAYLOAD = "example-payload.data"
PAYLOAD_KEY = "example-payload-key.data"


def sync_values(search: str, view_state: Any = None) -> dict[str, Any]:
    """Input values of the sync callback for a page opened at ``search`` (the other controls still empty)."""
    return {URL_REQUEST: {"search": search, "at": 0}, "view-state.data": view_state}


def payload_key(view_state: Mapping[str, Any]) -> dict[str, Any]:
    """The key the page asks :data:`PAYLOAD` with for a view state (as ``keyOf`` in ``dashboard/assets/example.js``):
    run, example, kind, attn and the detail level (plus layer and step when ``detail == "layer"``)."""
    key = {f: view_state.get(f) for f in ("run", "example", "kind", "attn")}
    key["detail"] = view_state.get("detail") or "all"
    if key["detail"] == "layer":
        key["layer"], key["step"] = view_state.get("layer"), view_state.get("step")
    return key


def message_of(fig: Mapping[str, Any]) -> str:
    """The message a message figure shows ("" for a drawn figure)."""
    meta = (fig.get("layout") or {}).get("meta")
    return meta.get("message", "") if isinstance(meta, dict) else ""
