"""Concurrent load on the deployed dashboard while a precompute writes a new run into the same store.

    python bench/load.py [--clients 20] [--duration 60] [--workers 2] [--store PATH] [--no-precompute]

1. Builds (or reuses) a store with the real pipeline (three tiny random-weight runs: encoder, decoder-only,
   encoder-decoder), unless ``--store`` names one.
2. Starts gunicorn with ``deploy/gunicorn.conf.py`` (sync workers, ``--workers`` processes) on 127.0.0.1 and a
   free port, and reads the callback list from ``/_dash-dependencies`` (the same as ``app.callback_map``):
   the Example tab's server callbacks by id -- ``example-payload`` (one example's attention, all layers and
   heads, from which the page draws the matrix, head, model and time-step views) and the metrics panel -- and
   every callback whose outputs live in the Corpus tab (found in ``/_dash-layout``; their inputs are settled the
   way the browser does on page load, by calling them until their outputs stop changing).
3. ``--clients`` threads POST those callbacks for random valid selections of the existing runs for
   ``--duration`` seconds. Meanwhile ``attnviz precompute`` (a subprocess) writes a new run into the same store
   shard by shard; a watcher polls the URL-sync callback for that run (with the URL the page sends to
   ``example-url-request``) and records each new example count it sees, and the clients also read the newest
   visible examples of the new run.
4. Every response is checked: HTTP 200/204, no error alert, no example-data error, no "cannot read / missing /
   out of range" message, attention of the right shape ``[L, H, Tq, Tk]`` with rows summing to 1; after the
   precompute, every example's attention read from the new run during the load must equal the final stored one
   bit for bit (no partial example).

Prints p50/p95/p99 latency (client side, and server time from ``Server-Timing``), requests, errors, and what the
watcher saw; the last line is a JSON summary. Exit code 1 on any error.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from callback_client import (  # noqa: E402
    PAYLOAD,
    PAYLOAD_KEY,
    URL_REQUEST,
    Callback,
    callbacks,
    find,
    message_of,
    payload_key,
    response_props,
)

from attnviz.dashboard import ids as app_ids  # noqa: E402
from attnviz.dashboard.app import pane_id  # noqa: E402
from attnviz.dashboard.example import ids  # noqa: E402
from attnviz.dashboard.example.payload import decode  # noqa: E402
from attnviz.dashboard.observability import APP_ALERT  # noqa: E402
from attnviz.pipeline.store import StoreReader  # noqa: E402

NEW_RUN = "load-new"
TINY_BERT = ["--set", "num_hidden_layers=2", "--set", "num_attention_heads=4", "--set", "hidden_size=64",
             "--set", "intermediate_size=128"]
#: Messages that mean a reader hit the store in a bad state (as opposed to "pick a run B" style hints).
_BAD_MESSAGES = re.compile(r"cannot read|is missing|damaged|does not exist|out of range|is not in|not a readable|"
                           r"could not")
#: The Example tab's server callbacks the clients call (name -> output); the attention views are drawn in the page
#: from the example data, so a layer or head change asks the server nothing.
EXAMPLE_VIEWS = {"example data": PAYLOAD, "metrics": f"{ids.METRICS_PANEL}.children"}
#: The input each of them takes: the payload key, or the selection the page sends while the panel is open.
EXAMPLE_INPUTS = {"example data": PAYLOAD_KEY, "metrics": f"{ids.METRICS_STATE}.data"}


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_store(path: Path) -> Path:
    """Three tiny runs made by the real pipeline (skipped when the store exists)."""
    if path.exists():
        return path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    path.parent.mkdir(parents=True, exist_ok=True)
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=path, limit=64,
                                 threads=1, capture="attention,qkv,hidden,embeddings",
                                 overrides={"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
                                            "intermediate_size": 128}))
    precompute(PrecomputeOptions(model="gpt2-random", input=str(REPO / "data/demo.jsonl"), store=path, limit=32,
                                 threads=1, capture="attention", overrides={"n_layer": 2, "n_head": 4, "n_embd": 64}))
    precompute(PrecomputeOptions(model="seq2seq-random", input=str(REPO / "data/demo_pairs.jsonl"), store=path,
                                 limit=16, threads=1, capture="attention,embeddings",
                                 overrides={"encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                                            "decoder_attention_heads": 4, "d_model": 64, "encoder_ffn_dim": 128,
                                            "decoder_ffn_dim": 128}))
    return path


# ---- the server ------------------------------------------------------------------------------------------------


@dataclass
class Gunicorn:
    """gunicorn with the deployment config, in a subprocess."""

    store: Path
    workers: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait until ``/healthz`` answers 200."""
        self.port = self.port or free_port()
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ATTNVIZ_")}
        env = {**clean, "ATTNVIZ_STORE": str(self.store), "ATTNVIZ_WORKERS": str(self.workers),
               "ATTNVIZ_BIND": f"127.0.0.1:{self.port}", "HF_HUB_OFFLINE": "1", **self.env}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py",
                                          "attnviz.dashboard.app:server"], cwd=REPO, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError("gunicorn did not answer /healthz")

    def stop(self) -> int:
        """SIGTERM, wait for the graceful shutdown; the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


# ---- building the requests -------------------------------------------------------------------------------------


def _walk(node: Any, visit: Callable[[dict], None]) -> None:
    if isinstance(node, dict):
        if "props" in node and "type" in node:
            visit(node)
            _walk(node["props"].get("children"), visit)
            for value in node["props"].values():
                if isinstance(value, (dict, list)):
                    _walk(value, visit)
        else:
            for value in node.values():
                _walk(value, visit)
    elif isinstance(node, list):
        for item in node:
            _walk(item, visit)


def layout_values(layout: dict) -> dict[str, Any]:
    """``"id.prop" -> value`` of every component with a string id in a ``/_dash-layout`` tree."""
    values: dict[str, Any] = {}

    def visit(node: dict) -> None:
        cid = node["props"].get("id")
        if isinstance(cid, str):
            for prop, value in node["props"].items():
                if prop not in ("id", "children"):
                    values[f"{cid}.{prop}"] = value

    _walk(layout, visit)
    return values


def tab_ids(layout: dict, tab_value: str) -> set[str]:
    """Ids of the components inside the ``dcc.Tab`` whose value is ``tab_value``."""
    found: set[str] = set()

    def visit(node: dict) -> None:
        if node.get("type") == "Tab" and node["props"].get("value") == tab_value:
            inner: set[str] = set()
            _walk(node["props"].get("children"), lambda n: inner.add(n["props"]["id"])
                  if isinstance(n["props"].get("id"), str) else None)
            found.update(inner)

    _walk(layout, visit)
    return found


def _apply(values: dict[str, Any], cb: Callback, body: bytes) -> None:
    for cid, props in response_props(body).items():
        for prop, value in props.items():
            values[f"{cid}.{prop}"] = value


def settle_corpus(session: requests.Session, url: str, cbs: list[Callback], values: dict[str, Any],
                  rounds: int = 3) -> None:
    """Call the corpus callbacks in order a few times, applying their outputs, as the page does on load."""
    for _ in range(rounds):
        for cb in cbs:
            resp = session.post(url + "/_dash-update-component", json=cb.payload(values), timeout=60)
            if resp.status_code == 200:
                _apply(values, cb, resp.content)


@dataclass
class Plan:
    """What the clients request: example-view callbacks and settled corpus payloads per run."""

    example: dict[str, Callback]
    corpus: dict[str, list[tuple[Callback, dict[str, Any]]]]  # run -> [(callback, payload)]
    shapes: dict[str, dict[str, Any]]  # run -> {"n", "kinds": {kind: (L, H)}}


def open_tab(session: requests.Session, url: str, cbs: list[Callback], layout: dict, tab: str) -> None:
    """Put ``tab``'s content into ``layout`` as the page gets it when the tab is first opened (the Corpus,
    Playground and Training tabs start empty: ``dashboard/app.py`` ``register_tab_panes``)."""
    pane = pane_id(tab)
    filler = next(c for c in cbs if pane in c.output_ids())
    # the pane's callback reads the tab from the gate that loads the tab's bundles first (lazy_bundles.py)
    values = {**layout_values(layout), f"{app_ids.TABS}.value": tab, f"{app_ids.PANE_REQUEST}.data": tab}
    resp = session.post(url + "/_dash-update-component", json=filler.payload(values), timeout=60)
    resp.raise_for_status()
    content = response_props(resp.content)[pane]["children"]

    def visit(node: dict) -> None:
        if node["props"].get("id") == pane:
            node["props"]["children"] = content

    _walk(layout, visit)


def make_plan(session: requests.Session, url: str, store: Path) -> Plan:
    """Discover the callbacks and settle the corpus payloads for every run of ``store``."""
    cbs = callbacks(session.get(url + "/_dash-dependencies", timeout=30).json())
    layout = session.get(url + "/_dash-layout", timeout=30).json()
    open_tab(session, url, cbs, layout, "corpus")
    example = {name: find(cbs, output) for name, output in EXAMPLE_VIEWS.items()}
    corpus_ids = tab_ids(layout, "corpus")
    corpus_cbs = [c for c in cbs if c.output_ids() & corpus_ids and not c.spec.get("prevent_initial_call")]
    shapes: dict[str, dict[str, Any]] = {}
    with StoreReader(store) as reader:
        for run in reader.runs():
            info = reader.run_info(run)
            shapes[run] = {"n": info.num_examples, "kinds": {k: tuple(v) for k, v in info.shape.items()}}
    corpus: dict[str, list[tuple[Callback, dict[str, Any]]]] = {}
    for run in shapes:
        values = layout_values(layout)
        values.update({f"{app_ids.TABS}.value": "corpus", f"{app_ids.RUN_SELECT}.value": run})
        settle_corpus(session, url, corpus_cbs, values)
        corpus[run] = [(cb, cb.payload(values)) for cb in corpus_cbs]
    return Plan(example=example, corpus=corpus, shapes=shapes)


def view_state(run: str, shape: dict[str, Any], rng: random.Random, example: int | None = None) -> dict[str, Any]:
    """A random valid Example-tab selection of ``run``."""
    kind = rng.choice(sorted(shape["kinds"]))
    layers, heads = shape["kinds"][kind]
    return {"run": run, "example": rng.randrange(shape["n"]) if example is None else example,
            "layer": rng.randrange(layers), "head": rng.randrange(heads), "step": 0, "kind": kind, "attn": "raw"}


def example_body(name: str, cb: Callback, state: dict[str, Any]) -> dict[str, Any]:
    """The request the page sends to the Example-tab callback ``name`` for ``state`` (the runs are short: the
    example data comes whole, ``detail = "all"``)."""
    value = payload_key(state) if name.startswith("example data") else state
    return cb.payload({EXAMPLE_INPUTS[name.split(" (")[0]]: value})


# ---- checking responses ----------------------------------------------------------------------------------------


def check_payload(payload: dict) -> tuple[str | None, np.ndarray | None]:
    """(problem or None, attention) of an ``example-payload`` answer: no error, attention ``[L, H, Tq, Tk]``
    (float32 of the store's float16 values) of the run's shape and the tokens' lengths, rows summing to 1."""
    if payload.get("error"):
        return f"example data error: {payload['error'][:160]}", None
    z = decode(payload["attention"]).astype(np.float32)
    want = (len(payload["layers"]), payload["n_heads"], len(payload["q_tokens"]), len(payload["k_tokens"]))
    if z.shape != want:
        return f"attention {z.shape} but {want} expected", z
    if not np.allclose(z.sum(axis=-1), 1.0, atol=0.02):
        return "attention rows do not sum to 1", z
    return None, z


def check_response(name: str, output: str, resp: requests.Response) -> tuple[str | None, dict]:
    """(problem or None, props) of any callback response."""
    if resp.status_code == 204:
        return None, {}
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}", {}
    props = response_props(resp.content)
    if props.get(APP_ALERT, {}).get("is_open"):
        return f"error alert: {props[APP_ALERT].get('children')}", props
    payload = props.get("example-payload", {}).get("data")
    if isinstance(payload, dict) and payload.get("error"):
        return f"example data: {payload['error'][:160]}", props
    for cid, values in props.items():
        for prop, value in values.items():
            if prop == "figure" and isinstance(value, dict) and _BAD_MESSAGES.search(message_of(value)):
                return f"{cid}: {message_of(value)[:160]}", props
            if prop == "children" and name == "metrics" and _BAD_MESSAGES.search(json.dumps(value)[:4000]):
                return f"{cid}: metrics message", props
    return None, props


