"""The notebook facade: the dashboard's figures as ``plotly.graph_objects.Figure`` objects, for a store or for one
text run through a model without a store.

Every figure comes from the same pure builders and views the dashboard draws with (``dashboard/example/views.py``,
``dashboard/corpus/views.py``); this module only picks the selection and wraps the result. Reading a store never
imports torch; :func:`show` does (it runs the model through the Playground's engine,
``attnviz.pipeline.playground.engine``, the code path of ``attnviz precompute``).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from attnviz.dashboard.corpus import views as corpus_views
from attnviz.dashboard.corpus.data import Run
from attnviz.dashboard.corpus.selection import DEFAULT_METRIC, Selection
from attnviz.dashboard.example import views as example_views
from attnviz.dashboard.urlstate import ViewState
from attnviz.pipeline.statistics.aggregates import AGGREGATES
from attnviz.pipeline.statistics.filters import ExampleFilter
from attnviz.pipeline.store import StoreError, StoreReader
from attnviz.pipeline.store.meta import run_meta

#: What the attention matrix shows (the Example tab's "Matrix shows" choice).
MATRIX_MODES = ("raw", "rollout", "value-weighted")


def figure(spec: dict[str, Any]) -> go.Figure:
    """A dashboard figure (a plotly JSON dict with typed arrays) as a ``plotly.graph_objects.Figure``."""
    return go.Figure(spec)


@dataclass
class ExampleViews:
    """The Example tab's figures of one example of a run (``layer``, ``head`` and ``kind`` chosen per call;
    ``head=None`` is the mean of the layer's heads, as in the dashboard)."""

    reader: StoreReader
    run: str
    example: int = 0

    def __post_init__(self) -> None:
        n = self.reader.num_examples(self.run)
        if not 0 <= self.example < n:
            raise StoreError(f"example {self.example} is out of range for run {self.run!r} (0..{n - 1})")

    def _state(self, layer: int = 0, head: int | None = 0, kind: str = "self", **extra: Any) -> ViewState:
        return ViewState(run=self.run, example=self.example, layer=layer, head=head, kind=kind, **extra)

    @property
    def tokens(self) -> list[str]:
        """The example's source tokens as the tokenizer wrote them."""
        return self.reader.tokens(self.run, self.example)

    @property
    def text(self) -> str:
        """The example's text."""
        return self.reader.examples(self.run).text[self.example]

    def matrix(self, layer: int = 0, head: int | None = 0, kind: str = "self", mode: str = "raw") -> go.Figure:
        """The attention matrix: ``mode`` ``raw`` (the weights), ``rollout`` (through ``layer``) or
        ``value-weighted`` (‖α f(x)‖, runs made with ``--capture norms``)."""
        if mode not in MATRIX_MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MATRIX_MODES)}")
        fig, _config = example_views.matrix_view(self.reader, self._state(layer, head, kind, attn=mode))
        return figure(fig)

    def head_view(self, layer: int = 0, head: int | None = 0, kind: str = "self",
                  selected: tuple[str, int] | None = None) -> go.Figure:
        """bertviz-style lines between tokens for one head (or every head of the layer when ``head=None``);
        ``selected=("query", i)`` keeps one token's lines."""
        return figure(example_views.head_view(self.reader, self._state(layer, head, kind), selected))

    def model_view(self, kind: str = "self") -> go.Figure:
        """Every layer × head as a small matrix."""
        return figure(example_views.model_view(self.reader, self._state(kind=kind)))

    def timestep(self, step: int, layer: int = 0, head: int | None = 0, kind: str = "self"
                 ) -> tuple[go.Figure, go.Figure]:
        """One query position: its attention over the keys (bars), and across layers (heatmap)."""
        bars, layers = example_views.timestep_view(self.reader, self._state(layer, head, kind, step=step))
        return figure(bars), figure(layers)

    def debug(self, layer: int = 0, head: int | None = 0, kind: str = "self") -> go.Figure:
        """Histograms of hidden states, Q, K, V, weights and scores (runs with ``--capture qkv``)."""
        return figure(example_views.debug_view(self.reader, self._state(layer, head, kind)))

    def embeddings(self, kind: str = "self") -> go.Figure:
        """Input and output embeddings in 2-D (runs with ``--capture embeddings``)."""
        return figure(example_views.embeddings_view(self.reader, self._state(kind=kind)))

    def activation_norms(self, kind: str = "self") -> go.Figure:
        """Hidden-state norm per token and layer (runs with ``--capture hidden``)."""
        return figure(example_views.norms_view(self.reader, self._state(kind=kind)))

    def metrics(self, layer: int = 0, kind: str = "self") -> pd.DataFrame:
        """This example's metrics for every head of ``layer`` (rows: metrics, columns: heads), with a
        ``mean`` column; the corpus percentiles of the dashboard's table are in :meth:`metric_percentiles`."""
        table = example_views.metrics_table(self.reader, self._state(layer, None, kind))
        frame = pd.DataFrame(table.values, index=table.names,
                             columns=[f"head {h}" for h in range(table.values.shape[1])])
        frame["mean"] = table.mean_values
        frame.index.name = "metric"
        return frame

    def metric_percentiles(self, layer: int = 0, kind: str = "self") -> pd.DataFrame:
        """Percentile of each of this example's values within that head's values over the run's examples."""
        table = example_views.metrics_table(self.reader, self._state(layer, None, kind))
        frame = pd.DataFrame(table.percentiles, index=table.names,
                             columns=[f"head {h}" for h in range(table.percentiles.shape[1])])
        frame.index.name = "metric"
        return frame

    def neighbours(self, position: int, k: int = 10, layer: int | None = None) -> pd.DataFrame:
        """The ``k`` tokens of the run most similar to token ``position`` of this example (cosine similarity of
        hidden states; the index ``attnviz analyze`` builds for runs with ``--capture hidden``)."""
        found = self.reader.neighbours(self.run, self.example, position, k=k, layer=layer)
        return pd.DataFrame([dataclasses.asdict(n) for n in found],
                            columns=["example", "position", "token", "score", "text"])

    def _ipython_display_(self) -> None:  # pragma: no cover - drawn by Jupyter
        from IPython.display import display

        display(self.model_view())
        display(self.matrix())


