"""Bad input gives one clear line (exit code 2) and writes nothing half."""

from __future__ import annotations

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
