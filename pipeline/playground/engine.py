"""The playground's engine (torch; runs only in the model worker, :mod:`attnviz.pipeline.playground.worker`):
cached models, a run on typed or random input, generation with per-step probabilities, masked-token predictions,
and adding a result to a store.

Attention always comes from :mod:`attnviz.pipeline.models.extract` (``extract`` / ``run_batch``: the code path of
``attnviz precompute``). Results are the numpy-only records of :mod:`attnviz.pipeline.playground.records`. Models are
loaded once per process and kept in a small LRU cache. Every function takes ``progress(fraction, text)``, called
between steps; it may raise to stop the job (cancel, time limit).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnviz.pipeline.models.extract import EncodedExample, encode, extract, run_batch
from attnviz.pipeline.models.info import ModelInfoError, get_model_info
from attnviz.pipeline.models.loading import LoadedModel, ModelLoadError, load_model
from attnviz.pipeline.playground.records import (
    RESULT_RUN,
    GenerateRequest,
    Generation,
    GenerationStep,
    InputRequest,
    MaskedPosition,
    MaskedPrediction,
    MaskRequest,
    ModelChoice,
    PlaygroundError,
    PlaygroundLimitError,
    PlaygroundResult,
    TokenProb,
    config_overrides,
    new_result_id,
    prune_results,
    result_store_path,
    save_result,
    validate_choice,
    validate_generate,
    validate_input,
    validate_mask,
)
from attnviz.pipeline.precompute.inputs import InputExample, InputSet, random_inputs
from attnviz.pipeline.precompute.local import run_metadata
from attnviz.pipeline.precompute.options import DEFAULT_MAX_SHARD_ELEMENTS
from attnviz.pipeline.records import ExampleResult
from attnviz.pipeline.store import StoreError, StoreWriter, check_run_name, shard_dir, shard_file_name, write_shard_file
from attnviz.pipeline.store.meta import FINGERPRINT_KEYS

Progress = Callable[[float, str], None]
#: Captured for every playground result (and recorded for playground runs in a store).
CAPTURE = ("attention", "embeddings")
#: The input fingerprint of playground runs (examples are typed one at a time, not read from a file).
PLAYGROUND_INPUT = "playground"
#: Models kept loaded per process.
CACHE_SIZE = int(os.environ.get("ATTNVIZ_PLAYGROUND_MODELS", "3"))

_cache: OrderedDict[tuple[Any, ...], LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()
#: Measured seconds per unit of work (:func:`job_units`) of each loaded model, by model key.
_rates: dict[tuple[Any, ...], float] = {}
#: Work units of one forward pass beyond its tokens (the fixed cost of a call, in token equivalents).
FORWARD_OVERHEAD_UNITS = 16.0
#: Tokens at which a forward's attention (quadratic) costs as much as its linear part.
QUADRATIC_TOKENS = 512.0


def _quiet(_fraction: float, _text: str) -> None:
    return None


# --------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------


def get_model(choice: ModelChoice, progress: Progress = _quiet) -> LoadedModel:
    """The loaded model of ``choice``, from the LRU cache or loaded now (raises PlaygroundError, one line)."""
    key = choice.key()
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        info = get_model_info(choice.name)
    except ModelInfoError as exc:
        raise PlaygroundError(str(exc)) from None
    validate_choice(info, choice)
    if choice.seed is not None:
        info = info.model_copy(update={"seed": int(choice.seed)})
    progress(0.05, f"loading model {choice.label()}")
    t0 = time.perf_counter()
    try:
        lm = load_model(info, config_overrides(info, choice))
    except (ModelLoadError, ModelInfoError) as exc:
        raise PlaygroundError(str(exc)) from None
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise PlaygroundError(f"cannot load model {choice.name!r}: {first}") from None
    progress(0.3, f"loaded {choice.label()} in {time.perf_counter() - t0:.1f} s")
    with _cache_lock:
        _cache[key] = lm
        while len(_cache) > CACHE_SIZE:
            old, _ = _cache.popitem(last=False)
            _rates.pop(old, None)
    return lm


def _forward_units(tokens: float) -> float:
    return FORWARD_OVERHEAD_UNITS + tokens + tokens * tokens / QUADRATIC_TOKENS


def input_tokens(lm: LoadedModel, req: InputRequest) -> int:
    """About how many tokens the model reads for ``req`` (for the time estimate; no limits checked)."""
    if req.random:
        return max(1, int(req.length)) + 2
    tok = lm.tokenizer
    text = req.text[:20_000]
    if req.task == "pair":
        return len(tok(text, req.second[:20_000], add_special_tokens=True)["input_ids"])
    return len(tok(text, add_special_tokens=True)["input_ids"])


def job_units(lm: LoadedModel, op: str, req: InputRequest, gen: GenerateRequest | None = None) -> float:
    """Work of a job in units of :func:`_forward_units`: one forward for a run, two for masked predictions,
    one per generated token plus the final attention pass for generation."""
    t = float(input_tokens(lm, req))
    if op == "generate" and gen is not None:
        n = max(0, int(gen.n_tokens))
        return sum(_forward_units(t + k) for k in range(n)) + _forward_units(t + n)
    return (2 if op == "mask" else 1) * _forward_units(t)


def estimate_seconds(choice: ModelChoice, op: str, req: InputRequest,
                     gen: GenerateRequest | None = None) -> float | None:
    """Seconds the job would take with the model loaded, from this model's measured speed; None when the model
    is not loaded or has not run a job yet (the job may load it: seconds)."""
    key = choice.key()
    with _cache_lock:
        lm, rate = _cache.get(key), _rates.get(key)
    if lm is None or rate is None:
        return None
    return rate * job_units(lm, op, req, gen)


def record_seconds(choice: ModelChoice, units: float, seconds: float) -> None:
    """Note how long ``units`` of work took on a loaded model (a moving average, for :func:`estimate_seconds`)."""
    key = choice.key()
    rate = seconds / max(units, 1.0)
    with _cache_lock:
        if key in _cache:
            old = _rates.get(key)
            _rates[key] = rate if old is None else 0.5 * old + 0.5 * rate


def cached_models() -> list[tuple[Any, ...]]:
    """Keys of the models loaded in this process, least recently used first."""
    with _cache_lock:
        return list(_cache)


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def _limit_tokens(lm: LoadedModel, n: int, what: str) -> None:
    if n > lm.max_length:
        raise PlaygroundLimitError(f"the {what} has {n} tokens; {lm.info.name} accepts at most {lm.max_length} "
                                   "(its maximum input length): shorten it")


def build_example(lm: LoadedModel, req: InputRequest) -> InputExample:
    """The pipeline input for a request, refusing inputs longer than the model's maximum length.

    A pair is encoded by the tokenizer as a pair (``[CLS] a [SEP] b [SEP]``); a random sequence comes from
    :func:`attnviz.pipeline.precompute.inputs.random_inputs` (the precompute's random input) with the request's
    length and seed.
    """
    validate_input(req)
    tok = lm.tokenizer
    encdec = lm.family == "encoder-decoder"
    if req.task == "translation" and not encdec:
        raise PlaygroundError(f"model {lm.info.name!r} is not a translation (encoder-decoder) model: pick one "
                              "with the language selectors, or change the task")
    target = req.second.strip() if encdec and req.task == "translation" else ""
    if target:
        _limit_tokens(lm, len(tok(text_target=target, add_special_tokens=False)["input_ids"]) + 1, "target text")
    if req.random:
        _limit_tokens(lm, req.length, "random sequence")
        example = random_inputs(tok, f"random:length={req.length},count=1,seed={req.seed}").examples[0]
        _limit_tokens(lm, len(example.token_ids or []), "random sequence")
        return dataclasses.replace(example, target=target, meta={**example.meta, "task": req.task})
    text = req.text.strip()
    if req.task == "pair":
        second = req.second.strip()
        ids = tok(text, second, add_special_tokens=True)["input_ids"]
        _limit_tokens(lm, len(ids), "sentence pair")
        sep = f" {tok.sep_token} " if tok.sep_token else " "
        return InputExample(0, f"{text}{sep}{second}", meta={"task": "pair", "sentence_a": text,
                                                             "sentence_b": second}, token_ids=list(ids))
    _limit_tokens(lm, len(tok(text, add_special_tokens=True)["input_ids"]), "input")
    return InputExample(0, text, target=target, meta={"task": req.task})


def _result(lm: LoadedModel, choice: ModelChoice, req: InputRequest, example: ExampleResult, t0: float,
            **extra: Any) -> PlaygroundResult:
    return PlaygroundResult(
        id=new_result_id(), choice=choice, request=req, display_name=lm.info.display_name, family=lm.family,
        random_weights=lm.info.random_weights, has_lm_head=lm.has_lm_head, shape=lm.shape(),
        max_length=lm.max_length, overrides=dict(lm.overrides), example=example,
        seconds=time.perf_counter() - t0, **extra)


def _with_meta(example: ExampleResult, lm: LoadedModel, **meta: Any) -> ExampleResult:
    return dataclasses.replace(example, meta={**example.meta, "source": "playground", "model": lm.info.name,
                                              "overrides": dict(lm.overrides), "seed": lm.info.seed, **meta})


# --------------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------------


def run_input(choice: ModelChoice, req: InputRequest, progress: Progress = _quiet) -> PlaygroundResult:
    """Run the model once on a typed or random input: attention and embeddings via
    ``attnviz.pipeline.models.extract``."""
    t0 = time.perf_counter()
    validate_input(req)
    lm = get_model(choice, progress)
    example = build_example(lm, req)
    progress(0.5, "running the model")
    result = extract(lm, [example], capture=CAPTURE, store_dtype="float32")[0]
    progress(0.95, "done")
    return _result(lm, choice, req, _with_meta(result, lm), t0)


def _token_prob(lm: LoadedModel, token_id: int, prob: float) -> TokenProb:
    tok = lm.tokenizer
    return TokenProb(int(token_id), str(tok.convert_ids_to_tokens(int(token_id))),
                     str(tok.decode([int(token_id)], clean_up_tokenization_spaces=False)), float(prob))


def next_token_logits(lm: LoadedModel, source_ids: list[int], target_ids: list[int] | None) -> torch.Tensor:
    """Logits ``[V]`` of the token after the last one (of the target for encoder-decoder models): one plain
    forward of the model with its LM head, no cache."""
    src = torch.tensor([source_ids], dtype=torch.long)
    kwargs: dict[str, Any] = {"input_ids": src, "attention_mask": torch.ones_like(src)}
    if target_ids is not None:
        kwargs["decoder_input_ids"] = torch.tensor([target_ids], dtype=torch.long)
    if _keeps_last_logits(lm.model):
        kwargs["logits_to_keep"] = 1  # the LM head on the last position only (identical values, much faster)
    with torch.inference_mode():
        out = lm.model(**kwargs, use_cache=False)
    return out.logits[0, -1].float()


def _keeps_last_logits(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def generate(choice: ModelChoice, req: InputRequest, gen: GenerateRequest,
             progress: Progress = _quiet) -> PlaygroundResult:
    """Generate up to ``gen.n_tokens`` tokens after the input (greedy, or sampled at ``gen.temperature`` from a
    generator seeded with ``gen.seed``), stopping after an end-of-sequence token.

    Each step records the model's probability of the chosen token (softmax of the logits), the probability it
    was drawn with, and the top-k alternatives. The attention of the whole sequence (input + generated tokens)
    then comes from ``attnviz.pipeline.models.extract.run_batch``: in a causal model the row of step k's query is
    exactly the attention the model computed at that step.
    """
    t0 = time.perf_counter()
    validate_input(req)
    validate_generate(gen)
    lm = get_model(choice, progress)
    if lm.family == "encoder":
        raise PlaygroundError(f"{lm.info.name} is an encoder-only model: it does not generate text (use masked-"
                              "token prediction instead)")
    if not lm.has_lm_head:
        raise PlaygroundError(f"{lm.info.name} has no language-model head, so it cannot predict words")
    example = build_example(lm, req)
    enc = encode(lm, example)
    encdec = lm.family == "encoder-decoder"
    source, target = list(enc.source_ids), (list(enc.target_ids or []) if encdec else None)
    growing = target if encdec else source
    assert growing is not None
    prompt_length = len(growing)
    _limit_tokens(lm, prompt_length + gen.n_tokens, "input plus the generated tokens")
    generator = torch.Generator().manual_seed(int(gen.seed))
    eos = _eos_ids(lm)
    steps: list[GenerationStep] = []
    stopped = False
    for k in range(gen.n_tokens):
        progress(0.35 + 0.5 * k / gen.n_tokens, f"generating token {k + 1} of {gen.n_tokens}")
        logits = next_token_logits(lm, source, target)
        probs = torch.softmax(logits, dim=-1)
        if gen.greedy:
            chosen, sampling = int(torch.argmax(probs)), probs
        else:
            sampling = torch.softmax(logits / gen.temperature, dim=-1)
            chosen = int(torch.multinomial(sampling, 1, generator=generator))
        top = torch.topk(probs, gen.top_k)
        steps.append(GenerationStep(
            position=len(growing), chosen=_token_prob(lm, chosen, float(probs[chosen])),
            sampling_prob=float(sampling[chosen]),
            alternatives=[_token_prob(lm, int(i), float(p)) for p, i in zip(top.values, top.indices, strict=True)]))
        growing.append(chosen)
        if chosen in eos:
            stopped = True
            break
    progress(0.9, "computing the attention of the generated sequence")
    generated = [s.chosen.token_id for s in steps]
    text_gen = str(lm.tokenizer.decode(generated, clean_up_tokenization_spaces=False))
    prompt_ids = growing[:prompt_length]
    full_text = str(lm.tokenizer.decode(growing, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    full_example = dataclasses.replace(
        example, text=example.text if encdec else full_text, target=full_text if encdec else example.target,
        token_ids=None if encdec else list(growing))
    record = run_batch(lm, [EncodedExample(full_example, source, target, False)], capture=CAPTURE,
                       store_dtype="float32")[0]
    generation = Generation(
        side="target" if encdec else "source", prompt_length=prompt_length, steps=steps, text=text_gen,
        prompt_text=str(lm.tokenizer.decode(prompt_ids, skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)),
        greedy=gen.greedy, temperature=float(gen.temperature), seed=int(gen.seed), stopped_at_eos=stopped)
    meta = {"generated_tokens": len(steps), "prompt_length": prompt_length, "greedy": gen.greedy,
            "temperature": float(gen.temperature), "sampling_seed": int(gen.seed)}
    return _result(lm, choice, req, _with_meta(record, lm, **meta), t0, generation=generation)


def _eos_ids(lm: LoadedModel) -> set[int]:
    value = lm.config.eos_token_id
    if value is None:
        value = lm.tokenizer.eos_token_id
    return {int(v) for v in (value if isinstance(value, list | tuple) else [value]) if v is not None}


def mlm_probabilities(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    """Softmax ``[T, V]`` of the MLM head over a token sequence (one plain forward)."""
    src = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        logits = lm.model(input_ids=src, attention_mask=torch.ones_like(src)).logits[0].float()
    return torch.softmax(logits, dim=-1)


def predict_masked(choice: ModelChoice, req: InputRequest, mask: MaskRequest,
                   progress: Progress = _quiet) -> PlaygroundResult:
    """Masked-token predictions of an encoder model with an MLM head: mask the token at ``mask.position``, or
    predict every ``[MASK]`` typed in the text. The attention shown is that of the masked input."""
    t0 = time.perf_counter()
    validate_input(req)
    validate_mask(mask)
    lm = get_model(choice, progress)
    if lm.family != "encoder":
        raise PlaygroundError(f"{lm.info.name} is a {lm.family} model: predict output words by generating "
                              "instead (masked-token prediction is for encoder models)")
    if not lm.has_lm_head:
        raise PlaygroundError(f"{lm.info.name} has no masked-language-model head (its checkpoint holds only the "
                              "encoder), so it cannot predict masked words")
    tok = lm.tokenizer
    if tok.mask_token_id is None:
        raise PlaygroundError(f"the tokenizer of {lm.info.name} has no mask token")
    example = build_example(lm, req)
    ids = list(encode(lm, example).source_ids)
    originals: dict[int, str | None] = {}
    if mask.position is not None:
        if mask.position >= len(ids):
            raise PlaygroundError(f"position {mask.position} is beyond the input's {len(ids)} tokens: pick another")
        if ids[mask.position] in set(tok.all_special_ids):
            raise PlaygroundError(f"token {mask.position} is a special token: pick a word position to mask")
        originals[mask.position] = str(tok.convert_ids_to_tokens(ids[mask.position]))
        ids[mask.position] = tok.mask_token_id
    else:
        originals = {i: None for i, t in enumerate(ids) if t == tok.mask_token_id}
        if not originals:
            raise PlaygroundError(f"no {tok.mask_token} in the input: type {tok.mask_token} in the sentence or "
                                  "pick a position to mask")
    progress(0.5, "predicting masked tokens")
    probs = mlm_probabilities(lm, ids)
    positions = []
    for pos, original in originals.items():
        top = torch.topk(probs[pos], mask.top_k)
        positions.append(MaskedPosition(pos, original, [_token_prob(lm, int(i), float(p))
                                                        for p, i in zip(top.values, top.indices, strict=True)]))
    frame = {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}
    masked_text = str(tok.decode([i for i in ids if i not in frame or i == tok.sep_token_id and i != ids[-1]]))
    masked_example = dataclasses.replace(example, text=masked_text, token_ids=ids)
    progress(0.8, "computing the attention of the masked input")
    record = extract(lm, [masked_example], capture=CAPTURE, store_dtype="float32")[0]
    return _result(lm, choice, req, _with_meta(record, lm, masked_positions=list(originals)), t0,
                   masked=MaskedPrediction(positions, lm.info.random_weights))


# --------------------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------------------


def playground_run_name(choice: ModelChoice) -> str:
    """``playground-<model>``."""
    return f"playground-{choice.name}"[:128]


def playground_run_metadata(lm: LoadedModel) -> dict[str, Any]:
    """Run metadata of a playground run: :func:`attnviz.pipeline.precompute.local.run_metadata` (model, model_info
    with its seed, overrides, versions, shape, metrics) for an input that grows one example at a time."""
    inputs = InputSet(examples=[], spec=PLAYGROUND_INPUT, fingerprint=PLAYGROUND_INPUT, kind=PLAYGROUND_INPUT)
    meta = run_metadata(lm, inputs, max_length=lm.max_length, capture=list(CAPTURE), dtype="float16",
                        shard_size=1, max_shard_elements=DEFAULT_MAX_SHARD_ELEMENTS, planned=0)
    meta["playground"] = True
    return meta


def save_result_files(folder: str | os.PathLike, result: PlaygroundResult) -> Path:
    """Write a result's files (arrays + JSON, :func:`attnviz.pipeline.playground.records.save_result`) and its
    one-example store (run ``playground``, float32, same layout and metrics as any run) that the dashboard reads
    with the Example tab's views; prune old results."""
    save_result(folder, result)
    store = result_store_path(folder, result.id)
    meta = {**playground_run_metadata(get_model(result.choice)), "dtype": "float32", "planned_examples": 1}
    writer = StoreWriter(store)
    writer.begin_run(RESULT_RUN, meta, fingerprint_keys=FINGERPRINT_KEYS)
    path = shard_dir(store, RESULT_RUN) / shard_file_name(0, 1)
    write_shard_file(path, RESULT_RUN, 0, [dataclasses.replace(result.example, input_index=0)], dtype="float32",
                     codec_name="none")
    writer.commit_shard(RESULT_RUN, path)
    prune_results(folder)
    return store


def add_to_store(result: PlaygroundResult, store: str | os.PathLike, run: str | None = None,
                 progress: Progress = _quiet) -> dict[str, Any]:
    """Append ``result`` as the next example of ``run`` (default ``playground-<model>``) in ``store``.

    The run is created if needed with the model, its overrides and seed in its metadata; a run that exists with
    another configuration is refused. Returns ``{"store", "run", "index", "examples"}``.
    """
    run = (run or playground_run_name(result.choice)).strip()
    try:
        check_run_name(run)
    except StoreError as exc:
        raise PlaygroundError(str(exc)) from None
    lm = get_model(result.choice, progress)
    meta = playground_run_metadata(lm)
    store = Path(store)
    try:
        writer = StoreWriter(store)
        existing = writer.runs().get(run)
        if existing is not None:
            diffs = [k for k in FINGERPRINT_KEYS if existing.meta.get(k) != meta.get(k)]
            if diffs:
                shown = "; ".join(_difference(k, existing.meta.get(k), meta.get(k)) for k in diffs[:2])
                raise PlaygroundError(f"run {run!r} already exists in {store.name} with a different configuration "
                                      f"({shown}): choose another run name")
        progress(0.6, f"adding the example to run {run!r}")
        info = writer.begin_run(run, meta, fingerprint_keys=FINGERPRINT_KEYS)
        start = info.num_examples
        example = dataclasses.replace(result.example, input_index=start)
        path = shard_dir(store, run) / shard_file_name(start, 1)
        write_shard_file(path, run, start, [example], dtype="float16")
        info = writer.commit_shard(run, path, meta_update={"planned_examples": start + 1})
    except StoreError as exc:
        raise PlaygroundError(str(exc)) from None
    return {"store": str(store), "run": run, "index": start, "examples": info.num_examples}


def _difference(key: str, stored: Any, asked: Any) -> str:
    if isinstance(stored, dict) and isinstance(asked, dict):
        keys = sorted(k for k in set(stored) | set(asked) if stored.get(k) != asked.get(k))
        return f"{key}: " + ", ".join(f"{k} stored {stored.get(k)!r} vs {asked.get(k)!r}" for k in keys[:3])
    return f"{key}: stored {stored!r} vs {asked!r}"


__all__ = ["CAPTURE", "add_to_store", "build_example", "cached_models", "estimate_seconds", "generate",
           "get_model", "job_units", "mlm_probabilities", "next_token_logits", "playground_run_metadata",
           "playground_run_name", "predict_masked", "record_seconds", "run_input", "save_result_files"]
