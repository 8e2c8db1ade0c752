"""Inputs longer than the model accepts: ``--long-inputs truncate`` and ``window[:STRIDE]`` (linked window examples).

The windows are checked against the tokenizer directly (each window's ids are the text's ids from its start, with
the model's special tokens around them; the windows cover every token), their attention against a direct forward
pass of the model on the window, and the links (metadata and ``StoreReader.windows``) against the plan.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attnviz.pipeline.models.loading import load_model
from attnviz.pipeline.precompute.inputs import InputError, special_token_frame
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.precompute.windows import LongInputs, parse_long_inputs, window_starts
from attnviz.pipeline.store import RunMismatchError, StoreReader

REPO = Path(__file__).resolve().parent.parent
LONG = ("Attention maps are easier to read when the text is short, but reviewers paste whole paragraphs into the "
        "tool, and a model that accepts only sixteen tokens must either cut them or look at them window by window, "
        "each window overlapping the one before.")
SHORT = "A short one."
TINY = {"gpt2-random": {"n_layer": 1, "n_head": 2, "n_embd": 32},
        "bert-random": {"num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 32,
                        "intermediate_size": 64}}
MAX_LENGTH = 16


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text(f"{SHORT}\n{LONG}\n{SHORT}\n", encoding="utf-8")
    return path


def options(store: Path, text_file: Path, model: str, **kw) -> PrecomputeOptions:
    return PrecomputeOptions(model=model, input=str(text_file), store=store, overrides=TINY[model], threads=1,
                             max_length=MAX_LENGTH, capture="attention", analyze=False, **kw)


def test_parse_long_inputs() -> None:
    assert parse_long_inputs("truncate") == LongInputs() and not LongInputs().windowed
    assert parse_long_inputs("window") == LongInputs("window", None)
    assert parse_long_inputs("Window:8").stride == 8
    for bad in ("slide", "window:0", "window:x", "truncate:3", "window:-1"):
        with pytest.raises(InputError, match="--long-inputs"):
            parse_long_inputs(bad)
    assert window_starts(10, 14, 7) == [0]
    assert window_starts(30, 14, 7) == [0, 7, 14, 16]  # the last window ends with the text
    assert window_starts(28, 14, 7) == [0, 7, 14]


@pytest.mark.parametrize("model", ["gpt2-random", "bert-random"])
def test_windows_cover_the_text_and_link_to_each_other(tmp_path: Path, text_file: Path, model: str) -> None:
    store = tmp_path / "w.h5"
    stride = 5
    summary = precompute(options(store, text_file, model, long_inputs=f"window:{stride}"))
    lm = load_model(model, TINY[model], threads=1)
    tok = lm.tokenizer
    prefix, suffix = special_token_frame(tok)
    size = MAX_LENGTH - len(prefix) - len(suffix)
    ids = tok(LONG, add_special_tokens=False)["input_ids"]
    starts = window_starts(len(ids), size, stride)
    assert len(ids) > size and len(starts) >= 4
    reader = StoreReader(store)
    run = summary.run
    n = reader.num_examples(run)
    assert n == 2 + len(starts) == summary.examples
    meta = json.loads(json.dumps(reader.run_info(run).meta))
    assert meta["long_inputs"] == f"window:{stride}"
    table = reader.examples(run)
    assert table.text[0] == SHORT and table.text[-1] == SHORT and not table.truncated.any()
    covered: set[int] = set()
    for k, start in enumerate(starts):
        i = 1 + k
        got = reader.token_ids(run, i).tolist()
        assert got == [*prefix, *ids[start:start + size], *suffix]  # the text's own ids, in order
        covered.update(range(start, start + size))
        m = table.meta[i]
        assert (m["window"], m["windows"], m["window_input"], m["window_token_start"]) == (k, len(starts), 1, start)
        assert m["line"] == 2  # the input's own metadata is kept
        w = reader.windows(run, i)
        assert w.examples == tuple(range(1, 1 + len(starts))) and w.position == k and w.windowed
        assert w.token_starts == tuple(starts) and w.input_index == 1 and w.total == len(starts)
        assert w.previous() == (i - 1 if k else None) and w.next() == (i + 1 if k + 1 < len(starts) else None)
        assert table.text[i] and table.text[i] in LONG  # a span of the text (offsets, or the decoded ids)
    assert covered == set(range(len(ids)))
    plain = reader.windows(run, 0)
    assert plain.examples == (0,) and not plain.windowed and plain.input_index == 0
    assert reader.windows(run, n - 1).examples == (n - 1,)

    # a window's stored attention is the model's attention on the window alone
    window = torch.tensor([reader.token_ids(run, 2).tolist()])
    with torch.inference_mode():
        direct = lm.model.base_model(input_ids=window, output_attentions=True).attentions[0][0].numpy()
    np.testing.assert_allclose(reader.attention(run, 2, 0), direct, atol=2e-3)  # float16 storage


def test_truncate_is_the_default_and_another_choice_is_refused_on_the_same_run(tmp_path: Path,
                                                                               text_file: Path) -> None:
    store = tmp_path / "t.h5"
    summary = precompute(options(store, text_file, "gpt2-random"))
    reader = StoreReader(store)
    assert reader.num_examples(summary.run) == 3
    assert reader.examples(summary.run).truncated.tolist() == [False, True, False]
    assert len(reader.tokens(summary.run, 1)) == MAX_LENGTH
    assert reader.run_info(summary.run).meta["long_inputs"] is None
    assert reader.windows(summary.run, 1).examples == (1,)
    with pytest.raises(RunMismatchError, match="long_inputs"):
        precompute(options(store, text_file, "gpt2-random", long_inputs="window"))
    again = precompute(options(store, text_file, "gpt2-random", long_inputs="truncate"))
    assert again.new_examples == 0 and again.examples == 3


def test_window_resumes_and_refuses_encoder_decoder_and_gappy_strides(tmp_path: Path, text_file: Path) -> None:
    store = tmp_path / "r.h5"
    first = precompute(options(store, text_file, "gpt2-random", long_inputs="window", limit=2, shard_size=2))
    second = precompute(options(store, text_file, "gpt2-random", long_inputs="window", shard_size=2))
    assert second.skipped_examples == first.examples and second.examples == first.examples + 1
    reader = StoreReader(store)
    w = reader.windows(second.run, 1)
    assert w.total == len(w.examples) > 1  # half a window by default: (16 - 0) // 2 = 8 tokens
    assert reader.run_info(second.run).meta["long_inputs"] == "window:8"
    with pytest.raises(InputError, match="encoder-decoder"):
        precompute(PrecomputeOptions(model="seq2seq-random", input=str(text_file), store=store,
                                     long_inputs="window"))
    with pytest.raises(InputError, match="skips tokens"):
        precompute(options(tmp_path / "g.h5", text_file, "gpt2-random", long_inputs="window:17"))


def test_the_command_line_names_a_bad_choice_in_one_line(tmp_path: Path, text_file: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "attnviz.pipeline.cli", "precompute", "--model", "gpt2-random",
                          "--input", str(text_file), "--store", str(tmp_path / "c.h5"), "--long-inputs", "slide"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--long-inputs" in lines[0] and "window:STRIDE" in lines[0]
