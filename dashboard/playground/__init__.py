"""The Playground tab: run a model now on typed or random input, see its attention, add it to the store.

Same shape as every tab: ``ids``, ``layout``, ``callbacks`` (thin), ``data`` (the playground client: the model
runs in a worker process, see :mod:`attnviz.pipeline.playground`), ``controls`` (pure control logic), pure
``figures`` and ``panels``.
"""
