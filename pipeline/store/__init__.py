"""The attnviz HDF5 store: the only code that knows the file layout (no torch, no dash here).

Layout (documented in ``docs/store-format.md``)::

    STORE.h5                      index: schema version, runs, each run's metadata and its list of shards
    STORE.h5.d/<run>/shard-<start>-<count>.h5   one file per committed block of examples
    STORE.h5.d/<run>/analysis.h5  cached corpus aggregates (``attnviz analyze``)

Every file is written under a temporary name and moved into place with ``os.replace``; the index is
rewritten the same way (under a lock file) after each shard is final. A kill at any moment therefore leaves
the index and every shard it lists complete and readable; a half-written shard is only ever a ``*.tmp`` file
that the next writer removes.

Modules:

* :mod:`~attnviz.pipeline.store.format`: schema version, names on disk, errors, codecs, mantissa rounding,
  one-line messages;
* :mod:`~attnviz.pipeline.store.atomic`: write-to-temporary + fsync + rename, the lock file;
* :mod:`~attnviz.pipeline.store.meta`: a run's metadata, typed (:class:`RunMeta`, read with :func:`run_meta`);
* :mod:`~attnviz.pipeline.store.index`: the index file (:class:`RunInfo`, :class:`ShardEntry`) and shard headers;
* :mod:`~attnviz.pipeline.store.writer`: shard files and :class:`StoreWriter`;
* :mod:`~attnviz.pipeline.store.reader`: :class:`StoreReader`, :class:`ExampleTable`, :class:`ExampleWindows`,
  :func:`open_shard`;
* :mod:`~attnviz.pipeline.store.verify`: :func:`verify_store` (``attnviz verify``, ``--repair``);
* :mod:`~attnviz.pipeline.store.series`: training series (one run per recorded checkpoint) read from the index;
* :mod:`~attnviz.pipeline.store.corpus`: the columns, metric rows, texts and raw attention the Corpus tab and
  the scans read, and the ``analysis.h5`` file.
"""

from __future__ import annotations

from attnviz.pipeline.store.atomic import write_bytes_atomically
from attnviz.pipeline.store.corpus import (
    Analysis,
    KindAnalysis,
    iter_attention,
    load_analysis,
    read_columns,
    read_group_sums,
    read_metric_rows,
    read_texts,
    write_analysis,
)
from attnviz.pipeline.store.format import (
    DEFAULT_CODEC,
    H5PY_VERSION,
    MANTISSA_BITS,
    SCHEMA_VERSION,
    ExampleOutOfRangeError,
    MissingCaptureError,
    NotAStoreError,
    NotKeptError,
    RunMismatchError,
    SchemaTooNewError,
    StoreError,
    UnknownRunError,
    analysis_path,
    check_run_name,
    codec,
    now_iso,
    round_mantissa,
    shard_dir,
    shard_file_name,
    store_size,
)
from attnviz.pipeline.store.index import RunInfo, ShardEntry, config_fingerprint, missing_ranges, overlapping_shards
from attnviz.pipeline.store.meta import FINGERPRINT_KEYS, RunMeta, run_meta
from attnviz.pipeline.store.reader import ExampleTable, ExampleWindows, StoreReader, open_shard
from attnviz.pipeline.store.series import (
    Checkpoint,
    SeriesError,
    checkpoint_run_name,
    series_checkpoints,
    series_names,
)
from attnviz.pipeline.store.verify import StoreCheck, verify_store
from attnviz.pipeline.store.writer import StoreWriter, shard_image, write_shard_file

__all__ = [
    "FINGERPRINT_KEYS",
    "RunMeta",
    "run_meta",
    "DEFAULT_CODEC",
    "H5PY_VERSION",
    "MANTISSA_BITS",
    "SCHEMA_VERSION",
    "Analysis",
    "Checkpoint",
    "SeriesError",
    "checkpoint_run_name",
    "series_checkpoints",
    "series_names",
    "ExampleOutOfRangeError",
    "ExampleTable",
    "ExampleWindows",
    "KindAnalysis",
    "MissingCaptureError",
    "NotKeptError",
    "NotAStoreError",
    "RunInfo",
    "RunMismatchError",
    "SchemaTooNewError",
    "ShardEntry",
    "StoreCheck",
    "StoreError",
    "StoreReader",
    "StoreWriter",
    "UnknownRunError",
    "analysis_path",
    "check_run_name",
    "codec",
    "config_fingerprint",
    "iter_attention",
    "load_analysis",
    "missing_ranges",
    "now_iso",
    "open_shard",
    "overlapping_shards",
    "read_columns",
    "read_group_sums",
    "read_metric_rows",
    "read_texts",
    "round_mantissa",
    "shard_dir",
    "shard_file_name",
    "shard_image",
    "store_size",
    "verify_store",
    "write_analysis",
    "write_bytes_atomically",
    "write_shard_file",
]