# ---- the load --------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """Everything a load run measured."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    server_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    frontier: list[tuple[int, str, str]] = field(default_factory=list)  # (example, kind, sha1 of its attention)
    #                                                                       of the new-run reads
    visible: list[tuple[float, int]] = field(default_factory=list)  # (seconds, examples of the new run)
    duration: float = 0.0
    precompute_code: int | None = None
    precompute_examples: int = 0
    committed_before_load: int = 0
    server_exit: int | None = None
    server_errors: int = 0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def all_ms(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(np.ceil(q / 100 * len(ordered))) - 1))
    return ordered[k]


def _client(url: str, plan: Plan, result: Result, stop: threading.Event, seed: int,
            frontier: dict[str, Any]) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    runs = sorted(plan.shapes)
    while not stop.is_set():
        run = rng.choice(runs)
        visible = frontier.get("n", 0)
        pick = rng.random()
        if visible and pick < 0.15:  # the newest examples of the run being written
            name, cb = "example data (new run)", plan.example["example data"]
            example = max(0, visible - 1 - rng.randrange(min(visible, 8)))
            state = view_state(NEW_RUN, frontier["shape"], rng, example)
            body = example_body(name, cb, state)
        elif plan.corpus.get(run) and pick < 0.45:
            cb, body = rng.choice(plan.corpus[run])
            name, state = "corpus " + cb.key.strip(".").split(".")[0], None
        else:
            name = rng.choice(sorted(plan.example))
            cb = plan.example[name]
            state = view_state(run, plan.shapes[run], rng)
            body = example_body(name, cb, state)
        t0 = time.perf_counter()
        try:
            resp = session.post(url + "/_dash-update-component", json=body, timeout=60)
        except requests.RequestException as exc:
            with result.lock:
                result.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        ms = (time.perf_counter() - t0) * 1000
        problem, props = check_response(name, cb.key, resp)
        digest = None
        if problem is None and name.startswith("example data") and props:
            problem, z = check_payload(props[ids.PAYLOAD]["data"])
            if z is not None and name == "example data (new run)":
                digest = (state["example"], state["kind"], hashlib.sha1(np.ascontiguousarray(z).tobytes()).hexdigest())
        timing = resp.headers.get("Server-Timing", "")
        with result.lock:
            result.latencies[name].append(ms)
            if timing.startswith("app;dur="):
                result.server_ms.append(float(timing.split("=", 1)[1]))
            if problem:
                result.errors.append(f"{name}: {problem}")
            if digest:
                result.frontier.append(digest)


