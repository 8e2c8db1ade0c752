"""The store itself: round trip, lazy slices, the documented plain-h5py layout, readers during writes."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from store_helpers import write_shard

from attnviz.pipeline.records import ExampleResult, TokenSequence
from attnviz.pipeline.store import (
    ExampleOutOfRangeError,
    MissingCaptureError,
    StoreError,
    StoreReader,
    StoreWriter,
    UnknownRunError,
)

META = {"kinds": ["self"], "shape": {"self": [2, 3]}, "metrics": {"self": ["entropy"]}, "model": "synthetic",
        "family": "encoder", "random_weights": True, "capture": ["attention"], "planned_examples": 6}


def _example(i: int, t: int, rng: np.random.Generator) -> ExampleResult:
    attn = rng.random((2, 3, t, t)).astype(np.float32)
    attn /= attn.sum(-1, keepdims=True)
    return ExampleResult(
        input_index=i, text=f"sentence {i}", source=TokenSequence(np.arange(t, dtype=np.int32) + 10,
                                                               [f"t{k}" for k in range(t)], np.zeros(t, np.uint8)),
        attention={"self": attn}, metrics={"self": {"entropy": rng.random((2, 3)).astype(np.float32)}},
        meta={"corpus": "x", "label_id": i % 2})


def _fill(store: Path, dtype: str = "float32") -> list[ExampleResult]:
    rng = np.random.default_rng(0)
    results = [_example(i, t, rng) for i, t in enumerate([3, 7, 1, 12, 5, 2])]
    writer = StoreWriter(store)
    writer.begin_run("r", META, fingerprint_keys=["model"])
    write_shard(writer, "r", 3, results[3:], dtype=dtype)  # shards may arrive out of order
    write_shard(writer, "r", 0, results[:3], dtype=dtype)
    return results


def test_round_trip_and_slices(tmp_path: Path) -> None:
    results = _fill(tmp_path / "s.h5")
    with StoreReader(tmp_path / "s.h5") as reader:
        assert reader.runs() == ["r"] and reader.num_examples("r") == 6
        for i, r in enumerate(results):
            full = reader.attention("r", i)
            np.testing.assert_array_equal(full, r.attention["self"])
            np.testing.assert_array_equal(reader.attention("r", i, layer=1), r.attention["self"][1])
            np.testing.assert_array_equal(reader.attention("r", i, head=2), r.attention["self"][:, 2])
            np.testing.assert_array_equal(reader.attention("r", i, 1, 2), r.attention["self"][1, 2])
            assert reader.tokens("r", i) == r.source.strings
        np.testing.assert_array_equal(reader.metrics("r", "entropy"),
                                      np.stack([r.metrics["self"]["entropy"] for r in results]))
        table = reader.examples("r")
        assert table.text == [r.text for r in results]
        assert table.n_tokens.tolist() == [3, 7, 1, 12, 5, 2]
        assert table.meta_column("label_id") == [0, 1, 0, 1, 0, 1]


def test_float16_storage_is_within_rounding(tmp_path: Path) -> None:
    results = _fill(tmp_path / "s.h5", dtype="float16")
    with StoreReader(tmp_path / "s.h5") as reader:
        got = reader.attention("r", 3)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, results[3].attention["self"], atol=5e-4, rtol=1e-3)


def test_errors_are_specific(tmp_path: Path) -> None:
    _fill(tmp_path / "s.h5")
    with StoreReader(tmp_path / "s.h5") as reader:
        with pytest.raises(UnknownRunError, match="runs: r"):
            reader.attention("nope", 0)
        with pytest.raises(ExampleOutOfRangeError, match=r"0\.\.5"):
            reader.attention("r", 6)
        with pytest.raises(StoreError, match="layer 2 is out of range"):
            reader.attention("r", 0, layer=2)
        with pytest.raises(MissingCaptureError, match="cross"):
            reader.attention("r", 0, kind="cross")
        with pytest.raises(MissingCaptureError, match="qkv"):
            reader.qkv("r", 0, 0, 0)
        with pytest.raises(StoreError, match="no metric"):
            reader.metrics("r", "bogus")


def test_documented_layout_reads_with_plain_h5py(tmp_path: Path) -> None:
    import hdf5plugin  # noqa: F401 - registers the codec, as docs/store-format.md says

    results = _fill(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "r") as index:
        assert index.attrs["format"] == "attnviz-store"
        meta = json.loads(index["runs/r"].attrs["meta_json"])
        files = [f.decode() for f in index["runs/r/shard_files"][()]]
        starts = index["runs/r/shard_start"][()].tolist()
    assert starts == [0, 3] and meta["shape"]["self"] == [2, 3]
    with h5py.File(tmp_path / "s.h5.d" / "r" / files[1], "r") as shard:
        off = shard["tokens/source/offsets"][()]
        t = int(off[1] - off[0])
        lo = int(shard["attention/self/data_offsets"][0]) + (1 * 3 + 2) * t * t
        a = shard["attention/self/data"][lo:lo + t * t].reshape(t, t)
    np.testing.assert_array_equal(a, results[3].attention["self"][1, 2])


def test_reader_sees_new_shards_after_refresh(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    store = tmp_path / "s.h5"
    writer = StoreWriter(store)
    writer.begin_run("r", META, fingerprint_keys=[])
    write_shard(writer, "r", 0, [_example(0, 4, rng)])
    reader = StoreReader(store)
    assert reader.num_examples("r") == 1
    assert reader.metrics("r", "entropy").shape == (1, 2, 3)
    write_shard(writer, "r", 1, [_example(1, 5, rng), _example(2, 6, rng)])
    assert reader.num_examples("r") == 1  # until refreshed
    assert reader.refresh() is True
    assert reader.num_examples("r") == 3
    assert reader.metrics("r", "entropy").shape == (3, 2, 3)  # cache dropped
    assert reader.refresh() is False
    reader.close()


def test_orphan_shard_is_adopted_and_temp_files_removed(tmp_path: Path) -> None:
    from attnviz.pipeline.store import shard_dir, shard_file_name, write_shard_file

    rng = np.random.default_rng(2)
    store = tmp_path / "s.h5"
    writer = StoreWriter(store)
    writer.begin_run("r", META, fingerprint_keys=[])
    # A kill between the shard's rename and the index update leaves a finished shard not in the index,
    # and a kill mid-write leaves a temp file.
    write_shard_file(shard_dir(store, "r") / shard_file_name(0, 2), "r", 0, [_example(0, 3, rng), _example(1, 2, rng)])
    (shard_dir(store, "r") / "shard-0000000002-00000001.h5.tmp-1-1").write_bytes(b"half")
    assert StoreReader(store).num_examples("r") == 0
    StoreWriter(store).begin_run("r", META, fingerprint_keys=[])
    assert StoreReader(store).num_examples("r") == 2
    assert not any(".tmp-" in p.name for p in shard_dir(store, "r").iterdir())


def test_delete_run(tmp_path: Path) -> None:
    _fill(tmp_path / "s.h5")
    StoreWriter(tmp_path / "s.h5").delete_run("r")
    with StoreReader(tmp_path / "s.h5") as reader:
        assert reader.runs() == []
    assert not (tmp_path / "s.h5.d" / "r").exists()


@pytest.mark.parametrize("bits", [1, 5, 9])
def test_round_mantissa_over_every_float16(bits: int) -> None:
    from attnviz.pipeline.store import round_mantissa

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.isfinite(every)
    got = round_mantissa(every, bits)
    assert got.dtype == np.float16
    x, y = every[finite].astype(np.float64), got[finite].astype(np.float64)
    normal = np.abs(x) >= 2.0**-14
    assert (np.abs(y - x)[normal] <= 2.0 ** -(bits + 1) * np.abs(x[normal])).all()
    assert (np.abs(y - x)[~normal] <= 2.0 ** -(bits + 1) * 2.0**-14).all()
    assert not (got[finite].view(np.uint16) & ((1 << (10 - bits)) - 1)).any()  # dropped bits are zero
    np.testing.assert_array_equal(round_mantissa(got, bits).view(np.uint16), got.view(np.uint16))  # idempotent
    positive = np.sort(x[x > 0])
    assert (np.diff(round_mantissa(positive.astype(np.float16), bits).astype(np.float64)) >= 0).all()  # monotone
    assert np.isfinite(got[finite]).all()  # 65504 does not round up to inf
    special = ~finite
    np.testing.assert_array_equal(np.isnan(got[special]), np.isnan(every[special]))
    np.testing.assert_array_equal(got[special & ~np.isnan(every)], every[special & ~np.isnan(every)])


def test_round_mantissa_float32_and_bad_bits() -> None:
    from attnviz.pipeline.store import StoreError, round_mantissa

    x = np.random.default_rng(0).random(10_000).astype(np.float32)
    np.testing.assert_array_equal(round_mantissa(x, 23), x)
    y = round_mantissa(x, 7)
    assert y.dtype == np.float32 and (np.abs(y - x) <= 2.0**-8 * x).all() and not np.array_equal(x, y)
    with pytest.raises(StoreError, match="between 1 and 10"):
        round_mantissa(x.astype(np.float16), 0)
    with pytest.raises(StoreError, match="float16 or float32"):
        round_mantissa(x.astype(np.float64), 5)


def _imports_h5py(source: str, filename: str) -> list[int]:
    """Line numbers of ``import h5py`` / ``from h5py… import`` statements (anywhere, also inside functions)."""
    lines = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name.split(".")[0] == "h5py" for name in names):
            lines.append(node.lineno)
    return lines


def test_only_the_store_package_imports_h5py() -> None:
    """pipeline/store/ is the only code that knows the file layout: no other module of pipeline/ or dashboard/
    imports h5py (bench/ and tests/ may, to build or damage files)."""
    repo = Path(__file__).resolve().parents[1]
    store = repo / "pipeline" / "store"
    files = [p for folder in ("pipeline", "dashboard") for p in sorted((repo / folder).rglob("*.py"))]
    assert len(files) > 20 and any(p.parent == store for p in files)
    offenders = [f"{p.relative_to(repo)}:{line}" for p in files if store not in p.parents
                 for line in _imports_h5py(p.read_text(), str(p))]
    assert offenders == [], f"h5py imported outside pipeline/store/: {offenders}"
    assert _imports_h5py("def f():\n    import h5py as h\n", "x") == [2]  # the check sees nested imports
    assert _imports_h5py("from h5py import File\n", "x") == [1]
