"""``--attention``: which examples keep raw attention (Q/K/V, hidden states, embeddings), while metrics, tokens and
columns are stored for every example: a metrics-only run, a sampled run, resume, dask, the scans, the Example tab's
message and what ``inspect`` shows."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from typer.testing import CliRunner

from attnviz.dashboard.example.payload import example_payload
from attnviz.dashboard.playground.controls import JOB_KEYS, model_infos, restore_request
from attnviz.dashboard.urlstate import playground_wish
from attnviz.pipeline.cli import app
from attnviz.pipeline.precompute.analyze import analyze
from attnviz.pipeline.precompute.inputs import InputError
from attnviz.pipeline.precompute.keep import AttentionKeep, parse_attention
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import NotKeptError, RunMismatchError, StoreReader, shard_dir

TINY = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
SEQ2SEQ = {"encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
           "d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}
N = 23
CAPTURE = "attention,qkv,hidden,embeddings"


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = (Path(__file__).resolve().parents[1] / "data" / "english_sentences.txt").read_text().splitlines()
    path = tmp_path_factory.mktemp("inputs") / "sentences.txt"
    path.write_text("\n".join(lines[:N]) + "\n", encoding="utf-8")
    return path


def _options(sentences: Path, store: Path, attention: str, **extra: object) -> PrecomputeOptions:
    return PrecomputeOptions(model="bert-random", input=sentences, store=store, overrides=TINY, capture=CAPTURE,
                             shard_size=5, batch_size=4, attention=attention, **extra)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def full_store(sentences: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: every example keeps everything."""
    store = tmp_path_factory.mktemp("full") / "s.h5"
    precompute(_options(sentences, store, "all", run="r"))
    return store


def _shard_bytes(store: Path, run: str) -> int:
    return sum(p.stat().st_size for p in shard_dir(store, run).glob("shard-*.h5"))


