"""The Example tab's data as raw bytes: one HTTP route the page fetches (``fetch().arrayBuffer()``) instead of a Dash
callback, so an example's attention reaches the page without JSON, base64 or Dash's store handling.

``GET /_attnviz/example`` with the payload key as query parameters (``run``, ``example``, ``kind``, ``attn``,
``detail`` = ``all`` | ``layer`` | ``auto``, ``layer``; ``step`` for the query position whose rows a one-layer
payload carries; ``store`` = the page's ``?store=``), or ``search`` = a page URL's query string, which the server
resolves as the sync callback does (first load: the page asks for its data before Dash has started). ``part=rows``
asks only for the rows of ``step`` (:func:`.payload.step_rows_payload`), ``part=model_view`` only for the model
view (:func:`.payload.model_view_payload`; asked for when the view is shown, so that the first screen never waits
for it). The answer is :func:`pack` of :func:`.payload.example_payload`: the same fields as the Dash callback
``example-payload`` sends but the model view (None here), the arrays as their stored float16 (rollout float32)
bytes. The store stays the source of truth: nothing is cached in between
but the reader's own cache of an example read once (:mod:`.payload`).

A store the page may not open is a 400 with one line; a selection that cannot be drawn is a payload whose
``error`` says why (as the callback's).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np

from attnviz.dashboard import security
from attnviz.dashboard.data import CONFIG_STORE_KEY, data_dir_of, get_reader
from attnviz.dashboard.example import payload as example_data
from attnviz.dashboard.messages import describe_error, message_figure
from attnviz.dashboard.urlstate import ViewState, parse_state
from attnviz.pipeline.store import StoreError, StoreReader

log = logging.getLogger(__name__)

#: The route's path (example.js fetches it).
ROUTE = "/_attnviz/example"
#: Arrays start on a multiple of this many bytes (Float16Array / Float32Array views need 2 / 4).
ALIGN = 8
_DTYPES = {"f2": "<f2", "f4": "<f4"}


class _Arrays:
    """Collects the arrays of one payload: each becomes ``{"dtype", "shape", "offset", "nbytes"}`` in the header
    and its bytes are appended (aligned) to the body."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def __call__(self, array: np.ndarray, dtype: str) -> dict[str, Any]:
        raw = np.ascontiguousarray(array, dtype=_DTYPES[dtype]).tobytes()
        spec = {"dtype": dtype, "shape": list(np.shape(array)), "offset": self.size, "nbytes": len(raw)}
        pad = -len(raw) % ALIGN
        self.chunks.append(raw + b"\0" * pad)
        self.size += len(raw) + pad
        return spec


def pack(header: dict[str, Any], arrays: _Arrays) -> bytes:
    """``uint32 LE header length`` + the header as UTF-8 JSON (``data_offset``: where the arrays start, a multiple
    of :data:`ALIGN`) + padding + the arrays' bytes."""
    text = json.dumps({**header, "data_offset": 0}, separators=(",", ":")).encode()
    start = 4 + len(text) + 16  # room for the offset's digits, then aligned
    start += -start % ALIGN
    text = json.dumps({**header, "data_offset": start}, separators=(",", ":")).encode()
    head = struct.pack("<I", len(text)) + text
    return head + b" " * (start - len(head)) + b"".join(arrays.chunks)


def unpack(body: bytes) -> dict[str, Any]:
    """Inverse of :func:`pack`: the header with every array spec replaced by its numpy array (for tests and
    clients; the page does the same in ``example.js``)."""
    (n,) = struct.unpack_from("<I", body)
    header = json.loads(body[4:4 + n])
    start = header["data_offset"]
    for name, spec in list(header.items()):
        if isinstance(spec, dict) and {"dtype", "offset", "nbytes"} <= spec.keys():
            lo = start + spec["offset"]
            header[name] = np.frombuffer(body[lo:lo + spec["nbytes"]], dtype=_DTYPES[spec["dtype"]]).reshape(
                spec["shape"])
    return header


def _int(value: str | None, fallback: int) -> int:
    try:
        return int(value) if value is not None else fallback
    except ValueError:
        return fallback


def key_of_request(reader: StoreReader, args: Any) -> tuple[dict[str, Any], ViewState]:
    """The payload key a request names, and its selection: from ``search`` (resolved as the sync callback resolves
    a URL) or from its key fields (``detail=auto``: the server picks all layers or one, as for the page's
    selection)."""
    from attnviz.dashboard.example.sync import resolve_state

    if "search" in args:
        state, _ = resolve_state(reader, parse_state(args.get("search") or ""), explain=False)
    else:
        state = ViewState.from_dict({k: args.get(k) for k in ("run", "example", "kind", "attn", "layer", "step")
                                     if args.get(k) is not None})
    detail = args.get("detail") or "auto"
    if detail not in ("all", "layer") or "search" in args:
        detail = example_data.detail_level(reader, state)
    key = example_data.payload_key(state, detail)
    key["step"] = state.step
    return key, state


def answer(reader: StoreReader, args: Any, store: str | None) -> bytes:
    """The packed payload (or rows, ``part=rows``) a request asks for."""
    arrays = _Arrays()
    header_state: dict[str, Any] | None = None
    try:
        key, state = key_of_request(reader, args)
        if "search" in args:  # what the page shows until the sync callback answers (first load)
            header_state = {k: v for k, v in state.to_dict().items() if k != "tab"}
        if args.get("part") == "rows":
            header = example_data.step_rows_payload(reader, key, _int(args.get("step"), 0), pack=arrays)
        elif args.get("part") == "model_view":
            header = example_data.model_view_payload(reader, key)
        else:  # the first screen's data: the model view (below it) comes on its own (part=model_view)
            header = example_data.example_payload(reader, key, store=store, pack=arrays, rows=False,
                                                  model_view=False)
    except Exception as exc:  # never a traceback in the page; the server log has unexpected ones
        arrays = _Arrays()
        header = {"key": {k: args.get(k) for k in args}, "error": describe_error(
            exc, (StoreError, ValueError), "read this example", log)}
    header["message_template"] = message_figure("")
    if header_state is not None and not header.get("error"):
        header["state"] = header_state
    return pack(header, arrays)


def register_route(server: Any) -> None:
    """Add :data:`ROUTE` to the Flask ``server`` (basic auth and security headers apply as to every page)."""
    import flask

    @server.route(ROUTE, methods=["GET"])
    def example_bytes() -> Any:
        config = flask.current_app.config
        name = flask.request.args.get("store") or None
        try:
            path = security.resolve_store(data_dir_of(config), name) if name else Path(config[CONFIG_STORE_KEY])
            reader = get_reader(path)
        except (security.SecurityError, StoreError, OSError) as exc:
            return flask.Response(f"attnviz: {str(exc).splitlines()[0] if str(exc) else 'cannot open the store'}\n",
                                  status=400, mimetype="text/plain")
        body = answer(reader, flask.request.args, name)
        return flask.Response(body, mimetype="application/octet-stream", headers={"Cache-Control": "no-store"})
