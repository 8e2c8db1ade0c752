"""attnviz pipeline: run Transformer models over sentence sets and store attention and metrics in HDF5.

The store format (writer and reader) lives in :mod:`pipeline.store`; importing :mod:`pipeline` or
:mod:`pipeline.store` never imports torch.
"""

__version__ = "0.1.0"
