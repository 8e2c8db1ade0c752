"""Screenshots of every dashboard tab (Example, Corpus, Playground, Training) at 1600 x 1000 in headless Chromium,
into ``docs/img/<tab>.png`` (the README shows them).

    python docs/screenshots.py [--store data/stores/demo.h5] [--out docs/img]

With the demo store (``make demo-store``) the screenshots show it. Without it, a small store is made first with
the real pipeline, in a scratch folder: MiniLM (trained weights) over 60 demo sentences with every capture, the
same sentences through a random-weight BERT (the Corpus tab's run B), and ``attnviz train-demo`` for 300 steps
(the Training tab's series; a few minutes on a CPU). The app is served by ``attnviz serve`` on a free local port;
the Playground's view comes from a copied link (its result is computed by the model worker). The PNGs are reduced
to 256 colours by ``pngquant`` when it is installed (~4x smaller).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
DEMO_STORE = REPO / "data/stores/demo.h5"
SCRATCH = Path("/tmp/attnviz-screenshots")
WIDTH, HEIGHT = 1600, 1000
PLAYGROUND_TEXT = "The keys to the cabinet are on the table."

sys.path.insert(0, str(REPO / "bench"))
from screenshot import served  # noqa: E402  (bench/screenshot.py)


def attnviz(*args: str) -> None:
    """Run one ``attnviz`` command of the real pipeline (offline) and stop on failure."""
    subprocess.run([sys.executable, "-m", "attnviz.pipeline.cli", *args], check=True, cwd=REPO,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})


def build_store(path: Path) -> None:
    """A small store like the demo's: MiniLM and a random BERT over the demo sentences, and a trained series."""
    path.parent.mkdir(parents=True, exist_ok=True)
    demo = str(REPO / "data/demo.jsonl")
    attnviz("precompute", "--model", "minilm", "--input", demo, "--store", str(path), "--limit", "60",
            "--capture", "attention,qkv,hidden,embeddings")
    attnviz("precompute", "--model", "bert-random", "--input", demo, "--store", str(path), "--limit", "60")
    attnviz("train-demo", "--store", str(path), "--out", str(path.parent / "train-demo"), "--steps", "300",
            "--every", "50")


def series_name(store: Path) -> str | None:
    """The store's first training series whose probe is text (the Training tab's clearest view), or any."""
    from attnviz.pipeline.store import StoreReader
    from attnviz.pipeline.store.series import series_names

    reader = StoreReader(store)
    names = series_names({run: reader.run_info(run) for run in reader.runs()})
    return next((n for n in names if n.endswith("-text")), names[0] if names else None)


def random_run(store: Path) -> str | None:
    """A run with random weights (the Corpus tab compares the default trained run with it), or None."""
    from attnviz.pipeline.store import StoreReader
    from attnviz.pipeline.store.meta import run_meta

    reader = StoreReader(store)
    return next((r for r in reader.runs() if run_meta(reader.run_info(r).meta).random_weights
                 and not run_meta(reader.run_info(r).meta).playground), None)


def tab_urls(store: Path) -> dict[str, tuple[str, str]]:
    """Per tab: its URL and a script that is true once it has drawn what the screenshot shows."""
    plotly_drawn = ("return Array.from(document.querySelectorAll(arguments[0])).every(gd => gd.data && "
                    "gd.layout && !(gd.layout.meta && gd.layout.meta.message === 'loading…'))"
                    " && document.querySelectorAll(arguments[0]).length > 0 && "
                    "!document.querySelector('[data-dash-is-loading=\"true\"]')")
    series = series_name(store)
    run_b = random_run(store)
    pg = "&".join(f"pg.{k}={quote(v)}" for k, v in (
        ("model", "minilm"), ("input", "text"), ("text", PLAYGROUND_TEXT), ("result", "run"), ("layer", "0"),
        ("head", "2")))
    return {
        "example": ("/?tab=example&example=2&layer=0&head=2&step=3", plotly_drawn),
        "corpus": ("/?tab=corpus" + (f"#corpus.b={quote(run_b)}" if run_b else ""), plotly_drawn),
        "playground": (f"/?tab=playground#{pg}", plotly_drawn),
        "training": ("/?tab=training" + (f"#series={quote(series)}&metric=entropy" if series else ""),
                     plotly_drawn),
    }


#: The figures each screenshot waits for (CSS selectors of Plotly graphs in the tab).
WAIT_FOR = {
    "example": "#attn-matrix .js-plotly-plot, #model-view .js-plotly-plot",
    "corpus": "#corpus-heatmap-a .js-plotly-plot, #corpus-diff .js-plotly-plot",
    "playground": "#pg-matrix .js-plotly-plot",
    "training": "[id^='training'] .js-plotly-plot",
}


def wait_until(driver, script: str, selector: str, timeout: float) -> bool:
    """Poll ``script`` (with ``selector``) until it is true for 1 s in a row; False after ``timeout``."""
    deadline, since = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if driver.execute_script(script, selector):
            since = since or time.monotonic()
            if time.monotonic() - since >= 1.0:
                return True
        else:
            since = None
        time.sleep(0.25)
    return False


def shrink(path: Path) -> None:
    """Reduce a PNG to 256 colours with pngquant when it is installed (kept as is otherwise)."""
    if shutil.which("pngquant"):
        subprocess.run(["pngquant", "--force", "--skip-if-larger", "--strip", "--quality", "70-95", "--output",
                        str(path), str(path)], check=False)


def main() -> None:
    """Build or reuse a store, serve it, and save one screenshot per tab."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=DEMO_STORE, help="store to show (default: the demo store)")
    ap.add_argument("--out", type=Path, default=REPO / "docs/img", help="folder of the PNGs")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for a tab's figures")
    args = ap.parse_args()
    store = args.store
    if not store.exists():
        store = SCRATCH / "demo.h5"
        if not store.exists():
            print(f"{args.store} is missing: building a small store in {SCRATCH} with the real pipeline")
            build_store(store)
    args.out.mkdir(parents=True, exist_ok=True)
    env_dir = SCRATCH / "playground"
    os.environ.setdefault("ATTNVIZ_PLAYGROUND_DIR", str(env_dir))
    with served(store, WIDTH, HEIGHT) as (driver, port):
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        for tab, (url, ready) in tab_urls(store).items():
            driver.get(f"http://127.0.0.1:{port}{url}")
            if not wait_until(driver, ready, WAIT_FOR[tab], args.timeout):
                print(f"warning: the {tab} tab did not finish drawing within {args.timeout:.0f} s")
            time.sleep(1.0)  # Plotly's last transitions
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
            path = args.out / f"{tab}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            shrink(path)
            print(f"saved {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
