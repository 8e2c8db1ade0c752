"""``attnviz train-demo`` at a tiny size: the restricted GPT-2 BPE, the two recorded series, the saved model that a
model_info entry loads (so every tab can use it), skipping a finished training, resuming an interrupted one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers

from attnviz.pipeline.models.info import get_model_info
from attnviz.pipeline.models.loading import ModelLoadError, gpt2_bpe_files, load_model
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import StoreReader, StoreWriter, series_checkpoints
from attnviz.pipeline.training.demo import MARKER, DemoSettings, restricted_bpe, train_demo

REPO = Path(__file__).resolve().parents[1]
TINY = DemoSettings(steps=4, every=2, save_every=2, hidden=16, heads=2, batch_size=4, text_probe_limit=6,
                    probe="random:length=8,count=4,seed=0,repeat=2")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the demo reads data/english_sentences.txt and data/demo.jsonl


def test_restricted_bpe_tokenizes_the_corpus_as_gpt2_and_still_encodes_anything(tmp_path: Path) -> None:
    lines = (REPO / "data/english_sentences.txt").read_text(encoding="utf-8").splitlines()
    tok = restricted_bpe(lines, tmp_path)
    vocab, merges = gpt2_bpe_files()
    full = transformers.GPT2Tokenizer(vocab=str(vocab), merges=str(merges))
    assert len(tok) < len(full) / 4
    for line in lines[::7]:
        assert tok.convert_ids_to_tokens(tok(line)["input_ids"]) == full.convert_ids_to_tokens(full(line)["input_ids"])
    unseen = "Quixotic zebras jump over 7 lazy dogs — naïvely!"
    ids = tok(unseen)["input_ids"]
    assert tok.decode(ids) == unseen  # byte-level: every text encodes, in smaller GPT-2 tokens when it must
    assert len(ids) > len(full(unseen)["input_ids"])


@pytest.mark.timeout(600)
def test_train_demo_records_two_series_and_saves_a_model_the_tabs_can_load(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store, out = tmp_path / "s.h5", tmp_path / "m"
    lines: list[str] = []
    summary = train_demo(store, out=out, settings=TINY, say=lines.append)
    assert not summary.skipped and summary.final_loss is not None
    assert summary.recorded == {"train-demo": [0, 2, 4], "train-demo-text": [0, 2, 4]}
    assert (out / "model" / MARKER).exists() and any("step 4" in line for line in lines)
    runs = StoreWriter(store).runs()
    cps = series_checkpoints(runs, "train-demo")
    assert {runs[c.run].meta["model"] for c in cps} == {"train-demo"}
    assert runs[cps[0].run].meta["model_info"]["trained_by"] == "attnviz train-demo"
    with StoreReader(store) as reader:
        ids = reader.token_ids(cps[-1].run, 0)
        np.testing.assert_array_equal(ids[:8], ids[8:])  # the random probe repeats each sequence
        assert np.isfinite(reader.metrics(cps[-1].run, "induction")).all()
        text = series_checkpoints(runs, "train-demo-text")[-1].run
        assert reader.num_examples(text) == 6

    # the saved model through a model_info entry like the shipped one, pointing at this folder
    folder = tmp_path / "model_info"
    folder.mkdir()
    entry = (REPO / "model_info/train-demo.yaml").read_text().replace("data/models/train-demo/model",
                                                                     str(out / "model"))
    (folder / "train-demo.yaml").write_text(entry)
    monkeypatch.setenv("ATTNVIZ_MODEL_INFO", str(folder))
    info = get_model_info("train-demo")
    assert info.display_name == "train-demo (trained here)" and not info.random_weights
    result = precompute(PrecomputeOptions(model="train-demo", input="data/demo.jsonl", store=tmp_path / "p.h5",
                                          limit=5, capture="attention,qkv"))
    assert result.examples == 5
    lm = load_model("train-demo")
    assert lm.max_length == TINY.context

    # finished: nothing to do; interrupted after training (no model saved): resumes from checkpoint 4, adds nothing
    again = train_demo(store, out=out, settings=TINY)
    assert again.skipped and "already trained" in again.line()
    shutil.rmtree(out / "model")
    resumed = train_demo(store, out=out, settings=TINY)
    assert not resumed.skipped and (out / "model" / MARKER).exists()
    assert StoreWriter(store).runs().keys() == runs.keys()
    assert resumed.recorded == summary.recorded


def test_shipped_entry_says_how_to_make_its_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no data/models here
    with pytest.raises(ModelLoadError, match="train it first with 'attnviz train-demo'"):
        load_model("train-demo")


@pytest.mark.parametrize(("args", "needle"), [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--every", "0"], "--every must be at least 1"),
])
def test_bad_options_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    done = subprocess.run([sys.executable, "-m", "attnviz.pipeline.cli", "train-demo", "--store",
                           str(tmp_path / "s.h5"), "--out", str(tmp_path / "m"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
