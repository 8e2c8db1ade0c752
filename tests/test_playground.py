"""The playground's model side: one code path with precompute, generation and masked predictions equal to direct
forward passes, the store, the model worker, and the limits (no browser)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from attnviz.pipeline.models.info import get_model_info
from attnviz.pipeline.playground import engine as playground
from attnviz.pipeline.playground.client import call, shutdown_worker
from attnviz.pipeline.playground.records import (
    MAX_GENERATION_TOKENS,
    GenerateRequest,
    InputRequest,
    MaskRequest,
    ModelChoice,
    PlaygroundError,
    PlaygroundLimitError,
    config_overrides,
    load_result,
    model_defaults,
    result_store_path,
    validate_choice,
)
from attnviz.pipeline.precompute.local import precompute
from attnviz.pipeline.precompute.options import PrecomputeOptions
from attnviz.pipeline.store import StoreReader

SENTENCE = "The quick brown fox jumps over the lazy dog."
GPT2 = ModelChoice("gpt2-random", layers=2, heads=4, hidden=64)
SEQ2SEQ = ModelChoice("seq2seq-random", layers=2, heads=4, hidden=64)
BERT = ModelChoice("bert-random", layers=2, heads=4, hidden=64)


def _overrides(choice: ModelChoice) -> dict:
    return config_overrides(get_model_info(choice.name), choice)


# --------------------------------------------------------------------------------------------------------
# One code path: the playground's attention is the pipeline's stored attention
# --------------------------------------------------------------------------------------------------------


def test_typed_sentence_attention_equals_precomputed(tmp_path: Path) -> None:
    text = tmp_path / "one.txt"
    text.write_text(SENTENCE + "\n", encoding="utf-8")
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="gpt2-random", input=str(text), store=store, run="ref",
                                 overrides=_overrides(GPT2), dtype="float32", capture="attention,embeddings"))
    result = playground.run_input(GPT2, InputRequest(task="lm", text=SENTENCE))
    with StoreReader(store) as reader:
        assert reader.tokens("ref", 0, "source") == list(result.example.source.strings)
        stored = reader.attention("ref", 0, kind="self")
        assert stored.shape == result.example.attention["self"].shape == (2, 4, 10, 10)
        np.testing.assert_allclose(result.example.attention["self"], stored, rtol=0, atol=1e-6)
        for name in reader.metric_names("ref", "self"):
            np.testing.assert_allclose(result.example.metrics["self"][name], reader.metrics("ref", name, "self")[0],
                                       rtol=1e-6, atol=1e-6, equal_nan=True)
        inp, out = reader.embeddings("ref", 0, "source")
        np.testing.assert_allclose(result.example.embeddings["source"][1], out, atol=1e-5)


def test_translation_pair_attention_equals_precomputed(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("The house is big.\tLa casa es grande.\n", encoding="utf-8")
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="seq2seq-random", input=str(pairs), store=store, run="ref",
                                 overrides=_overrides(SEQ2SEQ), dtype="float32", capture="attention"))
    result = playground.run_input(SEQ2SEQ, InputRequest(task="translation", text="The house is big.",
                                                        second="La casa es grande."))
    assert set(result.example.attention) == {"self", "decoder", "cross"}
    with StoreReader(store) as reader:
        for kind in ("self", "decoder", "cross"):
            np.testing.assert_allclose(result.example.attention[kind], reader.attention("ref", 0, kind=kind),
                                       rtol=0, atol=1e-6)
    assert result.example.attention["cross"].shape[-2:] == (len(result.example.target), len(result.example.source))


def test_random_sequence_equals_precomputed_random_input(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    precompute(PrecomputeOptions(model="gpt2-random", input="random:length=9,count=1,seed=5", store=store, run="ref",
                                 overrides=_overrides(GPT2), dtype="float32", capture="attention"))
    first = playground.run_input(GPT2, InputRequest(task="lm", random=True, length=9, seed=5))
    again = playground.run_input(GPT2, InputRequest(task="lm", random=True, length=9, seed=5))
    other = playground.run_input(GPT2, InputRequest(task="lm", random=True, length=9, seed=6))
    assert list(first.example.source.ids) == list(again.example.source.ids)
    assert list(first.example.source.ids) != list(other.example.source.ids)
    with StoreReader(store) as reader:
        assert reader.tokens("ref", 0, "source") == list(first.example.source.strings)
        np.testing.assert_allclose(first.example.attention["self"], reader.attention("ref", 0, kind="self"), atol=1e-6)


def test_layers_setting_changes_the_model() -> None:
    one = playground.run_input(ModelChoice("gpt2-random", layers=1, heads=4, hidden=64),
                               InputRequest(task="lm", text=SENTENCE))
    assert one.shape == {"self": (1, 4)}
    assert one.example.attention["self"].shape[:2] == (1, 4)
    assert one.overrides["num_hidden_layers"] == 1


def test_sentence_pair_is_encoded_as_a_pair() -> None:
    result = playground.run_input(BERT, InputRequest(task="pair", text="A cat.", second="A dog."))
    strings = list(result.example.source.strings)
    assert strings[0] == "[CLS]" and strings.count("[SEP]") == 2
    assert result.example.meta["sentence_b"] == "A dog."


# --------------------------------------------------------------------------------------------------------
# Generation and masked predictions equal direct forward passes
# --------------------------------------------------------------------------------------------------------


def _lm_probs(lm, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


@pytest.mark.parametrize("greedy", [True, False])
def test_generation_probabilities_equal_direct_forward_softmax(greedy: bool) -> None:
    gen = GenerateRequest(n_tokens=6, greedy=greedy, temperature=0.7, seed=11, top_k=4)
    result = playground.generate(GPT2, InputRequest(task="lm", text=SENTENCE), gen)
    lm = playground.get_model(GPT2)
    ids = list(result.example.source.ids)
    g = result.generation
    assert g is not None and len(g.steps) == 6 and g.prompt_length == 10
    for step in g.steps:
        probs = _lm_probs(lm, ids[:step.position])
        assert ids[step.position] == step.chosen.token_id
        assert step.chosen.prob == pytest.approx(float(probs[step.chosen.token_id]), rel=1e-5, abs=1e-9)
        top = torch.topk(probs, 4)
        assert [a.token_id for a in step.alternatives] == top.indices.tolist()
        np.testing.assert_allclose([a.prob for a in step.alternatives], top.values.numpy(), rtol=1e-5)
        if not greedy:
            tempered = torch.softmax(torch.log(probs) / 0.7, dim=-1)
            assert step.sampling_prob == pytest.approx(float(tempered[step.chosen.token_id]), rel=1e-3)
    # the stored attention of the full sequence is the attention each step computed (causal model)
    step = g.steps[2]
    with torch.inference_mode():
        out = lm.model.base_model(input_ids=torch.tensor([ids[:step.position]]), output_attentions=True)
    np.testing.assert_allclose(result.example.attention["self"][:, :, step.position - 1, :step.position],
                               torch.stack(out.attentions, 1)[0, :, :, -1].numpy(), atol=1e-5)


def test_greedy_generation_equals_model_generate() -> None:
    result = playground.generate(GPT2, InputRequest(task="lm", text=SENTENCE), GenerateRequest(n_tokens=8))
    lm = playground.get_model(GPT2)
    enc = lm.tokenizer(SENTENCE, return_tensors="pt")
    with torch.inference_mode():
        out = lm.model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
    assert [s.chosen.token_id for s in result.generation.steps] == out[0, enc["input_ids"].shape[1]:].tolist()


def test_seq2seq_greedy_generation_equals_model_generate() -> None:
    req = InputRequest(task="translation", text="The house is big.", second="La")
    result = playground.generate(SEQ2SEQ, req, GenerateRequest(n_tokens=5))
    lm = playground.get_model(SEQ2SEQ)
    src = lm.tokenizer("The house is big.", return_tensors="pt")
    dec = [lm.config.decoder_start_token_id, *lm.tokenizer(text_target="La", add_special_tokens=False)["input_ids"]]
    with torch.inference_mode():
        out = lm.model.generate(**src, decoder_input_ids=torch.tensor([dec]), max_new_tokens=5, do_sample=False)
    assert result.generation.side == "target" and result.generation.prompt_length == len(dec)
    assert [s.chosen.token_id for s in result.generation.steps] == out[0, len(dec):].tolist()
    assert list(result.example.target.ids) == out[0].tolist()
    assert result.example.attention["cross"].shape[-2] == len(dec) + 5


def test_sampling_with_a_seed_is_reproducible() -> None:
    req = InputRequest(task="lm", text=SENTENCE)
    a = playground.generate(GPT2, req, GenerateRequest(n_tokens=6, greedy=False, seed=3, temperature=1.0))
    b = playground.generate(GPT2, req, GenerateRequest(n_tokens=6, greedy=False, seed=3, temperature=1.0))
    c = playground.generate(GPT2, req, GenerateRequest(n_tokens=6, greedy=False, seed=4, temperature=1.0))
    tokens = [[s.chosen.token_id for s in r.generation.steps] for r in (a, b, c)]
    assert tokens[0] == tokens[1]
    assert tokens[0] != tokens[2]


def test_masked_predictions_equal_direct_mlm_forward() -> None:
    result = playground.predict_masked(BERT, InputRequest(text="The cat sat on the mat."),
                                       MaskRequest(position=3, top_k=5))
    lm = playground.get_model(BERT)
    ids = lm.tokenizer("The cat sat on the mat.")["input_ids"]
    original = lm.tokenizer.convert_ids_to_tokens(ids[3])
    ids[3] = lm.tokenizer.mask_token_id
    with torch.inference_mode():
        probs = torch.softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, 3], dim=-1)
    top = torch.topk(probs, 5)
    pos = result.masked.positions[0]
    assert pos.position == 3 and pos.original == original == "sat"
    assert [p.token_id for p in pos.predictions] == top.indices.tolist()
    np.testing.assert_allclose([p.prob for p in pos.predictions], top.values.numpy(), rtol=1e-5)
    assert result.masked.random_weights
    assert list(result.example.source.ids) == ids  # the attention shown is that of the masked input


def test_typed_mask_token_is_predicted() -> None:
    result = playground.predict_masked(BERT, InputRequest(text="The cat [MASK] on the mat."), MaskRequest())
    assert [p.position for p in result.masked.positions] == [3]
    assert result.masked.positions[0].original is None


def test_no_mlm_head_and_wrong_family_say_why() -> None:
    with pytest.raises(PlaygroundError, match="no masked-language-model head"):
        playground.predict_masked(ModelChoice("minilm"), InputRequest(text="a [MASK] day"), MaskRequest())
    with pytest.raises(PlaygroundError, match="encoder-only model: it does not generate"):
        playground.generate(BERT, InputRequest(text="hello"), GenerateRequest())
    with pytest.raises(PlaygroundError, match="no \\[MASK\\] in the input"):
        playground.predict_masked(BERT, InputRequest(text="no mask here"), MaskRequest())


# --------------------------------------------------------------------------------------------------------
# Limits and failures give clear messages
# --------------------------------------------------------------------------------------------------------


def test_limits_give_clear_errors() -> None:
    with pytest.raises(PlaygroundLimitError, match="minilm accepts at most 256"):
        playground.run_input(ModelChoice("minilm"), InputRequest(text="word " * 400))
    with pytest.raises(PlaygroundLimitError, match=f"1 to {MAX_GENERATION_TOKENS} tokens"):
        playground.generate(GPT2, InputRequest(task="lm", text="hi"), GenerateRequest(n_tokens=65))
    with pytest.raises(PlaygroundLimitError, match="random sequence has 5000 tokens"):
        playground.run_input(BERT, InputRequest(random=True, length=5000))
    with pytest.raises(PlaygroundLimitError, match="at most 20000"):
        playground.run_input(GPT2, InputRequest(task="lm", text="x" * 20_001))
    info = get_model_info("gpt2-random")
    with pytest.raises(PlaygroundLimitError, match="layers must be between 1 and 24"):
        validate_choice(info, ModelChoice("gpt2-random", layers=100))
    with pytest.raises(PlaygroundError, match="not a multiple of 7 heads"):
        validate_choice(info, ModelChoice("gpt2-random", heads=7))
    with pytest.raises(PlaygroundError, match="trained weights"):
        validate_choice(get_model_info("minilm"), ModelChoice("minilm", layers=2))
    with pytest.raises(PlaygroundError, match="not a translation"):
        playground.run_input(GPT2, InputRequest(task="translation", text="a", second="b"))


def test_hub_model_offline_fails_with_a_clear_message() -> None:
    with pytest.raises(PlaygroundError, match="cannot load 'openai-community/gpt2' from the Hugging Face hub"):
        playground.get_model(ModelChoice("gpt2"))


def test_config_defaults_and_overrides() -> None:
    gpt2, bart = get_model_info("gpt2-random"), get_model_info("seq2seq-random")
    assert model_defaults(gpt2) == {"layers": 6, "heads": 8, "hidden": 256, "seed": 0}
    assert config_overrides(gpt2, ModelChoice("gpt2-random", layers=6, heads=4)) == {"num_attention_heads": 4}
    assert config_overrides(bart, ModelChoice("seq2seq-random", layers=1)) == {"encoder_layers": 1,
                                                                               "decoder_layers": 1}


# --------------------------------------------------------------------------------------------------------
# Adding a result to a store
# --------------------------------------------------------------------------------------------------------


def test_add_to_store_appends_examples_and_refuses_another_config(tmp_path: Path) -> None:
    store = tmp_path / "s.h5"
    first = playground.run_input(GPT2, InputRequest(task="lm", text=SENTENCE))
    second = playground.generate(GPT2, InputRequest(task="lm", text="Hello"), GenerateRequest(n_tokens=3))
    assert playground.add_to_store(first, store)["index"] == 0
    added = playground.add_to_store(second, store)
    assert added == {"store": str(store), "run": "playground-gpt2-random", "index": 1, "examples": 2}
    with StoreReader(store) as reader:
        info = reader.run_info("playground-gpt2-random")
        assert info.meta["model"] == "gpt2-random" and info.meta["overrides"] == _overrides(GPT2)
        assert info.meta["model_info"]["seed"] == 0 and info.complete
        np.testing.assert_allclose(reader.attention("playground-gpt2-random", 0, kind="self"),
                                   first.example.attention["self"], atol=1e-3)  # stored as float16
        assert reader.tokens("playground-gpt2-random", 1, "source") == list(second.example.source.strings)
        np.testing.assert_allclose(reader.metrics("playground-gpt2-random", "entropy", "self")[0],
                                   first.example.metrics["self"]["entropy"], rtol=1e-6)
    seeded = playground.run_input(ModelChoice("gpt2-random", layers=2, heads=4, hidden=64, seed=9),
                                  InputRequest(task="lm", text=SENTENCE))
    with pytest.raises(PlaygroundError, match="already exists .* different configuration .*choose another run name"):
        playground.add_to_store(seeded, store)
    assert playground.add_to_store(seeded, store, "playground-seed9")["index"] == 0


# --------------------------------------------------------------------------------------------------------
# The model worker (its own process)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("playground")
    yield folder
    shutdown_worker(folder)


RUN_ARGS = {"choice": {"name": "gpt2-random", "layers": 1, "heads": 4, "hidden": 64}, "input": {"text": "Hi there"}}


def test_worker_keeps_models_loaded_and_writes_readable_results(worker_dir: Path) -> None:
    messages: list[str] = []
    summary = call("run", RUN_ARGS, folder=worker_dir, progress=lambda f, t: messages.append(t))
    assert any("loading model" in m for m in messages)
    messages.clear()
    again = call("run", RUN_ARGS, folder=worker_dir, progress=lambda f, t: messages.append(t))
    assert not any("loading model" in m for m in messages)  # cached in the worker
    assert again["id"] != summary["id"] and summary["shape"] == {"self": [1, 4]}
    status = call("status", {}, folder=worker_dir)
    assert status["models"] == [["gpt2-random", 1, 4, 64, None]]
    result = load_result(worker_dir, summary["id"])
    with StoreReader(result_store_path(worker_dir, summary["id"])) as reader:
        np.testing.assert_array_equal(reader.attention("playground", 0, kind="self"), result.example.attention["self"])


def test_worker_reports_load_failures_and_keeps_working(worker_dir: Path) -> None:
    with pytest.raises(PlaygroundError, match="Hugging Face hub"):
        call("run", {"choice": {"name": "bert-base-uncased"}, "input": {"text": "x"}}, folder=worker_dir)
    assert call("run", RUN_ARGS, folder=worker_dir)["model"] == "gpt2-random"


def test_worker_time_limit(worker_dir: Path) -> None:
    with pytest.raises(PlaygroundLimitError, match="ran longer than 0.3 s"):
        call("sleep", {"seconds": 5}, folder=worker_dir, timeout=0.3)


def test_one_running_job_per_browser_session(worker_dir: Path) -> None:
    done: list[object] = []
    first = threading.Thread(target=lambda: done.append(call("sleep", {"seconds": 1.5}, folder=worker_dir,
                                                             session="s1")))
    first.start()
    time.sleep(0.5)
    with pytest.raises(PlaygroundLimitError, match="already running"):
        call("sleep", {"seconds": 0.1}, folder=worker_dir, session="s1")
    assert call("sleep", {"seconds": 0.1}, folder=worker_dir, session="s2") == {"slept": True}  # waits its turn
    first.join()
    assert done == [{"slept": True}]


def test_cancelled_client_frees_the_worker(worker_dir: Path) -> None:
    script = (f"from attnviz.pipeline.playground.client import call; call('sleep', {{'seconds': 30}}, "
              f"folder={str(worker_dir)!r}, session='s3')")
    proc = subprocess.Popen([sys.executable, "-c", script])
    time.sleep(1.5)
    proc.kill()  # what Dash does when the page cancels a background job
    proc.wait()
    t0 = time.monotonic()
    assert call("sleep", {"seconds": 0.1}, folder=worker_dir, session="s3") == {"slept": True}
    assert time.monotonic() - t0 < 5


def test_dashboard_side_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys; "
            "from attnviz.dashboard.playground import callbacks, controls, data, figures, ids, layout, panels; "
            "from attnviz.pipeline.playground import client, protocol, records, worker; "
            "from attnviz.dashboard.app import create_app; create_app('/nonexistent.h5'); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    env = {**os.environ, "ATTNVIZ_PLAYGROUND_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip() == "ok", out.stderr


# --------------------------------------------------------------------------------------------------------
# The page's pure helpers (no torch, no browser)
# --------------------------------------------------------------------------------------------------------


def test_language_selectors_pick_a_matching_translation_model() -> None:
    from attnviz.dashboard.playground.controls import model_infos, select_model, translation_model

    infos = model_infos()
    assert translation_model(infos, "en", "es", "gpt2-random", offline=True) == "seq2seq-random"
    assert translation_model(infos, "en", "es", "gpt2-random", offline=False) == "opus-mt-en-es"
    assert translation_model(infos, "en", "es", "opus-mt-en-es", offline=True) == "opus-mt-en-es"  # kept
    assert translation_model(infos, "en", "de", None, offline=True) is None
    assert select_model(infos, "gpt2-random", "translation", "en", "es", "pg-task")[:2] == ("seq2seq-random",
                                                                                            "translation")
    model, task, warning = select_model(infos, "gpt2-random", "translation", "en", "de", "pg-tgt-lang")
    assert (model, task) == ("gpt2-random", "translation") and "no translation model for en → de" in warning
    assert select_model(infos, "bert-random", "lm", None, None, "pg-model")[1] == "single"
    assert select_model(infos, "bert-random", "pair", None, None, "pg-model")[1] == "pair"


def test_time_step_slider_covers_the_generation_steps() -> None:
    from attnviz.dashboard.playground.controls import step_range

    summary = {"n_source": 12, "n_target": 0, "generation": {"side": "source", "prompt_length": 7, "steps": 5}}
    lo, hi, marks, value = step_range(summary, "self")
    assert (lo, hi, value) == (6, 10, 6) and marks == {6: "1", 7: "2", 8: "3", 9: "4", 10: "5"}
    assert step_range({"n_source": 9, "n_target": 4, "generation": None}, "cross") == (0, 3, {}, 0)


def test_add_goes_to_the_pages_store_inside_the_data_directory(tmp_path: Path) -> None:
    from attnviz.dashboard.playground.data import target_store
    from attnviz.dashboard.security import StoreAccessError

    config = {"ATTNVIZ_STORE": str(tmp_path / "main.h5"), "ATTNVIZ_DATA_DIR": str(tmp_path)}
    (tmp_path / "other.h5").write_bytes(b"")
    assert target_store(config, None) == tmp_path / "main.h5"
    assert target_store(config, "other.h5") == (tmp_path / "other.h5").resolve()
    with pytest.raises(StoreAccessError):
        target_store(config, "../elsewhere.h5")
