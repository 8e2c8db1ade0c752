"""The playground's model worker: one long-lived process that keeps models loaded and runs playground jobs for
the dashboard's background callbacks (which talk to it through :mod:`attnviz.pipeline.playground.client`).

Why a separate process: Dash's DiskcacheManager runs every background callback in a fresh process forked from
the server (which never imports torch), so a model cache there would die with each job, and every run would pay
for importing torch and building the model again. The worker is started on first use (detached, so that Dash
killing a finished or cancelled job does not kill it), listens on a Unix socket guarded by a random key in the
playground folder (JSON messages, :mod:`attnviz.pipeline.playground.protocol`), keeps models in
:mod:`attnviz.pipeline.playground.engine`'s LRU cache, writes each result as arrays + JSON
(:func:`attnviz.pipeline.playground.records.save_result`), and exits when the process that owns it (the dashboard
server) is gone or after ``idle_timeout`` seconds without jobs. One job runs at a time; a second job of the same
browser session is refused while the first one's client is connected.

Importing this module never imports torch: the worker imports :mod:`attnviz.pipeline.playground.engine` when it
serves.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from attnviz.pipeline.playground.protocol import Connection, alive, authkey, listen, socket_path
from attnviz.pipeline.playground.records import (
    DEFAULT_TIMEOUT_S,
    GenerateRequest,
    InputRequest,
    MaskRequest,
    ModelChoice,
    PlaygroundError,
    PlaygroundLimitError,
    SlowJobError,
    load_result,
)

#: Seconds a worker waits without jobs before exiting.
DEFAULT_IDLE_TIMEOUT_S = float(os.environ.get("ATTNVIZ_PLAYGROUND_IDLE", "1800"))


class CancelledError(Exception):
    """The client of a job went away (the page cancelled the job)."""


@dataclasses.dataclass
class Job:
    """One request being served: its connection, deadline and progress reporting."""

    conn: Connection
    session: str
    timeout: float
    #: Seconds the client waits for an answer before running the job in the background instead (None: it waits
    #: for any job); a job the worker cannot start at once or would not finish in time is refused (SlowJobError).
    fast: float | None = None
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
            self.conn.send(["progress", float(fraction), text])
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
        listener = listen(self.folder)
        (self.folder / "worker.pid").write_text(str(os.getpid()))
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()
        threading.Thread(target=self._warm_up, daemon=True).start()
        try:
            while not self.stop.wait(1.0):
                idle = self.running == 0 and time.monotonic() - self.last_active > self.idle_timeout
                if idle or not alive(self.owner_pid):
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

            from attnviz.pipeline.playground import engine  # noqa: F401

            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.warm.set()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(Connection(sock),), daemon=True).start()

    def _handle(self, conn: Connection) -> None:
        with conn:
            try:
                conn.accept_handshake(authkey(self.folder))
                request = conn.recv()
            except (OSError, EOFError):  # a bad handshake or message must not stop the worker
                return
            try:
                if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                    raise PlaygroundError("a playground request must be an object with an op")
                op = request["op"]
                fast = request.get("fast")
                job = Job(conn, str(request.get("session", "")), float(request.get("timeout", DEFAULT_TIMEOUT_S)),
                          float(fast) if isinstance(fast, int | float) and not isinstance(fast, bool) else None)
                if op == "ping":
                    conn.send(["result", {"pid": os.getpid()}])
                    return
                if op == "shutdown":
                    conn.send(["result", {"pid": os.getpid()}])
                    self.stop.set()
                    return
                conn.send(["result", self._run(op, request.get("args", {}), job)])
            except CancelledError:
                return
            except SlowJobError as exc:
                self._reply_error(conn, "slow", str(exc))
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
            conn.send(["error", kind, text])

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
            if job.fast is not None and not (self.warm.is_set() and self.compute.acquire(blocking=False)):
                raise SlowJobError("the model worker is busy")
            while job.fast is None and not self.compute.acquire(timeout=0.5):
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
        # torch is imported here (already, by the warm-up), in the worker only
        from attnviz.pipeline.playground import engine

        if op == "add":
            result = load_result(self.folder, args["result_id"])
            return engine.add_to_store(result, args["store"], args.get("run"), job.progress)
        if op == "status":
            return {"pid": os.getpid(), "models": [list(k) for k in engine.cached_models()]}
        if op not in ("run", "generate", "mask"):
            raise PlaygroundError(f"unknown playground operation {op!r}")
        choice = ModelChoice(**args["choice"])
        req = InputRequest(**args["input"])
        gen = GenerateRequest(**args["generate"]) if op == "generate" else None
        if job.fast is not None:
            estimate = engine.estimate_seconds(choice, op, req, gen)
            if estimate is None or estimate > job.fast:
                raise SlowJobError("the job needs more time than asked (or its model is not loaded)")
        lm = engine.get_model(choice, job.progress)  # a load is not timed with the job
        t0 = time.perf_counter()
        if op == "run":
            result = engine.run_input(choice, req, job.progress)
        elif op == "generate":
            assert gen is not None
            result = engine.generate(choice, req, gen, job.progress)
        else:
            result = engine.predict_masked(choice, req, MaskRequest(**args["mask"]), job.progress)
        with contextlib.suppress(Exception):  # the estimate only decides where the next job runs
            engine.record_seconds(choice, engine.job_units(lm, op, req, gen), time.perf_counter() - t0)
        job.progress(0.97, "saving the result")
        engine.save_result_files(self.folder, result)
        return result.summary()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m attnviz.pipeline.playground.worker``: fork a detached worker and return at once."""
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
