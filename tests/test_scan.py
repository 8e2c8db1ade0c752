"""Scans of raw attention (attnviz.pipeline.scan), the corpus reads of attnviz.pipeline.store and ``attnviz
analyze``: equal to a plain numpy loop, cached in ``STORE.h5.d/<run>/analysis.h5`` without disturbing the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta
from typer.testing import CliRunner

from attnviz.pipeline.cli import app
from attnviz.pipeline.precompute.analyze import analyze
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.scan import scan_run
from attnviz.pipeline.statistics.aggregates import Groups, make_groups
from attnviz.pipeline.statistics.relpos import relpos_profile
from attnviz.pipeline.statistics.similarity import cluster_order
from attnviz.pipeline.store import (
    RunInfo,
    StoreError,
    StoreReader,
    StoreWriter,
    analysis_path,
    load_analysis,
    read_columns,
    read_group_sums,
    read_metric_rows,
    read_texts,
    shard_dir,
)

DATA = Path(__file__).resolve().parents[1] / "data"
TINY = {
    "bert-random": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
                    "intermediate_size": 128},
    "gpt2-random": {"n_layer": 2, "n_head": 4, "n_embd": 64},
    "seq2seq-random": {"encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                       "decoder_attention_heads": 4, "d_model": 64, "encoder_ffn_dim": 128,
                       "decoder_ffn_dim": 128},
}
K = 5  # max offset used in the tests


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scan") / "scan.h5"
    demo = str(DATA / "demo.jsonl")
    precompute(PrecomputeOptions(model="bert-random", input=demo, store=path, run="bert", limit=30,
                                 overrides=TINY["bert-random"], shard_size=8, threads=1, capture="attention"))
    precompute(PrecomputeOptions(model="gpt2-random", input=demo, store=path, run="gpt2", limit=20,
                                 overrides=TINY["gpt2-random"], shard_size=8, threads=1, capture="attention"))
    precompute(PrecomputeOptions(model="seq2seq-random", input=str(DATA / "demo_pairs.jsonl"), store=path, run="s2s",
                                 limit=10, overrides=TINY["seq2seq-random"], shard_size=4, threads=1,
                                 capture="attention"))
    writer = StoreWriter(path)
    patterns = [["previous", "next", "self", "first"], ["sep", "punct", "broad", "heterogeneous"]]
    writer.begin_run("pat", synthetic_meta(2, 4, 40), fingerprint_keys=[])
    for start in (0, 20):
        write_shard(writer, "pat", start, synthetic_examples(patterns, 20, start=start))
    return path


def loop_relpos(reader: StoreReader, run: str, kind: str, k: int) -> np.ndarray:
    """Mean attention by offset, with plain Python loops over examples, heads, queries and offsets."""
    n_layers, n_heads = reader.run_info(run).shape[kind]
    sums = np.zeros((n_layers * n_heads, 2 * k + 1))
    counts = np.zeros(2 * k + 1)
    for e in range(reader.num_examples(run)):
        attn = reader.attention(run, e, kind=kind)
        attn = attn.reshape(n_layers * n_heads, *attn.shape[2:])
        t = attn.shape[-1]
        for i in range(t):
            for o in range(-k, k + 1):
                if 0 <= i + o < t:
                    sums[:, o + k] += attn[:, i, i + o]
                    counts[o + k] += 1
    return sums / np.where(counts > 0, counts, np.nan)


def loop_similarity(reader: StoreReader, run: str, kind: str, limit: int | None = None) -> np.ndarray:
    """Mean over examples of the mean over queries of scipy's Jensen–Shannon distance (base 2), pairwise."""
    n_layers, n_heads = reader.run_info(run).shape[kind]
    c = n_layers * n_heads
    n = reader.num_examples(run) if limit is None else limit
    total = np.zeros((c, c))
    for e in range(n):
        attn = reader.attention(run, e, kind=kind)
        attn = attn.reshape(c, *attn.shape[2:]).astype(np.float64)
        for g in range(c):
            for h in range(g + 1, c):
                d = np.mean([jensenshannon(attn[g, i], attn[h, i], base=2) for i in range(attn.shape[1])])
                total[g, h] += d
                total[h, g] += d
    return total / n


@pytest.mark.parametrize(("run", "kind"), [("bert", "self"), ("gpt2", "self"), ("s2s", "decoder"),
                                           ("pat", "self")])
def test_relpos_scan_equals_numpy_loop(store: Path, run: str, kind: str) -> None:
    reader = StoreReader(store)
    info = reader.run_info(run)
    seen: list[tuple[int, int]] = []
    parts = scan_run(store, info, kinds=[kind], max_offset=K, similarity_examples=0, workers=0,
                     progress=lambda done, total: seen.append((done, total)))
    part = parts[kind]
    assert part.n_examples == info.num_examples and part.js_examples == 0
    got = relpos_profile(part.relpos_sums, part.relpos_counts)
    np.testing.assert_allclose(got, loop_relpos(reader, run, kind, K), rtol=1e-5, atol=1e-7)
    assert seen[0] == (0, len(info.shards)) and seen[-1] == (len(info.shards), len(info.shards))


