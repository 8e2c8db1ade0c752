"""Kill -9 a real precompute process mid-run, check the store stays readable, resume, compare to a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from attnviz.pipeline.store import StoreReader

TINY = ["--set", "num_hidden_layers=2", "--set", "num_attention_heads=4", "--set", "hidden_size=64",
        "--set", "intermediate_size=128"]


def _cmd(store: Path, limit: int = 96) -> list[str]:
    return [sys.executable, "-m", "attnviz.pipeline.cli", "precompute", "--model", "bert-random", "--input",
            "data/demo.jsonl", "--store", str(store), "--limit", str(limit), "--shard-size", "8",
            "--batch-size", "4", "--threads", "1", "--capture", "attention,embeddings", *TINY]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _committed(store: Path) -> int:
    try:
        with StoreReader(store) as reader:
            return sum(reader.num_examples(r) for r in reader.runs())
    except Exception:  # the index does not exist yet
        return 0


def _assert_same_store(a: Path, b: Path) -> None:
    with StoreReader(a) as ra, StoreReader(b) as rb:
        assert ra.runs() == rb.runs()
        run = ra.runs()[0]
        assert ra.num_examples(run) == rb.num_examples(run)
        np.testing.assert_array_equal(ra.examples(run).input_index, rb.examples(run).input_index)
        np.testing.assert_array_equal(ra.metrics(run, "entropy"), rb.metrics(run, "entropy"))
        for i in range(ra.num_examples(run)):
            assert ra.tokens(run, i) == rb.tokens(run, i)
            np.testing.assert_array_equal(ra.attention(run, i), rb.attention(run, i))
            np.testing.assert_array_equal(ra.embeddings(run, i)[1], rb.embeddings(run, i)[1])


@pytest.mark.slow
@pytest.mark.timeout(900)  # three precompute subprocesses (40 s here), each allowed 600 s on a slow machine
def test_kill_minus_9_then_resume_gives_identical_store(tmp_path: Path) -> None:
    reference = tmp_path / "reference.h5"
    subprocess.run(_cmd(reference), check=True, env=_env(), capture_output=True, timeout=600)

    store = tmp_path / "killed.h5"
    kills = 0
    for wait_for in (8, 40):  # kill once early and once later, each after some shards are committed
        proc = subprocess.Popen(_cmd(store), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while _committed(store) < wait_for and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.03 * kills)  # land the kill at a different moment in the shard cycle
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # Every store on disk is readable and holds every example the index reported.
        done = _committed(store)
        assert done >= wait_for
        with StoreReader(store) as reader:
            run = reader.runs()[0]
            for i in range(reader.num_examples(run)):
                assert reader.attention(run, i, 0, 0).shape[0] == len(reader.tokens(run, i))
    assert kills >= 1, "the process finished before it could be killed: make the job longer"
    result = subprocess.run(_cmd(store), env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout
    _assert_same_store(reference, store)
    leftovers = [p.name for p in (tmp_path / "killed.h5.d").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
