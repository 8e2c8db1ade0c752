"""Query–key space: the alignment keeps every attention weight, the joint PCA against an eigen-decomposition of
the covariance, and the file ``attnviz analyze`` writes against the Q/K read back head by head (real pipeline)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.precompute.qk_space import build_qk_space, qk_space_needed, sample_examples
from attnviz.pipeline.statistics.qk_space import align, joint_projection, pca_2d
from attnviz.pipeline.store import StoreError, StoreReader
from attnviz.pipeline.store.qk_space import load_qk_space

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_alignment_keeps_every_attention_weight() -> None:
    rng = np.random.default_rng(1)
    q, k = rng.normal(1.0, 2.0, size=(9, 8)), rng.normal(-3.0, 0.5, size=(9, 8))
    qa, ka = align(q, k)
    np.testing.assert_allclose(_softmax(qa @ ka.T), _softmax(q @ k.T), rtol=1e-9, atol=1e-12)
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v)

    # keys moved onto the queries' centroid (then both scaled: the centroids point the same way)
    np.testing.assert_allclose(unit(ka.mean(axis=0)), unit(qa.mean(axis=0)), atol=1e-9)
    assert np.linalg.norm(qa, axis=1).mean() == pytest.approx(np.linalg.norm(ka, axis=1).mean(), rel=1e-9)


def test_pca_equals_the_covariance_eigenvectors() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    coords, share = pca_2d(x)
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    top = vectors[:, ::-1][:, :2]
    expected = centred @ top
    for axis in range(2):  # up to the sign of each axis
        sign = np.sign(expected[:, axis] @ coords[:, axis])
        np.testing.assert_allclose(coords[:, axis], sign * expected[:, axis], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(share, values[::-1][:2] / values.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="projection"):
        joint_projection(x, x, "tsne-ish")


def test_sample_is_spread_and_bounded() -> None:
    lengths = np.full(1_000_000, 10)
    picks = sample_examples(np.arange(1_000_000), lengths, 2000)
    assert 190 <= picks.size <= 200 and picks[0] == 0 and picks[-1] > 990_000 * 0.99
    assert lengths[picks].sum() <= 2000


@pytest.fixture(scope="module")
def qk_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    store = tmp_path_factory.mktemp("qk") / "qk.h5"
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=store, limit=20,
                                 threads=1, capture="attention,qkv", overrides=OVERRIDES))
    return store, StoreReader(store).runs()[0]


def test_analyze_writes_the_projection_of_the_stored_queries_and_keys(qk_store: tuple[Path, str]) -> None:
    store, run = qk_store
    assert not qk_space_needed(store, run)  # precompute's analysis built it
    space = load_qk_space(store, run)
    assert space is not None and space.method == "pca"
    reader = StoreReader(store)
    examples = np.unique(space.example)
    assert space.queries.shape == (2, 4, space.example.size, 2) == space.keys.shape
    assert space.token == [t for i in examples for t in reader.tokens(run, int(i))]
    layer, head = 1, 2
    q = np.concatenate([reader.qkv(run, int(i), layer, head)[0] for i in examples])
    k = np.concatenate([reader.qkv(run, int(i), layer, head)[1] for i in examples])
    q2, k2, explained = joint_projection(q, k)
    np.testing.assert_allclose(space.queries[layer, head], q2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(space.keys[layer, head], k2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(space.explained[layer, head], explained, rtol=1e-5)
    assert 0 < space.explained[layer, head].sum() <= 1


def test_small_sample_and_one_line_errors(qk_store: tuple[Path, str], tmp_path: Path) -> None:
    store, run = qk_store
    summary = build_qk_space(store, run, sample_tokens=30)
    space = load_qk_space(store, run)
    assert space is not None and summary.tokens == space.example.size <= 30
    plain = tmp_path / "plain.h5"
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=plain, limit=2,
                                 threads=1, capture="attention", overrides=OVERRIDES))
    with pytest.raises(StoreError, match="--capture attention,qkv") as err:
        build_qk_space(plain, StoreReader(plain).runs()[0])
    assert "\n" not in str(err.value)