@dataclass
class CorpusViews:
    """The Corpus tab's figures of run A (and B, to compare), for one attention kind and an example filter."""

    store: str
    reader: StoreReader
    run: str
    run_b: str | None = None
    kind: str = "self"
    filter: ExampleFilter = field(default_factory=ExampleFilter)

    def __post_init__(self) -> None:
        for name in (self.run, self.run_b):
            if name is not None:
                info = self.reader.run_info(name)
                if self.kind not in info.kinds:
                    raise StoreError(f"run {name!r} has no {self.kind!r} attention (has: {', '.join(info.kinds)})")

    def _selection(self, metric: str | None = None, agg: str = "mean") -> Selection:
        a = Run(self.store, self.reader.run_info(self.run))
        b = Run(self.store, self.reader.run_info(self.run_b)) if self.run_b else None
        names = run_meta(a.info.meta).metrics_of(self.kind)
        metric = metric or (DEFAULT_METRIC if DEFAULT_METRIC in names else names[0])
        if metric not in names:
            raise StoreError(f"run {self.run!r} has no metric {metric!r} (has: {', '.join(names)})")
        if agg not in AGGREGATES:
            raise ValueError(f"aggregate {agg!r}: use one of {', '.join(AGGREGATES)}")
        return Selection(a, b, self.kind, metric, agg, self.filter)

    def where(self, *, min_tokens: int | None = None, max_tokens: int | None = None, truncated: bool | None = None,
              **fields: list[str]) -> CorpusViews:
        """The same views over the examples that pass a filter (length, truncation, metadata field values)."""
        return replace(self, filter=ExampleFilter.make(min_tokens, max_tokens, truncated, fields))

    def heatmap(self, metric: str | None = None, agg: str = "mean", head: tuple[int, int] | None = None
                ) -> go.Figure:
        """Run A's layer × head heatmap of a metric's aggregate (mean, median, p90, …)."""
        return figure(corpus_views.heatmap_views(self._selection(metric, agg), head)[0])

    def heatmaps(self, metric: str | None = None, agg: str = "mean") -> tuple[go.Figure, go.Figure]:
        """A's and B's heatmaps on one colour range."""
        fig_a, fig_b, _ = corpus_views.heatmap_views(self._selection(metric, agg), None)
        return figure(fig_a), figure(fig_b)

    def difference(self, metric: str | None = None, agg: str = "mean") -> go.Figure:
        """A − B per head with its significance (needs ``run_b``)."""
        return figure(corpus_views.difference_view(self._selection(metric, agg), None))

    def profile(self, metric: str | None = None) -> go.Figure:
        """The metric per layer (mean and interquartile band) for A (and B)."""
        return figure(corpus_views.profile_view(self._selection(metric)))

    def patterns(self) -> go.Figure:
        """Run A's head pattern labels (previous, next, first, broad, …)."""
        return figure(corpus_views.pattern_views(self._selection(), None)[0])

    def similarity(self) -> go.Figure:
        """Run A's clustered head similarity (from ``attnviz analyze``)."""
        return figure(corpus_views.similarity_views(self._selection(), None)[0])

    def relative_position(self, layer: int, head: int) -> go.Figure:
        """One head's mean attention by relative offset (from ``attnviz analyze``)."""
        return figure(corpus_views.relpos_view(self._selection(), (layer, head)))

    def distribution(self, metric: str | None, layer: int, head: int) -> go.Figure:
        """One head's metric over the examples (histogram of A, and B)."""
        _title, fig, _tables = corpus_views.drill_views(self._selection(metric), (layer, head))
        return figure(fig)

    def qk_space(self, layer: int = 0, head: int = 0, colour: str = "position") -> go.Figure:
        """One head's queries and keys in one 2-D space (from ``attnviz analyze``, runs with ``--capture qkv``);
        ``colour``: ``position`` or ``class``."""
        from attnviz.dashboard.corpus.qk_space import space_view
        from attnviz.pipeline.store.qk_space import load_qk_space

        space = load_qk_space(self.store, self.run, self.kind)
        if space is None:
            raise StoreError(f"run {self.run!r} has no query–key space: precompute with --capture attention,qkv, "
                             "then attnviz analyze")
        return figure(space_view(space, layer, head, colour))

    def table(self, metric: str | None = None) -> pd.DataFrame:
        """The Corpus tab's per-head table (aggregates of the metric, A − B when comparing)."""
        return pd.DataFrame(corpus_views.table_rows(self._selection(metric)))


