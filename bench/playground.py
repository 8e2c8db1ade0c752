"""Second run of a loaded model in the playground: the page, and the worker round trip under it.

    python bench/playground.py [--rounds 6] [--model gpt2-random] [--no-page]

1. **Worker**: a fresh model worker in a temp folder; one run loads the model, then ``--rounds`` runs of the same
   model and text, each timed from the request (``attnviz.pipeline.playground.client.call``) to the result's
   records read back in the calling process (``client.read_result``: ``.npz`` + JSON), as the dashboard does.
2. **Page** (headless Chromium): the dashboard on a small store, Playground tab; one click on "Run model" loads the
   model, then ``--rounds`` clicks, each timed from the click to the job done and every callback settled (the
   result's panels and six figures drawn). Needs chromium and chromedriver.

Prints the median, min and max of each; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

TEXT = "The quick brown fox jumps over the lazy dog."


def _stats(times: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3)}


def worker_round_trip(model: str, rounds: int) -> dict[str, float]:
    """Seconds from request to result read back, for ``rounds`` runs of a model the worker has loaded."""
    from attnviz.pipeline.playground.client import call, read_result, shutdown_worker

    folder = Path(tempfile.mkdtemp(prefix="attnviz-bench-pg-"))
    args = {"choice": {"name": model}, "input": {"task": "lm", "text": TEXT}}
    try:
        call("run", args, folder=folder)  # starts the worker and loads the model
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            summary = call("run", args, folder=folder)
            read_result(folder, summary["id"])
            times.append(time.perf_counter() - t0)
    finally:
        shutdown_worker(folder)
    return _stats(times)


def page(rounds: int) -> dict[str, float]:
    """Seconds from a click on "Run model" to every callback settled, for the page's default model (loaded)."""
    from dash.testing.application_runners import ThreadedRunner
    from selenium import webdriver

    from attnviz.dashboard.app import create_app
    from attnviz.pipeline.playground.client import shutdown_worker
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    root = Path(tempfile.mkdtemp(prefix="attnviz-bench-pg-page-"))
    store = root / "store.h5"
    precompute(PrecomputeOptions(model="bert-random", input="random:length=4,count=2,seed=0", store=store,
                                 run="existing", capture=("attention",),
                                 overrides={"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 32}))
    folder = root / "playground"
    os.environ["ATTNVIZ_PLAYGROUND_DIR"] = str(folder)  # read when the app registers the tab's callbacks
    app = create_app(store)

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1400"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options)
    try:
        with ThreadedRunner() as runner:
            runner.start(app)
            driver.get(runner.url + "/?tab=playground")

            def busy() -> bool:
                return bool(driver.execute_script("var b = document.querySelector('#pg-run'); return !b || b.disabled"))

            def pending() -> bool:  # what dash.testing's ``redux_state_rqs`` reads: callbacks not done yet
                return bool(driver.execute_script(
                    "var c = Object.assign({}, window.store.getState().callbacks); delete c.stored;"
                    " delete c.completed; return [].concat.apply([], Object.values(c)).length"))

            def once() -> float:
                t0 = time.perf_counter()
                driver.execute_script("document.querySelector('#pg-run').click()")
                while not busy():
                    time.sleep(0.01)
                while busy() or pending():
                    time.sleep(0.01)
                return time.perf_counter() - t0

            deadline = time.monotonic() + 60
            while busy() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # the page's first callbacks
            once()  # starts the worker and loads the model
            if not driver.find_elements("css selector", "#pg-summary-text"):
                raise SystemExit("the first run showed no result")
            times = [once() for _ in range(rounds)]
    finally:
        driver.quit()
        shutdown_worker(folder)
    return _stats(times)


def main() -> None:
    """Run the benchmark and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--model", default="gpt2-random", help="model of the worker measurement")
    parser.add_argument("--no-page", action="store_true", help="skip the browser measurement")
    ns = parser.parse_args()
    summary = {"worker": worker_round_trip(ns.model, ns.rounds)}
    print(f"worker round trip + reading the result: {summary['worker']}")
    if not ns.no_page:
        summary["page"] = page(ns.rounds)
        print(f"page, click to every callback settled: {summary['page']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
