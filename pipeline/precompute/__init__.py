"""``attnviz precompute`` and ``attnviz analyze``: the typed options (:mod:`.options`), input sets
(:mod:`.inputs`), the single-process run (:mod:`.local`), the dask run (:mod:`.distributed`) and the cached
aggregates of a finished run (:mod:`.analyze`).

Importing this package imports nothing heavy: torch is imported by :mod:`.local` (through the model side) only,
dask by :mod:`.distributed` only.
"""