@dataclass
class Store:
    """A store opened for a notebook: its runs, one example's views, a run's corpus views, its metrics."""

    path: str
    reader: StoreReader

    def runs(self) -> list[str]:
        """The run names."""
        self.reader.refresh()
        return self.reader.runs()

    def describe(self) -> pd.DataFrame:
        """One row per run: model, family, examples, kinds and layers × heads, captures, random weights."""
        rows = []
        for name in self.runs():
            info = self.reader.run_info(name)
            meta = run_meta(info.meta)
            rows.append({"run": name, "model": meta.model, "family": meta.family, "examples": info.num_examples,
                         "kinds": ", ".join(info.kinds),
                         "shape": ", ".join(f"{k} {v[0]}×{v[1]}" for k, v in info.shape.items()),
                         "capture": ", ".join(info.meta.get("capture", [])), "random_weights": meta.random_weights})
        return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()

    def example(self, run: str, example: int = 0) -> ExampleViews:
        """The Example-tab figures of one example."""
        return ExampleViews(self.reader, run, example)

    def corpus(self, run: str, run_b: str | None = None, kind: str = "self") -> CorpusViews:
        """The Corpus-tab figures of a run (compared with ``run_b`` when given)."""
        return CorpusViews(self.path, self.reader, run, run_b, kind)

    def metrics_frame(self, run: str, kind: str = "self", **options: Any) -> pd.DataFrame:
        """:meth:`StoreReader.metrics_frame <attnviz.pipeline.store.reader.StoreReader.metrics_frame>`."""
        return self.reader.metrics_frame(run, kind, **options)

    def to_xarray(self, run: str, kind: str = "self", **options: Any) -> Any:
        """:meth:`StoreReader.to_xarray <attnviz.pipeline.store.reader.StoreReader.to_xarray>` (needs xarray)."""
        return self.reader.to_xarray(run, kind, **options)

    def close(self) -> None:
        """Close the store's open files."""
        self.reader.close()


def open_store(path: str | os.PathLike) -> Store:
    """Open a store read-only (a one-line StoreError when it is missing or not a store)."""
    resolved = str(Path(path).resolve())
    return Store(resolved, StoreReader(resolved))


_show_folder: str | None = None


def show(model: Any, text: str, *, target: str = "", second: str = "", layers: int | None = None,
         heads: int | None = None, hidden: int | None = None, seed: int | None = None) -> ExampleViews:
    """Run a model on one text without a store and return its Example-tab views (bertviz's one-liner).

    ``model``: a model_info name (``attnviz models``: ``minilm``, ``gpt2-random`` …) or a
    :class:`~attnviz.pipeline.playground.records.ModelChoice`; ``layers``/``heads``/``hidden``/``seed`` configure a
    random-weight model as the Playground does. ``target``: the target text of a translation model; ``second``:
    the second sentence of a pair. The result is kept in a temporary one-example store (float32, every bit), the
    same store the Playground draws from. Needs the model extras (torch, transformers).
    """
    global _show_folder
    from attnviz.pipeline.playground import engine
    from attnviz.pipeline.playground.records import RESULT_RUN, InputRequest, ModelChoice

    choice = model if isinstance(model, ModelChoice) else ModelChoice(str(model), layers, heads, hidden, seed)
    task = "translation" if target else ("pair" if second else "single")
    result = engine.run_input(choice, InputRequest(task=task, text=text, second=target or second))
    if _show_folder is None:
        _show_folder = tempfile.mkdtemp(prefix="attnviz-show-")
    store = engine.save_result_files(_show_folder, result)
    return ExampleViews(StoreReader(store), RESULT_RUN, 0)
