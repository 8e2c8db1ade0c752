"""Attention through training: record a model's attention at its checkpoints into a series of runs.

* :mod:`.probe`: the fixed probe set every checkpoint of a series is computed on, and its fingerprint;
* :mod:`.record`: :class:`~.record.CheckpointRecorder` and :func:`~.record.record_checkpoint` (custom training loops):
  one checkpoint, in eval mode and without gradients, through the precompute pipeline into the store;
* :mod:`.callback`: :class:`~.callback.AttnvizCallback`, a ``transformers.TrainerCallback`` recording every N steps;
* :mod:`.demo`: ``attnviz train-demo``, a small GPT-2 trained here on the bundled corpora.

The series is read back (no torch) by :mod:`attnviz.pipeline.store.series` and
:mod:`attnviz.pipeline.statistics.training`. Importing this package imports nothing heavy.
"""
