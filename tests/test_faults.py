"""Faults: a full disk, truncated and corrupted stores. One clear line, nothing lost, the job resumable."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attnviz.pipeline.cli import app
from attnviz.pipeline.store import StoreError, StoreReader, verify_store

TINY = ["--set", "layers=2", "--set", "heads=2", "--set", "hidden=32", "--set", "intermediate_size=64"]


def _precompute(store: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["precompute", "--model", "bert-random", "--input", "data/demo.jsonl",
                                      "--store", str(store), "--shard-size", "10", "--limit", "60", *TINY, *extra])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def small_disk(tmp_path: Path):
    """A tmpfs whose size the test sets (needs root); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_one_line_and_resumable(small_disk: Path, tmp_path: Path) -> None:
    reference = tmp_path / "ref.h5"
    assert _precompute(reference, "--capture", "attention,hidden")[0] == 0
    # A disk with room for about half of the store's shards (its analysis and corpus index come after them).
    shards = sum(f.stat().st_size for f in Path(f"{reference}.d").rglob("shard-*.h5"))
    size_kb = max(64, shards // 2048)
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(small_disk)], check=True)
    store = small_disk / "s.h5"
    code, _out, err = _precompute(store, "--capture", "attention,hidden")
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and "precompute" not in line]
    assert len(lines) == 1 and "no space left" in lines[0] and "rerun" in lines[0], err
    with StoreReader(store) as reader:  # readable, with what was committed
        run = reader.runs()[0]
        committed = reader.num_examples(run)
        assert 0 < committed < 60
        for i in range(committed):
            reader.attention(run, i, 0, 0)
    assert not [p for p in small_disk.rglob("*") if ".tmp-" in p.name]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    code, out, err = _precompute(store, "--capture", "attention,hidden")
    assert code == 0, err
    assert f"{committed} resumed" in out
    with StoreReader(store) as reader, StoreReader(reference) as ref:
        run = reader.runs()[0]
        assert reader.num_examples(run) == 60
        np.testing.assert_array_equal(reader.metrics(run, "entropy"), ref.metrics(ref.runs()[0], "entropy"))


def test_truncated_index_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    assert _precompute(store)[0] == 0
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="not a readable HDF5 file"):
        StoreReader(store)
    result = CliRunner().invoke(app, ["inspect", "--store", str(store)])
    assert result.exit_code == 2 and "not a readable HDF5 file" in result.stderr


def _first_shard(store: Path) -> Path:
    return sorted((Path(f"{store}.d")).rglob("shard-*.h5"))[0]


def test_corrupted_shard_middle_then_verify_repair_and_resume(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    assert _precompute(store)[0] == 0
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        expected = [reader.attention(run, i) for i in range(60)]
    shard = _first_shard(store)
    raw = bytearray(shard.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = os.urandom(4096)
    shard.write_bytes(bytes(raw))

    with StoreReader(store) as reader:  # other shards still read; the damaged one fails with one line
        reader.attention(run, 59)
        with pytest.raises(StoreError) as info:
            for i in range(10):
                reader.attention(run, i)
                reader.tokens(run, i)
            reader.examples(run)
            reader.metrics(run, "entropy")
        assert "\n" not in str(info.value) and "verify" in str(info.value)

    problems = verify_store(store).problems
    assert len(problems) == 1 and shard.name in problems[0]
    result = CliRunner().invoke(app, ["verify", "--store", str(store), "--repair"])
    assert result.exit_code == 0, result.output
    with StoreReader(store) as reader:
        assert reader.num_examples(run) == 50
    code, out, err = _precompute(store)
    assert code == 0, err
    assert "50 resumed" in out
    with StoreReader(store) as reader:
        for i in range(60):
            np.testing.assert_array_equal(reader.attention(run, i), expected[i])
    assert verify_store(store).problems == []


def test_missing_shard_is_reported(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    assert _precompute(store)[0] == 0
    _first_shard(store).unlink()
    with StoreReader(store) as reader, pytest.raises(StoreError, match="is missing"):
        reader.attention(reader.runs()[0], 0)
    result = CliRunner().invoke(app, ["verify", "--store", str(store)])
    assert result.exit_code == 1 and "damaged:" in result.stderr


def _one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("store", ["/proc/attnviz-test.h5", "/sys/attnviz-test.h5"])
def test_an_unwritable_store_folder_is_one_line(store: str) -> None:
    code, _out, err = _precompute(Path(store))
    _one_line_error(code, err, "writable folder")


def test_a_folder_given_as_store_is_one_line(tmp_path: Path) -> None:
    code, _out, err = _precompute(tmp_path)
    _one_line_error(code, err, "is a folder")


def test_a_read_only_store_given_a_new_run_is_one_line_and_unchanged(small_disk: Path) -> None:
    store = small_disk / "s.h5"
    assert _precompute(store, "--limit", "10")[0] == 0
    before = {p: p.read_bytes() for p in small_disk.rglob("*") if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        code, _out, err = _precompute(store, "--run", "another")
        _one_line_error(code, err, "cannot", "writable folder")
        assert {p: p.read_bytes() for p in small_disk.rglob("*") if p.is_file()} == before
        with StoreReader(store) as reader:  # a read-only store still reads
            assert reader.num_examples(reader.runs()[0]) == 10
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
