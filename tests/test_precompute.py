"""The pipeline end to end: stored attention equals a direct eager forward pass, for every family."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from attnviz.pipeline.models.loading import load_model
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import StoreReader

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need, they said.",
    "A short one.",
    "In the beginning God created the heavens and the earth.",
    "Why?",
]
PAIRS = [
    ("The house is big.", "La casa es grande."),
    ("I love my family very much.", "Amo mucho a mi familia."),
    ("Hello!", "¡Hola!"),
]
TINY = {
    "minilm": {},
    "bert-random": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128},
    "albert-random": {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128},
    "gpt2-random": {"n_layer": 2, "n_head": 4, "n_embd": 64},
    "seq2seq-random": {"encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
                       "decoder_attention_heads": 4, "d_model": 64, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128},
}


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    return path


def _direct(lm, text: str, target: str | None = None) -> dict[str, list[np.ndarray]]:
    """Attention of one sentence alone through the model, by hand (the reference)."""
    tok = lm.tokenizer
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.inference_mode():
        if target is None:
            out = lm.model.base_model(input_ids=ids, output_attentions=True)
            return {"self": [a[0].numpy() for a in out.attentions]}
        dec = [lm.config.decoder_start_token_id, *tok(text_target=target, add_special_tokens=False)["input_ids"]]
        out = lm.model.base_model(input_ids=ids, decoder_input_ids=torch.tensor([dec]), output_attentions=True)
    return {"self": [a[0].numpy() for a in out.encoder_attentions],
            "decoder": [a[0].numpy() for a in out.decoder_attentions],
            "cross": [a[0].numpy() for a in out.cross_attentions]}


@pytest.mark.parametrize("model", ["minilm", "bert-random", "albert-random", "gpt2-random"])
def test_stored_attention_equals_direct_forward(model: str, text_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    summary = precompute(PrecomputeOptions(model=model, input=str(text_file), store=store, overrides=TINY[model],
                                           batch_size=3, capture="attention"))
    assert summary.examples == len(SENTENCES)
    lm = load_model(model, TINY[model])
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        assert reader.run_info(run).meta["random_weights"] == (model != "minilm")
        for i, sentence in enumerate(SENTENCES):
            ref = np.stack(_direct(lm, sentence)["self"])  # [L, H, T, T]
            got = reader.attention(run, i)
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-2)
            np.testing.assert_allclose(reader.attention(run, i, layer=1, head=2), ref[1, 2], atol=2e-3, rtol=1e-2)
            np.testing.assert_allclose(got.sum(-1), 1.0, atol=5e-3)
            if model == "gpt2-random":
                assert np.all(np.triu(got, k=1) == 0), "causal upper triangle must be exactly 0"
            assert reader.tokens(run, i) == lm.tokenizer.convert_ids_to_tokens(lm.tokenizer(sentence)["input_ids"])


def test_encoder_decoder_stores_self_decoder_and_cross(pairs_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="seq2seq-random", input=str(pairs_file), store=store,
                                 overrides=TINY["seq2seq-random"], capture="attention"))
    lm = load_model("seq2seq-random", TINY["seq2seq-random"])
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        assert reader.run_info(run).kinds == ["self", "decoder", "cross"]
        for i, (src, tgt) in enumerate(PAIRS):
            ref = _direct(lm, src, tgt)
            for kind in ("self", "decoder", "cross"):
                got = reader.attention(run, i, kind=kind)
                np.testing.assert_allclose(got, np.stack(ref[kind]), atol=2e-3, rtol=1e-2)
            n_src, n_tgt = len(reader.tokens(run, i)), len(reader.tokens(run, i, side="target"))
            assert reader.attention(run, i, 0, 0, kind="cross").shape == (n_tgt, n_src)
            assert np.all(np.triu(reader.attention(run, i, kind="decoder"), k=1) == 0)
            assert reader.examples(run).target_text[i] == tgt


def test_metrics_stored_match_recomputation_from_float32(text_file: Path, tmp_path: Path) -> None:
    from attnviz.pipeline.metrics import example_metrics

    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="minilm", input=str(text_file), store=store, dtype="float32",
                                 capture="attention"))
    lm = load_model("minilm")
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        entropy = reader.metrics(run, "entropy")
        assert entropy.shape == (len(SENTENCES), 6, 12)
        for i, sentence in enumerate(SENTENCES):
            ref = example_metrics(np.stack(_direct(lm, sentence)["self"]), reader.token_flags(run, i),
                                  causal=False, self_attention=True)
            np.testing.assert_allclose(entropy[i], ref["entropy"], atol=1e-4)
            np.testing.assert_allclose(reader.metrics(run, "mass_prev")[i], ref["mass_prev"], atol=1e-4)


def test_real_minilm_layer0_head2_attends_to_previous_token(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="minilm", input="data/demo.jsonl", store=store, limit=40, capture="attention"))
    with StoreReader(store) as reader:
        prev = reader.metrics(reader.runs()[0], "mass_prev")
        assert prev[:, 0, 2].mean() > 0.8
        assert np.median(prev[:, 0, :], axis=0).argmax() == 2


def test_captures_qkv_hidden_embeddings_are_consistent(text_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="bert-random", input=str(text_file), store=store, overrides=TINY["bert-random"],
                                 capture="attention,qkv,hidden,embeddings", dtype="float32"))
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        q, k, _v = reader.qkv(run, 0, 1, 3)
        scores = q @ k.T / np.sqrt(q.shape[-1])
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(probs, reader.attention(run, 0, 1, 3), atol=1e-5)
        hidden = reader.hidden(run, 0)
        emb_in, emb_out = reader.embeddings(run, 0)
        assert hidden.shape == (3, len(reader.tokens(run, 0)), 64)
        np.testing.assert_array_equal(emb_in, hidden[0])
        np.testing.assert_array_equal(emb_out, hidden[-1])


def test_qkv_without_hidden_states_equals_qkv_of_the_whole_forward(text_file: Path, tmp_path: Path) -> None:
    """Attention + Q/K/V only: the forward stops after the last attention (and traces the model on its first
    batch); the stored Q/K/V must be exactly those of a run whose hidden-state capture needs the whole forward."""
    stores = {capture: tmp_path / f"{capture.replace(',', '-')}.h5"
              for capture in ("attention,qkv", "attention,qkv,hidden")}
    for capture, store in stores.items():
        precompute(PrecomputeOptions(model="bert-random", input=str(text_file), store=store,
                                     overrides=TINY["bert-random"], capture=capture, dtype="float32", batch_size=3))
    layers, heads = TINY["bert-random"]["num_hidden_layers"], TINY["bert-random"]["num_attention_heads"]
    head_dim = TINY["bert-random"]["hidden_size"] // heads
    with StoreReader(stores["attention,qkv"]) as got, StoreReader(stores["attention,qkv,hidden"]) as ref:
        run = got.runs()[0]
        for i in range(len(SENTENCES)):
            for layer in range(layers):
                for head in range(heads):
                    for a, b in zip(got.qkv(run, i, layer, head), ref.qkv(run, i, layer, head), strict=True):
                        np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(got.attention(run, i), ref.attention(run, i))
    shards = list(Path(f"{stores['attention,qkv']}.d", run).glob("shard-*.h5"))
    assert shards
    for shard in shards:  # each example's Q/K/V stored once: L * H * T * d values
        with h5py.File(shard, "r") as f:
            n_tokens = np.diff(f["tokens/source/offsets"][:])
            for letter in "qkv":
                np.testing.assert_array_equal(np.diff(f[f"qkv/self/{letter}_offsets"][:]),
                                              layers * heads * n_tokens * head_dim)


def test_gpt2_fused_qkv_reproduces_causal_attention(text_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="gpt2-random", input=str(text_file), store=store, overrides=TINY["gpt2-random"],
                                 capture="attention,qkv", dtype="float32"))
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        q, k, _ = reader.qkv(run, 1, 0, 1)
        scores = q @ k.T / np.sqrt(q.shape[-1])
        scores[np.triu_indices_from(scores, k=1)] = -np.inf
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(probs, reader.attention(run, 1, 0, 1), atol=1e-5)


def test_random_input_is_reproducible(tmp_path: Path) -> None:
    spec = "random:length=12,count=4,seed=7"
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    precompute(PrecomputeOptions(model="bert-random", input=spec, store=a, overrides=TINY["bert-random"],
                                 capture="attention"))
    precompute(PrecomputeOptions(model="bert-random", input=spec, store=b, overrides=TINY["bert-random"],
                                 capture="attention"))
    with StoreReader(a) as ra, StoreReader(b) as rb:
        run = ra.runs()[0]
        assert ra.num_examples(run) == 4
        ids = ra.token_ids(run, 2)
        assert len(ids) == 14 and ids[0] == 101 and ids[-1] == 102
        np.testing.assert_array_equal(ids, rb.token_ids(run, 2))
        assert not np.array_equal(ids, ra.token_ids(run, 3))


def test_truncation_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("short sentence\n" + " ".join(["word"] * 300) + "\n", encoding="utf-8")
    store = tmp_path / "s.h5"
    summary = precompute(PrecomputeOptions(model="bert-random", input=str(path), store=store,
                                           overrides=TINY["bert-random"], max_length=32, capture="attention"))
    assert summary.truncated == 1
    with StoreReader(store) as reader:
        run = reader.runs()[0]
        assert reader.examples(run).truncated.tolist() == [False, True]
        assert len(reader.tokens(run, 1)) == 32
        assert reader.tokens(run, 1)[-1] == "[SEP]"


def test_mantissa_bits_round_attention_within_bound_and_keep_exact_metrics(text_file: Path, tmp_path: Path) -> None:
    from attnviz.pipeline.precompute.inputs import InputError
    from attnviz.pipeline.store import RunMismatchError

    full, compact = tmp_path / "full.h5", tmp_path / "compact.h5"
    precompute(PrecomputeOptions(model="minilm", input=str(text_file), store=full, run="r", capture="attention"))
    precompute(PrecomputeOptions(model="minilm", input=str(text_file), store=compact, run="r", mantissa_bits=5,
                                 capture="attention"))
    with StoreReader(full) as rf, StoreReader(compact) as rc:
        assert rf.run_info("r").meta["mantissa_bits"] is None
        assert rc.run_info("r").meta["mantissa_bits"] == 5
        for i in range(len(SENTENCES)):
            a, c = rf.attention("r", i).astype(np.float32), rc.attention("r", i).astype(np.float32)
            normal = a >= 2.0**-14
            assert (np.abs(c - a)[normal] <= 2.0**-6 * a[normal]).all()  # relative error <= 2^-(5+1)
            assert (np.abs(c - a)[~normal] <= 2.0**-20).all()
            assert not np.array_equal(a, c)  # really rounded
            low = c.astype(np.float16).view(np.uint16) & 0x1F  # the 5 dropped mantissa bits are zero
            assert not low.any()
        for name in ("entropy", "mass_prev", "confidence"):  # metrics come from float32, before rounding
            np.testing.assert_array_equal(rf.metrics("r", name), rc.metrics("r", name))
    # The stored attention itself (the per-head metrics and token datasets beside it are the same in both).
    size = {}
    for p in (full, compact):
        size[p] = 0
        for f in Path(f"{p}.d").rglob("shard-*.h5"):
            with h5py.File(f, "r") as shard:
                size[p] += shard["attention/self/data"].id.get_storage_size()
    assert size[compact] < 0.8 * size[full]
    with pytest.raises(RunMismatchError, match="mantissa_bits"):
        precompute(PrecomputeOptions(model="minilm", input=str(text_file), store=compact, run="r", mantissa_bits=6,
                                     capture="attention"))
    with pytest.raises(InputError, match="--mantissa-bits must be between 1 and 10"):
        precompute(PrecomputeOptions(model="minilm", input=str(text_file), store=tmp_path / "bad.h5", mantissa_bits=11,
                                     capture="attention"))
    assert not (tmp_path / "bad.h5").exists()
