"""Training series without torch: run names, reading checkpoints from the index, the probe/model check, and the
statistics over steps (corpus means, label changes, the entropy-collapse alert) against direct computations."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_series

from attnviz.pipeline.series import series_report, summarise_series
from attnviz.pipeline.statistics.patterns import classify_heads
from attnviz.pipeline.statistics.training import (
    COLLAPSE_DROP,
    COLLAPSE_ENTROPY,
    collapse_alerts,
    label_changes,
    series_labels,
    series_means,
)
from attnviz.pipeline.store import StoreReader, StoreWriter
from attnviz.pipeline.store.series import (
    SeriesError,
    check_series_compatible,
    check_series_name,
    checkpoint_run_name,
    series_checkpoints,
    series_names,
)

STEPS = [0, 10, 20, 30]


def collapsing(layers: int = 2, heads: int = 2) -> list[np.ndarray]:
    """Head (0, 1) goes from uniform to a one-hot previous-token head; the others stay at strength 0.3."""
    out = []
    for strength in (0.0, 0.5, 0.9, 0.999):
        s = np.full((layers, heads), 0.3)
        s[0, 1] = strength
        out.append(s)
    return out


def stable(layers: int = 2, heads: int = 2) -> list[np.ndarray]:
    return [np.full((layers, heads), 0.3) for _ in STEPS]


def test_run_names_sort_by_step_and_bad_names_are_refused() -> None:
    names = [checkpoint_run_name("demo", s) for s in (0, 5, 100, 2000)]
    assert names == sorted(names) and names[1] == "demo--step00000005"
    for bad in ("", "a b", "-x", "x" * 101, "a/b"):
        with pytest.raises(SeriesError, match="series name"):
            check_series_name(bad)
    with pytest.raises(SeriesError, match="step"):
        checkpoint_run_name("demo", -1)


def test_checkpoints_are_read_from_the_index_in_step_order(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    write_series(store, "b", [30, 0, 20, 10], stable())
    write_series(store, "a", [0, 5], stable()[:2])
    runs = StoreWriter(store).runs()
    assert series_names(runs) == ["a", "b"]
    cps = series_checkpoints(runs, "b")
    assert [c.step for c in cps] == [0, 10, 20, 30]
    assert all(c.complete and c.probe_fingerprint == "synthetic-probe" for c in cps)
    assert cps[0].loss == pytest.approx(5.0 / 2)  # written second (k = 1)
    assert cps[1].log == ((10, pytest.approx(5.0 / 4), pytest.approx(1e-3)),)


def test_incomplete_checkpoints_are_left_out(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    write_series(store, "b", STEPS, stable())
    writer = StoreWriter(store)
    run = checkpoint_run_name("b", 30)
    writer.commit_shard(run, next(p for p in (store.parent / f"{store.name}.d" / run).glob("shard-*.h5")),
                        meta_update={"planned_examples": 99})
    runs = writer.runs()
    assert [c.step for c in series_checkpoints(runs, "b")] == [0, 10, 20]
    assert [c.step for c in series_checkpoints(runs, "b", complete_only=False)] == STEPS


def test_another_probe_or_model_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    write_series(store, "b", STEPS, stable())
    runs = StoreWriter(store).runs()
    check_series_compatible(runs, "b", probe_fingerprint="synthetic-probe", model="synthetic", store=str(store))
    check_series_compatible(runs, "new", probe_fingerprint="other", model="other", store=str(store))
    with pytest.raises(SeriesError, match="another probe") as err:
        check_series_compatible(runs, "b", probe_fingerprint="0123", model="synthetic", store=str(store))
    assert "\n" not in str(err.value) and "another series name" in str(err.value)
    with pytest.raises(SeriesError, match="records model 'synthetic'"):
        check_series_compatible(runs, "b", probe_fingerprint="synthetic-probe", model="gpt2", store=str(store))


def test_series_means_equal_nanmean_over_examples() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.random((5, 2, 3)) for _ in range(4)]
    rows[1][0, 1, 2] = np.nan
    rows[2][:, 0, 0] = np.nan  # a head without any defined value stays NaN
    got = series_means(rows)
    assert got.shape == (4, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on the all-NaN head
        want = np.stack([np.nanmean(r, axis=0) for r in rows])
    np.testing.assert_allclose(got, want, equal_nan=True)
    assert np.isnan(got[2, 0, 0]) and np.isfinite(got[1, 0, 1])


def test_labels_and_their_changes() -> None:
    prev = np.array([[[0.1, 0.2]], [[0.6, 0.2]], [[0.7, 0.55]]])  # [S=3, L=1, H=2]
    ent = np.full((3, 1, 2), 0.9)
    labels = series_labels({"mass_prev": prev, "entropy_norm": ent})
    for s in range(3):
        assert labels[s].tolist() == classify_heads({"mass_prev": prev[s], "entropy_norm": ent[s]}).tolist()
    changes = label_changes([0, 5, 9], labels)
    assert [(c.layer, c.head, c.step, c.before, c.after) for c in changes] == [
        (0, 0, 5, "broad", "previous"), (0, 1, 9, "broad", "previous")]
    assert changes[0].line() == "L0H0 step 5: broad → previous token"


def reference_alerts(steps: list[int], entropy: np.ndarray) -> set[tuple[int, int, int, str]]:
    """The alert rule written out with loops: (layer, head, first step, rule)."""
    out = set()
    for layer in range(entropy.shape[1]):
        for head in range(entropy.shape[2]):
            h = entropy[:, layer, head]
            for s in range(len(steps)):
                if h[s] < COLLAPSE_ENTROPY:
                    out.add((layer, head, steps[s], "below"))
                    break
            for s in range(1, len(steps)):
                if h[s] < (1 - COLLAPSE_DROP) * h[s - 1]:
                    out.add((layer, head, steps[s], "drop"))
                    break
    return out


def test_collapse_alerts_match_the_rule() -> None:
    rng = np.random.default_rng(3)
    entropy = rng.uniform(0.0, 3.0, size=(6, 3, 4))
    entropy[2, 1, 1] = np.nan
    steps = [0, 1, 2, 5, 8, 13]
    got = {(a.layer, a.head, a.step, a.rule) for a in collapse_alerts(steps, entropy)}
    assert got == reference_alerts(steps, entropy)
    assert collapse_alerts(steps, np.full((6, 2, 2), 2.0)) == []


def test_collapsing_series_alerts_and_stable_series_does_not(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    write_series(store, "collapse", STEPS, collapsing())
    write_series(store, "stable", STEPS, stable())
    with StoreReader(store) as reader:
        summary = summarise_series(reader, "collapse")
        heads = {(a.layer, a.head) for a in summary.alerts}
        assert heads == {(0, 1)}
        entropy = summary.means["entropy"][:, 0, 1]
        np.testing.assert_allclose(entropy, [np.nanmean(reader.metrics(c.run, "entropy")[:, 0, 1])
                                             for c in summary.checkpoints], rtol=1e-6)
        assert entropy[-1] < COLLAPSE_ENTROPY < entropy[0]
        below = next(a for a in summary.alerts if a.rule == "below")
        assert below.step == 30 and "L0H1" in below.line()
        assert summarise_series(reader, "stable").alerts == []
        report = series_report(reader, "collapse")
        assert "L0H1: previous token since step 10" in report and "entropy-collapse alerts (2)" in report
        assert series_report(reader).splitlines() == ["collapse: steps 0, 10, 20, 30", "stable: steps 0, 10, 20, 30"]
        with pytest.raises(Exception, match="no complete checkpoint"):
            summarise_series(reader, "missing")
