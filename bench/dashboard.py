"""Callback latency and payload of the Example tab's example data and metrics panel, beside bertviz's head view.

    python bench/dashboard.py [--store /tmp/attnviz-bench/dashboard.h5] [--lengths 32,128,512] [--requests 40]

The Example tab's attention views (matrix, head view, model view, time step) are drawn in the page from one
example's data, which the server sends through the ``example-payload`` callback once per run, example, kind and
raw/rollout (all layers and heads; an example too long for that budget: one layer and the chosen query position's
rows of every layer, asked again when the layer or position changes). Changing the layer or head of a short
example asks the server nothing, so what is timed here is that payload callback, and the metrics panel (drawn by
the server while it is open, once per selection).

1. Builds (or reuses) a store with the real pipeline: ``bert-random`` (6 layers x 12 heads) over
   ``random:length=T-2`` inputs, so examples have exactly T tokens with [CLS]/[SEP]; one run per T.
2. Starts the real server (``python -m attnviz.pipeline.cli serve``) on 127.0.0.1 and reads its callback list from
   ``/_dash-dependencies``; asks the URL-sync callback, as the page does on load, which detail level each length
   gets; then POSTs the same ``/_dash-update-component`` bodies the browser sends for ``example-payload.data``
   (raw attention, then rollout), cycling over examples (and layers and query positions when the payload is one
   layer), and for ``metrics-panel.children``, cycling over examples, layers and heads; reports p50/p95
   round-trip latency and response bytes.
3. Builds bertviz's ``head_view(..., html_action="return")`` for the same model and sentence (attention from
   the store, as torch tensors) and reports its build time and HTML size, and the ratios.

Targets (issue #3): p95 <= 100 ms at T = 512 for the example data a view needs; payload <= 1/50 of bertviz's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.screenshot import free_port, start_server  # noqa: E402

PAYLOAD = "example-payload.data"  #: the example data the page draws the attention views from
PAYLOAD_KEY = "example-payload-key.data"
METRICS = "metrics-panel.children"
METRICS_STATE = "metrics-state.data"  #: the selection, sent by the page while the metrics panel is open
SYNC = "view-state.data"  #: the URL-sync callback (resolves a URL into the view state)
URL_REQUEST = "example-url-request.data"

MODEL = "bert-random"
P95_TARGET_MS = 100.0
PAYLOAD_RATIO_TARGET = 50.0


def run_name(t: int) -> str:
    """Run holding the examples of T tokens."""
    return f"bert-random-T{t}"


def build_store(store: Path, lengths: list[int], count: int) -> None:
    """One run per length with the real pipeline (skips runs that are already complete)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    store.parent.mkdir(parents=True, exist_ok=True)
    for t in lengths:
        summary = precompute(PrecomputeOptions(model=MODEL, input=f"random:length={t - 2},count={count},seed=0",
                                               store=store, run=run_name(t), max_length=max(lengths),
                                               capture="attention", batch_size=4))
        print(summary.line(), file=sys.stderr)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    """Latency samples (ms), response sizes (bytes) and server CPU per request (ms) of one view at one length."""

    view: str
    t: int
    ms: list[float]
    sizes: list[int]
    cpu_ms: float = float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 95)

    @property
    def bytes(self) -> int:
        return int(statistics.median(self.sizes))