def test_relpos_shows_the_designed_heads(store: Path) -> None:
    part = scan_run(store, StoreReader(store).run_info("pat"), max_offset=K, similarity_examples=0,
                    workers=0)["self"]
    prof = relpos_profile(part.relpos_sums, part.relpos_counts)
    assert np.argmax(prof[0]) == K - 1  # previous-token head: offset -1
    assert np.argmax(prof[1]) == K + 1  # next-token head: offset +1
    assert np.argmax(prof[2]) == K  # self head: offset 0
    causal = scan_run(store, StoreReader(store).run_info("gpt2"), max_offset=K, similarity_examples=0,
                      workers=0)["self"]
    assert np.all(relpos_profile(causal.relpos_sums, causal.relpos_counts)[:, K + 1:] < 1e-3)


@pytest.mark.parametrize(("run", "kind", "limit"), [("bert", "self", None), ("gpt2", "self", 7),
                                                    ("s2s", "cross", None), ("pat", "self", None)])
def test_similarity_scan_equals_scipy_loop(store: Path, run: str, kind: str, limit: int | None) -> None:
    reader = StoreReader(store)
    part = scan_run(store, reader.run_info(run), kinds=[kind], max_offset=K, similarity_examples=limit,
                    workers=0)[kind]
    assert part.js_examples == (limit or reader.num_examples(run))
    got = part.js_sum / part.js_examples
    np.testing.assert_allclose(got, loop_similarity(reader, run, kind, limit), atol=2e-3)
    assert np.allclose(got, got.T) and np.all(np.diag(got) == 0)
    if kind == "cross":
        assert part.relpos_sums is None  # relative positions need queries and keys over the same tokens


def test_scan_on_dask_cluster_equals_in_process(store: Path) -> None:
    info = StoreReader(store).run_info("s2s")
    local = scan_run(store, info, max_offset=K, workers=0)
    seen: list[tuple[int, int]] = []
    dist = scan_run(store, info, max_offset=K, workers=1, progress=lambda d, t: seen.append((d, t)))
    assert set(dist) == {"self", "decoder", "cross"}
    for kind in dist:
        for name in ("relpos_sums", "relpos_counts", "js_sum"):
            a, b = getattr(local[kind], name), getattr(dist[kind], name)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-12)
    assert seen[-1] == (len(info.shards), len(info.shards))


def test_analyze_caches_aggregates_beside_the_shards(store: Path) -> None:
    reader = StoreReader(store)
    summary = analyze(store, "pat", max_offset=K, workers=0)
    path = analysis_path(store, "pat")
    assert summary.path == path and path.exists()
    assert not [p for p in path.parent.iterdir() if "partial" in p.name or ".tmp" in p.name]
    cached = load_analysis(store, "pat")
    assert cached is not None and not cached.is_stale(reader.run_info("pat"))
    ka = cached.kinds["self"]
    np.testing.assert_allclose(ka.relpos, loop_relpos(reader, "pat", "self", K), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ka.similarity, loop_similarity(reader, "pat", "self"), atol=2e-3)
    assert sorted(ka.order.tolist()) == list(range(8)) and ka.similarity_examples == 40
    np.testing.assert_array_equal(ka.order, cluster_order(ka.similarity))
    # the filter columns and per-group metric sums the dashboard needs for its first view
    cols = read_columns(store, reader.run_info("pat"))
    for name in ("input_index", "n_tokens", "truncated", "key"):
        np.testing.assert_array_equal(getattr(cached.columns, name), getattr(cols, name))
    assert {k: (v.values, v.codes.tolist()) for k, v in cached.columns.fields.items()} == \
        {k: (v.values, v.codes.tolist()) for k, v in cols.fields.items()}
    groups = make_groups(cols)
    fresh = read_group_sums(store, reader.run_info("pat"), "self", reader.metric_names("pat"), groups)
    assert set(ka.group_sums) == set(fresh)
    for name, (sums, counts) in fresh.items():
        np.testing.assert_array_equal(ka.group_sums[name][0], sums)
        np.testing.assert_array_equal(ka.group_sums[name][1], counts)
    # the store still reads the same, and a resumed writer does not adopt the analysis file as a shard
    info = StoreWriter(store).begin_run("pat", synthetic_meta(2, 4, 40), fingerprint_keys=[])
    assert [s.file for s in info.shards] == [s.file for s in reader.run_info("pat").shards]
    assert path.exists()
    assert read_texts(store, info, [0, 25])[1].startswith("sentence 25 ")


