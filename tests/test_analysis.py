"""Corpus aggregates, filters, A/B significance and head pattern labels (attnviz.pipeline.statistics, .scan).

Every corpus number is checked against a direct numpy computation on what ``StoreReader`` returns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta

from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.statistics.aggregates import (
    aggregate,
    aggregate_rows,
    aggregate_rows_all,
    extreme_examples,
    group_mean,
    head_major,
    layer_profile,
    layer_rows,
    make_groups,
)
from attnviz.pipeline.statistics.filters import MISSING, ExampleColumns, ExampleFilter, filter_mask
from attnviz.pipeline.statistics.patterns import PATTERN_METRICS, classify_heads
from attnviz.pipeline.statistics.significance import (
    HeadTest,
    benjamini_hochberg,
    compare_rows,
    mann_whitney,
    pair_examples,
    paired_bootstrap,
)
from attnviz.pipeline.store import StoreReader, StoreWriter, read_columns, read_group_sums, read_metric_rows

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo.jsonl"
TINY_BERT = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
PATTERNS_A = [["previous", "broad", "heterogeneous", "first"],
              ["sep", "heterogeneous", "broad", "heterogeneous"]]
PATTERNS_B = [["previous", "broad", "heterogeneous", "first"],
              ["sep", "heterogeneous", "previous", "heterogeneous"]]
ONE_OF_EACH = [["previous", "next", "self", "first"], ["sep", "punct", "broad", "heterogeneous"]]
CHANGED = (1, 2)  # the head that differs between PATTERNS_A and PATTERNS_B
REFERENCE = {"mean": np.nanmean, "median": np.nanmedian, "std": np.nanstd,
             "p90": lambda x, axis: np.nanpercentile(x, 90, axis=axis)}


def write_synthetic(store: Path, run: str, patterns: list[list[str]], n: int, **kw: object) -> None:
    """A run of :func:`synthetic.synthetic_examples` written in shards of 40."""
    writer = StoreWriter(store)
    writer.begin_run(run, synthetic_meta(len(patterns), len(patterns[0]), n), fingerprint_keys=[])
    for start in range(0, n, 40):
        write_shard(writer, run, start, synthetic_examples(patterns, min(40, n - start), start=start, **kw))


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM (trained) over 120 demo sentences; a tiny random BERT over 60, truncated at 10 tokens."""
    store = tmp_path_factory.mktemp("real") / "demo.h5"
    precompute(PrecomputeOptions(model="minilm", input=str(DEMO), store=store, run="minilm", limit=120, threads=1,
                                 capture="attention"))
    precompute(PrecomputeOptions(model="bert-random", input=str(DEMO), store=store, run="tiny-bert", limit=60,
                                 max_length=10, overrides=TINY_BERT, threads=1, shard_size=16, capture="attention"))
    return store


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pat: one head of each pattern; pair-a/pair-b: same inputs, head (1, 2) changed; other-c: others."""
    store = tmp_path_factory.mktemp("synthetic") / "syn.h5"
    write_synthetic(store, "pat", ONE_OF_EACH, 90)
    write_synthetic(store, "pair-a", PATTERNS_A, 150, seed=1)
    write_synthetic(store, "pair-b", PATTERNS_B, 150, seed=1)
    write_synthetic(store, "other-c", PATTERNS_B, 130, seed=2, text_prefix="other")
    return store


def direct_mask(reader: StoreReader, run: str, filt: ExampleFilter) -> np.ndarray:
    """The filter evaluated the plain way, on StoreReader.examples()."""
    table = reader.examples(run)
    mask = np.ones(len(table), dtype=bool)
    if filt.min_tokens is not None:
        mask &= table.n_tokens >= filt.min_tokens
    if filt.max_tokens is not None:
        mask &= table.n_tokens <= filt.max_tokens
    if filt.truncated is not None:
        mask &= table.truncated == filt.truncated
    for name, values in filt.fields:
        column = table.label if name == "label" else [m.get(name) for m in table.meta]
        mask &= np.array([(MISSING if v is None else str(v)) in values for v in column])
    return mask


FILTERS = [
    ExampleFilter(),
    ExampleFilter.make(min_tokens=8, max_tokens=14),
    ExampleFilter.make(fields={"source": ["wordnet"]}),
    ExampleFilter.make(min_tokens=6, fields={"length_bucket": ["short", "long"]}),
    ExampleFilter.make(truncated=True),
    ExampleFilter.make(truncated=False, max_tokens=12),
]


# ---- aggregates ------------------------------------------------------------------------------------------


def test_aggregate_rows_equal_numpy_nan_functions() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((501, 3, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:, 2, 3] = np.nan  # a head with no defined value
    x[:, 0, 0] = np.round(x[:, 0, 0], 1)  # ties
    mask = rng.random(501) < 0.6
    for how, ref in REFERENCE.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = ref(x[mask], axis=0)
        got = aggregate(x, how, mask)
        assert got.dtype == np.float32 and got.shape == (3, 4)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=how)
        assert np.isnan(got[2, 3])
    for n in (1, 2, 3, 10):  # quantile edge cases
        v = rng.random(n).astype(np.float32)
        for how in ("median", "p90"):
            expected = REFERENCE[how](v, axis=0)
            np.testing.assert_allclose(aggregate_rows(v[None], how)[0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate_rows(x[:, 0], "max")


@pytest.mark.parametrize("run", ["minilm", "tiny-bert"])
def test_corpus_heatmaps_equal_direct_numpy_with_filters(real_store: Path, run: str) -> None:
    reader = StoreReader(real_store)
    info = reader.run_info(run)
    cols = read_columns(real_store, info)
    assert len(cols) == info.num_examples
    for name in ("entropy", "mass_prev", "mass_cls", "token_sparsity_max", "mass_next"):
        rows = read_metric_rows(real_store, info, "self", name)
        direct = reader.metrics(run, name)
        np.testing.assert_array_equal(rows, head_major(direct))
        for filt in FILTERS:
            mask = filter_mask(cols, filt)
            np.testing.assert_array_equal(mask, direct_mask(reader, run, filt), err_msg=filt.describe())
            for how, ref in REFERENCE.items():
                got = aggregate_rows(rows, how, mask).reshape(info.shape["self"])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    expected = ref(direct[mask], axis=0)
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name} {how} {filt}")


def test_filters_cover_truncation_and_metadata(real_store: Path) -> None:
    reader = StoreReader(real_store)
    cols = read_columns(real_store, reader.run_info("tiny-bert"))
    assert cols.truncated.any() and not cols.truncated.all()  # max_length=10 truncates some demo sentences
    assert {"corpus", "source", "length_bucket"} <= set(cols.fields)
    assert "line" not in cols.fields and "ref" not in cols.fields  # too many distinct values to filter on
    missing = ExampleFilter.make(fields={"no_such_field": ["x"]})
    assert not filter_mask(cols, missing).any()
    assert filter_mask(cols, ExampleFilter.make(fields={"no_such_field": [MISSING]})).all()


def test_group_means_equal_numpy_for_every_metric(real_store: Path) -> None:
    reader = StoreReader(real_store)
    for run in ("minilm", "tiny-bert"):
        info = reader.run_info(run)
        cols = read_columns(real_store, info)
        groups = make_groups(cols)
        assert groups.size.sum() == len(cols) and groups.count < len(cols)
        sums = read_group_sums(real_store, info, "self", reader.metric_names(run), groups)
        for filt in FILTERS:
            mask = direct_mask(reader, run, filt)
            for name, (s, c) in sums.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    expected = np.nanmean(reader.metrics(run, name)[mask], axis=0).reshape(-1)
                got = group_mean(s, c, groups.mask(filt))
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_layer_profile_equals_numpy(real_store: Path) -> None:
    reader = StoreReader(real_store)
    info = reader.run_info("minilm")
    values = reader.metrics("minilm", "entropy")
    mask = direct_mask(reader, "minilm", FILTERS[1])
    prof = layer_profile(head_major(values), info.shape["self"][0], mask)
    per_layer = np.nanmean(values[mask], axis=2)  # [n, L]
    np.testing.assert_allclose(prof["mean"], per_layer.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(prof["q25"], np.percentile(per_layer, 25, axis=0), rtol=1e-5)
    np.testing.assert_allclose(prof["q75"], np.percentile(per_layer, 75, axis=0), rtol=1e-5)


# ---- two runs --------------------------------------------------------------------------------------------


def test_two_runs_pair_by_input_and_aggregate_separately(real_store: Path) -> None:
    reader = StoreReader(real_store)
    ia_, ib_ = pair_examples(read_columns(real_store, reader.run_info("minilm")).key,
                                read_columns(real_store, reader.run_info("tiny-bert")).key)
    texts_a, texts_b = reader.examples("minilm").text, reader.examples("tiny-bert").text
    position = {}
    for j, t in enumerate(texts_b):
        position.setdefault(t, j)
    expected = [(i, position[t]) for i, t in enumerate(texts_a) if t in position]
    assert list(zip(ia_.tolist(), ib_.tolist(), strict=True)) == expected
    assert len(expected) == 60
    # B's heatmap with A's filter: B's own examples under the same rule
    filt = FILTERS[3]
    info_b = reader.run_info("tiny-bert")
    got = aggregate_rows(read_metric_rows(real_store, info_b, "self", "entropy"), "median",
                            filter_mask(read_columns(real_store, info_b), filt))
    mask_b = direct_mask(reader, "tiny-bert", filt)
    expected_b = np.nanmedian(reader.metrics("tiny-bert", "entropy")[mask_b], axis=0)
    np.testing.assert_allclose(got.reshape(2, 4), expected_b, rtol=1e-6)


def test_pair_examples_matches_duplicates_in_order() -> None:
    ka = np.array([5, 7, 5, 9, 11], dtype=np.uint64)
    kb = np.array([7, 5, 5, 5, 12], dtype=np.uint64)
    ia, ib = pair_examples(ka, kb)
    assert list(zip(ia.tolist(), ib.tolist(), strict=True)) == [(0, 1), (1, 0), (2, 2)]


def _compare(store: Path, run_a: str, run_b: str, metric: str) -> tuple[HeadTest, np.ndarray]:
    reader = StoreReader(store)
    ia, ib = reader.run_info(run_a), reader.run_info(run_b)
    ca, cb = read_columns(store, ia), read_columns(store, ib)
    a, b = read_metric_rows(store, ia, "self", metric), read_metric_rows(store, ib, "self", metric)
    test = compare_rows(a, b, pairs=pair_examples(ca.key, cb.key))
    diff = aggregate_rows(a, "mean") - aggregate_rows(b, "mean")
    return test, diff


def test_difference_sign_and_significance_on_paired_runs(synthetic_store: Path) -> None:
    changed = CHANGED[0] * 4 + CHANGED[1]
    for metric, sign in (("mass_prev", -1.0), ("entropy", 1.0), ("confidence", -1.0)):
        test, diff = _compare(synthetic_store, "pair-a", "pair-b", metric)
        assert test.method == "paired-bootstrap" and test.n_pairs == 150
        assert np.sign(diff[changed]) == sign and np.sign(test.effect[changed]) == sign
        assert test.significant[changed] and test.q[changed] < 1e-6
        assert test.ci_low[changed] <= test.effect[changed] <= test.ci_high[changed]
        others = np.delete(np.arange(8), changed)
        assert not test.significant[others].any()
        np.testing.assert_array_equal(diff[others], 0.0)
        # the effect of the paired test is the mean paired difference
        reader = StoreReader(synthetic_store)
        d = reader.metrics("pair-a", metric) - reader.metrics("pair-b", metric)
        np.testing.assert_allclose(test.effect, np.nanmean(d, axis=0).reshape(-1), rtol=1e-5, atol=1e-7)


def test_difference_on_unpaired_runs_uses_rank_test(synthetic_store: Path) -> None:
    changed = CHANGED[0] * 4 + CHANGED[1]
    test, diff = _compare(synthetic_store, "pair-a", "other-c", "mass_prev")
    assert test.method == "mann-whitney" and test.n_pairs == 0
    assert diff[changed] < 0 and test.effect[changed] < 0.05  # A's values are almost all below B's
    assert test.significant[changed]
    assert test.significant.sum() == 1
    reader = StoreReader(synthetic_store)
    a = reader.metrics("pair-a", "mass_prev").reshape(150, -1)
    b = reader.metrics("other-c", "mass_prev").reshape(130, -1)
    ref = stats.mannwhitneyu(a, b, axis=0, method="asymptotic", nan_policy="omit")
    np.testing.assert_allclose(test.p, ref.pvalue, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(test.q, stats.false_discovery_control(ref.pvalue), rtol=1e-6, atol=1e-12)


def test_mann_whitney_and_bh_equal_scipy_with_ties_and_nan() -> None:
    rng = np.random.default_rng(3)
    a = np.round(rng.normal(size=(6, 300)), 1).astype(np.float32)
    b = np.round(rng.normal(0.15, size=(6, 200)), 1).astype(np.float32)
    a[1, :7] = np.nan
    b[4, 3] = np.nan
    effect, p = mann_whitney(a, b)
    ref = stats.mannwhitneyu(a, b, axis=1, method="asymptotic", nan_policy="omit")
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-6)
    n_a, n_b = (~np.isnan(a)).sum(axis=1), (~np.isnan(b)).sum(axis=1)
    np.testing.assert_allclose(effect, ref.statistic / (n_a * n_b), rtol=1e-9)
    p_test = np.array([0.001, 0.04, 0.03, np.nan, 0.5, 0.2])
    q = benjamini_hochberg(p_test)
    ok = ~np.isnan(p_test)
    np.testing.assert_allclose(q[ok], stats.false_discovery_control(p_test[ok]))
    assert np.isnan(q[3])


def test_paired_bootstrap_blocks_agree_with_pairs() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(3, 20_000))
    b = a + rng.normal(size=(3, 20_000)) + np.array([[0.0], [0.05], [-0.2]])
    mean, lo, hi, p = paired_bootstrap(a, b)  # 20,000 pairs: 1,000 random blocks
    d = a - b
    np.testing.assert_allclose(mean, d.mean(axis=1), rtol=1e-6)
    se = d.std(axis=1, ddof=1) / np.sqrt(d.shape[1])
    np.testing.assert_allclose(hi - lo, 2 * 1.96 * se, rtol=0.15)  # the bootstrap's CI width ~ the normal one
    assert p[0] > 0.01 and p[2] < 1e-10 and mean[1] < 0
    small_mean, small_lo, small_hi, _ = paired_bootstrap(a[:, :500], b[:, :500])  # pairs resampled
    assert (small_lo <= small_mean).all() and (small_mean <= small_hi).all()


def test_runs_of_different_shapes_compare_per_layer(real_store: Path) -> None:
    reader = StoreReader(real_store)
    ia, ib = reader.run_info("minilm"), reader.run_info("tiny-bert")
    a = layer_rows(read_metric_rows(real_store, ia, "self", "entropy"), 6)
    b = layer_rows(read_metric_rows(real_store, ib, "self", "entropy"), 2)
    np.testing.assert_allclose(a, np.nanmean(reader.metrics("minilm", "entropy"), axis=2).T, rtol=1e-5)
    test = compare_rows(a[:2], b, pairs=pair_examples(read_columns(real_store, ia).key,
                                                           read_columns(real_store, ib).key))
    assert test.method == "mann-whitney"  # 60 of 120 paired: not the same inputs
    assert test.p.shape == (2,)


# ---- head patterns ---------------------------------------------------------------------------------------


def test_pattern_labels_on_synthetic_heads(synthetic_store: Path) -> None:
    reader = StoreReader(synthetic_store)
    info = reader.run_info("pat")
    cols = read_columns(synthetic_store, info)
    groups = make_groups(cols)
    sums = read_group_sums(synthetic_store, info, "self", PATTERN_METRICS, groups)
    for filt in (ExampleFilter(), ExampleFilter.make(fields={"source": ["alpha"]})):
        means = {k: group_mean(s, c, groups.mask(filt)).reshape(2, 4) for k, (s, c) in sums.items()}
        labels = classify_heads(means)
        assert labels.tolist() == ONE_OF_EACH


def test_pattern_rules_thresholds_and_ties() -> None:
    means = {"mass_prev": np.array([0.6, 0.45, 0.2, np.nan, 0.55]),
             "mass_first": np.array([0.1, 0.1, 0.1, np.nan, 0.7]),
             "entropy_norm": np.array([0.2, 0.9, 0.5, np.nan, 0.1])}
    assert classify_heads(means).tolist() == ["previous", "broad", "heterogeneous", "", "first"]


def test_minilm_layer0_head2_is_previous_token(real_store: Path) -> None:
    reader = StoreReader(real_store)
    assert reader.num_examples("minilm") >= 100
    means = {k: np.nanmean(reader.metrics("minilm", k), axis=0) for k in PATTERN_METRICS}
    labels = classify_heads(means)
    assert labels[0, 2] == "previous"
    assert (labels == "first").sum() > 10  # MiniLM's many [CLS]-sink heads


def test_comparison_on_column_subsets_equals_comparison_on_copies() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 400)).astype(np.float32)
    b = (a + rng.normal(0.1, 1.0, size=(4, 400))).astype(np.float32)
    ca = np.flatnonzero(rng.random(400) < 0.7)
    cb = ca.copy()
    by_index = compare_rows(a, b, pairs=(ca, cb), columns=(ca, cb))
    by_copy = compare_rows(a[:, ca], b[:, cb], pairs=(np.arange(ca.size), np.arange(cb.size)))
    assert by_index.method == by_copy.method == "paired-bootstrap"
    np.testing.assert_array_equal(by_index.p, by_copy.p)
    unpaired = compare_rows(a, b, columns=(ca, np.flatnonzero(rng.random(400) < 0.5)))
    assert unpaired.method == "mann-whitney" and unpaired.n_a == ca.size
    all_aggs = aggregate_rows_all(a, rng.random(400) < 0.5)
    for how, values in all_aggs.items():
        assert values.shape == (4,) and np.isfinite(values).all(), how


def test_streamed_columns_equal_columns_built_from_the_example_table(real_store: Path,
                                                                    synthetic_store: Path) -> None:
    for store, run in ((real_store, "minilm"), (real_store, "tiny-bert"), (synthetic_store, "pat")):
        reader = StoreReader(store)
        table = reader.examples(run)
        built = ExampleColumns.build(table.input_index, table.n_tokens, table.truncated, table.text,
                                        table.target_text, table.label, table.meta)
        streamed = read_columns(store, reader.run_info(run))
        for name in ("input_index", "n_tokens", "truncated", "key"):
            np.testing.assert_array_equal(getattr(streamed, name), getattr(built, name))
        assert list(streamed.fields) == list(built.fields)
        for name, column in built.fields.items():
            assert streamed.fields[name].values == column.values, name
            np.testing.assert_array_equal(streamed.fields[name].codes, column.codes)


def test_extreme_examples_break_ties_by_index() -> None:
    values = np.array([0.5, 0.9, np.nan, 0.9, 0.1, 0.1, 0.7], dtype=np.float32)
    assert extreme_examples(values, 3, largest=True).tolist() == [1, 3, 6]
    assert extreme_examples(values, 3, largest=False).tolist() == [4, 5, 0]
    assert extreme_examples(values[[2]], 3, largest=True).tolist() == []
