"""The playground's model worker: one long-lived process that keeps models loaded and runs playground jobs, and
the client that Dash background callbacks use to talk to it.

Why a separate process: Dash's DiskcacheManager runs every background callback in a fresh process forked from
the server (which never imports torch), so a model cache there would die with each job, and every run would pay
for importing torch and building the model again. The worker is started on first use (detached, so that Dash
killing a finished or cancelled job does not kill it), listens on a Unix socket guarded by a random key in the
playground folder, keeps models in :mod:`attnviz.pipeline.playground`'s LRU cache, and exits when the process that owns
it (the dashboard server) is gone or after ``idle_timeout`` seconds without jobs.

Protocol (pickled messages over ``multiprocessing.connection``): the client sends one request
``{"op", "session", "timeout", "args"}``; the worker answers with any number of ``("progress", fraction, text)``
then one ``("result", value)`` or ``("error", kind, message)``. A client that disconnects (Dash cancelled or
killed the job) stops its job at the next step. One job runs at a time; a second job of the same browser
session is refused while the first one's client is connected.

Importing this module never imports torch: the worker imports :mod:`attnviz.pipeline.playground` when it serves.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from attnviz.pipeline.playground_records import (
    DEFAULT_TIMEOUT_S,
    GenerateRequest,
    InputRequest,
    MaskRequest,
    ModelChoice,
    PlaygroundError,
    PlaygroundLimitError,
    load_result,
)

ClientProgress = Callable[[float, str], None]
#: Seconds a worker waits without jobs before exiting.
DEFAULT_IDLE_TIMEOUT_S = float(os.environ.get("ATTNVIZ_PLAYGROUND_IDLE", "1800"))
#: Seconds the client waits for a newly started worker to answer.
START_TIMEOUT_S = 60.0
#: Extra seconds the client waits beyond the job's time limit before giving up on a silent worker.
CLIENT_GRACE_S = 30.0
_REPO_ROOT = Path(__file__).resolve().parent.parent


class CancelledError(Exception):
    """The client of a job went away (the page cancelled the job)."""


def playground_dir() -> Path:
    """Folder of the worker's socket key, log and result files: ``$ATTNVIZ_PLAYGROUND_DIR`` or a per-user
    folder in the temp directory."""
    env = os.environ.get("ATTNVIZ_PLAYGROUND_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"attnviz-playground-{os.getuid()}"


def socket_path(folder: str | os.PathLike) -> str:
    """The worker's Unix socket for ``folder`` (a short path in the temp directory: socket paths are limited to
    about 100 bytes)."""
    digest = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"attnviz-pg-{digest}.sock")


def _authkey(folder: Path) -> bytes:
    return (folder / "authkey").read_bytes()


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    with open(folder / "worker.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------------
# Client (runs in the Dash background job; no torch)
# --------------------------------------------------------------------------------------------------------


def _connect(folder: Path) -> Connection:
    return Client(socket_path(folder), family="AF_UNIX", authkey=_authkey(folder))


def _ping(folder: Path) -> int | None:
    """The worker's pid if one answers on ``folder``'s socket, else None."""
    try:
        conn = _connect(folder)
    except (OSError, EOFError):
        return None
    try:
        conn.send({"op": "ping", "session": "", "timeout": 5.0, "args": {}})
        if not conn.poll(10.0):
            return None
        reply = conn.recv()
        return int(reply[1]["pid"]) if reply[0] == "result" else None
    except (OSError, EOFError):
        return None
    finally:
        conn.close()


def ensure_worker(folder: str | os.PathLike | None = None, *, owner_pid: int | None = None,
                  progress: ClientProgress | None = None) -> int:
    """Start the worker of ``folder`` unless one answers; return its pid.

    ``owner_pid`` is the process whose end stops the worker (default: this process).
    """
    folder = Path(folder or playground_dir())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _folder_lock(folder):
        if (folder / "authkey").exists():
            pid = _ping(folder)
            if pid:
                return pid
        if progress:
            progress(0.01, "starting the model worker")
        key = folder / "authkey"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path(folder))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT),
                                                                          os.environ.get("PYTHONPATH")]))}
        with open(folder / "worker.log", "ab") as log:
            launcher = subprocess.Popen(
                [sys.executable, "-m", "attnviz.pipeline.playground_worker", "--folder", str(folder),
                 "--owner-pid", str(owner_pid or os.getpid())],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=_REPO_ROOT, env=env, start_new_session=True)
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
         progress: ClientProgress | None = None) -> Any:
    """Run one job on the worker (started if needed) and return its result; raise PlaygroundError with the
    worker's one-line message on failure. ``progress(fraction, text)`` receives the worker's progress."""
    folder = Path(folder or playground_dir())
    ensure_worker(folder, owner_pid=owner_pid, progress=progress)
    try:
        conn = _connect(folder)
    except (OSError, EOFError) as exc:
        raise PlaygroundError(f"cannot reach the playground's model worker ({exc}): try again") from None
    with conn:
        conn.send({"op": op, "session": session, "timeout": float(timeout), "args": args})
        while True:
            if not conn.poll(timeout + CLIENT_GRACE_S):
                raise PlaygroundLimitError(f"the model worker did not answer within {timeout + CLIENT_GRACE_S:.0f} s")
            try:
                message = conn.recv()
            except EOFError:
                raise PlaygroundError("the playground's model worker stopped during the job (out of memory?): "
                                      "try again, perhaps with a smaller model") from None
            if message[0] == "progress":
                if progress:
                    progress(message[1], message[2])
            elif message[0] == "result":
                return message[1]
            else:
                _, kind, text = message
                raise (PlaygroundLimitError if kind == "limit" else PlaygroundError)(text)


def shutdown_worker(folder: str | os.PathLike | None = None, timeout: float = 10.0) -> bool:
    """Ask the worker of ``folder`` to exit; True if one answered (and is gone within ``timeout``)."""
    folder = Path(folder or playground_dir())
    if not (folder / "authkey").exists():
        return False
    pid = _ping(folder)
    if not pid:
        return False
    with contextlib.suppress(OSError, EOFError), _connect(folder) as conn:
        conn.send({"op": "shutdown", "session": "", "timeout": 5.0, "args": {}})
        conn.poll(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (the test process started the launcher) counts as gone.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"
    return True


# --------------------------------------------------------------------------------------------------------
# Worker (its own process; imports torch through attnviz.pipeline.playground)
# --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    """One request being served: its connection, deadline and progress reporting."""

    conn: Connection
    session: str
    timeout: float
    started: float = dataclasses.field(default_factory=time.monotonic)

    def client_gone(self) -> bool:
        """True when the client closed its end (a cancelled or killed Dash job)."""
        try:
            return self.conn.poll(0)
        except (OSError, EOFError):
            return True

    def progress(self, fraction: float, text: str) -> None:
        """Report progress; raise CancelledError if the client is gone, PlaygroundLimitError past the deadline."""
        if self.client_gone():
            raise CancelledError()
        if time.monotonic() - self.started > self.timeout:
            raise PlaygroundLimitError(f"the job ran longer than {self.timeout:g} s (the playground's time limit): "
                                       "use a shorter input, fewer tokens or a smaller model")
        try:
            self.conn.send(("progress", float(fraction), text))
        except (OSError, EOFError):
            raise CancelledError() from None


class Worker:
    """Serves playground jobs one at a time; models stay loaded between jobs."""

    def __init__(self, folder: Path, owner_pid: int, idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.folder = folder
        self.owner_pid = owner_pid
        self.idle_timeout = idle_timeout
        self.compute = threading.Lock()
        self.state = threading.Lock()
        self.sessions: dict[str, Job] = {}
        self.last_active = time.monotonic()
        self.stop = threading.Event()
        self.warm = threading.Event()
        self.running = 0

    def serve(self) -> None:
        """Listen until the owner is gone, the worker is idle too long, or a shutdown request arrives."""
        path = socket_path(self.folder)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener = Listener(path, family="AF_UNIX", authkey=_authkey(self.folder))
        (self.folder / "worker.pid").write_text(str(os.getpid()))
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()
        threading.Thread(target=self._warm_up, daemon=True).start()
        try:
            while not self.stop.wait(1.0):
                idle = self.running == 0 and time.monotonic() - self.last_active > self.idle_timeout
                if idle or not _alive(self.owner_pid):
                    break
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os._exit(0)  # daemon threads may be inside torch: do not wait for them

    def _warm_up(self) -> None:
        """Import torch, transformers and the pipeline now (seconds) rather than in the first job. Holds the
        compute lock: transformers' lazy imports are not thread-safe, so jobs wait until it is done."""
        with self.compute, contextlib.suppress(Exception):
            import torch
            import transformers.modeling_utils  # noqa: F401

            from attnviz.pipeline import playground  # noqa: F401

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.warm.set()

    def _accept_loop(self, listener: Listener) -> None:
        while not self.stop.is_set():
            try:
                conn = listener.accept()
            except Exception:  # noqa: BLE001 - a bad handshake must not stop the worker
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: Connection) -> None:
        with conn:
            try:
                request = conn.recv()
                op = request["op"]
                job = Job(conn, str(request.get("session", "")), float(request.get("timeout", DEFAULT_TIMEOUT_S)))
                if op == "ping":
                    conn.send(("result", {"pid": os.getpid()}))
                    return
                if op == "shutdown":
                    conn.send(("result", {"pid": os.getpid()}))
                    self.stop.set()
                    return
                conn.send(("result", self._run(op, request.get("args", {}), job)))
            except CancelledError:
                return
            except PlaygroundLimitError as exc:
                self._reply_error(conn, "limit", str(exc))
            except PlaygroundError as exc:
                self._reply_error(conn, "error", str(exc))
            except Exception as exc:  # noqa: BLE001 - the page gets one line; the log gets the traceback
                traceback.print_exc()
                first = str(exc).splitlines()[0][:200] if str(exc) else ""
                self._reply_error(conn, "internal", f"the playground job failed: {type(exc).__name__}: {first}")

    @staticmethod
    def _reply_error(conn: Connection, kind: str, text: str) -> None:
        with contextlib.suppress(OSError, EOFError):
            conn.send(("error", kind, text))

    def _run(self, op: str, args: dict[str, Any], job: Job) -> Any:
        with self.state:
            other = self.sessions.get(job.session) if job.session else None
            if other is not None and not other.client_gone():
                raise PlaygroundLimitError("a playground job of this browser session is already running: wait for "
                                           "it to finish or cancel it")
            if job.session:
                self.sessions[job.session] = job
            self.running += 1
        try:
            while not self.compute.acquire(timeout=0.5):
                job.progress(0.0, "waiting for another playground job to finish" if self.warm.is_set() else
                             "starting the model worker: importing torch and transformers (first job only)")
            try:
                return self._dispatch(op, args, job)
            finally:
                self.compute.release()
        finally:
            with self.state:
                if self.sessions.get(job.session) is job:
                    del self.sessions[job.session]
                self.running -= 1
                self.last_active = time.monotonic()

    def _dispatch(self, op: str, args: dict[str, Any], job: Job) -> Any:
        if op == "sleep":  # a job that only waits (tests of the time limit and of one job per session)
            end = time.monotonic() + float(args.get("seconds", 1.0))
            while time.monotonic() < end:
                job.progress(0.5, "sleeping")
                time.sleep(0.05)
            return {"slept": True}
        from attnviz.pipeline import playground  # torch is imported here (already, by the warm-up), in the worker only

        if op == "add":
            result = load_result(self.folder, args["result_id"])
            return playground.add_to_store(result, args["store"], args.get("run"), job.progress)
        if op == "status":
            return {"pid": os.getpid(), "models": [list(k) for k in playground.cached_models()]}
        choice = ModelChoice(**args["choice"])
        req = InputRequest(**args["input"])
        if op == "run":
            result = playground.run_input(choice, req, job.progress)
        elif op == "generate":
            result = playground.generate(choice, req, GenerateRequest(**args["generate"]), job.progress)
        elif op == "mask":
            result = playground.predict_masked(choice, req, MaskRequest(**args["mask"]), job.progress)
        else:
            raise PlaygroundError(f"unknown playground operation {op!r}")
        job.progress(0.97, "saving the result")
        playground.save_result_files(self.folder, result)
        return result.summary()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m attnviz.pipeline.playground_worker``: fork a detached worker and return at once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--owner-pid", type=int, required=True)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S)
    parser.add_argument("--foreground", action="store_true", help="do not fork (debugging)")
    ns = parser.parse_args(argv)
    if not ns.foreground and os.fork() > 0:
        os._exit(0)  # the launcher exits; the worker is re-parented, out of reach of Dash's job killer
    if not ns.foreground:
        os.setsid()
    # Leave a core to the dashboard server so that the page stays responsive while a model runs.
    threads = os.environ.get("ATTNVIZ_PLAYGROUND_THREADS") or str(max(1, (os.cpu_count() or 2) - 1))
    os.environ["OMP_NUM_THREADS"] = threads
    os.environ["MKL_NUM_THREADS"] = threads
    print(f"attnviz playground worker {os.getpid()} serving {ns.folder} for owner {ns.owner_pid}", flush=True)
    Worker(Path(ns.folder), ns.owner_pid, ns.idle_timeout).serve()


if __name__ == "__main__":
    main()
