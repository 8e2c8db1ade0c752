"""The Corpus tab: per-head statistics of whole runs, A/B comparison, drill-down.

Same shape as every tab: ``ids``, ``layout``, ``callbacks`` (thin), ``data`` (store access, cached), ``views``
(data → figures for a ``selection``), pure ``figures`` and ``panels``.
"""