def _watch(url: str, sync: Callback, result: Result, stop: threading.Event, frontier: dict[str, Any],
           t0: float) -> None:
    """Poll the URL-sync callback for the new run; record each example count it shows."""
    session = requests.Session()
    last = -1
    asked = 0
    while not stop.is_set():
        asked += 1  # the page stamps each URL request (``at``), so that the same URL asked again is a change
        body = sync.payload({URL_REQUEST: {"search": f"?run={NEW_RUN}", "at": asked}}, [URL_REQUEST])
        try:
            resp = session.post(url + "/_dash-update-component", json=body, timeout=60)
        except requests.RequestException as exc:
            with result.lock:
                result.errors.append(f"watcher: {type(exc).__name__}")
            stop.wait(0.25)
            continue
        if resp.status_code != 200:
            with result.lock:
                result.errors.append(f"watcher: HTTP {resp.status_code}")
        props = response_props(resp.content) if resp.status_code == 200 else {}
        if props.get(app_ids.RUN_SELECT, {}).get("value") == NEW_RUN:
            n = int(str(props[ids.EXAMPLE_COUNT]["children"]).split()[-1])  # "of 16"
            if n != last:
                last = n
                with result.lock:
                    result.visible.append((round(time.monotonic() - t0, 2), n))
                frontier["n"] = n
        stop.wait(0.25)


