"""Token neighbours: the index ``attnviz analyze`` builds over a run's hidden states, searched from the reader,
against a brute-force cosine search over the hidden states read back from the store (real pipeline, tiny BERT)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from attnviz.pipeline.precompute.analyze import analysis_needed, analyze
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.neighbours import build_neighbours
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.statistics.neighbours import exact_top_k, faiss_available, normalize
from attnviz.pipeline.store import StoreError, StoreReader
from attnviz.pipeline.store.neighbours import neighbours_path

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}


def _precompute(store: Path, limit: int, capture: str, **extra: object) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=store, limit=limit,
                                 threads=1, capture=capture, overrides=OVERRIDES, **extra))
    return StoreReader(store).runs()[0]


@pytest.fixture(scope="module")
def run_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("nbrs") / "n.h5"
    return store, _precompute(store, 30, "attention,hidden")


def _brute_force(reader: StoreReader, run: str, layer: int, example: int, position: int, k: int | None = None
                 ) -> list[tuple[int, int, float]]:
    rows, vecs = [], []
    for i in range(reader.num_examples(run)):
        h = reader.hidden(run, i)[layer]
        vecs.append(h)
        rows.extend((i, p) for p in range(h.shape[0]))
    v = normalize(np.concatenate(vecs))
    q = normalize(reader.hidden(run, example)[layer][position][None])[0]
    sims = v @ q
    order = sorted(range(len(rows)), key=lambda r: (-sims[r], r))
    return [(*rows[r], float(sims[r])) for r in order if rows[r] != (example, position)][:k]


def assert_same_neighbours(found: list, reader: StoreReader, run: str, layer: int, example: int, position: int,
                           tol: float = 2e-3) -> None:
    """``found`` are the k nearest by the brute-force search, up to the float16 rounding of the stored vectors:
    every reported score is the token's true similarity, and none is below the true k-th best (ties may swap)."""
    everything = _brute_force(reader, run, layer, example, position)
    true = {(e, p): s for e, p, s in everything}
    k = len(found)
    assert k > 0 and (example, position) not in {(n.example, n.position) for n in found}
    kth = everything[k - 1][2]
    for n in found:
        assert n.score == pytest.approx(true[(n.example, n.position)], abs=tol)
        assert true[(n.example, n.position)] >= kth - tol
    assert found[0].score == pytest.approx(everything[0][2], abs=tol)


def test_precompute_builds_the_index_and_search_equals_brute_force(run_store: tuple[Path, str]) -> None:
    store, run = run_store
    assert neighbours_path(store, run, 2).exists()  # precompute's analysis built it (last layer)
    assert not analysis_needed(store, run)
    reader = StoreReader(store)
    for example, position in ((0, 1), (7, 3), (29, 0)):
        found = reader.neighbours(run, example, position, k=8)
        assert len(found) == 8
        assert_same_neighbours(found, reader, run, 2, example, position)
        first = found[0]
        assert first.token == reader.tokens(run, first.example)[first.position]
        assert first.text == reader.examples(run).text[first.example]
        assert all(-1.0001 <= n.score <= 1.0001 for n in found)
        assert [n.score for n in found] == sorted((n.score for n in found), reverse=True)


def test_another_layer_and_the_faiss_backend(run_store: tuple[Path, str]) -> None:
    store, run = run_store
    reader = StoreReader(store)
    summary = build_neighbours(store, run, 0, backend="exact")
    assert summary.layer == 0 and summary.tokens == int(reader.examples(run).n_tokens.sum())
    found = reader.neighbours(run, 4, 2, k=5, layer=0)
    assert_same_neighbours(found, reader, run, 0, 4, 2)
    # the embedding layer: the same word elsewhere is its nearest token (same token, position embedding aside)
    assert found[0].token == reader.tokens(run, 4)[2] or found[0].score < 0.99
    if not faiss_available():
        pytest.skip("faiss-cpu is not installed")
    build_neighbours(store, run, 1, backend="faiss")
    approx = StoreReader(store).neighbours(run, 4, 2, k=5, layer=1)
    # few inverted lists at this size, re-ranked exactly: the same neighbours as the exact search
    assert_same_neighbours(approx, reader, run, 1, 4, 2)


def test_exact_top_k_in_blocks_equals_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    v = normalize(rng.normal(size=(1000, 16)))
    q = normalize(rng.normal(size=(1, 16)))[0]
    scores, rows = exact_top_k(v.astype(np.float16), q, 7, block=64)
    full = v.astype(np.float16).astype(np.float32) @ q
    np.testing.assert_array_equal(rows, np.argsort(-full, kind="stable")[:7])
    np.testing.assert_allclose(scores, np.sort(full)[::-1][:7], rtol=1e-6)


def test_only_kept_examples_are_indexed_and_errors_are_one_line(tmp_path: Path) -> None:
    store = tmp_path / "keep.h5"
    run = _precompute(store, 8, "attention,hidden", attention="every:2")
    reader = StoreReader(store)
    found = reader.neighbours(run, 2, 1, k=50)
    assert {n.example for n in found} <= {0, 2, 4, 6}
    with pytest.raises(StoreError, match="no stored hidden states") as err:
        reader.neighbours(run, 3, 0)
    assert "\n" not in str(err.value)
    with pytest.raises(StoreError, match="out of range"):
        reader.neighbours(run, 2, 99)
    with pytest.raises(StoreError, match="--neighbours-layer 1"):
        reader.neighbours(run, 2, 1, layer=1)
    plain = tmp_path / "plain.h5"
    run_plain = _precompute(plain, 3, "attention")
    with pytest.raises(StoreError, match="--capture attention,hidden"):
        build_neighbours(plain, run_plain)
    with pytest.raises(StoreError, match="exact or faiss|use one of"):
        build_neighbours(store, run, backend="annoy")
    # the index knows when the run grew
    precompute(PrecomputeOptions(model="bert-random", input=str(REPO / "data/demo.jsonl"), store=store, limit=10,
                                 threads=1, capture="attention,hidden", attention="every:2", overrides=OVERRIDES,
                                 analyze=False))
    with pytest.raises(StoreError, match="older than its shards"):
        StoreReader(store).neighbours(run, 2, 1)
    analyze(store, run, workers=0)
    assert {n.example for n in StoreReader(store).neighbours(run, 2, 1, k=60)} <= {0, 2, 4, 6, 8}


def test_a_run_that_kept_no_hidden_states_needs_no_index(tmp_path: Path) -> None:
    store = tmp_path / "none.h5"
    run = _precompute(store, 4, "attention,hidden,qkv", attention="none")
    assert not analysis_needed(store, run)  # analyzed once; nothing to index or project, so not again
    assert not neighbours_path(store, run, 2).exists()
