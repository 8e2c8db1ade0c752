"""What a team's dashboard tells its operator: JSON-line logs of every callback, ``/healthz``, errors as messages.

* :func:`configure_logging` sends the ``attnviz``, ``dashboard`` and ``pipeline`` loggers to stderr (or to
  ``ATTNVIZ_LOG_FILE``) as one JSON object per line.
* :func:`install_callback_log` hooks Flask's ``before_request``/``after_request`` on ``/_dash-update-component``,
  so every callback of every tab is timed without touching the tabs: one line per callback with its output id,
  milliseconds, status (``ok``, ``no_update``, ``error``, ``unauthorized``, ``bad_request``), HTTP code and pid.
  The same duration goes back in a ``Server-Timing`` header. A refused request (4xx) is one WARNING line with
  the reason and never a traceback; those lines are rate-limited (:class:`RateLimit`, at most
  ``ATTNVIZ_REFUSAL_LOG_PER_S`` a second per process, default 5), the next line written says how many were
  ``suppressed`` meanwhile, so a flood of crafted requests cannot fill the disk.
* :func:`install_health` adds ``GET /healthz``: 200 with the store, its runs and examples and the pid, or 503
  with the reason when the store cannot be read (missing, replaced by garbage, newer schema).
* :func:`callback_error` is the app's Dash ``on_error`` handler: an exception no tab caught becomes a message in
  the page's alert and a logged error, never a 500 and never a traceback in the browser; an
  :class:`~attnviz.dashboard.callback_inputs.InputRefusedError` (a crafted input a tab's validator refused) becomes a
  400 instead, logged as a refusal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from attnviz.dashboard.callback_inputs import InputRefusedError
from attnviz.pipeline.store import StoreError

CALLBACK_PATH = "/_dash-update-component"
LOG_FILE_ENV = "ATTNVIZ_LOG_FILE"
#: Id of the app-wide alert that shows errors no tab handled (see :func:`callback_error`).
APP_ALERT = "app-alert"
REFUSAL_RATE_ENV = "ATTNVIZ_REFUSAL_LOG_PER_S"
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


class RateLimit:
    """At most ``per_second`` events a second (a window that starts at the first event after the last one
    closed); :meth:`admit` says whether this event may be logged and how many were suppressed before it."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = max(1, per_second)
        self._clock = clock
        self._lock = threading.Lock()
        self._window = float("-inf")
        self._count = 0
        self._suppressed = 0

    def admit(self) -> tuple[bool, int]:
        """(log this one?, how many were suppressed since the last one logged; reset when reported)."""
        with self._lock:
            now = self._clock()
            if now - self._window >= 1.0:
                self._window, self._count = now, 0
            if self._count >= self.per_second:
                self._suppressed += 1
                return False, 0
            self._count += 1
            suppressed, self._suppressed = self._suppressed, 0
            return True, suppressed


def _refusal_rate() -> int:
    try:
        return int(os.environ.get(REFUSAL_RATE_ENV, "5"))
    except ValueError:
        return 5


def install_callback_log(server: Any, refusals: RateLimit | None = None) -> None:
    """Time every ``/_dash-update-component`` request of the Flask ``server`` and log it as a JSON line.

    Install it before any auth check so refused callbacks are logged too. Refused requests (4xx) are logged
    at WARNING with their reason (``flask.g.attnviz_refused``), at most as often as ``refusals`` admits
    (default: ``ATTNVIZ_REFUSAL_LOG_PER_S`` a second).
    """
    import flask

    limit = refusals or RateLimit(_refusal_rate())

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
        body = None
        if flask.request.is_json and not flask.g.get("attnviz_unparsed"):
            try:  # the body may be the reason of the error response (too large): never fail the response here
                body = flask.request.get_json(silent=True)
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
        response.headers["Server-Timing"] = f"app;dur={ms:.1f}"
        if 400 <= response.status_code < 500:
            admitted, suppressed = limit.admit()
            if not admitted:
                return response
            fields["reason"] = flask.g.pop("attnviz_refused", None) or response.status
            if suppressed:
                fields["suppressed"] = suppressed
            log.warning("callback refused", extra={"fields": fields})
            return response
        log.info("callback", extra={"fields": fields})
        return response


def callback_error(exc: Exception) -> None:
    """Dash ``on_error`` handler: show ``exc`` as one line in the app alert, log it; outputs stay unchanged.

    :class:`~attnviz.dashboard.callback_inputs.InputRefusedError` is re-raised, for the app's 400 handler
    (:func:`attnviz.dashboard.security.install_request_checks`)."""
    import dash
    import flask

    if isinstance(exc, InputRefusedError):  # refused on purpose: the 400 handler answers, no traceback
        raise exc
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
