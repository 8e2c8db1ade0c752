"""Save a full-page screenshot of the Example tab from headless Chromium (``docs/screenshots.py`` takes the README's
screenshots of every tab; this one is for looking at a selection).

    python bench/screenshot.py [--store data/stores/demo.h5] [--url-state '?run=...&example=3&layer=0&head=2']

Without ``--store`` (or when it does not exist) a demo-like store is built first with the real pipeline:
MiniLM (trained weights) over ``data/demo.jsonl`` with every capture. The app is served by ``attnviz serve``
in a subprocess on a free local port.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STORE = Path("/tmp/attnviz-screenshot/demo.h5")


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_store(path: Path) -> None:
    """A demo-like store: MiniLM over the demo corpus with every capture (real pipeline, subprocess)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "attnviz.pipeline.cli", "precompute", "--model", "minilm", "--input",
           str(REPO / "data/demo.jsonl"), "--store", str(path), "--limit", "60",
           "--capture", "attention,qkv,hidden,embeddings"]
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def start_server(store: Path, port: int) -> subprocess.Popen:
    """``attnviz serve`` in a subprocess; returns once it answers."""
    log_path = Path(f"/tmp/attnviz-screenshot-serve-{port}.log")
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would block the server's request log
        proc = subprocess.Popen([sys.executable, "-m", "attnviz.pipeline.cli", "serve", "--store", str(store), "--port",
                                 str(port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start within 60 s")


def make_driver(width: int, height: int):
    """Headless Chromium through selenium (Debian's /usr/bin/chromium + chromedriver on PATH)."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    if Path("/usr/bin/chromium").exists():
        opts.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(options=opts)


def wait_for_figures(driver, graph_ids: list[str], timeout: float = 60.0) -> None:
    """Wait until every graph has drawn real data (not the 'loading…' placeholder)."""
    script = """
        return arguments[0].every(id => {
            const gd = document.querySelector('#' + id + ' .js-plotly-plot');
            return gd && gd.data && gd.layout && !(gd.layout.meta && gd.layout.meta.message === 'loading…');
        });"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(script, graph_ids):
            return
        time.sleep(0.3)
    raise TimeoutError(f"figures not drawn within {timeout} s")


def save_full_page(driver, path: Path, width: int) -> tuple[int, int]:
    """Screenshot of the whole page (beyond the window) through the DevTools protocol; returns its size."""
    import base64

    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    height = int(metrics["cssContentSize"]["height"])
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return width, height


@contextmanager
def served(store: Path, width: int, height: int) -> Iterator[tuple]:
    """``attnviz serve`` on ``store`` at a free port and a headless Chromium of ``width`` x ``height``: yields
    (driver, port); both are stopped on the way out."""
    port = free_port()
    proc = start_server(store, port)
    driver = make_driver(width, height)
    try:
        yield driver, port
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(10)


def main() -> None:
    """Build or reuse a store, serve it, load the Example tab, save the screenshot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--url-state", default="?tab=example&example=2&layer=0&head=2&step=3")
    ap.add_argument("--out", type=Path, default=DEFAULT_STORE.parent / "example-tab.png")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=2000)
    args = ap.parse_args()
    if not args.store.exists():
        build_store(args.store)
    with served(args.store, args.width, args.height) as (driver, port):
        driver.get(f"http://127.0.0.1:{port}/{args.url_state}")
        wait_for_figures(driver, ["attn-matrix", "model-view"])  # the other panels are in closed tabs
        time.sleep(1.0)  # let plotly finish its transitions
        args.out.parent.mkdir(parents=True, exist_ok=True)
        size = save_full_page(driver, args.out, args.width)
        print(f"saved {args.out} ({size[0]}x{size[1]})")


if __name__ == "__main__":
    main()