def test_analysis_goes_stale_when_shards_change_and_is_removed_with_the_run(store: Path) -> None:
    analyze(store, "bert", max_offset=K, workers=0)
    writer = StoreWriter(store)
    patterns = [["previous", "next"]]
    writer.begin_run("grow", synthetic_meta(1, 2, 20), fingerprint_keys=[])
    write_shard(writer, "grow", 0, synthetic_examples(patterns, 10))
    analyze(store, "grow", max_offset=K, workers=0)
    write_shard(writer, "grow", 10, synthetic_examples(patterns, 10, start=10))
    cached = load_analysis(store, "grow")
    assert cached is not None and cached.n_examples == 10
    assert cached.is_stale(StoreReader(store).run_info("grow"))
    writer.delete_run("grow")
    assert load_analysis(store, "grow") is None
    assert load_analysis(store, "bert") is not None


def test_analyze_command(store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", "--store", str(store), "--run", "gpt2", "--workers", "0",
                                 "--max-offset", "3", "--similarity-examples", "5"])
    assert result.exit_code == 0, result.output
    cached = load_analysis(store, "gpt2")
    assert cached is not None and cached.kinds["self"].relpos.shape == (8, 7)
    assert cached.kinds["self"].similarity_examples == 5
    bad = runner.invoke(app, ["analyze", "--store", str(store), "--run", "nope", "--workers", "0"])
    assert bad.exit_code == 2 and "not in" in bad.output
    with pytest.raises(StoreError, match="max-offset"):
        analyze(store, "gpt2", max_offset=0, workers=0)


# ---- a missing or damaged shard: one line that names the shard and the repair -------------------------------


def _missing(path: Path, _dataset: str) -> None:
    path.unlink()


def _truncated(path: Path, _dataset: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path, _dataset: str) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _without_dataset(path: Path, dataset: str) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        del f[dataset]


FAULTS = {"missing": _missing, "truncated": _truncated, "garbage": _garbage, "without-dataset": _without_dataset}
#: each corpus read (attnviz.pipeline.store.corpus, and the scan) -> a dataset it needs (the one the
#: "without-dataset" fault deletes)
READS = {"columns": "example/meta_json", "metric-rows": "metrics/self/entropy",
         "group-sums": "metrics/self/entropy", "texts": "example/text", "scan": "attention/self/data"}


def _read(name: str, store: Path, info: RunInfo, groups: Groups) -> object:
    if name == "columns":
        return read_columns(store, info)
    if name == "metric-rows":
        return read_metric_rows(store, info, "self", "entropy")
    if name == "group-sums":
        return read_group_sums(store, info, "self", ["entropy"], groups)
    if name == "texts":
        return read_texts(store, info, [0, 15])
    return scan_run(store, info, max_offset=K, workers=0)


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    """A private store with one synthetic run of two shards (examples 0..9 and 10..19)."""
    path = tmp_path / "small.h5"
    writer = StoreWriter(path)
    writer.begin_run("pat", synthetic_meta(1, 2, 20), fingerprint_keys=[])
    for start in (0, 10):
        write_shard(writer, "pat", start, synthetic_examples([["previous", "next"]], 10, start=start))
    return path


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("read", list(READS))
def test_damaged_shard_is_one_line_naming_the_shard_and_the_repair(small_store: Path, fault: str,
                                                                  read: str) -> None:
    info = StoreReader(small_store).run_info("pat")
    groups = make_groups(read_columns(small_store, info))
    _read(read, small_store, info, groups)  # healthy: reads
    shard = info.shards[1].file
    FAULTS[fault](shard_dir(small_store, "pat") / shard, READS[read])
    with pytest.raises(StoreError) as caught:
        _read(read, small_store, info, groups)
    text = str(caught.value)
    assert "\n" not in text and len(text) < 400, text
    assert f"shard {shard} of run 'pat'" in text, text
    assert ("is missing" if fault == "missing" else "is damaged") in text, text
    assert f"attnviz verify --store {small_store} --repair" in text and "precompute" in text, text


def test_shard_swapped_for_another_shard_is_damaged(small_store: Path) -> None:
    """A shard file replaced by another of the run's shards (other example range) is refused, not misread."""
    info = StoreReader(small_store).run_info("pat")
    folder = shard_dir(small_store, "pat")
    (folder / info.shards[0].file).write_bytes((folder / info.shards[1].file).read_bytes())
    with pytest.raises(StoreError, match=f"shard {info.shards[0].file} of run 'pat' is damaged"):
        read_metric_rows(small_store, info, "self", "entropy")


def test_damaged_shard_on_a_dask_worker_is_the_same_one_line(small_store: Path) -> None:
    info = StoreReader(small_store).run_info("pat")
    (shard_dir(small_store, "pat") / info.shards[0].file).unlink()
    with pytest.raises(StoreError, match=f"shard {info.shards[0].file} of run 'pat' is missing"):
        scan_run(small_store, info, max_offset=K, workers=1)


def test_damaged_analysis_file_is_one_line(small_store: Path) -> None:
    analyze(small_store, "pat", max_offset=K, workers=0)
    import h5py

    with h5py.File(analysis_path(small_store, "pat"), "r+") as f:
        del f["columns/key"]
    with pytest.raises(StoreError, match="rerun 'attnviz analyze'"):
        load_analysis(small_store, "pat")
