"""Store resolution for the dashboard: one lazily opened :class:`StoreReader` per process and store.

Gunicorn forks its workers after importing the app, and an h5py file handle must not cross a fork, so a reader
is opened on first use in each process (the cache is keyed by pid). Before each use the index's inode and mtime
are checked (one ``stat``; ``ATTNVIZ_REFRESH_SECONDS`` throttles it, default 0) and the index is re-read when it
changed, so shards committed by a running precompute appear at once, in every worker alike. A reader whose store
changed in any way other than by growing (a run deleted or recreated, a shard dropped, the whole store replaced)
is replaced by a fresh one, so no handle to a replaced file is ever read again; a reader whose store cannot be
read is forgotten, and the next request opens the store again (it recovers when the store comes back).

Callbacks of any tab get the page's reader with :func:`current_reader`. The page's store is the app's store
(Flask config ``ATTNVIZ_STORE``) unless the page was opened with ``?store=NAME``: the browser then sends that
name with every callback (``attnviz_store`` in the request body, see :mod:`attnviz.dashboard.app`), and it is resolved
inside the data directory (``ATTNVIZ_DATA_DIR``) by :func:`attnviz.dashboard.security.resolve_store`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from attnviz.dashboard.cache import RunStamp, run_stamp
from attnviz.dashboard.security import StoreAccessError, is_within, resolve_store
from attnviz.pipeline.store import StoreError, StoreReader
from attnviz.pipeline.store.meta import run_meta

REFRESH_SECONDS = float(os.environ.get("ATTNVIZ_REFRESH_SECONDS", "0") or 0)
CONFIG_STORE_KEY = "ATTNVIZ_STORE"
CONFIG_DATA_DIR_KEY = "ATTNVIZ_DATA_DIR"
#: Key of the callback request body that carries the page's ``?store=`` name.
STORE_PAYLOAD_KEY = "attnviz_store"

_lock = threading.Lock()
_readers: dict[tuple[int, str], StoreReader] = {}
_last_refresh: dict[tuple[int, str], float] = {}
_signatures: dict[tuple[int, str], dict[str, RunStamp]] = {}



def _signature(reader: StoreReader) -> dict[str, RunStamp]:
    """run -> its stamp (creation time, shard files): what must only grow for a reader to stay valid."""
    return {run: run_stamp(str(reader.path), reader.run_info(run)) for run in reader.runs()}


def _only_grew(old: dict[str, RunStamp], new: dict[str, RunStamp]) -> bool:
    """Whether ``new`` keeps every run of ``old``, created at the same time, with at least its shards."""
    for run, (_, _, created, files) in old.items():
        if run not in new or new[run][2] != created or not set(files) <= set(new[run][3]):
            return False
    return True


def _forget(key: tuple[int, str]) -> None:
    """Drop a cached reader (not closed: a thread may still be reading; its files close when it is freed)."""
    _readers.pop(key, None)
    _last_refresh.pop(key, None)
    _signatures.pop(key, None)


def _check_allowed(path: Path) -> None:
    """Inside a request, refuse a store outside the app's data directory (the app's own store is allowed)."""
    try:
        import flask

        if not flask.has_app_context():
            return
        config = flask.current_app.config
    except ImportError:  # pragma: no cover - flask comes with dash
        return
    store = config.get(CONFIG_STORE_KEY)
    data_dir = config.get(CONFIG_DATA_DIR_KEY)
    if store is None or data_dir is None:
        return
    if path == Path(store).resolve() or is_within(data_dir, path):
        return
    raise StoreAccessError(f"store {path.name!r} is outside the data directory of this dashboard: pick one from "
                           "the Store menu")


def get_reader(path: str | os.PathLike, *, fresh: bool = False) -> StoreReader:
    """The reader of ``path`` for this process, opened on first use and kept current (see the module doc).

    ``fresh`` checks the index now whatever ``REFRESH_SECONDS`` says. Raises ``attnviz.pipeline.store.StoreError``
    (one line) when the store is missing or unreadable, or, inside a request, outside the data directory.
    """
    resolved = Path(path).resolve()
    _check_allowed(resolved)
    key = (os.getpid(), str(resolved))
    now = time.monotonic()
    with _lock:
        reader = _readers.get(key)
        if reader is None:
            for stale in [k for k in _readers if k[0] != key[0]]:  # inherited across a fork: never reuse
                _forget(stale)
            return _open(key, now)
        if not fresh and now - _last_refresh.get(key, 0.0) < REFRESH_SECONDS:
            return reader
        _last_refresh[key] = now
        try:
            changed = reader.refresh()
        except Exception as exc:
            _forget(key)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot read the index of {resolved.name} ({type(exc).__name__}: {exc}): check the "
                             f"store with 'attnviz verify --store {resolved}'") from exc
        if changed:
            signature = _signature(reader)
            if not _only_grew(_signatures.get(key, {}), signature):
                _forget(key)
                return _open(key, now)
            _signatures[key] = signature
    return reader


def _open(key: tuple[int, str], now: float) -> StoreReader:
    """Open and cache a reader (caller holds ``_lock``)."""
    reader = StoreReader(key[1])
    _readers[key] = reader
    _last_refresh[key] = now
    _signatures[key] = _signature(reader)
    return reader


def requested_store() -> Any:
    """The ``?store=`` name the page sent with this callback request, or None (no request, or none sent)."""
    import flask

    if not flask.has_request_context() or not flask.request.is_json:
        return None
    body = flask.request.get_json(silent=True)
    return body.get(STORE_PAYLOAD_KEY) if isinstance(body, dict) else None


def data_dir_of(config: Any) -> Path:
    """The data directory of an app's Flask config (default: the folder of its store)."""
    configured = config.get(CONFIG_DATA_DIR_KEY)
    return Path(configured) if configured else Path(str(config[CONFIG_STORE_KEY])).parent


def current_store_path() -> str:
    """The store of the page handling the current request: its ``?store=`` (checked) or the app's store."""
    import flask

    config = flask.current_app.config
    name = requested_store()
    if name is None:
        return str(config[CONFIG_STORE_KEY])
    return str(resolve_store(data_dir_of(config), name))


def current_reader() -> StoreReader:
    """:func:`get_reader` for the store of the page handling the current request."""
    return get_reader(current_store_path())


def run_label(reader: StoreReader, run: str) -> str:
    """Run selector label: run name, model, "(random weights)" for untrained models, "(trained here)" for models
    trained by an attnviz command, "(step N)" for a training checkpoint and "(N-bit attention)" for runs stored
    with rounded attention weights."""
    meta = run_meta(reader.run_info(run).meta)
    label = f"{run} — {meta.model or '?'}"
    if meta.random_weights:
        label += " (random weights)"
    elif meta.model_info.get("trained_by"):
        label += " (trained here)"
    if meta.series and isinstance(meta.series.get("step"), int):
        label += f" (step {meta.series['step']})"
    if meta.mantissa_bits:
        label += f" ({meta.mantissa_bits}-bit attention)"
    return label


def preferred_run(reader: StoreReader) -> str | None:
    """The run a page opened without ``run=`` shows: the first (in store order) with trained weights that is not a
    playground run, else the first trained one, else the first run; None for a store without runs."""
    runs = reader.runs()
    metas = {run: run_meta(reader.run_info(run).meta) for run in runs}
    for accept in (lambda m: not m.random_weights and not m.playground, lambda m: not m.random_weights,
                   lambda m: True):
        for run in runs:
            if accept(metas[run]):
                return run
    return None
