"""What a person waits for on the Corpus tab: each action timed end to end in headless Chromium.

    python bench/browser_corpus.py [--actions 10] [--store PATH] [--run-a NAME] [--run-b NAME]

1. **Store** (unless ``--store``): ``attnviz precompute`` with the real pipeline over ``data/demo.jsonl`` for
   ``minilm`` and ``bert-random`` (both 6 layers x 12 heads, 300 examples), then ``attnviz analyze`` of both, in
   ``bench/out/corpus-browser.h5``; reused when both runs are there.
2. ``attnviz serve`` in a subprocess; headless Chromium (selenium). Each action is timed from just before it
   (``performance.now()`` in the page) until no component is loading and no callback is pending in Dash's store
   for 300 ms (``bench/browser.py``'s ``settle``; the quiet window is not counted). Actions:

   * **open tab**: from the Example tab (loaded and settled first, untimed), a click on the Corpus tab;
   * **change metric**: the metric dropdown cycles through the run's metrics (``dash_clientside.set_props``, as
     the dropdown sets it);
   * **change aggregate**: a click on the next aggregate's radio button;
   * **change run B**: run B toggles between the other run and none;
   * **filter**: the length slider cycles through a few ranges;
   * **pick a head**: a ``plotly_click`` on a new cell of A's heatmap, emitted as Plotly emits it.

   Run B is set (untimed) before the metric, aggregate, filter and head actions, so every view has work to do.

Prints p50/p95 per action (ms) and writes ``bench/out/browser_corpus.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.browser import TIMEOUT_S, now, percentile, settle  # noqa: E402
from bench.screenshot import free_port, make_driver, start_server  # noqa: E402

OUT = REPO / "bench" / "out"
STORE = OUT / "corpus-browser.h5"
MODELS = ("minilm", "bert-random")
ACTIONS = ("corpus: open tab", "corpus: change metric", "corpus: change aggregate", "corpus: change run B",
           "corpus: filter", "corpus: pick a head")
GRAPHS = ("corpus-heatmap-a", "corpus-heatmap-b", "corpus-diff", "corpus-profile", "corpus-patterns-a")
AGGREGATES = ("mean", "median", "std", "p90")

#: The props a component holds in Dash's store (its layout), found through the renderer's paths.
_PROPS_JS = """
const st = window.store && window.store.getState();
if (!st || !st.paths || !st.layout) { return null; }
const path = st.paths.strs ? st.paths.strs[arguments[0]] : null;
if (!path) { return null; }
let node = st.layout;
for (const k of path) { node = node[k]; if (node === undefined) { return null; } }
return node.props || null;
"""

_SET_PROPS_JS = "window.dash_clientside.set_props(arguments[0], arguments[1]);"

_CLICK_TAB_JS = """
const tab = [...document.querySelectorAll('#tabs .tab')].find(t => t.textContent.trim() === arguments[0]);
tab.click();
"""

_CLICK_CELL_JS = """
const gd = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');
const [layer, head] = [arguments[1], arguments[2]];
gd.emit('plotly_click', {points: [{curveNumber: 0, pointNumber: [layer, head], pointIndex: [layer, head],
                                   x: head, y: layer, data: gd.data[0], fullData: gd._fullData[0]}],
                         event: {}});
