"""Head similarity: mean Jensen–Shannon distance between heads' attention rows and the cluster order it
gives (used by the scan)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform


def js_distance(attn: np.ndarray) -> np.ndarray:
    """Mean Jensen–Shannon distance between every pair of heads' attention rows, for one example.

    ``attn`` is ``[C, Tq, Tk]`` (rows are distributions over keys). For heads ``g, h``: the mean over queries
    ``i`` of ``sqrt(JSD(a_g[i], a_h[i]))`` with JSD in bits (so in ``[0, 1]``); ``JSD = H(m) − (H(p)+H(q))/2``
    with ``m = (p+q)/2``. Logarithms in float32, sums in float64 (absolute error below ~1e-3 on the distance).
    Returns ``[C, C]`` float64, symmetric, zero diagonal.
    """
    p = np.clip(np.asarray(attn, dtype=np.float32), 0.0, None)
    c = p.shape[0]
    lp = np.log(p, out=np.zeros_like(p), where=p > 0)
    h = -(p * lp).sum(axis=-1, dtype=np.float64)  # [C, Tq] entropy in nats
    out = np.zeros((c, c), dtype=np.float64)
    for g in range(c - 1):
        m = 0.5 * (p[g] + p[g + 1:])  # [C-g-1, Tq, Tk]
        lm = np.log(m, out=np.zeros_like(m), where=m > 0)
        hm = -(m * lm).sum(axis=-1, dtype=np.float64)
        jsd = (hm - 0.5 * (h[g] + h[g + 1:])) / np.log(2.0)
        out[g, g + 1:] = np.sqrt(np.clip(jsd, 0.0, 1.0)).mean(axis=-1)
    return out + out.T


def _linkage(distance: np.ndarray) -> np.ndarray | None:
    """Average-linkage clustering (optimal leaf ordering) of a ``[C, C]`` distance matrix; None below 3 heads."""
    d = np.asarray(distance, dtype=np.float64)
    if d.shape[0] < 3:
        return None
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    return hierarchy.linkage(squareform(np.nan_to_num(d, nan=1.0), checks=False), method="average",
                             optimal_ordering=True)


def cluster_order(distance: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage hierarchical clustering of a ``[C, C]`` distance matrix."""
    z = _linkage(distance)
    if z is None:
        return np.arange(np.asarray(distance).shape[0])
    return hierarchy.leaves_list(z).astype(np.int64)


@dataclass(frozen=True)
class ClusterTree:
    """The dendrogram of :func:`cluster_order`'s clustering: its leaf order and scipy's segment coordinates
    (``icoord``: leaf ``k`` at ``5 + 10 k``; ``dcoord``: merge distances)."""

    order: np.ndarray
    icoord: list[list[float]]
    dcoord: list[list[float]]


def cluster_tree(distance: np.ndarray) -> ClusterTree | None:
    """The dendrogram of a distance matrix (None below 3 heads); its leaves are :func:`cluster_order`'s."""
    z = _linkage(distance)
    if z is None:
        return None
    tree = hierarchy.dendrogram(z, no_plot=True)
    return ClusterTree(np.asarray(tree["leaves"], dtype=np.int64), tree["icoord"], tree["dcoord"])
