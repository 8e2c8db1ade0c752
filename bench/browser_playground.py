"""What a person waits for in the Playground tab, in headless Chromium: a run of a model the worker has loaded,
and predicting 8 words.

    python bench/browser_playground.py [--actions 10]

Each action is timed as ``bench/browser.py`` times the Example tab's (its ``settle`` / ``now`` helpers): from
just before the click (``performance.now()`` in the page) until a 300 ms window begins in which no component is
loading, no callback is pending in Dash's store and every playground graph is drawn. After each action the page
must show that action's result (the inputs alternate between two texts, so a stale result is caught).

* **playground run (loaded model)**: MiniLM (``minilm``, trained weights), a typed sentence of ~12-20 tokens,
  click "Run model".
* **playground predict 8 words**: ``gpt2-random`` (its model_info size: 6 layers x 8 heads x 256), a typed
  prompt, 8 tokens greedy, click "Predict output words".

Both models are loaded once (untimed) before the timed actions. Standalone, the bench builds a small store in a
temp folder, starts ``attnviz serve`` on it (the playground folder a temp folder too) and prints p50/p95 of both.
``measure_playground`` is what ``bench/browser.py`` calls on its own server and driver.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.browser import now, percentile, settle  # noqa: E402

RUN = "playground run (loaded model)"
PREDICT = "playground predict 8 words"
ACTIONS = (RUN, PREDICT)
RUN_MODEL, PREDICT_MODEL = "minilm", "gpt2-random"
RUN_TEXTS = ("The quick brown fox jumps over the lazy dog near the river bank.",
             "A small bird sang in the tall tree while the children played outside.")
PREDICT_TEXTS = ("Once upon a time there was", "The weather today is")
GEN_TOKENS = 8
GRAPHS = ("pg-matrix", "pg-headview", "pg-modelview", "pg-step-bars", "pg-step-layers", "pg-embeddings")
#: Seconds to wait for an untimed step (a model load, the page's first callbacks).
SETUP_TIMEOUT_S = 180.0


def _wait(driver: Any, script: str, what: str, timeout: float = SETUP_TIMEOUT_S, *args: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script, *args)
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"the playground page never showed {what}")


def _set_text(driver: Any, css: str, value: str) -> None:
    """Type ``value`` into a text box (select all, type, tab out: debounced inputs commit on blur)."""
    from selenium.webdriver.common.keys import Keys

    el = driver.find_element("css selector", css)
    el.send_keys(Keys.CONTROL, "a")
    el.send_keys(value)
    el.send_keys(Keys.TAB)


def _pick_model(driver: Any, name: str) -> None:
    """Choose ``name`` in the model dropdown (Dash 4's dropdown: click it, click the option)."""
    driver.execute_script("document.querySelector('#pg-model').scrollIntoView({block: 'center'});")
    driver.find_element("css selector", "#pg-model").click()
    _wait(driver, "return document.querySelector('.dash-dropdown-options')", "the model menu", 10)
    for option in driver.find_elements("css selector", ".dash-dropdown-option"):
        if option.text.startswith(name + " ") or option.text == name or name in option.text.split(" (")[0]:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", option)
            return
    raise RuntimeError(f"model {name!r} is not in the playground's list")


def _summary_text(driver: Any) -> str:
    return str(driver.execute_script(
        "const e = document.querySelector('#pg-summary-text'); return e ? e.textContent : ''"))


def _steps(driver: Any) -> int:
    return int(driver.execute_script("return document.querySelectorAll('#pg-steps-table td.pg-step-token').length"))


def _error(driver: Any) -> str:
    return str(driver.execute_script(
        "const e = document.querySelector('#pg-error-text'); return e ? e.textContent : ''"))


def _click(driver: Any, css: str) -> Callable[[], None]:
    return lambda: driver.execute_script("document.querySelector(arguments[0]).click()", css)


def _timed(driver: Any, action: Callable[[], None]) -> float:
    """Milliseconds from just before ``action`` until the page settles."""
    t0 = now(driver)
    action()
    return 1000 * settle(driver, t0, GRAPHS)


def _check(driver: Any, text: str, steps: int, what: str) -> None:
    """Raise unless the page shows the result of ``text`` (and ``steps`` generated tokens)."""
    shown, error = _summary_text(driver), _error(driver)
    if error:
        raise RuntimeError(f"{what}: the page shows an error: {error}")
    if not shown.startswith(text.rstrip(".")[:20]) or (steps and _steps(driver) != steps):
        raise RuntimeError(f"{what}: the page settled before its result was drawn (shows {shown!r})")


def _prepare(driver: Any, model: str, text: str) -> None:
    """Pick ``model``, type ``text`` and wait for the page to settle (untimed)."""
    _pick_model(driver, model)
    _wait(driver, "return document.querySelector('#pg-model').textContent.includes(arguments[0])",
          f"model {model} selected", 10, model)
    settle(driver, now(driver), GRAPHS)
    _set_text(driver, "#pg-text", text)
    settle(driver, now(driver), GRAPHS)


def _run_untimed(driver: Any, button: str, text: str, steps: int, what: str) -> None:
    """One job, untimed (it may load the model): click and wait for its result."""
    _click(driver, button)()
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while time.monotonic() < deadline:
        settle(driver, now(driver), GRAPHS)
        if _error(driver):
            break
        shown = _summary_text(driver)
        if shown.startswith(text.rstrip(".")[:20]) and (not steps or _steps(driver) == steps):
            break
        time.sleep(0.2)
    _check(driver, text, steps, what)


def measure_playground(driver: Any, base_url: str, n: int) -> dict[str, list[float]]:
    """Milliseconds per action (``n`` of each) in the Playground tab of the dashboard at ``base_url``: a MiniLM run
    with the model loaded, and predicting 8 words with ``gpt2-random``. Each model is loaded once first
    (untimed). Raises RuntimeError when the page shows an error or settles without the action's result."""
    times: dict[str, list[float]] = {a: [] for a in ACTIONS}
    driver.get("about:blank")
    driver.get(f"{base_url}/?tab=playground")
    _wait(driver, "return document.querySelector('#pg-run')", "the Run button")
    settle(driver, 0.0, GRAPHS)

    _prepare(driver, RUN_MODEL, RUN_TEXTS[1])
    _run_untimed(driver, "#pg-run", RUN_TEXTS[1], 0, "loading minilm")
    for i in range(n):
        text = RUN_TEXTS[i % 2]
        _set_text(driver, "#pg-text", text)
        settle(driver, now(driver), GRAPHS)
        times[RUN].append(_timed(driver, _click(driver, "#pg-run")))
        _check(driver, text, 0, RUN)

    _prepare(driver, PREDICT_MODEL, PREDICT_TEXTS[1])
    _set_text(driver, "#pg-gen-n", str(GEN_TOKENS))
    settle(driver, now(driver), GRAPHS)
    _run_untimed(driver, "#pg-predict", PREDICT_TEXTS[1], GEN_TOKENS, "loading gpt2-random")
    for i in range(n):
        text = PREDICT_TEXTS[i % 2]
        _set_text(driver, "#pg-text", text)
        settle(driver, now(driver), GRAPHS)
        times[PREDICT].append(_timed(driver, _click(driver, "#pg-predict")))
        _check(driver, text, GEN_TOKENS, PREDICT)
    return times


def build_store(path: Path) -> None:
    """A small demo-like store: one MiniLM run over a few sentences of ``data/english_sentences.txt``."""
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    sentences = [s.strip() for s in (REPO / "data/english_sentences.txt").read_text().splitlines() if s.strip()]
    text = path.with_suffix(".txt")
    text.write_text("\n".join(sentences[:8]) + "\n")
    precompute(PrecomputeOptions(model="minilm", input=str(text), store=path, run="minilm-demo", max_length=64,
                                 batch_size=8))


def report(times: dict[str, list[float]]) -> str:
    """One Markdown table: p50 / p95 / max of each action, in ms."""
    rows = ["| action | n | p50 | p95 | max |", "| --- | ---: | ---: | ---: | ---: |"]
    for action, values in times.items():
        ms = list(values)
        rows.append(f"| {action} | {len(ms)} | {statistics.median(ms):.0f} ms | {percentile(ms, 95):.0f} ms | "
                    f"{max(ms):.0f} ms |")
    return "\n".join(rows)


def main() -> None:
    """Build a store, serve it, measure both actions in headless Chromium and print p50/p95."""
    from bench.screenshot import free_port, make_driver, start_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=10, help="timed repeats of each action")
    ns = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="attnviz-bench-pg-browser-"))
    store = root / "store.h5"
    build_store(store)
    folder = root / "playground"
    os.environ["ATTNVIZ_PLAYGROUND_DIR"] = str(folder)  # the server (and its worker) inherit it
    port = free_port()
    server = start_server(store, port)
    driver = make_driver(1600, 1400)
    driver.set_script_timeout(SETUP_TIMEOUT_S + 30)
    try:
        times = measure_playground(driver, f"http://127.0.0.1:{port}", ns.actions)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)
        from attnviz.pipeline.playground.client import shutdown_worker

        shutdown_worker(folder)
    print(report(times))


if __name__ == "__main__":
    main()
