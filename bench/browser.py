"""What a person waits for in the browser: the Example tab in headless Chromium, beside bertviz in the same browser.

    python bench/browser.py [--actions 10] [--lengths 16,128,512] [--bertviz-max-t 128] [--quick]

1. **Store**: one run per length T with the real pipeline, every example exactly T tokens: MiniLM (trained
   weights) for T < 512 over lines of ``data/english_sentences.txt`` joined until longer than T and truncated with
   ``max_length=T``; ``bert-random`` (6 layers x 12 heads) over ``random:length=T-2`` for T = 512. Kept in
   ``bench/out/browser-store-n<count>.h5`` and reused.
2. **attnviz**: ``attnviz serve`` in a subprocess; headless Chromium (selenium, a 1600 x 1000 window) on the
   Example tab. Each action is the DOM event a person's input fires, dispatched in the page right after its start
   time is taken (``performance.now()``). Two times per action: **painted**, to the last figure drawn after it
   (``plotly_afterplot`` of any graph, or ``attnviz:drawn`` of the head view's canvas), and **settled**, to the
   start of a 300 ms window in which nothing is loading (``data-dash-is-loading``, or ``data-attnviz-loading``: a
   view waiting for the example's data, which the page fetches itself), no callback is pending in
   Dash's store and (first load) the first screen's views are drawn; the page is polled every 5 ms. Views below
   the first screen (model view, time step) are drawn when they scroll into view, so an action's time is that of
   the views a person sees. Actions: first load (a fresh navigation, timed from navigation start), next example
   (the button's click), change layer / head (the select's change event), change query position (one step up in
   the number box: its input event), raw -> rollout (the radio's click; the way back untimed), pin a token in the
   head view (a click on a key token's label).
3. **bertviz** (installed by the bench into ``bench/out/pydeps``: ``pip install --target``; its scripts d3 5.7.0,
   jQuery 2.1.4 and RequireJS 2.3.6 with npm into ``bench/out/js``; the three CDN URLs in its HTML are rewritten
   to those local files, served by a local ``http.server``; nothing is fetched at run time): ``head_view`` and
   ``model_view`` of the same tokens and attention (example 0 of the run), first render (navigation start to the
   SVG drawn) and, for ``head_view``, layer switch (``select#layer`` change event -> synchronous d3 redraw, to the
   next frame).

4. **Corpus tab and Playground**: ``bench/browser_corpus.py``'s and ``bench/browser_playground.py``'s actions in
   the same run (``--no-corpus``, ``--no-playground`` skip them).

Prints one table (rows = (T, action); columns = attnviz painted p50/p95, settled p95, bertviz p50, ratio
attnviz ÷ bertviz), then the Corpus and Playground tables, and writes ``bench/out/browser.json``. ``--quick``:
3 actions, T = 16 only (a smoke run).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.screenshot import free_port, make_driver, start_server  # noqa: E402

OUT = REPO / "bench" / "out"
STORE = OUT / "browser-store-n12.h5"  #: set by main() from --actions
PYDEPS = OUT / "pydeps"
JS = OUT / "js"
NPM_PACKAGES = ("d3@5.7.0", "jquery@2.1.4", "requirejs@2.3.6")
CDN = {  # bertviz's CDN URLs -> local files (RequireJS paths carry no ".js")
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js": "/js/require.js",
    "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min": "/js/d3.min",
    "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min": "/js/jquery.min",
}
JS_FILES = {"require.js": "requirejs/require.js", "d3.min.js": "d3/dist/d3.min.js",
            "jquery.min.js": "jquery/dist/jquery.min.js"}
QUIET_MS = 300.0
TIMEOUT_S = 600.0
ACTIONS = ("first load", "next example", "change layer", "change head", "change query position",
           "raw -> rollout", "pin a token", "back to the Example tab")
#: The views on the first screen of a 1600 x 1000 window (the model view and time step below are drawn when they
#: scroll into view).
GRAPHS = ("attn-matrix", "head-view")

# Resolves to ms from ``arguments[0]`` (a performance.now() value; 0 = navigation start) to the start of the first
# window of ``arguments[1]`` ms in which nothing is loading, or to the last figure drawn (``plotly_afterplot``,
# hooked by :func:`now`) if that came later: views redrawn in the page leave nothing loading (-1 on timeout).
_SETTLE_JS = """
const [t0, quietMs, graphs, timeoutMs] = arguments;
const done = arguments[arguments.length - 1];
function busy() {
  if (document.querySelector('[data-dash-is-loading="true"], [data-attnviz-loading="true"]')) { return true; }
  const st = window.store && window.store.getState && window.store.getState();
  if (!st || !st.callbacks) { return true; }
  const c = Object.assign({}, st.callbacks); delete c.stored; delete c.completed;
  if ([].concat.apply([], Object.values(c).filter(Array.isArray)).length) { return true; }
  return !graphs.every(id => {
    const el = document.getElementById(id);
    const gd = (el && el.__figure) || document.querySelector('#' + id + ' .js-plotly-plot');
    return gd && gd.data && gd.layout && !(gd.layout.meta && gd.layout.meta.message === 'loading…');
  });
}
let quietSince = null;
function tick() {
  const now = performance.now();
  if (busy()) { quietSince = null; } else if (quietSince === null) { quietSince = now; }
  else if (now - quietSince >= quietMs) {
    const last = window.__benchLastPlot || 0;
    done([(last > t0 ? last : quietSince) - t0, Math.max(quietSince, last) - t0]);
    return;
  }
  if (now - t0 > timeoutMs) { done([-1, -1]); return; }
  setTimeout(tick, 5);
}
tick();
"""

_PIN_JS = "window.dash_clientside.attnviz_example._internal.clickHeadViewToken('key', arguments[0]);"

# bertviz: ms from navigation start until its SVG holds lines (the render is one synchronous d3 pass).
_BV_RENDER_JS = """
const done = arguments[arguments.length - 1];
const deadline = performance.now() + arguments[0];
(function poll() {
  if (document.querySelectorAll('#vis svg line').length > 0) { done(performance.now()); return; }
  if (performance.now() > deadline) { done(-1); return; }
  setTimeout(poll, 5);
})();
"""

# bertviz head view: the layer select's change event (jQuery handler -> synchronous redraw), to the next frame.
_BV_LAYER_JS = """
const done = arguments[arguments.length - 1];
const sel = document.querySelector('select#layer');
const t0 = performance.now();
sel.value = String(arguments[0]);
sel.dispatchEvent(new Event('change', {bubbles: true}));
const sync = performance.now() - t0;
requestAnimationFrame(() => setTimeout(() => done([performance.now() - t0, sync]), 0));
"""


# ---- setup --------------------------------------------------------------------------------------------------------


def ensure_bertviz() -> None:
    """Install bertviz (and IPython, which it imports) into ``bench/out/pydeps`` and its scripts into ``bench/out/js``.

    ``pydeps`` is appended to ``sys.path`` (the venv's own packages win); bertviz's torch comes from the venv.
    """
    if not (PYDEPS / "bertviz").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(PYDEPS), "bertviz"],
                       check=True)
    if str(PYDEPS) not in sys.path:
        sys.path.append(str(PYDEPS))
    try:
        import IPython  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(PYDEPS), "ipython"], check=True)
    if not all((JS / "node_modules" / rel).is_file() for rel in JS_FILES.values()):
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(JS), *NPM_PACKAGES],
                       check=True)


def run_name(t: int) -> str:
    """The store's run holding the examples of T tokens."""
    return f"minilm-T{t}" if t < 512 else f"bert-random-T{t}"


def build_store(lengths: list[int], count: int) -> None:
    """One run per length with the real pipeline, every example exactly T tokens; complete runs are reused."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions
    from attnviz.pipeline.store import StoreReader

    OUT.mkdir(parents=True, exist_ok=True)
    for t in lengths:
        name = run_name(t)
        if STORE.exists():
            reader = StoreReader(STORE)
            have = name in reader.runs() and len(reader.examples(name).text) >= count
            reader.close()
            if have:
                continue
        if t < 512:
            sentences = [s.strip() for s in (REPO / "data/english_sentences.txt").read_text().splitlines() if s.strip()]
            lines, words, i = [], [], 0
            while len(lines) < count:
                words += sentences[i % len(sentences)].split()
                i += 1
                if len(words) > t:  # every word is at least one token: more than T words truncate to T tokens
                    lines.append(" ".join(words))
                    words = []
            text = OUT / f"browser-T{t}.txt"
            text.write_text("\n".join(lines) + "\n")
            opts = PrecomputeOptions(model="minilm", input=str(text), store=STORE, run=name, max_length=t,
                                     batch_size=8)
        else:
            opts = PrecomputeOptions(model="bert-random", input=f"random:length={t - 2},count={count},seed=0",
                                     store=STORE, run=name, max_length=t, batch_size=4)
        print(precompute(opts).line(), file=sys.stderr)
    reader = StoreReader(STORE)
    for t in lengths:
        n = len(reader.tokens(run_name(t), 0))
        if n != t:
            raise SystemExit(f"run {run_name(t)}: example 0 has {n} tokens, not {t}")


# ---- attnviz ------------------------------------------------------------------------------------------------------


def settle_times(driver: Any, t0: float, graphs: tuple[str, ...] = ()) -> tuple[float, float]:
    """Seconds from page time ``t0`` until (painted) the last figure drawn after it, and (settled) nothing is
    loading or pending any more (the quiet window not counted). Views drawn in the page by the control's own
    event are painted before Dash's callbacks that follow (URL, views below the first screen) settle."""
    ms = driver.execute_async_script(_SETTLE_JS, t0, QUIET_MS, list(graphs), TIMEOUT_S * 1000)
    if not ms or ms[1] < 0:
        raise RuntimeError("the page did not settle")
    return float(ms[0]) / 1000, float(ms[1]) / 1000


def settle(driver: Any, t0: float, graphs: tuple[str, ...] = ()) -> float:
    """Seconds from page time ``t0`` until nothing is loading (the quiet window not counted)."""
    return settle_times(driver, t0, graphs)[1]


_NOW_JS = """
document.querySelectorAll('.js-plotly-plot').forEach(gd => {
  if (gd.on && !gd.__benchHooked) {
    gd.on('plotly_afterplot', () => { window.__benchLastPlot = performance.now(); });
    gd.__benchHooked = true;
  }
});
if (!window.__benchHookedDrawn) {  // views drawn without Plotly (the head view's canvas) say so with this event
  document.addEventListener('attnviz:drawn', () => { window.__benchLastPlot = performance.now(); });
  window.__benchHookedDrawn = true;
}
window.__benchLastPlot = 0;
return performance.now();
"""


def now(driver: Any) -> float:
    """The page's ``performance.now()``, after hooking every graph's ``plotly_afterplot`` (see :func:`settle`)."""
    return float(driver.execute_script(_NOW_JS))


#: A person's actions as the DOM events they fire (``arguments``: a CSS selector, then the action's value).
CLICK_JS = "document.querySelector(arguments[0]).click();"
SELECT_JS = """
const el = document.querySelector(arguments[0]);
Object.getOwnPropertyDescriptor(HTMLSelectElement.prototype, 'value').set.call(el, arguments[1]);
el.dispatchEvent(new Event('change', {bubbles: true}));
"""
STEP_UP_JS = """
const el = document.querySelector(arguments[0]);
el.focus();
el.stepUp();
el.dispatchEvent(new Event('input', {bubbles: true}));
"""


def act(driver: Any, script: str, *args: Any) -> float:
    """Run an action's ``script`` in the page; the page time just before it (graphs hooked as by :func:`now`)."""
    body = _NOW_JS.replace("return performance.now();", "const __t0 = performance.now();")
    return float(driver.execute_script(body + script + "\nreturn __t0;", *args))


def _options(driver: Any, select_id: str) -> tuple[list[str], str]:
    from selenium.webdriver.support.select import Select

    sel = Select(driver.find_element("css selector", f"#{select_id}"))
    values = [o.get_attribute("value") for o in sel.options if o.get_attribute("value")]
    return values, sel.first_selected_option.get_attribute("value")


def _select(driver: Any, select_id: str, value: str) -> None:
    from selenium.webdriver.support.select import Select

    Select(driver.find_element("css selector", f"#{select_id}")).select_by_value(value)


def measure_attnviz(driver: Any, base_url: str, t: int, n: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per action (``n`` of each) on the Example tab of the run of length ``t``: ``painted`` (to the last
    figure drawn) and ``settled`` (to nothing pending). Each action is the DOM event a person's click or key press
    fires, dispatched in the page right after its start time is taken (a WebDriver round trip before the event is
    not the page's time)."""
    url = f"{base_url}/?run={run_name(t)}"
    painted: dict[str, list[float]] = {a: [] for a in ACTIONS}
    settled: dict[str, list[float]] = {a: [] for a in ACTIONS}

    def record(action: str, times: tuple[float, float]) -> None:
        painted[action].append(times[0])
        settled[action].append(times[1])

    def load() -> tuple[float, float]:
        driver.get("about:blank")
        driver.get(url)
        return settle_times(driver, 0.0, GRAPHS)

    def timed(script: str, *args: Any) -> tuple[float, float]:
        return settle_times(driver, act(driver, script, *args))

    def cycle(select_id: str, skip: tuple[str, ...] = ()) -> tuple[float, float]:
        values, current = _options(driver, select_id)
        values = [v for v in values if v not in skip]
        nxt = values[(values.index(current) + 1) % len(values)] if current in values else values[0]
        return timed(SELECT_JS, f"#{select_id}", nxt)

    for _ in range(n):
        record("first load", load())
    load()
    for _ in range(n):
        record("next example", timed(CLICK_JS, "#example-next"))
    for _ in range(n):
        record("change layer", cycle("layer-select"))
    for _ in range(n):
        record("change head", cycle("head-select", skip=("mean",)))
    for _ in range(n):
        record("change query position", timed(STEP_UP_JS, "#step-input"))
    for _ in range(n):
        record("raw -> rollout", timed(CLICK_JS, '#attn-mode input[value="rollout"]'))
        timed(CLICK_JS, '#attn-mode input[value="raw"]')  # back to raw, not counted
    for i in range(n):
        record("pin a token", timed(_PIN_JS, 1 + i % (t - 2)))
    for _ in range(n):  # the Corpus tab opened (not counted), then the Example tab's views drawn again
        settle(driver, act(driver, CLICK_JS, "#tabs .tab:nth-child(2)"))
        record("back to the Example tab", settle_times(driver, act(driver, CLICK_JS, "#tabs .tab:nth-child(1)"),
                                                       GRAPHS))
    return {"painted": painted, "settled": settled}


# ---- bertviz ------------------------------------------------------------------------------------------------------


def bertviz_pages(t: int, folder: Path) -> dict[str, int]:
    """Write ``head_view.html`` and ``model_view.html`` of example 0 (scripts local) into ``folder``; their bytes."""
    import torch
    from bertviz import head_view, model_view

    from attnviz.pipeline.store import StoreReader

    reader = StoreReader(STORE)
    attn = reader.attention(run_name(t), 0)  # [L, H, T, T]
    tokens = list(reader.tokens(run_name(t), 0))
    layers = tuple(torch.from_numpy(attn[layer][None].astype("float32")) for layer in range(attn.shape[0]))
    (folder / "js").mkdir(parents=True, exist_ok=True)
    for name, rel in JS_FILES.items():
        shutil.copyfile(JS / "node_modules" / rel, folder / "js" / name)
    sizes = {}
    for name, view in (("head_view", head_view), ("model_view", model_view)):
        html = view(layers, tokens, html_action="return").data
        for remote, local in CDN.items():
            html = html.replace(remote, local)
        if "cdnjs." in html or "src='http" in html or 'src="http' in html:
            raise RuntimeError(f"bertviz {name}: a remote URL is left in the page")
        page = f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{html}</body></html>"
        (folder / f"{name}.html").write_text(page)
        sizes[name] = len(page.encode())
    return sizes


def serve_folder(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A local static server for ``folder`` in a daemon thread; returns it and its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """No request log."""


def measure_bertviz(driver: Any, t: int, n_render: int, n_layer: int) -> dict[str, Any]:
    """bertviz in the same browser: first render of both views, layer switch of the head view (seconds)."""
    folder = OUT / f"bertviz-T{t}"
    sizes = bertviz_pages(t, folder)
    server, base = serve_folder(folder)
    result: dict[str, Any] = {"html_bytes": sizes}
    try:
        for name in ("head_view", "model_view"):
            renders = []
            for _ in range(n_render):
                driver.get("about:blank")
                driver.get(f"{base}/{name}.html")
                ms = driver.execute_async_script(_BV_RENDER_JS, TIMEOUT_S * 1000)
                if ms is None or ms < 0:
                    raise RuntimeError(f"bertviz {name} did not render")
                renders.append(float(ms) / 1000)
            result[f"{name} first render"] = renders
        driver.get("about:blank")
        driver.get(f"{base}/head_view.html")
        driver.execute_async_script(_BV_RENDER_JS, TIMEOUT_S * 1000)
        layers = int(driver.execute_script("return document.querySelectorAll('select#layer option').length"))
        switches, sync = [], []
        for i in range(n_layer):
            total, synchronous = driver.execute_async_script(_BV_LAYER_JS, (i + 1) % layers)
            switches.append(float(total) / 1000)
            sync.append(float(synchronous) / 1000)
        result["head_view layer switch"] = switches
        result["head_view layer switch, synchronous part"] = sync
    finally:
        server.shutdown()
    return result


# ---- report -------------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


BERTVIZ_FOR = {"first load": "head_view first render", "change layer": "head_view layer switch"}


def table(results: dict[str, Any]) -> str:
    """The one printed table (Markdown): painted p50 / p95 (what a person waits for), settled p95, bertviz."""
    rows = ["| T | action | attnviz painted p50 | painted p95 | settled p95 | bertviz p50 | attnviz ÷ bertviz |",
            "| ---: | --- | ---: | ---: | ---: | --- | ---: |"]
    for t_key, per_t in results["lengths"].items():
        bv = per_t.get("bertviz") or {}
        for action in ACTIONS:
            times = per_t["attnviz"]["painted"][action]
            settled = per_t["attnviz"]["settled"][action]
            p50 = statistics.median(times)
            cell, ratio = "—", ""
            if action in BERTVIZ_FOR and bv:
                b50 = statistics.median(bv[BERTVIZ_FOR[action]])
                cell, ratio = f"{b50:.3f} s (head_view)", f"{p50 / b50:.2f}×"
                if action == "first load":
                    cell += f"; {statistics.median(bv['model_view first render']):.3f} s (model_view)"
            rows.append(f"| {t_key} | {action} | {p50:.3f} s | {percentile(times, 95):.3f} s | "
                        f"{percentile(settled, 95):.3f} s | {cell} | {ratio} |")
    return "\n".join(rows)


def measure_corpus_tab(actions: int) -> dict[str, list[float]]:
    """The Corpus tab's actions (``bench/browser_corpus.py``) on its bench store, in ms."""
    from bench import browser_corpus

    browser_corpus.build_store(browser_corpus.STORE)
    port = free_port()
    server = start_server(browser_corpus.STORE, port)
    driver = make_driver(1600, 1400)
    driver.set_script_timeout(TIMEOUT_S + 30)
    try:
        return browser_corpus.measure_corpus(driver, f"http://127.0.0.1:{port}", actions,
                                             run_a=browser_corpus.run_names(browser_corpus.MODELS[0]))
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)


def measure_playground_tab(actions: int) -> dict[str, list[float]]:
    """The Playground's run and predict (``bench/browser_playground.py``) with its worker, in ms."""
    import tempfile

    from attnviz.pipeline.playground.client import shutdown_worker
    from bench import browser_playground

    root = Path(tempfile.mkdtemp(prefix="attnviz-bench-pg-browser-"))
    store = root / "store.h5"
    browser_playground.build_store(store)
    folder = root / "playground"
    os.environ["ATTNVIZ_PLAYGROUND_DIR"] = str(folder)  # the server (and its worker) inherit it
    port = free_port()
    server = start_server(store, port)
    driver = make_driver(1600, 1400)
    driver.set_script_timeout(browser_playground.SETUP_TIMEOUT_S + 30)
    try:
        return browser_playground.measure_playground(driver, f"http://127.0.0.1:{port}", actions)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)
        shutdown_worker(folder)
        os.environ.pop("ATTNVIZ_PLAYGROUND_DIR", None)


def ms_table(title: str, times: dict[str, list[float]]) -> str:
    """A tab's actions as one Markdown table: p50 / p95 in ms."""
    rows = [f"| {title} | n | p50 | p95 |", "| --- | ---: | ---: | ---: |"]
    for action, ms in times.items():
        rows.append(f"| {action} | {len(ms)} | {statistics.median(ms):.0f} ms | {percentile(ms, 95):.0f} ms |")
    return "\n".join(rows)


def main() -> None:
    """Build the store, measure attnviz and bertviz in one headless Chromium, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=10, help="timed repeats of each action (p50/p95 over them)")
    parser.add_argument("--lengths", default="16,128,512", help="token lengths T (512: bert-random, else MiniLM)")
    parser.add_argument("--bertviz-max-t", type=int, default=128,
                        help="bertviz only up to this T (its page grows as T²: ~64 MB at T = 140)")
    parser.add_argument("--bertviz-renders", type=int, default=3, help="first renders of each bertviz view")
    parser.add_argument("--no-bertviz", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 actions, T = 16 only")
    parser.add_argument("--no-corpus", action="store_true", help="skip the Corpus tab's actions")
    parser.add_argument("--no-playground", action="store_true", help="skip the Playground's run and predict")
    ns = parser.parse_args()
    if ns.quick:
        ns.actions, ns.lengths, ns.bertviz_renders = 3, "16", min(ns.bertviz_renders, 3)
    lengths = [int(x) for x in ns.lengths.split(",") if x]
    if not ns.no_bertviz:
        ensure_bertviz()
    global STORE
    STORE = OUT / f"browser-store-n{ns.actions + 2}.h5"  # a run's input depends on the count
    build_store(lengths, ns.actions + 2)

    results: dict[str, Any] = {"actions": ns.actions, "quiet_ms": QUIET_MS, "lengths": {}}
    port = free_port()
    server = start_server(STORE, port)
    driver = make_driver(1600, 1000)
    driver.set_script_timeout(TIMEOUT_S + 30)
    try:
        for t in lengths:
            started = time.perf_counter()
            per_t: dict[str, Any] = {"run": run_name(t),
                                     "attnviz": measure_attnviz(driver, f"http://127.0.0.1:{port}", t, ns.actions)}
            print(f"T={t}: attnviz measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            if not ns.no_bertviz and t <= ns.bertviz_max_t:
                started = time.perf_counter()
                per_t["bertviz"] = measure_bertviz(driver, t, ns.bertviz_renders, ns.actions)
                print(f"T={t}: bertviz measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            results["lengths"][str(t)] = per_t
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)
    if not ns.no_corpus:
        results["corpus_ms"] = measure_corpus_tab(ns.actions)
    if not ns.no_playground:
        results["playground_ms"] = measure_playground_tab(ns.actions)
    text = table(results)
    print(text)
    if "corpus_ms" in results:
        print("\n" + ms_table("Corpus tab (bench/browser_corpus.py)", results["corpus_ms"]))
    if "playground_ms" in results:
        print("\n" + ms_table("Playground, model loaded (bench/browser_playground.py)", results["playground_ms"]))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "browser.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {OUT / 'browser.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
