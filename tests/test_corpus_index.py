"""The corpus index (``attnviz analyze``): exact filtered aggregates without per-example arrays in the server.

Every aggregate the index answers is compared with numpy on the per-example values (the independent reference),
and every Corpus-tab data function answered from an indexed store with the same function on a copy of the store
without its index (the per-example path); then resume and staleness of the index files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta

from attnviz.dashboard.corpus import data
from attnviz.pipeline.precompute.analyze import analyze
from attnviz.pipeline.precompute.corpus_index import build_corpus_index
from attnviz.pipeline.statistics import corpus_index as ci
from attnviz.pipeline.statistics.aggregates import extreme_examples, make_groups
from attnviz.pipeline.statistics.filters import ExampleFilter
from attnviz.pipeline.statistics.significance import compare_rows, pair_examples
from attnviz.pipeline.store import StoreReader, StoreWriter, read_columns
from attnviz.pipeline.store.aggregates import index_path, load_index_columns, load_metric_index

PATTERNS_A = [["previous", "broad", "heterogeneous"], ["sep", "heterogeneous", "first"]]
PATTERNS_B = [["previous", "broad", "heterogeneous"], ["sep", "previous", "first"]]
N = 240
FILTERS = [ExampleFilter.make(), ExampleFilter.make(8, 10), ExampleFilter.make(truncated=False),
           ExampleFilter.make(fields={"source": ["alpha"], "label": ["pos"]}),
           ExampleFilter.make(7, 11, False, {"length_bucket": ["long"]}),
           ExampleFilter.make(fields={"source": ["nowhere"]})]


# ----------------------------------------------------------------------------------------------------------
# The index against numpy
# ----------------------------------------------------------------------------------------------------------


def _reference(values: np.ndarray) -> dict[str, float]:
    """numpy's aggregates of one row's defined values (float64)."""
    v = values[~np.isnan(values)].astype(np.float64)
    if v.size == 0:
        return dict.fromkeys(("mean", "std", "q25", "median", "q75", "p90"), np.nan)
    q = np.quantile(v, [0.25, 0.5, 0.75, 0.9])
    return {"mean": v.mean(), "std": v.std(), "q25": q[0], "median": q[1], "q75": q[2], "p90": q[3]}


@pytest.mark.parametrize("bins", [None, 8])
def test_every_aggregate_of_the_index_equals_numpy_for_any_groups_kept(bins: int | None) -> None:
    rng = np.random.default_rng(3)
    n, n_groups = 5000, 17
    rows = rng.normal(size=(8, n)).astype(np.float32)
    rows[0, ::3] = np.round(rows[0, ::3], 1)  # many ties, across bin boundaries
    rows[1, rng.random(n) < 0.4] = np.nan  # undefined values
    rows[2] = 0.25  # one value
    rows[3] = np.nan  # nothing defined
    rows[4] = rng.integers(0, 3, n)  # three values
    rows[5, :] = np.where(np.arange(n) < 10, 1.0, np.nan)  # ten values
    groups = rng.integers(0, n_groups, n)
    groups[groups == 5] = 6  # an empty group
    index, stored = ci.build_metric_index(rows, groups, n_groups, head_rows=6, sample=np.arange(0, n, 7), bins=bins)
    flat = np.concatenate(stored)

    def read(spans: list[tuple[int, int]]) -> list[np.ndarray]:
        return [flat[lo:hi] for lo, hi in spans]

    assert flat.size == int((~np.isnan(rows)).sum())
    np.testing.assert_array_equal(index.sample, rows[:, ::7])
    for trial in range(40):
        keep = rng.random(n_groups) < (0.5 if trial else 2.0)  # the first trial keeps every group
        kept = keep[groups]
        count, mean, std = ci.filtered_moments(index, keep)
        q = ci.quantiles(index, keep, [0.25, 0.5, 0.75, 0.9], read)
        for r in range(rows.shape[0]):
            ref = _reference(rows[r, kept])
            assert count[r] == int((~np.isnan(rows[r, kept])).sum())
            np.testing.assert_allclose([mean[r], std[r]], [ref["mean"], ref["std"]], rtol=1e-9, atol=1e-12)
            for k, name in enumerate(("q25", "median", "q75", "p90")):
                assert q[k, r] == pytest.approx(ref[name], rel=1e-12, abs=1e-12, nan_ok=True), (r, name)
        for r in range(6):
            masked = np.where(kept, rows[r], np.nan)
            for largest in (True, False):
                values, examples = ci.extremes(index, keep, r, 5, largest=largest)
                expected = extreme_examples(masked, 5, largest=largest)
                np.testing.assert_array_equal(examples, expected)
                np.testing.assert_array_equal(values, masked[expected])
            finite = masked[np.isfinite(masked)].astype(np.float64)
            if finite.size:
                edges = np.linspace(finite.min(), finite.max() if finite.max() > finite.min() else finite.min() + 1,
                                    41)
                np.testing.assert_array_equal(ci.histogram(index, keep, r, edges, read),
                                              np.histogram(finite, bins=edges)[0])


def test_the_sample_takes_the_same_inputs_in_every_run() -> None:
    keys = np.random.default_rng(1).integers(0, 2**63, size=100_000, dtype=np.uint64) * np.uint64(2)
    picked = ci.hash_sample(keys, 1000)
    assert 800 < picked.size < 1200 and np.all(np.diff(picked) > 0)
    shuffled = np.random.default_rng(2).permutation(keys)
    assert set(keys[picked].tolist()) == set(shuffled[ci.hash_sample(shuffled, 1000)].tolist())
    np.testing.assert_array_equal(ci.hash_sample(keys[:500], 1000), np.arange(500))


def test_bins_fit_the_cell_budget() -> None:
    assert ci.bins_for(1) == ci.MAX_BINS and ci.bins_for(10**6) == ci.MIN_BINS
    for groups in (90, 500, 3000):
        assert ci.bins_for(groups) * groups <= ci.CELL_BUDGET


# ----------------------------------------------------------------------------------------------------------
# The Corpus tab's data functions: index against the per-example path
# ----------------------------------------------------------------------------------------------------------


def _write_store(path: Path) -> None:
    writer = StoreWriter(path)
    for run, patterns in (("a", PATTERNS_A), ("b", PATTERNS_B)):
        writer.begin_run(run, synthetic_meta(2, 3, N), fingerprint_keys=[])
        for start in range(0, N, 80):
            write_shard(writer, run, start, synthetic_examples(patterns, 80, start=start, seed=4,
                                                               min_tokens=6, max_tokens=13))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same store twice: indexed by analyze, and without any index."""
    indexed = tmp_path_factory.mktemp("indexed") / "s.h5"
    _write_store(indexed)
    plain = tmp_path_factory.mktemp("plain") / "s.h5"
    _write_store(plain)
    for run in ("a", "b"):
        analyze(indexed, run, max_offset=3, workers=0)
    return indexed, plain


