"""The Training tab without a browser: its URL fragment, how a selection is fitted to the store, and its figures'
numbers against the store (pure functions and views on a store of constructed series)."""

from __future__ import annotations

import warnings

import numpy as np
import plotly.graph_objects as go
import pytest
from synthetic import write_series

from attnviz.dashboard.figjson import decode
from attnviz.dashboard.training import figures
from attnviz.dashboard.training.urlhash import TrainingState, format_hash, parse_hash
from attnviz.dashboard.training.views import resolve, series_views
from attnviz.dashboard.urlstate import parse_state
from attnviz.pipeline.store import StoreReader

STEPS = [0, 5, 10]


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> StoreReader:
    store = tmp_path_factory.mktemp("views") / "s.h5"
    write_series(store, "rising", STEPS, [np.full((2, 3), s) for s in (0.0, 0.6, 0.95)])
    write_series(store, "other", STEPS, [np.full((2, 3), 0.2)] * 3)
    return StoreReader(store)


@pytest.mark.parametrize("state", [TrainingState("a.b_c+d-e", "mass_prev", "heatmap"), TrainingState("x"),
                                   TrainingState(None, "entropy", "layers"), TrainingState()])
def test_fragment_round_trip(state: TrainingState) -> None:
    assert parse_hash(format_hash(state)) == state


def test_bad_fragments_fall_back_quietly() -> None:
    assert parse_hash("#view=pie&series=s&junk=1") == TrainingState("s", None, None)
    assert parse_hash("") == parse_hash(None) == parse_hash("#") == TrainingState()
    assert TrainingState.from_dict(["not", "an", "object"]) == TrainingState()
    assert parse_state("?tab=training").tab == "training" and not parse_state("?tab=training").errors


def test_resolve_fits_the_selection_and_explains_fallbacks(reader: StoreReader) -> None:
    ok = resolve(reader, TrainingState("rising", "mass_prev", "heatmap"))
    assert ok.state == TrainingState("rising", "mass_prev", "heatmap") and not ok.messages
    assert [o["value"] for o in ok.series_options] == ["other", "rising"]
    assert {"induction", "duplicate_token", "entropy"} <= {o["value"] for o in ok.metric_options}
    fallback = resolve(reader, TrainingState("missing", "nope", None))
    assert fallback.state == TrainingState("other", "entropy", "layers")  # 6 heads: small multiples
    assert len(fallback.messages) == 2 and "not in this store" in fallback.messages[0]


def means(reader: StoreReader, runs: list[str], metric: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmean(reader.metrics(r, metric), axis=0) for r in runs])


def test_views_draw_the_stores_numbers(reader: StoreReader) -> None:
    runs = [f"rising--step{s:08d}" for s in STEPS]
    v = series_views(reader, TrainingState("rising", "mass_prev", "layers"), picked=5)
    want = means(reader, runs, "mass_prev")
    traces = [t for t in v.metric["data"] if "meta" in t]
    assert len(traces) == 6
    for t in traces:
        np.testing.assert_allclose(decode(t["x"]), STEPS)
        np.testing.assert_allclose(decode(t["y"]), want[:, t["meta"]["layer"], t["meta"]["head"]], rtol=1e-6)
    assert any(shape["x0"] == 5 for shape in v.metric["layout"]["shapes"])  # the picked step is marked
    assert want[-1].min() > 0.9 > want[0].max()
    heat = series_views(reader, TrainingState("rising", "entropy", "heatmap")).metric
    np.testing.assert_allclose(decode(heat["data"][0]["z"]), means(reader, runs, "entropy").reshape(3, 6).T,
                               rtol=1e-6)
    timeline = v.timeline["data"][0]
    assert timeline["y"][:2] == ["L0H0", "L0H1"] and len(decode(timeline["x"])) == 3
    assert v.alert_colour == "danger" and "L0H0" in str(v.alert)
    for fig in (v.metric, v.loss, v.timeline, heat):
        go.Figure(fig)  # valid plotly
    calm = series_views(reader, TrainingState("other", "entropy", "layers"))
    assert calm.alert_colour == "success"


def test_lines_figure_lays_out_many_layers_in_rows() -> None:
    values = np.random.default_rng(0).random((4, 6, 2))
    fig = figures.metric_lines_figure(np.arange(4), values, label="x")
    assert "xaxis6" in fig["layout"] and len(fig["data"]) == 12
    go.Figure(fig)
