"""First load in a fresh browser, page variants interleaved: what the page's JavaScript costs before it draws.

    python bench/first_load.py [--browsers 4] [--loads 3] [--variants full,cartesian,cartesian+lazy-grid]

Each sample is a fresh headless Chromium (its own empty profile: no HTTP cache, no V8 code cache) that opens
``/?run=minilm-T16`` of ``bench/browser.py``'s store ``--loads`` times (``about:blank`` between): load 1 is
*cold*, load 2 *warm* (scripts from the HTTP cache, V8's code cache seeded), load 3 *hot*. Per load:
``domInteractive`` of the navigation entry (the page's scripts parsed and run) and, as ``bench/browser.py`` times
a first load, *painted* / *settled* (navigation start to the first screen's views drawn / to nothing pending).
Then ``--corpus-opens`` times, as ``bench/browser_corpus.py`` opens the Corpus tab: a new page, settled (nothing
pending for 300 ms), a click on the Corpus tab timed to nothing pending (``bench/browser.py``'s settle, the quiet
window not counted), and whether dash_ag_grid's bundle had been loaded before the click.

Variants, each served by its own ``attnviz`` app in a subprocess (``--serve``; the app of this checkout with the
page's scripts changed back where a variant says so) and warmed by one untimed browser; then the browsers of all
variants interleaved (ABCABC...):

* ``full``: Plotly's full ``plotly.min.js`` (4.8 MB) from Dash's component suites, dash_ag_grid in the page
  (the page before the vendored bundle);
* ``cartesian``: the vendored cartesian bundle with the compile hint (``dashboard/plotly_bundle.py``),
  dash_ag_grid in the page;
* ``cartesian+lazy-grid``: the dashboard as it is (the grid's bundle loaded when needed, ``lazy_bundles.py``).

Prints per variant and load the samples and p50 / max, and writes ``bench/out/first_load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.browser import GRAPHS, STORE, act, settle, settle_times  # noqa: E402
from bench.screenshot import free_port, make_driver  # noqa: E402

OUT = REPO / "bench" / "out"
VARIANTS = ("full", "cartesian", "cartesian+lazy-grid")
LOADS = ("cold", "warm", "hot")
FULL_PLOTLY = "_dash-component-suites/plotly/package_data/plotly.min.js"
_NAV_JS = "const n = performance.getEntriesByType('navigation')[0]; return n ? n.domInteractive : -1;"
_CLICK_CORPUS_JS = ("[...document.querySelectorAll('#tabs .tab')].find(t => t.textContent.trim() === 'Corpus')"
                    ".click();")


def build_app(store: Path, variant: str) -> Any:
    """The dashboard's app for ``store`` with the page's scripts as ``variant`` has them."""
    from attnviz.dashboard import lazy_bundles, plotly_bundle
    from attnviz.dashboard.app import create_app

    app = create_app(store)
    prefix = app.config.requests_pathname_prefix
    if variant == "full":
        route = prefix + plotly_bundle.route().lstrip("/")
        app.index_string = app.index_string.replace(route, prefix + FULL_PLOTLY)
    if variant in ("full", "cartesian"):
        for bundle in lazy_bundles.LAZY_BUNDLES:  # back in the page's scripts (the loader then finds it there)
            module = sys.modules[bundle.namespace]
            for entry in module._js_dist:
                if entry.get("relative_package_path") == bundle.relative_path:
                    entry["dynamic"] = False
    return app


def serve(store: Path, variant: str, port: int) -> None:
    """Serve ``variant`` on ``port`` until killed (Flask's threaded server, as ``attnviz serve``)."""
    build_app(store, variant).run(host="127.0.0.1", port=port, debug=False, dev_tools_ui=False, use_reloader=False)


def start(store: Path, variant: str) -> tuple[subprocess.Popen, str]:
    """A server for ``variant`` in a subprocess; returns it and its base URL once it answers."""
    port = free_port()
    log = open(f"/tmp/attnviz-first-load-{port}.log", "wb")  # noqa: SIM115 (kept open for the process)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", variant, "--port", str(port), "--store", str(store)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            page = urllib.request.urlopen(url + "/", timeout=2).read().decode()
            if variant == "full" and FULL_PLOTLY not in page:
                raise RuntimeError("the full variant's page does not load plotly.min.js")
            if variant != "cartesian+lazy-grid" and "dash_ag_grid.v" not in page.replace('content="', ""):
                raise RuntimeError(f"the {variant} variant's page does not load dash_ag_grid")
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{variant} server exited") from None
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{variant} server did not answer within 60 s")


def sample(url: str, run: str, loads: int, corpus_opens: int = 0) -> dict[str, Any]:
    """One fresh browser: ``loads`` first loads of the run's page, then ``corpus_opens`` times a new page and a
    click on the Corpus tab."""
    driver = make_driver(1600, 1000)
    try:
        rows = []
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(f"{url}/?run={run}")
            painted, settled = settle_times(driver, 0.0, GRAPHS)
            rows.append({"dom_interactive_ms": float(driver.execute_script(_NAV_JS)),
                         "painted_ms": painted * 1000, "settled_ms": settled * 1000})
        corpus_ms, had_grid = [], []
        for _ in range(corpus_opens):  # as bench/browser_corpus.py opens the tab: a new page, settled, a click
            driver.get("about:blank")
            driver.get(f"{url}/?run={run}")
            settle(driver, 0.0)
            had_grid.append(bool(driver.execute_script("return !!window.dash_ag_grid")))
            t0 = act(driver, _CLICK_CORPUS_JS)
            corpus_ms.append(settle(driver, t0) * 1000)
        rows_drawn = driver.execute_script("return document.querySelectorAll('#corpus-head-table .ag-row').length")
        full = [n for n in driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
                if "plotly.min.js" in n]
        return {"loads": rows, "corpus_ms": corpus_ms, "grid_loaded_before_click": had_grid,
                "grid_rows": int(rows_drawn), "full_plotly_requested": bool(full)}
    finally:
        driver.quit()


def p50_max(values: list[float]) -> str:
    return f"{statistics.median(values):7.0f} / {max(values):5.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--browsers", type=int, default=4, help="fresh browsers per variant")
    ap.add_argument("--loads", type=int, default=3, help="page loads per browser")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--corpus-opens", type=int, default=2, help="Corpus tab opens per browser, after the loads")
    ap.add_argument("--run", default="minilm-T16")
    ap.add_argument("--store", type=Path, default=STORE)
    ap.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.store, args.serve, args.port)
        return
    if not args.store.exists():
        raise SystemExit(f"no store {args.store}: run `python bench/browser.py --lengths 16` once to build it")
    variants = [v for v in args.variants.split(",") if v]
    servers = {v: start(args.store, v) for v in variants}
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for v in variants:  # untimed: each server's first requests open the store and fill its caches
        sample(servers[v][1], args.run, 1)
    load_before = os.getloadavg()
    try:
        for i in range(args.browsers):
            for v in variants:
                results[v].append(sample(servers[v][1], args.run, args.loads, args.corpus_opens))
                print(f"browser {i + 1}/{args.browsers} {v}: " + ", ".join(
                    f"{r['dom_interactive_ms']:.0f}/{r['settled_ms']:.0f}" for r in results[v][-1]["loads"])
                    + f"; corpus {[round(c) for c in results[v][-1]['corpus_ms']]} ms", file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1 min); "
          f"{args.browsers} fresh browsers per variant, interleaved; ms, p50 / max")
    print(f"{'variant':22s} {'load':5s} {'domInteractive':>15s} {'painted':>15s} {'settled':>15s}")
    for v in variants:
        for k in range(args.loads):
            col = [s["loads"][k] for s in results[v]]
            print(f"{v:22s} {LOADS[k] if k < len(LOADS) else k:5s} "
                  f"{p50_max([c['dom_interactive_ms'] for c in col]):>15s} "
                  f"{p50_max([c['painted_ms'] for c in col]):>15s} {p50_max([c['settled_ms'] for c in col]):>15s}")
        corpus = [c for s in results[v] for c in s["corpus_ms"]]
        ahead = sum(sum(s["grid_loaded_before_click"]) for s in results[v])
        full = sum(s["full_plotly_requested"] for s in results[v])
        if not corpus:
            continue
        print(f"{v:22s} corpus tab open {p50_max(corpus)}  (grid loaded before the click in {ahead}/{len(corpus)}; "
              f"full plotly.min.js requested in {full}; head-table rows {[s['grid_rows'] for s in results[v]]})")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "first_load.json").write_text(json.dumps(
        {"variants": results, "load_average": [load_before, load_after], "run": args.run}, indent=1))


if __name__ == "__main__":
    main()
