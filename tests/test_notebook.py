"""The notebook facade (``import attnviz``): the dashboard's own figures as plotly Figures, a run's metrics as a
DataFrame / xarray Dataset, ``attnviz.show`` without a store, and ``docs/notebook.ipynb`` executed with nbclient.

Stores are made by the real pipeline (tiny random BERT, real MiniLM for ``show``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

import attnviz
from attnviz.dashboard.corpus import views as corpus_views
from attnviz.dashboard.example import views as example_views
from attnviz.dashboard.figjson import decode
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.store import StoreError, StoreReader

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "notebook.ipynb"
RUN = "bert-random--demo"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one tiny random BERT run (every capture) over 10 demo sentences."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions

    path = tmp_path_factory.mktemp("nb") / "nb.h5"
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=path, limit=10,
                                 threads=1, capture="attention,qkv,hidden,embeddings,norms",
                                 overrides={"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
                                            "intermediate_size": 128}))
    return path


def test_facade_names_load_lazily() -> None:
    code = "import attnviz.pipeline.store, sys; print('attnviz.notebook' in sys.modules, 'dash' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    assert callable(attnviz.open_store) and callable(attnviz.show)
    with pytest.raises(AttributeError):
        attnviz.no_such_name  # noqa: B018


def test_example_figures_are_the_dashboards(store: Path) -> None:
    nb = attnviz.open_store(store)
    assert nb.runs() == [RUN]
    ex = nb.example(RUN, 3)
    reader = StoreReader(store)
    state = ViewState(run=RUN, example=3, layer=1, head=2)
    expected = go.Figure(example_views.matrix_view(reader, state)[0])
    got = ex.matrix(layer=1, head=2)
    assert isinstance(got, go.Figure)
    assert got.to_plotly_json() == expected.to_plotly_json()
    np.testing.assert_allclose(decode(got.data[0].z), reader.attention(RUN, 3, 1, 2), atol=0)
    assert ex.tokens == reader.tokens(RUN, 3)
    assert ex.text == reader.examples(RUN).text[3]
    for fig in (ex.head_view(1, 2), ex.model_view(), *ex.timestep(2, 1, 2), ex.debug(1, 2), ex.embeddings(),
                ex.activation_norms(), ex.matrix(1, None, mode="rollout")):
        assert isinstance(fig, go.Figure) and fig.data
    table = ex.metrics(layer=1)
    np.testing.assert_allclose(table.loc["entropy"].to_numpy()[:4], reader.metrics(RUN, "entropy")[3, 1])
    with pytest.raises(ValueError, match="mode"):
        ex.matrix(mode="cubist")
    with pytest.raises(StoreError, match="out of range"):
        nb.example(RUN, 10)


def test_corpus_figures_are_the_dashboards(store: Path) -> None:
    nb = attnviz.open_store(store)
    corpus = nb.corpus(RUN)
    heat = corpus.heatmap("entropy", agg="median")
    sel = corpus._selection("entropy", "median")
    assert heat.to_plotly_json() == go.Figure(corpus_views.heatmap_views(sel, None)[0]).to_plotly_json()
    z = decode(heat.data[0].z).astype(np.float64)
    np.testing.assert_allclose(z, np.median(StoreReader(store).metrics(RUN, "entropy"), axis=0), rtol=1e-6)
    short = corpus.where(max_tokens=12)
    n_short = int((StoreReader(store).examples(RUN).n_tokens <= 12).sum())
    assert 0 < n_short < 10
    keep = StoreReader(store).examples(RUN).n_tokens <= 12
    np.testing.assert_allclose(decode(short.heatmap("entropy").data[0].z),
                               StoreReader(store).metrics(RUN, "entropy")[keep].mean(axis=0), rtol=1e-5)
    for fig in (corpus.profile("entropy"), corpus.patterns(), corpus.similarity(), corpus.relative_position(0, 1),
                corpus.distribution("entropy", 0, 1)):
        assert isinstance(fig, go.Figure) and fig.data
    assert len(corpus.table("entropy")) == 2 * 4
    with pytest.raises(StoreError, match="no metric"):
        corpus.heatmap("no_such_metric")


def test_neighbours_and_query_key_space_from_the_facade(store: Path) -> None:
    nb = attnviz.open_store(store)
    found = nb.example(RUN, 2).neighbours(position=1, k=4)
    expected = StoreReader(store).neighbours(RUN, 2, 1, k=4)
    assert list(found.columns) == ["example", "position", "token", "score", "text"]
    assert found.example.tolist() == [n.example for n in expected] and len(found) == 4
    fig = nb.corpus(RUN).qk_space(layer=1, head=3)
    from attnviz.pipeline.store.qk_space import load_qk_space

    space = load_qk_space(store, RUN)
    assert space is not None
    np.testing.assert_allclose(decode(fig.data[0].x), space.queries[1, 3, :, 0], rtol=1e-6)
    assert "Layer 1, head 3" in fig.layout.title.text


def test_metrics_frame_has_metrics_and_metadata(store: Path) -> None:
    reader = StoreReader(store)
    frame = reader.metrics_frame(RUN)
    layers, heads = reader.run_info(RUN).shape["self"]
    assert len(frame) == 10 * layers * heads
    ent = reader.metrics(RUN, "entropy")
    for row in frame.sample(12, random_state=0).itertuples():
        assert row.entropy == pytest.approx(float(ent[row.example, row.layer, row.head]))
    table = reader.examples(RUN)
    assert set(frame.columns) >= {"example", "layer", "head", *reader.metric_names(RUN), "text", "n_tokens",
                                  "truncated", "label", "corpus", "line"}
    first = frame[frame.example == 4].iloc[0]
    assert first.text == table.text[4] and first.n_tokens == table.n_tokens[4]
    assert first.line == table.meta[4]["line"]
    part = reader.metrics_frame(RUN, metrics=["entropy"], examples=[7, 2], with_columns=False)
    assert list(part.columns) == ["example", "layer", "head", "entropy"]
    assert part.example.tolist()[:1] == [7] and len(part) == 2 * layers * heads
    with pytest.raises(StoreError, match="out of range"):
        reader.metrics_frame(RUN, examples=[10])


def test_run_as_xarray_dataset(store: Path) -> None:
    pytest.importorskip("xarray")
    reader = StoreReader(store)
    ds = reader.to_xarray(RUN)
    assert dict(ds.sizes) == {"example": 10, "layer": 2, "head": 4}
    np.testing.assert_array_equal(ds["mass_first"].to_numpy(), reader.metrics(RUN, "mass_first"))
    assert ds["text"].to_numpy()[5] == reader.examples(RUN).text[5]
    assert ds.attrs["model"] == "bert-random"
    # what a notebook does with it: the mean entropy of each head over the short examples
    short = ds.where(ds.n_tokens <= 12, drop=True)["entropy"].mean("example").to_numpy()
    keep = reader.examples(RUN).n_tokens <= 12
    np.testing.assert_allclose(short, reader.metrics(RUN, "entropy")[keep].mean(axis=0), rtol=1e-5)


@pytest.mark.slow
def test_show_runs_a_model_without_a_store() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    views = attnviz.show("minilm", "The cat sat on the mat.")
    assert views.tokens == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]
    weights = decode(views.matrix(layer=0, head=2).data[0].z)
    assert weights.shape == (9, 9)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    # MiniLM's layer 0 head 2 is a previous-token head (shared/NOTES.md): its own weights, not a random model's
    assert float(np.mean([weights[i, i - 1] for i in range(2, 8)])) > 0.8
    small = attnviz.show("gpt2-random", "Hello world, again.", layers=2, heads=2, hidden=32)
    assert decode(small.matrix(1, 1).data[0].z).shape == (5, 5)


def _outputs_of(nb: dict) -> list[dict]:
    return [o for cell in nb["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]


def test_notebook_is_stored_without_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text())
    assert _outputs_of(nb) == []
    assert all(cell.get("execution_count") is None for cell in nb["cells"] if cell["cell_type"] == "code")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_notebook_runs(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("ATTNVIZ_NOTEBOOK_STORE", str(store))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = _outputs_of(nb)
    assert not [o for o in outputs if o["output_type"] == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 9  # with the value-weighted matrix and the query–key space
    assert any("neighbours" in str(o) or "score" in str(o.get("data", {}).get("text/html", "")) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "reading the store did not import torch" in text
