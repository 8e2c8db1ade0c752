"""The model side: model descriptions (:mod:`.info`, no torch), loading (:mod:`.loading`), attention taps
(:mod:`.taps`) and the forward pass with its captures (:mod:`.extract`).

Importing this package imports nothing heavy: torch is imported by :mod:`.loading`, :mod:`.taps` and
:mod:`.extract` only, so ``attnviz.pipeline.models.info`` works on a machine without the model extras.
"""