def _wait_for_run(store: Path, writer: subprocess.Popen, timeout: float = 180.0) -> int:
    """Wait until the writer has created the new run; the examples it had committed by then."""
    from attnviz.pipeline.store import StoreWriter

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and writer.poll() is None:
        runs = StoreWriter(store).runs()
        if NEW_RUN in runs:
            return runs[NEW_RUN].num_examples
        time.sleep(0.05)
    runs = StoreWriter(store).runs()
    return runs[NEW_RUN].num_examples if NEW_RUN in runs else -1


def run_load(store: Path, *, clients: int = 20, duration: float = 60.0, workers: int = 2,
             precompute: dict[str, Any] | None = None, log_dir: Path | None = None,
             say: Callable[[str], None] = print) -> Result:
    """The whole measurement (see the module doc). ``precompute``: ``limit``, ``shard_size`` of the new run
    (None: no writer). The writer starts first; the load starts when the writer has created its run and lasts
    ``duration`` seconds, and at least until the writer is done plus 2 s."""
    log_dir = log_dir or store.parent
    server = Gunicorn(store=store, workers=workers, log=log_dir / "gunicorn-load.log")
    result = Result()
    server.start()
    writer: subprocess.Popen | None = None
    try:
        session = requests.Session()
        plan = make_plan(session, server.url, store)
        sync = find(callbacks(session.get(server.url + "/_dash-dependencies", timeout=30).json()), "view-state.data")
        say(f"gunicorn {workers} sync workers at {server.url}; {clients} clients; callbacks: "
            f"{', '.join(sorted(plan.example))}, {len(next(iter(plan.corpus.values()), []))} corpus")
        frontier: dict[str, Any] = {"n": 0}
        stop = threading.Event()
        if precompute:
            # the writer starts first; the load begins once it has created the run (model loaded, no shard yet),
            # so that its shards are committed while the clients read
            frontier["shape"] = {"n": 0, "kinds": {"self": (2, 4)}}
            args = [sys.executable, "-m", "attnviz.pipeline.cli", "precompute", "--model", "bert-random", "--input",
                    str(REPO / "data/demo.jsonl"), "--store", str(store), "--run", NEW_RUN, "--limit",
                    str(precompute["limit"]), "--shard-size", str(precompute["shard_size"]), "--threads", "1",
                    "--batch-size", "4", "--capture", "attention", *TINY_BERT]
            with open(log_dir / "precompute-load.log", "wb") as out:
                writer = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
            result.committed_before_load = _wait_for_run(store, writer)
        result.load_before = os.getloadavg()
        t0 = time.monotonic()
        threads = [threading.Thread(target=_client, args=(server.url, plan, result, stop, i, frontier), daemon=True)
                   for i in range(clients)]
        if precompute:
            threads.append(threading.Thread(target=_watch, args=(server.url, sync, result, stop, frontier, t0),
                                            daemon=True))
        for thread in threads:
            thread.start()
        done_at: float | None = None
        while True:
            time.sleep(0.2)
            elapsed = time.monotonic() - t0
            if writer is not None and writer.poll() is not None and done_at is None:
                done_at = elapsed
                result.precompute_code = writer.returncode
            writer_done = writer is None or (
                done_at is not None and elapsed > done_at + 2
                and (frontier["n"] >= precompute["limit"] or elapsed > done_at + 10))
            if (elapsed >= duration and writer_done) or elapsed > duration + 300:
                break
        stop.set()
        for thread in threads:
            thread.join(70)
        result.duration = time.monotonic() - t0
        result.load_after = os.getloadavg()
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        result.server_exit = server.stop()
    logged = [line for line in server.log.read_text().splitlines() if line.startswith("{")]
    result.server_errors = sum(1 for line in logged if '"event": "callback"' in line and '"status": "error"' in line)
    if precompute:
        with StoreReader(store) as reader:
            if NEW_RUN in reader.runs():
                result.precompute_examples = reader.num_examples(NEW_RUN)
                for example, kind, digest in result.frontier:
                    final = np.ascontiguousarray(reader.attention(NEW_RUN, example, kind=kind))
                    if hashlib.sha1(final.tobytes()).hexdigest() != digest:
                        result.errors.append(f"new run example {example}: served data differs from the final data")
    return result


