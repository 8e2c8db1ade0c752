"""Bad input gives one clear line (exit code 2) and writes nothing half."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from attnviz.pipeline.cli import app
from attnviz.pipeline.store import SCHEMA_VERSION, StoreReader

TINY = ["--set", "layers=1", "--set", "heads=2", "--set", "hidden=32", "--set", "intermediate_size=64"]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr if hasattr(result, "stderr") else result.output


def _precompute(inp: Path | str, store: Path, *extra: str) -> tuple[int, str]:
    return _run("precompute", "--model", "bert-random", "--input", str(inp), "--store", str(store), *TINY, *extra)


def _assert_one_line_error(code: int, text: str, *needles: str) -> None:
    assert code == 2, text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error:"), text
    assert "Traceback" not in text
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(tmp_path: Path) -> None:
    code, text = _precompute(tmp_path / "nope.txt", tmp_path / "s.h5")
    _assert_one_line_error(code, text, "does not exist")
    assert not (tmp_path / "s.h5").exists()


def test_empty_and_blank_only_files(tmp_path: Path) -> None:
    for content in ("", "\n\n   \n"):
        path = tmp_path / "empty.txt"
        path.write_text(content)
        code, text = _precompute(path, tmp_path / "s.h5")
        _assert_one_line_error(code, text, "no sentences")
    assert not (tmp_path / "s.h5").exists()


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("one sentence\n\n  \ntwo sentences here\n")
    result = CliRunner().invoke(app, ["precompute", "--model", "bert-random", "--input", str(path),
                                      "--store", str(tmp_path / "s.h5"), *TINY])
    assert result.exit_code == 0, result.output
    assert "2 blank lines skipped" in result.stdout
    with StoreReader(tmp_path / "s.h5") as reader:
        table = reader.examples(reader.runs()[0])
        assert table.text == ["one sentence", "two sentences here"]
        assert table.meta_column("line") == [1, 4]


def test_undecodable_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nalso fine\nbad \xff\xfe byte\n")
    code, text = _precompute(path, tmp_path / "s.h5")
    _assert_one_line_error(code, text, "line 3", "UTF-8")


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(bytes(range(256)) * 4)
    code, text = _precompute(path, tmp_path / "s.h5")
    _assert_one_line_error(code, text, "binary")


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("pairs.tsv", "only one column\n", "2 non-empty tab-separated columns"),
    ("x.jsonl", '{"text": "fine"}\n{not json}\n', "line 2"),
    ("y.jsonl", '{"label": "no text"}\n', "'text'"),
    ("z.jsonl", '[1, 2]\n', "JSON object"),
])
def test_wrong_tsv_and_jsonl_shapes(tmp_path: Path, name: str, content: str, needle: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    code, text = _precompute(path, tmp_path / "s.h5")
    _assert_one_line_error(code, text, needle)


def test_unknown_model_lists_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("hello\n")
    code, text = _run("precompute", "--model", "gpt5", "--input", str(path), "--store", str(tmp_path / "s.h5"))
    _assert_one_line_error(code, text, "unknown model 'gpt5'", "minilm", "gpt2-random")


def test_invalid_model_info_file_names_file_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "model_info"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: broken\nfamily: transformer\nsource: {kind: random, "
                                        "architecture: bert}\ntasks: [classification]\n")
    monkeypatch.setenv("ATTNVIZ_MODEL_INFO", str(folder))
    path = tmp_path / "in.txt"
    path.write_text("hello\n")
    code, text = _run("precompute", "--model", "broken", "--input", str(path), "--store", str(tmp_path / "s.h5"))
    _assert_one_line_error(code, text, "broken.yaml", "family")


def test_store_of_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    with h5py.File(store, "w") as f:
        f.attrs["format"] = "attnviz-store"
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    before = store.read_bytes()
    path = tmp_path / "in.txt"
    path.write_text("hello\n")
    code, text = _precompute(path, store)
    _assert_one_line_error(code, text, "schema version", "upgrade attnviz")
    assert store.read_bytes() == before


def test_not_a_store(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    store.write_text("not hdf5 at all")
    path = tmp_path / "in.txt"
    path.write_text("hello\n")
    code, text = _precompute(path, store)
    _assert_one_line_error(code, text, "not a readable HDF5 file")
    code, text = _run("inspect", "--store", str(store))
    _assert_one_line_error(code, text, "not a readable HDF5 file")


def test_different_config_for_existing_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("hello there\nsecond one\n")
    store = tmp_path / "s.h5"
    code, _ = _precompute(path, store, "--run", "r")
    assert code == 0
    with StoreReader(store) as reader:
        before = reader.attention("r", 1)
    code, text = _run("precompute", "--model", "bert-random", "--input", str(path), "--store", str(store),
                      "--run", "r", "--set", "layers=2", "--set", "heads=2", "--set", "hidden=32")
    _assert_one_line_error(code, text, "different configuration", "--run")
    with StoreReader(store) as reader:
        assert reader.num_examples("r") == 2
        assert (reader.attention("r", 1) == before).all()


def test_bad_option_values(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("hello\n")
    for extra, needle in ((["--capture", "attention,logits"], "unknown capture"), (["--dtype", "int8"], "dtype"),
                          (["--set", "oops"], "key=value"), (["--run", "../evil"], "invalid run name")):
        code, text = _precompute(path, tmp_path / "s.h5", *extra)
        _assert_one_line_error(code, text, needle)


# --- Every bad input against an existing store: exit 2, one line, no traceback, the store's content unchanged ---

BAD_LINES = {
    "in.txt": b"hello there\nsecond one\n",
    "empty.txt": b"",
    "blank.txt": b"\n \n\n",
    "undecodable.txt": b"fine\nbad \xff\xfe byte\n",
    "binary.txt": bytes(range(256)) * 4,
    "pairs.tsv": b"only one column\n",
    "records.jsonl": b'{"target": "no text"}\n',
    "broken.jsonl": b"{not json\n",
}
GPT2 = ["--model", "gpt2-random"]
MINILM = ["--model", "minilm"]

#: (case id, arguments after ``precompute`` (``{in}`` etc. name files of BAD_LINES, ``{store}`` the store),
#:  words the one line must hold). Model defaults to tiny bert-random unless the arguments name one.
BAD_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("missing file", ["--input", "{dir}/nope.txt"], ("does not exist",)),
    ("input is a folder", ["--input", "{dir}"], ("is a folder",)),
    ("empty file", ["--input", "{empty.txt}"], ("no sentences",)),
    ("blank-only file", ["--input", "{blank.txt}"], ("no sentences",)),
    ("undecodable bytes", ["--input", "{undecodable.txt}"], ("line 2", "UTF-8")),
    ("binary file", ["--input", "{binary.txt}"], ("binary",)),
    ("one-column TSV", ["--input", "{pairs.tsv}"], ("line 1", "tab-separated")),
    ("JSONL without text", ["--input", "{records.jsonl}"], ("line 1", "'text'")),
    ("invalid JSONL", ["--input", "{broken.jsonl}"], ("line 1", "invalid JSON")),
    ("unknown model", ["--model", "gpt5"], ("unknown model 'gpt5'", "minilm")),
    ("unknown capture", ["--capture", "attention,logits"], ("unknown capture",)),
    ("unknown dtype", ["--dtype", "int8"], ("dtype",)),
    ("--set without =", ["--set", "oops"], ("key=value",)),
    ("run name with ..", ["--run", "../evil"], ("invalid run name",)),
    ("another config for the run", ["--run", "r", "--set", "layers=2"], ("different configuration", "--run")),
    ("--batch-size 0", ["--batch-size", "0"], ("--batch-size",)),
    ("--limit 0", ["--limit", "0"], ("--limit",)),
    ("--shard-size 0", ["--shard-size", "0"], ("--shard-size",)),
    ("--workers 0", ["--workers", "0"], ("--workers",)),
    ("--mantissa-bits 11", ["--mantissa-bits", "11"], ("--mantissa-bits",)),
    ("--threads -1", ["--threads", "-1"], ("--threads", "at least 1")),
    ("--threads 0", ["--threads", "0"], ("--threads", "at least 1")),
    ("--max-length -3", ["--max-length", "-3"], ("--max-length", "at least 1")),
    ("--max-length 0", ["--max-length", "0"], ("--max-length", "at least 1")),
    ("--max-length 1 (below the special tokens)", ["--max-length", "1"], ("--max-length 1", "at least 3")),
    ("--set n_layer=abc", [*GPT2, "--set", "n_layer=abc"], ("n_layer", "whole number")),
    ("--set n_layer=-1", [*GPT2, "--set", "n_layer=-1"], ("n_layer", "at least 1")),
    ("--set num_hidden_layers=0", [*MINILM, "--set", "num_hidden_layers=0"], ("num_hidden_layers", "at least 1")),
    ("--set bogus_key=3", [*GPT2, "--set", "bogus_key=3"], ("no such config key", "n_layer", "n_head")),
    ("weights that cannot fit", [*GPT2, "--set", "n_layer=100000000"], ("needs about", "TB", "available")),
    ("random: huge length", ["--input", "random:length=99999999999999999999,count=1"], ("longer than",)),
    ("random: longer than the model", [*MINILM, "--input", "random:length=5000,count=1"],
     ("longer than minilm accepts", "length=254")),
    ("random: count 0", ["--input", "random:count=0"], ("at least 1",)),
    ("random: unknown key", ["--input", "random:size=3"], ("random:length=N",)),
    ("store under /proc", ["--store", "/proc/attnviz-x.h5"], ("writable folder",)),
    ("store is a folder", ["--store", "{dir}"], ("is a folder",)),
]


def _store_content(store: Path) -> dict[str, str]:
    """A hash per run of everything a reader shows: example texts, tokens, every attention matrix, every metric."""
    import hashlib

    digests: dict[str, str] = {}
    with StoreReader(store) as reader:
        for run in reader.runs():
            h = hashlib.sha256()
            table = reader.examples(run)
            h.update(repr(table.text).encode())
            for i in range(reader.num_examples(run)):
                h.update(repr(reader.tokens(run, i)).encode())
                h.update(reader.attention(run, i).tobytes())
            for name in reader.metric_names(run):
                h.update(reader.metrics(run, name).tobytes())
            digests[run] = h.hexdigest()
    return digests


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one committed run ``r`` (tiny bert-random over in.txt), built once and copied per case."""
    folder = tmp_path_factory.mktemp("reference")
    for name, content in BAD_LINES.items():
        (folder / name).write_bytes(content)
    code, text = _precompute(folder / "in.txt", folder / "store" / "s.h5", "--run", "r")
    assert code == 0, text
    return folder