def _runs(store: Path) -> tuple[data.Run, data.Run]:
    with StoreReader(store) as reader:
        return data.Run(str(store), reader.run_info("a")), data.Run(str(store), reader.run_info("b"))


def test_the_corpus_views_read_the_same_numbers_from_the_index(stores: tuple[Path, Path]) -> None:
    data.clear_caches()
    (ia, ib), (pa, pb) = _runs(stores[0]), _runs(stores[1])
    assert data.run_index(ia) is not None and data.run_index(pa) is None
    assert data.filter_choices(ia) == data.filter_choices(pa)
    close = {"rtol": 1e-6, "atol": 1e-7, "equal_nan": True}
    for filt in FILTERS:
        assert data.count(ia, filt) == data.count(pa, filt) == int(data.mask(pa, filt).sum())
        for metric in ("entropy", "mass_prev", "confidence"):
            got, ref = data.heats(ia, "self", metric, filt), data.heats(pa, "self", metric, filt)
            for agg in ref:
                np.testing.assert_allclose(got[agg], ref[agg], err_msg=f"{metric} {agg} {filt}", **close)
            for name, values in data.profile(pa, "self", metric, filt).items():
                np.testing.assert_allclose(data.profile(ia, "self", metric, filt)[name], values, **close)
            if data.count(pa, filt) == 0:
                continue
            for row in (0, 4):
                g, r = data.head_values(ia, "self", metric, filt, row, 5), data.head_values(pa, "self", metric,
                                                                                          filt, row, 5)
                assert (g.n, g.lo, g.hi) == (r.n, r.lo, r.hi)
                for side in ("top", "bottom"):
                    np.testing.assert_array_equal(getattr(g, side)[0], getattr(r, side)[0])
                    np.testing.assert_array_equal(getattr(g, side)[1], getattr(r, side)[1])
                edges = np.linspace(r.lo, r.hi + 1e-3, 41)
                np.testing.assert_array_equal(data.head_histogram(ia, "self", metric, filt, row, edges),
                                              data.head_histogram(pa, "self", metric, filt, row, edges))
            got_t = data.comparison(ia, ib, "self", metric, filt)
            ref_t = data.comparison(pa, pb, "self", metric, filt)
            assert (got_t.method, got_t.n_pairs, got_t.n_a) == (ref_t.method, ref_t.n_pairs, ref_t.n_a)
            np.testing.assert_allclose(got_t.p, ref_t.p, **close)
            np.testing.assert_array_equal(got_t.significant, ref_t.significant)
        means_i, means_p = data.filtered_means(ia, "self", filt), data.filtered_means(pa, "self", filt)
        assert means_i.keys() == means_p.keys()
        for name in means_p:
            np.testing.assert_allclose(means_i[name], means_p[name], **close)
        np.testing.assert_array_equal(data.pattern_labels(ia, "self", filt), data.pattern_labels(pa, "self", filt))


