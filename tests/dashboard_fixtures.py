"""Helpers for the dashboard tests: a small store made by the real pipeline, and a live ``attnviz serve``.

The fixtures built from them (``dashboard_store``, once per test session; ``live_server``, once per module)
are defined in ``tests/conftest.py``, so every test module can ask for them without importing them.
The store holds three runs with tiny random models (built in seconds):

* ``bert-random--demo``: encoder, 2 layers x 4 heads, every capture (attention, qkv, hidden, embeddings);
* ``gpt2-random--demo``: decoder-only, 2 x 4, attention only (for "missing capture" messages);
* ``seq2seq-random--demo_pairs``: encoder-decoder (self / decoder / cross), 2 x 4, every capture.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BERT_RUN = "bert-random--demo"
GPT2_RUN = "gpt2-random--demo"
SEQ2SEQ_RUN = "seq2seq-random--demo_pairs"
ALL_CAPTURES = "attention,qkv,hidden,embeddings"


def build_dashboard_store(path: Path) -> Path:
    """Write the three tiny runs into a new store at ``path`` with ``attnviz.pipeline.precompute.local``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    path.parent.mkdir(parents=True, exist_ok=True)
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=path, limit=12,
                                 threads=1, capture=ALL_CAPTURES,
                                 overrides={"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
                                            "intermediate_size": 128}))
    precompute(PrecomputeOptions(model="gpt2-random", input=str(REPO / "data/demo.jsonl"), store=path, limit=8,
                                 threads=1, capture="attention", overrides={"n_layer": 2, "n_head": 4, "n_embd": 64}))
    precompute(PrecomputeOptions(model="seq2seq-random", input=str(REPO / "data/demo_pairs.jsonl"), store=path, limit=6,
                                 threads=1, capture=ALL_CAPTURES,
                                 overrides={"encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                                            "decoder_attention_heads": 4, "d_model": 64, "encoder_ffn_dim": 128,
                                            "decoder_ffn_dim": 128}))
    return path


def free_port() -> int:
    """An unused local TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """An ``attnviz serve`` subprocess."""

    url: str
    process: subprocess.Popen
    store: Path
    log: Path


def start_live_server(store: Path, timeout: float = 60.0, env: dict[str, str] | None = None) -> LiveServer:
    """Start ``python -m attnviz.pipeline.cli serve --store STORE`` on a free port (``env`` added to the
    environment) and wait until it answers."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    log_path = store.with_name(f"serve-{port}.log")
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would block the server's request log
        proc = subprocess.Popen([sys.executable, "-m", "attnviz.pipeline.cli", "serve", "--store", str(store), "--port",
                                 str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"attnviz serve exited: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return LiveServer(url=url, process=proc, store=store, log=log_path)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"attnviz serve did not answer within {timeout} s")


@contextlib.contextmanager
def playground_folder(folder: Path) -> Iterator[Path]:
    """``ATTNVIZ_PLAYGROUND_DIR`` set to ``folder`` for an app served in this process (its Playground's model
    worker lives there); on the way out the worker is stopped and the variable restored."""
    from attnviz.pipeline.playground.client import shutdown_worker

    old = os.environ.get("ATTNVIZ_PLAYGROUND_DIR")
    os.environ["ATTNVIZ_PLAYGROUND_DIR"] = str(folder)
    try:
        yield folder
    finally:
        shutdown_worker(folder)
        if old is None:
            os.environ.pop("ATTNVIZ_PLAYGROUND_DIR", None)
        else:
            os.environ["ATTNVIZ_PLAYGROUND_DIR"] = old