class DashClient:
    """Posts callback requests to a running Dash server, built from its own ``/_dash-dependencies``."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.deps = json.loads(self._request("GET", "/_dash-dependencies")[1])

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def payload(self, output: str, values: dict[str, object]) -> bytes:
        """The body the browser sends for the server-side callback whose output contains ``output``."""
        dep = next(d for d in self.deps if output in d["output"] and d.get("clientside_function") is None)
        outputs = [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]}
                   for p in dep["output"].strip(".").split("...")]

        def fill(items: list[dict]) -> list[dict]:
            return [{"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")}
                    for i in items]

        body = {"output": dep["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
                "inputs": fill(dep["inputs"]), "state": fill(dep["state"]),
                "changedPropIds": [f"{i['id']}.{i['property']}" for i in dep["inputs"][:1]]}
        return json.dumps(body).encode()

    def post(self, body: bytes) -> tuple[float, int, dict]:
        """Round-trip time (ms), response size and response props of one callback request; an error (an HTTP
        error, a payload error, a message in place of the panel) raises."""
        t0 = time.perf_counter()
        status, data = self._request("POST", "/_dash-update-component", body)
        ms = (time.perf_counter() - t0) * 1000
        if status != 200:
            raise RuntimeError(f"callback failed with HTTP {status}: {data[:300]!r}")
        props = json.loads(data)["response"]
        payload = props.get("example-payload", {}).get("data")
        if payload is not None and (payload.get("error") or payload.get("rollout_error")):
            raise RuntimeError(f"the example data is a message: {payload.get('error') or payload['rollout_error']}")
        panel = props.get("metrics-panel", {}).get("children")
        if isinstance(panel, dict) and panel.get("type") == "Alert":
            raise RuntimeError(f"the metrics panel is a message: {json.dumps(panel)[:300]}")
        return ms, len(data), props


def selection(run: str, example: int, layer: int, head: int | None, step: int = 0,
              attn: str = "raw") -> dict[str, object]:
    """The selection part of the view state (what the page sends to the metrics panel while it is open)."""
    return {"run": run, "example": example, "kind": "self", "layer": layer, "head": head, "step": step,
            "attn": attn}


def payload_key(state: dict[str, object], detail: str) -> dict[str, object]:
    """The key the page asks ``example-payload`` with (``keyOf`` in ``dashboard/assets/example.js``)."""
    key = {f: state[f] for f in ("run", "example", "kind", "attn")}
    key["detail"] = detail
    if detail == "layer":
        key["layer"], key["step"] = state["layer"], state["step"]
    return key


def page_detail(client: DashClient, t: int) -> tuple[str, int]:
    """The detail level (``"all"`` or ``"layer"``) and number of query positions the page gets for length ``t``,
    from the URL-sync callback as the page asks it on load."""
    body = client.payload(SYNC, {URL_REQUEST: {"search": f"?run={run_name(t)}&example=0", "at": 0}})
    _, _, props = client.post(body)
    state = props["view-state"]["data"]
    return str(state["detail"]), int(state["steps"])


def time_callback(client: DashClient, view: str, t: int, n: int, body_of: Callable[[int], bytes], *,
                  server_pid: int) -> Timing:
    """``n`` timed requests (after 3 warm-ups) with the bodies ``body_of(k)``."""
    ms, sizes = [], []
    cpu0 = 0.0
    for k in range(n + 3):
        if k == 3:
            cpu0 = process_cpu_seconds(server_pid)
        elapsed, size, _ = client.post(body_of(k))
        if k >= 3:
            ms.append(elapsed)
            sizes.append(size)
    return Timing(view, t, ms, sizes, cpu_ms=(process_cpu_seconds(server_pid) - cpu0) * 1000 / n)


def time_length(client: DashClient, t: int, n: int, *, server_pid: int, layers: int = 6, heads: int = 12,
                examples: int = 4) -> list[Timing]:
    """The example-data callback (raw, rollout) and the metrics panel for the examples of length ``t``."""
    detail, steps = page_detail(client, t)
    run = run_name(t)

    def payload_body(attn: str) -> Callable[[int], bytes]:
        def body(k: int) -> bytes:  # all layers: one request per example; one layer: per layer and position
            state = selection(run, k % examples, (k // examples) % layers, 0, (k * 7) % steps, attn)
            return client.payload(PAYLOAD, {PAYLOAD_KEY: payload_key(state, detail)})
        return body

    def metrics_body(k: int) -> bytes:
        state = selection(run, k % examples, (k // examples) % layers, k % heads)
        return client.payload(METRICS, {METRICS_STATE: state})

    what = "all layers" if detail == "all" else "1 layer + step rows"
    return [
        time_callback(client, f"example data ({what})", t, n, payload_body("raw"), server_pid=server_pid),
        time_callback(client, f"example data + rollout ({what})", t, n, payload_body("rollout"),
                      server_pid=server_pid),
        time_callback(client, "metrics panel (1 head)", t, n, metrics_body, server_pid=server_pid),
    ]


def bertviz_head_view(store: Path, t: int) -> tuple[float, int]:
    """Seconds to build bertviz's head view HTML for example 0 of length ``t``, and its size in bytes."""
    import torch
    from bertviz import head_view

    from attnviz.pipeline.store import StoreReader

    reader = StoreReader(store)
    attn = reader.attention(run_name(t), 0)  # [L, H, T, T] float32
    tokens = reader.tokens(run_name(t), 0)
    layers = tuple(torch.from_numpy(attn[layer][None].copy()) for layer in range(attn.shape[0]))
    t0 = time.perf_counter()
    html = head_view(layers, tokens, html_action="return")
    seconds = time.perf_counter() - t0
    return seconds, len(html.data.encode())