def summary(result: Result) -> dict[str, Any]:
    """The figures of a run, JSON-friendly."""
    all_ms = result.all_ms()
    return {
        "requests": result.requests, "errors": len(result.errors), "server_logged_errors": result.server_errors,
        "seconds": round(result.duration, 1), "req_per_s": round(result.requests / max(result.duration, 1e-9), 1),
        "p50_ms": round(percentile(all_ms, 50), 1), "p95_ms": round(percentile(all_ms, 95), 1),
        "p99_ms": round(percentile(all_ms, 99), 1), "max_ms": round(max(all_ms, default=float("nan")), 1),
        "server_p50_ms": round(percentile(result.server_ms, 50), 1),
        "server_p95_ms": round(percentile(result.server_ms, 95), 1),
        "per_callback": {name: {"n": len(v), "p50_ms": round(percentile(v, 50), 1),
                                "p95_ms": round(percentile(v, 95), 1)} for name, v in sorted(result.latencies.items())},
        "new_run_counts_seen": [n for _, n in result.visible], "new_run_examples": result.precompute_examples,
        "new_run_reads_checked": len(result.frontier), "precompute_exit": result.precompute_code,
        "new_run_committed_before_load": result.committed_before_load,
        "server_exit": result.server_exit, "loadavg_before": [round(x, 1) for x in result.load_before],
        "loadavg_after": [round(x, 1) for x in result.load_after],
    }


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None, help="store to load (default: build a small one)")
    parser.add_argument("--limit", type=int, default=240, help="examples the concurrent precompute writes")
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--no-precompute", action="store_true")
    args = parser.parse_args()
    work = Path("/tmp/attnviz-load")
    base = args.store or build_store(work / "base" / "load.h5")
    # work on a copy: the concurrent precompute adds a run
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    store = run_dir / base.name
    shutil.copy2(base, store)
    shutil.copytree(f"{base}.d", f"{store}.d")
    precompute = None if args.no_precompute else {"limit": args.limit, "shard_size": args.shard_size}
    result = run_load(store, clients=args.clients, duration=args.duration, workers=args.workers,
                      precompute=precompute, log_dir=run_dir, say=print)
    s = summary(result)
    print(f"{s['requests']} requests in {s['seconds']} s ({s['req_per_s']}/s), {s['errors']} errors "
          f"({s['server_logged_errors']} logged by the server)")
    print(f"latency p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms; "
          f"server time p50 {s['server_p50_ms']} ms, p95 {s['server_p95_ms']} ms")
    for name, row in s["per_callback"].items():
        print(f"  {name:32s} n={row['n']:6d}  p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms")
    if precompute:
        print(f"precompute exit {s['precompute_exit']}: new run counts seen by readers {s['new_run_counts_seen']}, "
              f"final {s['new_run_examples']}; {s['new_run_reads_checked']} reads of the new run all equal the "
              "final data" if not result.errors else "")
    print(f"load average before {s['loadavg_before']}, after {s['loadavg_after']} (2-core machine, shared)")
    for line in result.errors[:20]:
        print("error:", line)
    print(json.dumps(s))
    return 1 if result.errors or s["server_exit"] != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
