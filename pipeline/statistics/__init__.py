"""Corpus statistics over per-head metrics: pure functions of numpy arrays (numpy and scipy only; no I/O, no
torch, no dash). One module per job:

* :mod:`.aggregates`: mean / median / std / p90 per head, per-layer profiles, per-group sums (exact filtered
  means without the per-example arrays), extreme examples;
* :mod:`.filters`: the per-example columns a filter tests, the filter itself, and input keys for pairing;
* :mod:`.significance`: pairing two runs' examples and the A − B tests (paired bootstrap, Mann–Whitney U,
  Benjamini–Hochberg);
* :mod:`.patterns`: head pattern labels from corpus means;
* :mod:`.relpos`: attention by relative offset;
* :mod:`.similarity`: Jensen–Shannon distance between heads and the cluster order it gives.

The definitions are documented in ``docs/metrics.md`` (sections "Corpus aggregates and significance", "Head
pattern labels" and "Head similarity and relative-position profiles").

Conventions: a run's metric is ``[N, L, H]`` (examples, layers, heads). Corpus functions work on the
*head-major* layout ``[C, N]`` with ``C = L * H`` (row ``l * H + h``), where every head's values over the
corpus are contiguous. NaN marks a value that is undefined for an example (e.g. ``mass_prev`` of a one-token
example); every aggregate ignores NaN, and a head with no defined value aggregates to NaN.
"""