def test_beyond_the_sample_size_the_tests_run_on_the_same_inputs_of_both_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ci, "SAMPLE_SIZE", 100)
    store = tmp_path / "s.h5"
    _write_store(store)
    for run in ("a", "b"):
        analyze(store, run, max_offset=3, workers=0)
    data.clear_caches()
    a, b = _runs(store)
    ca, cb = load_index_columns(store, "a"), load_index_columns(store, "b")
    assert ca is not None and cb is not None
    assert 50 < ca.sample_index.size < 150
    np.testing.assert_array_equal(ca.sample_key, cb.sample_key)  # the same inputs (same texts)
    filt = FILTERS[1]
    test = data.comparison(a, b, "self", "entropy", filt)
    # The reference: the per-example rows of the sampled examples, filtered, paired by input.
    with StoreReader(store) as reader:
        rows = [reader.metrics(run, "entropy").reshape(N, -1).T for run in ("a", "b")]
        keep = [data.mask(data.Run(str(store), reader.run_info(run)), filt) for run in ("a", "b")]
    sa, sb = ca.sample_index, cb.sample_index
    ka, kb = keep[0][sa], keep[1][sb]
    ia, ib = pair_examples(ca.sample_key, cb.sample_key)
    both = ka[ia] & kb[ib]
    ref = compare_rows(rows[0][:, sa], rows[1][:, sb], pairs=(ia[both], ib[both]),
                       columns=(np.flatnonzero(ka), np.flatnonzero(kb)))
    assert test.method == ref.method == "paired-bootstrap" and test.n_pairs == ref.n_pairs < N
    np.testing.assert_array_equal(test.p, ref.p)
    assert bool(test.significant[1 * 3 + 1])  # the head where B differs from A


def test_the_index_resumes_and_a_stale_index_is_not_read(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    _write_store(store)
    analyze(store, "a", max_offset=3, workers=0)
    index_path(store, "a", "self", "entropy").unlink()  # an analyze killed before this metric
    with StoreReader(store) as reader:
        info = reader.run_info("a")
    columns = read_columns(store, info)
    summary = build_corpus_index(store, info, columns, make_groups(columns))
    assert summary.built == ["self/entropy"] and len(summary.fresh) == len(info.meta["metrics"]["self"]) - 1
    # A shard more: every index file is stale, the views read the metric arrays, a new analyze rebuilds all.
    writer = StoreWriter(store)
    write_shard(writer, "a", N, synthetic_examples(PATTERNS_A, 10, start=N, seed=4))
    data.clear_caches()
    with StoreReader(store) as reader:
        run = data.Run(str(store), reader.run_info("a"))
    assert data.run_index(run) is None
    assert data.count(run, ExampleFilter.make()) == N + 10
    analyze(store, "a", max_offset=3, workers=0)
    data.clear_caches()
    with StoreReader(store) as reader:
        run = data.Run(str(store), reader.run_info("a"))
    assert data.run_index(run) is not None and data.count(run, ExampleFilter.make()) == N + 10
    found = load_metric_index(store, "a", "self", "entropy")
    assert found is not None and int(found.index.counts[0].sum()) == N + 10


def test_a_damaged_index_file_falls_back_to_the_metric_arrays(stores: tuple[Path, Path], tmp_path: Path) -> None:
    copy = tmp_path / "s.h5"
    shutil.copy(stores[0], copy)
    shutil.copytree(f"{stores[0]}.d", f"{copy}.d")
    index_path(copy, "a", "self", "entropy").write_bytes(b"not hdf5 at all")
    data.clear_caches()
    run, plain = _runs(copy)[0], _runs(stores[1])[0]
    filt = FILTERS[2]
    np.testing.assert_allclose(data.heat(run, "self", "entropy", "median", filt),
                               data.heat(plain, "self", "entropy", "median", filt), rtol=1e-6)
    assert data.metric_index(run, "self", "entropy") is None
    assert data.metric_index(run, "self", "confidence") is not None
