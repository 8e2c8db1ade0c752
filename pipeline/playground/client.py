"""What the dashboard's processes call to use the playground: start the model worker if needed, submit a
request, wait for it (with progress), read the result. Imports neither torch nor pickle.

Protocol (JSON messages, :mod:`attnviz.pipeline.playground.protocol`): the client sends one request
``{"op", "session", "timeout", "args"}``; the worker answers with any number of ``["progress", fraction, text]``
then one ``["result", value]`` or ``["error", kind, message]``. A client that disconnects (Dash cancelled or
killed the job) stops its job at the next step. A run's value is the result's summary; its arrays are read from
the result files with :func:`read_result` (``.npz`` + JSON, :mod:`attnviz.pipeline.playground.records`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnviz.pipeline.playground.protocol import alive, connect, playground_dir, socket_path
from attnviz.pipeline.playground.records import (
    DEFAULT_TIMEOUT_S,
    PlaygroundError,
    PlaygroundLimitError,
    PlaygroundResult,
    SlowJobError,
    load_result,
)

ClientProgress = Callable[[float, str], None]
#: Seconds the client waits for a newly started worker to answer.
START_TIMEOUT_S = 60.0
#: Extra seconds the client waits beyond the job's time limit before giving up on a silent worker.
CLIENT_GRACE_S = 30.0
#: The folder above the ``pipeline`` package: the worker's working directory and first PYTHONPATH entry.
_ROOT = Path(__file__).resolve().parents[2]


def _ping(folder: Path) -> int | None:
    """The worker's pid if one answers on ``folder``'s socket, else None."""
    try:
        conn = connect(folder)
    except (OSError, EOFError):
        return None
    with conn:
        try:
            conn.send({"op": "ping", "session": "", "timeout": 5.0, "args": {}})
            if not conn.poll(10.0):
                return None
            reply = conn.recv()
            return int(reply[1]["pid"]) if reply[0] == "result" else None
        except (OSError, EOFError, TypeError, KeyError, IndexError, ValueError):
            return None


def ensure_worker(folder: str | os.PathLike | None = None, *, owner_pid: int | None = None,
                  progress: ClientProgress | None = None) -> int:
    """Start the worker of ``folder`` unless one answers; return its pid.

    ``owner_pid`` is the process whose end stops the worker (default: this process).
    """
    folder = Path(folder or playground_dir())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / "worker.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _ensure_worker_locked(folder, owner_pid, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _ensure_worker_locked(folder: Path, owner_pid: int | None, progress: ClientProgress | None) -> int:
    if (folder / "authkey").exists():
        pid = _ping(folder)
        if pid:
            return pid
    if progress:
        progress(0.01, "starting the model worker")
    fd = os.open(folder / "authkey", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path(folder))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(folder / "worker.log", "ab") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "attnviz.pipeline.playground.worker", "--folder", str(folder),
             "--owner-pid", str(owner_pid or os.getpid())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=_ROOT, env=env, start_new_session=True)
    launcher.wait(30)  # the launcher forks the worker and exits at once
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        pid = _ping(folder)
        if pid:
            return pid
        time.sleep(0.1)
    raise PlaygroundError(f"the playground's model worker did not start: see {folder / 'worker.log'}")


def call(op: str, args: dict[str, Any], *, folder: str | os.PathLike | None = None, session: str = "",
         timeout: float = DEFAULT_TIMEOUT_S, owner_pid: int | None = None,
         progress: ClientProgress | None = None, fast: float | None = None) -> Any:
    """Run one job on the worker (started if needed) and return its result (a JSON value); raise
    PlaygroundError with the worker's one-line message on failure. ``progress(fraction, text)`` receives the
    worker's progress.

    ``fast``: run the job only if it can start at once and is expected to take at most ``fast`` seconds (its
    model loaded in a running worker, no other job running); else raise SlowJobError at once, without starting
    a worker (the caller runs it as a background job instead)."""
    folder = Path(folder or playground_dir())
    if fast is None:
        ensure_worker(folder, owner_pid=owner_pid, progress=progress)
    try:
        conn = connect(folder)
    except (OSError, EOFError) as exc:
        if fast is not None:
            raise SlowJobError("no model worker is running") from None
        raise PlaygroundError(f"cannot reach the playground's model worker ({exc}): try again") from None
    with conn:
        request: dict[str, Any] = {"op": op, "session": session, "timeout": float(timeout), "args": args}
        if fast is not None:
            request["fast"] = float(fast)
        conn.send(request)
        while True:
            if not conn.poll(timeout + CLIENT_GRACE_S):
                raise PlaygroundLimitError(f"the model worker did not answer within {timeout + CLIENT_GRACE_S:.0f} s")
            try:
                message = conn.recv()
            except (EOFError, OSError):
                raise PlaygroundError("the playground's model worker stopped during the job (out of memory?): "
                                      "try again, perhaps with a smaller model") from None
            if message[0] == "progress":
                if progress:
                    progress(message[1], message[2])
            elif message[0] == "result":
                return message[1]
            else:
                _, kind, text = message
                errors = {"limit": PlaygroundLimitError, "slow": SlowJobError}
                raise errors.get(kind, PlaygroundError)(text)


def read_result(folder: str | os.PathLike | None, result_id: str) -> PlaygroundResult:
    """The result ``result_id`` the worker wrote into ``folder`` (arrays from ``.npz``, the rest from JSON)."""
    return load_result(folder or playground_dir(), result_id)


def shutdown_worker(folder: str | os.PathLike | None = None, timeout: float = 10.0) -> bool:
    """Ask the worker of ``folder`` to exit; True if one answered (and is gone within ``timeout``)."""
    folder = Path(folder or playground_dir())
    if not (folder / "authkey").exists():
        return False
    pid = _ping(folder)
    if not pid:
        return False
    with contextlib.suppress(OSError, EOFError), connect(folder) as conn:
        conn.send({"op": "shutdown", "session": "", "timeout": 5.0, "args": {}})
        conn.poll(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    return not alive(pid)


__all__ = ["call", "ensure_worker", "playground_dir", "read_result", "shutdown_worker"]
