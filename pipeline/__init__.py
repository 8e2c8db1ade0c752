"""attnviz pipeline: run Transformer models over sentence sets and store attention and metrics in HDF5.

The store format (writer and reader) lives in :mod:`attnviz.pipeline.store`; importing :mod:`attnviz.pipeline` or
:mod:`attnviz.pipeline.store` never imports torch.
"""

__version__ = "0.1.0"
