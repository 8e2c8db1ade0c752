"""What a team's dashboard tells its operator: JSON-line logs of every callback, ``/healthz``, errors as messages.

* :func:`configure_logging` sends the ``attnviz``, ``dashboard`` and ``pipeline`` loggers to stderr (or to
  ``ATTNVIZ_LOG_FILE``) as one JSON object per line.
* :func:`install_callback_log` hooks Flask's ``before_request``/``after_request`` on ``/_dash-update-component``,
  so every callback of every tab is timed without touching the tabs: one line per callback with its output id,
  milliseconds, status (``ok``, ``no_update``, ``error``, ``unauthorized``, ``bad_request``), HTTP code and pid.
  The same duration goes back in a ``Server-Timing`` header.
* :func:`install_health` adds ``GET /healthz``: 200 with the store, its runs and examples and the pid, or 503
  with the reason when the store cannot be read (missing, replaced by garbage, newer schema).
* :func:`callback_error` is the app's Dash ``on_error`` handler: an exception no tab caught becomes a message in
  the page's alert and a logged error, never a 500 and never a traceback in the browser.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from attnviz.pipeline.store import StoreError

CALLBACK_PATH = "/_dash-update-component"
LOG_FILE_ENV = "ATTNVIZ_LOG_FILE"
#: Id of the app-wide alert that shows errors no tab handled (see :func:`callback_error`).
APP_ALERT = "app-alert"
_LOGGERS = ("attnviz", "dashboard", "pipeline")

log = logging.getLogger("attnviz.callbacks")
health_log = logging.getLogger("attnviz.health")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, and either the record's ``fields`` or its message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single JSON line (exception text included when there is one)."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["msg"] = record.getMessage()
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging() -> None:
    """JSON lines for the ``attnviz``/``dashboard``/``pipeline`` loggers, once per process (idempotent).

    Lines go to ``ATTNVIZ_LOG_FILE`` (appended; each line is one ``write``) or to stderr, which gunicorn and
    ``attnviz serve`` pass on. Callback timings are INFO on ``attnviz.callbacks``; other modules log warnings.
    """
    target = os.environ.get(LOG_FILE_ENV, "").strip()
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if any(getattr(h, "_attnviz", False) for h in logger.handlers):
            continue
        handler: logging.Handler = logging.FileHandler(target) if target else logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._attnviz = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        if name == "attnviz":
            logger.setLevel(logging.INFO)


def _status(code: int, failed: bool) -> str:
    if code == 401:
        return "unauthorized"
    if failed or code >= 500:
        return "error"
    if code == 204:
        return "no_update"
    if code >= 400:
        return "bad_request"
    return "ok"


def _short_output(key: Any) -> str | None:
    """A callback's output key as its first ``id.prop`` plus how many more (``"url.search +20"``)."""
    if not isinstance(key, str):
        return None
    parts = key[2:-2].split("...") if key.startswith("..") else [key]
    first = parts[0][:120]
    return first if len(parts) == 1 else f"{first} +{len(parts) - 1}"


def install_callback_log(server: Any) -> None:
    """Time every ``/_dash-update-component`` request of the Flask ``server`` and log it as a JSON line.

    Install it before any auth check so refused callbacks are logged too.
    """
    import flask

    @server.before_request
    def _start_timer() -> None:
        if flask.request.path.endswith(CALLBACK_PATH):
            flask.g.attnviz_t0 = time.perf_counter()

    @server.after_request
    def _log_callback(response: Any) -> Any:
        t0 = flask.g.pop("attnviz_t0", None)
        if t0 is None:
            return response
        ms = (time.perf_counter() - t0) * 1000.0
        try:  # the body may be the reason of the error response (too large): never fail the response here
            body = flask.request.get_json(silent=True) if flask.request.is_json else None
        except Exception:  # noqa: BLE001
            body = None
        output = _short_output(body.get("output")) if isinstance(body, dict) else None
        error = flask.g.pop("attnviz_error", None)
        fields: dict[str, Any] = {
            "event": "callback", "output": output, "ms": round(ms, 2),
            "status": _status(response.status_code, error is not None), "http": response.status_code,
            "pid": os.getpid(),
        }
        if error:
            fields["error"] = error
        user = flask.g.get("attnviz_user")
        if user:
            fields["user"] = user
        log.info("callback", extra={"fields": fields})
        response.headers["Server-Timing"] = f"app;dur={ms:.1f}"
        return response


def callback_error(exc: Exception) -> None:
    """Dash ``on_error`` handler: show ``exc`` as one line in the app alert, log it; outputs stay unchanged."""
    import dash
    import flask

    if isinstance(exc, StoreError):
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logging.getLogger("attnviz.errors").warning("callback failed: %s", text)
    else:
        text = f"could not update the page ({type(exc).__name__}); the server log has the details"
        logging.getLogger("attnviz.errors").error("callback failed", exc_info=exc)
    if flask.has_request_context():
        flask.g.attnviz_error = f"{type(exc).__name__}: {str(exc)[:300]}"
    with contextlib.suppress(Exception):  # outside a callback context there is no page to tell
        dash.set_props(APP_ALERT, {"children": text, "is_open": True})


def health(store_path: str, reader_of: Callable[[str], Any]) -> tuple[dict[str, Any], int]:
    """The ``/healthz`` body and status: 200 when the store's index reads, else 503 with the reason."""
    body: dict[str, Any] = {"store": store_path, "pid": os.getpid()}
    try:
        reader = reader_of(store_path)
        runs = reader.runs()
        body.update(status="ok", runs=len(runs), examples=sum(reader.num_examples(r) for r in runs))
        return body, 200
    except StoreError as exc:
        body.update(status="error", reason=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return body, 503


def install_health(server: Any, store_path: str, reader_of: Callable[[str], Any]) -> None:
    """``GET /healthz`` on the Flask ``server`` (JSON; never cached; exempt from auth by its path)."""
    import flask

    @server.route("/healthz")
    def healthz() -> Any:
        body, code = health(store_path, reader_of)
        if code != 200:
            health_log.warning("unhealthy", extra={"fields": {"event": "health", **body}})
        response = flask.jsonify(body)
        response.status_code = code
        response.headers["Cache-Control"] = "no-store"
        return response
