"""A run's per-head metrics as a pandas DataFrame (with the examples' columns) or an xarray Dataset, for notebooks.

Read through :class:`~attnviz.pipeline.store.reader.StoreReader` (``reader.metrics_frame(run)``,
``reader.to_xarray(run)``); never imports torch. xarray is optional: :func:`run_dataset` says how to install it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from attnviz.pipeline.store.format import StoreError

if TYPE_CHECKING:
    from attnviz.pipeline.store.reader import StoreReader

#: Per-example columns every frame carries (from :class:`~attnviz.pipeline.store.reader.ExampleTable`).
EXAMPLE_COLUMNS = ("text", "label", "truncated", "n_tokens")


def example_frame(reader: StoreReader, run: str) -> pd.DataFrame:
    """One row per example (index ``example``): text, label, truncated, n_tokens, n_target_tokens (encoder-decoder
    runs only), input_index and every metadata field of the input (a column per field, missing values as None)."""
    table = reader.examples(run)
    cols: dict[str, Any] = {"input_index": table.input_index, "text": table.text, "label": table.label,
                            "truncated": table.truncated, "n_tokens": table.n_tokens}
    if table.n_target_tokens.any():
        cols["n_target_tokens"] = table.n_target_tokens
        cols["target_text"] = table.target_text
    fields = sorted({k for m in table.meta for k in m})
    for name in fields:
        if name not in cols:
            cols[name] = table.meta_column(name)
    frame = pd.DataFrame(cols)
    frame.index.name = "example"
    return frame


def _examples_of(n: int, examples: Sequence[int] | None) -> np.ndarray:
    if examples is None:
        return np.arange(n)
    idx = np.asarray(list(examples), dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise StoreError(f"example {int(bad[0])} is out of range (0..{n - 1})")
    return idx


def metrics_frame(reader: StoreReader, run: str, kind: str = "self", *, metrics: Sequence[str] | None = None,
                  examples: Sequence[int] | None = None, with_columns: bool = True) -> pd.DataFrame:
    """Tidy per-head metrics: one row per (example, layer, head), a column per metric, then (``with_columns``)
    the example's columns of :func:`example_frame` (text, label, truncated, n_tokens and its metadata fields).

    ``metrics``: the metric names (default: every metric of ``kind``); ``examples``: example indices (default all).
    Rows are ordered by example, layer, head; NaN where a metric is undefined (``docs/metrics.md``).
    """
    names = list(metrics) if metrics is not None else reader.metric_names(run, kind)
    layers, heads = reader.run_info(run).shape[kind]
    idx = _examples_of(reader.num_examples(run), examples)
    n = idx.size
    cols: dict[str, Any] = {
        "example": np.repeat(idx, layers * heads),
        "layer": np.tile(np.repeat(np.arange(layers), heads), n),
        "head": np.tile(np.arange(heads), n * layers),
    }
    for name in names:
        cols[name] = np.asarray(reader.metrics(run, name, kind))[idx].reshape(-1)
    frame = pd.DataFrame(cols)
    if with_columns:
        ex = example_frame(reader, run).iloc[idx]
        extra = ex.reset_index(drop=True).loc[np.repeat(np.arange(n), layers * heads)].reset_index(drop=True)
        frame = pd.concat([frame, extra.drop(columns=[c for c in extra.columns if c in frame.columns])], axis=1)
    return frame


def run_dataset(reader: StoreReader, run: str, kind: str = "self", *, metrics: Sequence[str] | None = None) -> Any:
    """The run as an ``xarray.Dataset``: a ``[example, layer, head]`` variable per metric, and the examples'
    columns (:func:`example_frame`) as coordinates along ``example``; run metadata in ``attrs``.

    Needs xarray (``pip install xarray``): without it a one-line StoreError says so.
    """
    try:
        import xarray as xr
    except ImportError:
        raise StoreError("reading a run as an xarray Dataset needs xarray: pip install xarray") from None
    names = list(metrics) if metrics is not None else reader.metric_names(run, kind)
    layers, heads = reader.run_info(run).shape[kind]
    n = reader.num_examples(run)
    ex = example_frame(reader, run)
    coords: dict[str, Any] = {"example": np.arange(n), "layer": np.arange(layers), "head": np.arange(heads)}
    for col in ex.columns:
        values = ex[col].to_numpy()
        if values.dtype == object:
            values = np.array(["" if v is None else str(v) for v in values], dtype=object)
        coords[col] = ("example", values)
    data = {name: (("example", "layer", "head"), np.asarray(reader.metrics(run, name, kind))) for name in names}
    meta = reader.run_info(run).meta
    attrs = {"run": run, "kind": kind, "model": str(meta.get("model", "")),
             "random_weights": int(bool(meta.get("random_weights", False)))}
    return xr.Dataset(data, coords=coords, attrs=attrs)