@pytest.mark.parametrize(("case", "args", "needles"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_one_line_and_leaves_the_store_unchanged(
        reference_store: Path, tmp_path: Path, case: str, args: list[str], needles: tuple[str, ...]) -> None:
    import shutil

    shutil.copytree(reference_store, tmp_path / "work")
    folder = tmp_path / "work"
    store = folder / "store" / "s.h5"
    before = _store_content(store)
    names = {"dir": str(folder), "store": str(store), **{name: str(folder / name) for name in BAD_LINES}}
    given = [re.sub(r"\{([^}]+)\}", lambda m: names[m.group(1)], a) for a in args]
    defaults = {"--model": "bert-random", "--input": str(folder / "in.txt"), "--store": str(store)}
    command = ["precompute", *[x for flag, value in defaults.items() if flag not in given for x in (flag, value)]]
    if "--model" not in given:
        command += TINY
    code, text = _run(*command, *given)
    _assert_one_line_error(code, text, *needles)
    assert _store_content(store) == before, case
    with StoreReader(store) as reader:
        assert reader.runs() == ["r"]


def test_a_failed_configuration_does_not_block_the_right_command(tmp_path: Path) -> None:
    """A refused --set leaves no run behind: the same command without it then succeeds (issue 12, item 2)."""
    path = tmp_path / "in.txt"
    path.write_text("hello there\nsecond one\n")
    store = tmp_path / "s.h5"
    for bad in ("n_layer=-1", "n_layer=abc", "bogus_key=3"):
        code, text = _run("precompute", "--model", "gpt2-random", "--input", str(path), "--store", str(store),
                          "--set", bad)
        _assert_one_line_error(code, text)
    code, text = _run("precompute", "--model", "gpt2-random", "--input", str(path), "--store", str(store),
                      "--set", "n_layer=1")
    assert code == 0, text
    with StoreReader(store) as reader:
        assert reader.num_examples("gpt2-random--in") == 2


def test_max_length_is_enforced_on_the_stored_tokens(tmp_path: Path) -> None:
    """``--max-length N`` stores at most N tokens per example and flags the cut ones (issue 12, item 5)."""
    path = tmp_path / "in.txt"
    path.write_text("a rather long sentence with many words in it\nshort\n")
    store = tmp_path / "s.h5"
    code, text = _precompute(path, store, "--max-length", "3")
    assert code == 0, text
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        assert reader.run_info(run).meta["max_length"] == 3
        tokens = [reader.tokens(run, i) for i in range(2)]
        assert [len(t) for t in tokens] == [3, 3]
        assert tokens[0][0] == "[CLS]" and tokens[0][-1] == "[SEP]"
        assert reader.attention(run, 0).shape[-1] == 3
        assert reader.examples(run).truncated.tolist() == [True, False]


def test_a_byte_order_mark_is_not_part_of_the_first_sentence(tmp_path: Path) -> None:
    """A UTF-8 BOM (Windows editors) is dropped: the first text and GPT-2's first token are the sentence's."""
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfHello there.\nSecond line.\n")
    store = tmp_path / "s.h5"
    code, text = _run("precompute", "--model", "gpt2-random", "--input", str(path), "--store", str(store),
                      "--set", "n_layer=1")
    assert code == 0, text
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        assert reader.examples(run).text[0] == "Hello there."
        assert reader.tokens(run, 0)[0] == "Hello"


def test_random_inputs_are_built_only_when_read(tmp_path: Path) -> None:
    """``random:count=100000000 --limit 2`` builds two examples, not 10⁸ (issue 12, item 3): seconds, not hours."""
    import time

    t0 = time.perf_counter()
    code, text = _precompute("random:count=100000000,length=8", tmp_path / "s.h5", "--limit", "2")
    assert code == 0, text
    assert time.perf_counter() - t0 < 60
    with StoreReader(tmp_path / "s.h5") as reader:
        assert reader.num_examples(reader.runs()[0]) == 2


@pytest.mark.parametrize("model", ["gpt2-random", "bert-random", "seq2seq-random"])
def test_the_weight_estimate_is_close_to_the_built_model(model: str) -> None:
    """The estimate that refuses configurations too large to build is within 10% of a real model's size."""
    from attnviz.pipeline.models.loading import estimate_parameters, load_model

    lm = load_model(model)
    actual = sum(p.numel() for p in lm.model.base_model.parameters())
    assert abs(estimate_parameters(lm.config) - actual) / actual < 0.10, (estimate_parameters(lm.config), actual)
