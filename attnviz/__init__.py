"""attnviz: precompute, store and compare Transformer attention over whole corpora.

The package ``attnviz`` holds the pipeline (``attnviz.pipeline``), the dashboard (``attnviz.dashboard``), the
shipped model descriptions (``attnviz.model_info``) and, here, a small notebook facade (``attnviz.notebook``)::

    import attnviz
    store = attnviz.open_store("data/stores/demo.h5")
    store.runs()                                   # run names
    ex = store.example("minilm--demo", 3)          # one example's Example-tab figures
    ex.matrix(layer=0, head=2)                     # a plotly.graph_objects.Figure
    store.corpus("minilm--demo").heatmap("entropy")
    store.reader.metrics_frame("minilm--demo")     # pandas DataFrame, one row per example × layer × head
    attnviz.show("minilm", "The cat sat on the mat.").model_view()   # no store: runs the model (torch)

The facade's names are loaded on first use, so ``import attnviz.pipeline`` stays as light as before.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CorpusViews", "ExampleViews", "Store", "open_store", "show"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from attnviz import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'attnviz' has no attribute {name!r}")
