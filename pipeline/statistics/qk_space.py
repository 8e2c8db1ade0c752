"""Queries and keys of one head in one 2-D space (AttentionViz, Yeh et al. 2023): pure numpy.

Attention only sees ``q·k``, which two changes leave as they are: translating every key by the same vector ``c``
adds ``q·c`` to all of a query's scores (softmax ignores it), and scaling queries by ``s`` and keys by ``1/s``.
So before projecting, keys are translated to share the queries' centroid, and both are scaled to the same mean
norm (``s = sqrt(mean‖k‖ / mean‖q‖)``); then queries and keys are projected *together* (one basis): PCA by default,
UMAP when the package is installed and asked for. Near points are then query/key pairs that attend strongly.
"""

from __future__ import annotations

import importlib.util

import numpy as np

METHODS = ("pca", "umap")


def umap_available() -> bool:
    """Whether umap-learn can be imported."""
    return importlib.util.find_spec("umap") is not None


def align(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys translated to the queries' centroid, then queries × s and keys ÷ s with ``s`` equalizing their mean
    norms (each leaves every attention weight unchanged)."""
    q = np.asarray(queries, dtype=np.float64)
    k = np.asarray(keys, dtype=np.float64)
    k = k - k.mean(axis=0) + q.mean(axis=0)
    qn, kn = np.linalg.norm(q, axis=1).mean(), np.linalg.norm(k, axis=1).mean()
    s = np.sqrt(kn / qn) if qn > 0 and kn > 0 else 1.0
    return q * s, k / s


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ``[n, d]`` on their first two principal axes ``[n, 2]`` (sign fixed: each axis's largest |loading|
    is positive) and the share of variance each axis explains ``[2]``."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=0)
    # the eigenvectors of the d × d scatter matrix (cheaper than an SVD of the n × d points, same axes); einsum
    # rather than BLAS matmul: BLAS threads spinning on a busy machine made these small products 100x slower
    values, vectors = np.linalg.eigh(np.einsum("ni,nj->ij", x, x))
    order = np.argsort(values)[::-1][:2]
    axes = vectors[:, order].T
    axes = axes * np.sign(axes[np.arange(axes.shape[0]), np.abs(axes).argmax(axis=1)])[:, None]
    coords = np.einsum("nd,kd->nk", x, axes)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    var = np.clip(values, 0, None)
    share = var[order] / var.sum() if var.sum() > 0 else np.zeros(order.size)
    return coords.astype(np.float32), np.pad(share, (0, 2 - share.size)).astype(np.float32)


def joint_projection(queries: np.ndarray, keys: np.ndarray, method: str = "pca", seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(queries_2d [n, 2], keys_2d [m, 2], explained [2])``: :func:`align`, then one projection of both.
    ``explained`` is PCA's variance share per axis (NaN for UMAP)."""
    if method not in METHODS:
        raise ValueError(f"projection {method!r}: use one of {', '.join(METHODS)}")
    q, k = align(queries, keys)
    both = np.concatenate([q, k])
    if method == "umap":
        import umap

        coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(both).astype(np.float32)
        explained = np.full(2, np.nan, np.float32)
    else:
        coords, explained = pca_2d(both)
    return coords[: len(q)], coords[len(q):], explained