"""


def run_names(model: str) -> str:
    """The run ``attnviz precompute`` names for ``model`` over ``data/demo.jsonl``."""
    return f"{model}--demo"


def build_store(path: Path = STORE) -> None:
    """Both runs of the bench store with the real pipeline (and their analysis); complete runs are reused."""
    from attnviz.pipeline.store import StoreReader

    path.parent.mkdir(parents=True, exist_ok=True)
    have: list[str] = []
    if path.exists():
        reader = StoreReader(path)
        have = list(reader.runs())
        reader.close()
    cli = [sys.executable, "-m", "attnviz.pipeline.cli"]
    for model in MODELS:
        run = run_names(model)
        if run in have:
            continue
        subprocess.run([*cli, "precompute", "--model", model, "--input", str(REPO / "data/demo.jsonl"), "--store",
                        str(path), "--run", run], check=True, cwd=REPO)
        subprocess.run([*cli, "analyze", "--store", str(path), "--run", run], check=True, cwd=REPO)


def _props(driver: Any, cid: str) -> dict[str, Any]:
    props = driver.execute_script(_PROPS_JS, cid)
    if not isinstance(props, dict):
        raise RuntimeError(f"component {cid!r} is not in the page")
    return props


def _values(options: list[Any]) -> list[Any]:
    return [o["value"] if isinstance(o, dict) else o for o in options or []]


def measure_corpus(driver: Any, base_url: str, n: int, run_a: str | None = None,
                   run_b: str | None = None) -> dict[str, list[float]]:
    """Milliseconds per Corpus-tab action (``n`` of each; names in :data:`ACTIONS`), measured in ``driver``'s page.

    ``run_a`` is the page's run (default: the store's first); ``run_b`` the run to compare with (default: the
    first other run the tab offers). The browser window should be large enough to show the tab (1600 x 1400).
    """
    query = f"?run={run_a}" if run_a else ""
    times: dict[str, list[float]] = {a: [] for a in ACTIONS}

    def timed(action: Callable[[], None]) -> float:
        t0 = now(driver)
        action()
        return settle(driver, t0) * 1000

    def set_props(cid: Any, props: dict[str, Any]) -> Callable[[], None]:
        return lambda: driver.execute_script(_SET_PROPS_JS, cid, props)

    for _ in range(n):
        driver.get("about:blank")
        driver.get(f"{base_url}/{query}")
        settle(driver, 0.0)
        times["corpus: open tab"].append(timed(lambda: driver.execute_script(_CLICK_TAB_JS, "Corpus")))
    settle(driver, 0.0, GRAPHS[:1])

    others = _values(_props(driver, "corpus-run-b")["options"])
    if not others:
        raise RuntimeError("the store needs a second run for run B")
    other = run_b if run_b in others else others[0]
    timed(set_props("corpus-run-b", {"value": other}))

    metrics = _values(_props(driver, "corpus-metric")["options"])
    current = _props(driver, "corpus-metric")["value"]
    for i in range(n):
        metric = metrics[(metrics.index(current) + 1 + i) % len(metrics)]
        times["corpus: change metric"].append(timed(set_props("corpus-metric", {"value": metric})))

    current_agg = _props(driver, "corpus-agg")["value"]
    for i in range(n):
        agg = AGGREGATES[(AGGREGATES.index(current_agg) + 1 + i) % len(AGGREGATES)]
        css = f'#corpus-agg input[value="{agg}"]'
        times["corpus: change aggregate"].append(
            timed(lambda css=css: driver.execute_script("document.querySelector(arguments[0]).click()", css)))

    slider = _props(driver, "corpus-length")
    lo, hi = int(slider["min"]), int(slider["max"])
    span = max(hi - lo, 1)
    ranges = [[lo + span // 4, hi], [lo, hi - span // 4], [lo + span // 8, hi - span // 8], [lo, hi]]
    for i in range(n):
        times["corpus: filter"].append(timed(set_props("corpus-length", {"value": ranges[i % len(ranges)]})))
    if ranges[(n - 1) % len(ranges)] != [lo, hi]:
        timed(set_props("corpus-length", {"value": [lo, hi]}))

    layers, heads = driver.execute_script("""
        const gd = document.querySelector('#corpus-heatmap-a .js-plotly-plot');
        const z = gd._fullData[0].z; return [z.length, z[0].length];""")
    for i in range(n):
        cell = (i * 5 + 1) % (layers * heads)
        times["corpus: pick a head"].append(timed(
            lambda cell=cell: driver.execute_script(_CLICK_CELL_JS, "corpus-heatmap-a", cell // heads,
                                                    cell % heads)))

    for i in range(n):
        value = None if i % 2 == 0 else other
        times["corpus: change run B"].append(timed(set_props("corpus-run-b", {"value": value})))
    return times


def report(times: dict[str, list[float]]) -> str:
    """A Markdown table of p50/p95 per action (ms)."""
    rows = ["| action | p50 (ms) | p95 (ms) | n |", "| --- | ---: | ---: | ---: |"]
    for action, values in times.items():
        rows.append(f"| {action} | {statistics.median(values):.0f} | {percentile(values, 95):.0f} | {len(values)} |")
    return "\n".join(rows)


def main() -> None:
    """Build or reuse the store, serve it, measure the Corpus tab, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=10, help="timed repeats of each action (p50/p95 over them)")
    parser.add_argument("--store", type=Path, default=None, help="an existing store with >= 2 runs (default: build)")
    parser.add_argument("--run-a", default=None, help=f"run A (default: {run_names(MODELS[0])} in the bench store)")
    parser.add_argument("--run-b", default=None, help="run B (default: the first other run)")
    ns = parser.parse_args()
    store = ns.store
    run_a = ns.run_a
    if store is None:
        store = STORE
        build_store(store)
        run_a = run_a or run_names(MODELS[0])
    port = free_port()
    server = start_server(store, port)
    driver = make_driver(1600, 1400)
    driver.set_script_timeout(TIMEOUT_S + 30)
    try:
        times = measure_corpus(driver, f"http://127.0.0.1:{port}", ns.actions, run_a=run_a, run_b=ns.run_b)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)
    print(report(times))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "browser_corpus.json").write_text(json.dumps({"store": str(store), "times_ms": times}, indent=1))
    print(f"wrote {OUT / 'browser_corpus.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