def _assert_same_except_raw(reader: StoreReader, run: str, ref: StoreReader, kept: np.ndarray) -> None:
    """Metrics, tokens and columns equal the reference run for every example; raw tensors for exactly ``kept``.

    (Metrics are compared to float32 rounding: a run resumed after a smaller ``--limit`` batches some examples
    with other neighbours, which changes the order of some additions.)"""
    assert reader.num_examples(run) == N
    for name in reader.metric_names(run):
        np.testing.assert_allclose(reader.metrics(run, name), ref.metrics("r", name), rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    table, ref_table = reader.examples(run), ref.examples("r")
    assert table.text == ref_table.text
    np.testing.assert_array_equal(table.n_tokens, ref_table.n_tokens)
    np.testing.assert_array_equal(reader.kept_examples(run), kept)
    for i in range(N):
        assert reader.tokens(run, i) == ref.tokens("r", i)
        if i in set(kept.tolist()):
            np.testing.assert_array_equal(reader.attention(run, i), ref.attention("r", i))
            np.testing.assert_array_equal(reader.qkv(run, i, 1, 2)[2], ref.qkv("r", i, 1, 2)[2])
            np.testing.assert_array_equal(reader.hidden(run, i), ref.hidden("r", i))
            np.testing.assert_array_equal(reader.embeddings(run, i)[1], ref.embeddings("r", i)[1])
            assert reader.has_attention(run, i)
        else:
            assert not reader.has_attention(run, i)
            for read, args in ((reader.attention, (run, i, 0, 0)), (reader.qkv, (run, i, 0, 0)),
                               (reader.hidden, (run, i)), (reader.embeddings, (run, i))):
                with pytest.raises(NotKeptError, match=f"example {i} .* no raw attention"):
                    read(*args)


# ----------------------------------------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------------------------------------


def test_policies_parse_to_one_spelling_and_bad_ones_are_one_line() -> None:
    assert parse_attention("all").meta_value is None
    assert parse_attention(" Every:10 ").spec == "every:10"
    assert parse_attention("sample:5").spec == "sample:5,seed=0"
    assert parse_attention("sample:5,seed=7") == AttentionKeep("sample", 5, 7)
    for bad in ("some", "every:0", "first:-1", "first:3,seed=1", "sample:x", "every:10:3", ""):
        with pytest.raises(InputError) as err:
            parse_attention(bad)
        assert "\n" not in str(err.value) and "--attention" in str(err.value)


def test_the_kept_examples_depend_only_on_the_index_the_policy_and_the_input() -> None:
    idx = np.arange(20)
    np.testing.assert_array_equal(parse_attention("first:3").keep_mask(20, 20), idx < 3)
    np.testing.assert_array_equal(parse_attention("every:7").keep_mask(20, 20), idx % 7 == 0)
    assert not parse_attention("none").keep_mask(20, 20).any()
    full = parse_attention("sample:6,seed=3").keep_mask(20, 20)
    assert full.sum() == 6
    for limit in (1, 5, 13):  # a --limit keeps the examples of the whole input's sample below it
        np.testing.assert_array_equal(parse_attention("sample:6,seed=3").keep_mask(limit, 20), full[:limit])
    assert not np.array_equal(parse_attention("sample:6,seed=4").keep_mask(20, 20), full)
    assert parse_attention("sample:50").keep_mask(20, 20).all()


# ----------------------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------------------


def _inspect(store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``attnviz inspect`` on a console wide enough for every column (the console is made when the CLI is
    imported, so COLUMNS at call time does not reach it)."""
    from attnviz.pipeline import cli

    monkeypatch.setattr(cli.out, "width", 400)
    result = CliRunner().invoke(app, ["inspect", "--store", str(store)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_metrics_only_run_stores_metrics_tokens_and_columns_of_every_example(
        sentences: Path, full_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "s.h5"
    precompute(_options(sentences, store, "none", run="m"))
    with StoreReader(store) as reader, StoreReader(full_store) as ref:
        _assert_same_except_raw(reader, "m", ref, np.zeros(0, np.int64))
        assert reader.nearest_kept("m", 4) is None
        assert reader.run_info("m").meta["attention"] == "none"
    assert _shard_bytes(store, "m") < 0.4 * _shard_bytes(full_store, "r")  # tiny examples: mostly HDF5 headers
    assert f"none: 0 of {N}" in _inspect(store, monkeypatch)


def test_a_sampled_run_keeps_exactly_the_sampled_examples_and_resumes_the_same(
        sentences: Path, full_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "s.h5"
    spec = "sample:6,seed=11"
    expected = np.flatnonzero(parse_attention(spec).keep_mask(N, N))
    precompute(_options(sentences, store, spec, run="s", limit=12))  # an interrupted run: 12 of 23
    with StoreReader(store) as reader:
        np.testing.assert_array_equal(reader.kept_examples("s"), expected[expected < 12])
    precompute(_options(sentences, store, spec, run="s"))  # resumed to the whole input
    first_shard = shard_dir(store, "s") / "shard-0000000000-00000005.h5"
    first_shard.unlink()  # a lost shard is recomputed with the same kept examples
    StoreReader(store).close()
    from attnviz.pipeline.store import verify_store

    verify_store(store, repair=True)
    precompute(_options(sentences, store, spec, run="s"))
    with StoreReader(store) as reader, StoreReader(full_store) as ref:
        _assert_same_except_raw(reader, "s", ref, expected)
        assert reader.run_info("s").meta["attention"] == spec
        missing = int(np.setdiff1d(np.arange(N), expected)[0])
        nearest = reader.nearest_kept("s", missing)
        assert nearest in set(expected.tolist())
        assert all(abs(k - missing) >= abs(nearest - missing) for k in expected)
    with pytest.raises(RunMismatchError, match="attention"):  # another policy on the same run is refused
        precompute(_options(sentences, store, "every:2", run="s"))
    assert f"{spec}: {expected.size} of {N}" in _inspect(store, monkeypatch)


def test_the_example_tab_says_which_example_has_attention(sentences: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    precompute(_options(sentences, store, "every:5", run="e"))
    with StoreReader(store) as reader:
        key = {"run": "e", "example": 7, "kind": "self", "attn": "raw", "detail": "all"}
        out = example_payload(reader, key)
        assert out["error"] == ("Example 7 has metrics but no raw attention (run 'e' kept attention for --attention "
                                "every:5): the nearest example with attention is 5.")
        assert out["nearest"] == 5
        assert "example=5" in out["nearest_href"] and "run=e" in out["nearest_href"]
        assert "attention" not in out  # nothing to draw
        kept = example_payload(reader, {**key, "example": 10})
        assert kept["error"] is None and kept["tq"] == len(reader.tokens("e", 10))
        assert example_payload(reader, {**key, "example": 8})["nearest"] == 10  # the nearer one
        # the Playground link: the example's text on the run's model at its size, run at once
        href = out["recompute_href"]
        assert href.startswith("/?tab=playground#")
        wish = playground_wish(urlsplit(href).fragment)
        assert wish == {"model": "bert-random", "layers": "2", "heads": "4", "hidden": "64", "input": "typed",
                        "text": reader.examples("e").text[7], "result": "run", "kind": "self", "layer": "0",
                        "head": "0"}
        request = restore_request(wish, model_infos())
        assert request["op"] == "run" and not request["note"]
        assert request["values"][JOB_KEYS.index("text")] == reader.examples("e").text[7]
        assert kept.get("recompute_href") is None  # a kept example draws its attention: no links
    none = tmp_path / "n.h5"
    precompute(_options(sentences, none, "none", run="n", limit=3))
    with StoreReader(none) as reader:
        out = example_payload(reader, {"run": "n", "example": 1, "kind": "self", "attn": "raw", "detail": "all"})
        assert out["nearest"] is None and out["nearest_href"] is None
        assert out["error"].startswith("Example 1 has metrics but no raw attention") and "\n" not in out["error"]


def test_dask_workers_write_the_same_sampled_run(sentences: Path, full_store: Path, tmp_path: Path) -> None:
    from attnviz.pipeline.precompute.distributed import precompute_distributed

    store = tmp_path / "s.h5"
    spec = "first:7"
    precompute_distributed(_options(sentences, store, spec, run="d", workers=2))
    with StoreReader(store) as reader, StoreReader(full_store) as ref:
        _assert_same_except_raw(reader, "d", ref, np.arange(7))


def test_the_scans_read_only_kept_attention(sentences: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    precompute(_options(sentences, store, "every:4", run="a"))
    summary = analyze(store, "a", workers=0, similarity_examples=0)
    assert summary.similarity_examples == len(range(0, N, 4))
    none = tmp_path / "n.h5"
    shutil.copy(sentences, tmp_path / "in.txt")
    precompute(_options(tmp_path / "in.txt", none, "none", run="n"))
    assert analyze(none, "n", workers=0).similarity_examples == 0  # nothing to scan, the rest still cached


def test_an_encoder_decoder_run_keeps_all_three_kinds_for_the_kept_examples(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("The house is big.\tLa casa es grande.\nHello!\t¡Hola!\nI love you.\tTe quiero.\n")
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="seq2seq-random", input=pairs, store=store, overrides=SEQ2SEQ,
                                 attention="every:2", capture="attention,qkv,embeddings"))
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        np.testing.assert_array_equal(reader.kept_examples(run), [0, 2])
        for kind in ("self", "decoder", "cross"):
            assert reader.attention(run, 2, kind=kind).shape[:2] == (1, 2)
            assert not np.isnan(reader.metrics(run, "entropy", kind)).all()
            with pytest.raises(NotKeptError):
                reader.attention(run, 1, kind=kind)
        assert reader.embeddings(run, 0, "target")[0].shape[0] == len(reader.tokens(run, 0, "target"))


def test_a_bad_policy_on_the_command_line_is_one_line(sentences: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["precompute", "--model", "bert-random", "--input", str(sentences),
                                      "--store", str(tmp_path / "s.h5"), "--attention", "every:0"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--attention" in lines[0]
    assert not (tmp_path / "s.h5").exists()
