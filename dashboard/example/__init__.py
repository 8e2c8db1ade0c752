"""The Example tab: one example of one run, head by head and layer by layer.

Same shape as every tab: ``ids``, ``layout``, ``callbacks`` (thin), ``data`` (store access, cached), ``views``
(data → figures for a resolved selection), pure ``figures``, ``panels`` and ``analysis``; ``sync`` keeps the URL,
the controls and the selection in agreement.
"""