def main() -> None:
    """Build or reuse the store, time the views over HTTP, compare with bertviz, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=Path("/tmp/attnviz-bench/dashboard.h5"))
    ap.add_argument("--lengths", default="32,128,512")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--count", type=int, default=4, help="examples per length")
    ap.add_argument("--no-bertviz", action="store_true")
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]

    existing: list[str] = []
    if args.store.exists():
        from attnviz.pipeline.store import StoreReader

        existing = StoreReader(args.store).runs()
    missing = [t for t in lengths if run_name(t) not in existing]
    if missing:
        build_store(args.store, lengths, args.count)

    port = free_port()
    server = start_server(args.store, port)
    try:
        client = DashClient("127.0.0.1", port)
        timings = []
        for t in lengths:
            timings.extend(time_length(client, t, args.requests, server_pid=server.pid, examples=args.count))
    finally:
        server.terminate()
        server.wait(10)

    bertviz = {}
    if not args.no_bertviz:
        for t in lengths:
            # a fresh process per length: bertviz at T=512 builds a ~0.5 GB string
            out = subprocess.run([sys.executable, __file__, "--bertviz-only", str(args.store), str(t)],
                                 capture_output=True, text=True, check=True, cwd=REPO)
            seconds, size = json.loads(out.stdout.strip().splitlines()[-1])
            bertviz[t] = (seconds, size)

    load = os.getloadavg()
    print(f"\nattnviz dashboard callbacks over HTTP (Flask server, 127.0.0.1), {MODEL} 6x12, "
          f"{args.requests} requests each; load average {load[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'T':>4}  {'callback':<44} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>7} {'bytes':>10}   {'bertviz s':>9}"
          f" {'bertviz bytes':>14} {'bytes ratio':>11} {'time ratio':>10}  targets")
    for tm in timings:
        bv = bertviz.get(tm.t)
        ratio = bv[1] / tm.bytes if bv else float("nan")
        checks = []
        if tm.t == 512 and tm.view.startswith("example data ("):
            checks.append(f"p95<={P95_TARGET_MS:.0f}ms {'OK' if tm.p95 <= P95_TARGET_MS else 'MISSED'}")
        if bv and tm.view.startswith("example data ("):
            checks.append(f"1/{PAYLOAD_RATIO_TARGET:.0f} {'OK' if ratio >= PAYLOAD_RATIO_TARGET else 'MISSED'}")
        bv_s = f"{bv[0]:9.2f}" if bv else f"{'-':>9}"
        bv_b = f"{bv[1]:14,d}" if bv else f"{'-':>14}"
        speed = bv[0] * 1000 / tm.p50 if bv else float("nan")
        print(f"{tm.t:>4}  {tm.view:<44} {tm.p50:8.1f} {tm.p95:8.1f} {tm.cpu_ms:7.1f} {tm.bytes:10,d}   {bv_s} {bv_b}"
              f" {ratio:10.0f}x {speed:9.0f}x  {', '.join(checks)}")
    if bertviz:
        print("\nbertviz: head_view(html_action='return') of the same example (all layers and heads in one page);"
              " 'bytes ratio' = bertviz HTML bytes / attnviz callback response bytes; 'time ratio' = bertviz build"
              " time / attnviz p50 round trip; 'cpu ms' = server CPU per request (load-independent).")
    print("example data: the example-payload callback, from which the page draws the matrix, head, model and"
          " time-step views (layer and head changes of an all-layers payload ask the server nothing);"
          " metrics panel: metrics-panel.children, drawn by the server while the panel is open.")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bertviz-only":
        print(json.dumps(bertviz_head_view(Path(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
