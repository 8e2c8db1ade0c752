"""The playground's plain records (numpy only: no torch, no pickle): what the page asks for, the limits that
protect the server, what a job returns, and the result files (arrays in ``.npz`` + JSON) the model worker leaves
for the dashboard.

Shared by the dashboard process (which must never import torch nor unpickle), the model worker and the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnviz.pipeline.models.info import ModelInfo
from attnviz.pipeline.records import ExampleResult, TokenSequence

#: Longest generation the playground runs (tokens).
MAX_GENERATION_TOKENS = 64
#: Longest typed text accepted before tokenizing (characters); the model's own token limit applies after.
MAX_TEXT_CHARS = 20_000
#: Largest top-k of alternatives / masked predictions shown.
MAX_TOP_K = 20
#: Seconds one playground job may run (model loading included) unless the app sets another limit.
DEFAULT_TIMEOUT_S = 180.0
#: Allowed ranges of the random-init configuration controls.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {"layers": (1, 24), "heads": (1, 32), "hidden": (8, 2048)}
#: Allowed sampling temperatures.
TEMPERATURE_RANGE = (0.05, 5.0)

#: Input task types: value -> label.
TASKS: dict[str, str] = {
    "single": "Classification: one sentence",
    "pair": "Classification: sentence pair",
    "lm": "Language modelling: text",
    "translation": "Translation: source and target",
}
#: The task chosen for a model by default, from its model_info tasks.
TASK_OF_INFO_TASK = {"classification": "single", "translation": "translation", "language-modeling": "lm"}

#: model_info config keys holding layers / heads / hidden size, by preference (aliases resolved).
_DEFAULT_KEYS: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers", "n_layer", "encoder_layers"),
    "heads": ("num_attention_heads", "n_head", "encoder_attention_heads"),
    "hidden": ("hidden_size", "n_embd", "d_model"),
}
#: Config attributes a playground setting changes (encoder-decoder models have one per stack).
_OVERRIDE_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "encoder-decoder": {"layers": ("encoder_layers", "decoder_layers"),
                        "heads": ("encoder_attention_heads", "decoder_attention_heads"), "hidden": ("d_model",)},
    "other": {"layers": ("num_hidden_layers",), "heads": ("num_attention_heads",), "hidden": ("hidden_size",)},
}
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
#: Results kept in the results folder (older ones are removed when a new one is saved).
KEEP_RESULTS = 100
#: Run name inside each result's one-example store.
RESULT_RUN = "playground"


class PlaygroundError(ValueError):
    """A request the playground refuses or cannot serve; the message is one line that says what to do."""


class PlaygroundLimitError(PlaygroundError):
    """A request beyond one of the limits that protect the server (length, tokens, time, one job at a time)."""


class SlowJobError(PlaygroundError):
    """A job asked to run at once (``fast``) that the worker would not finish within the asked time: its model
    is not loaded, another job holds the worker, or it is too long. Run it as a background job instead."""


@dataclass(frozen=True)
class ModelChoice:
    """A model_info entry plus the playground's configuration of a random-init model (None = model_info's)."""

    name: str
    layers: int | None = None
    heads: int | None = None
    hidden: int | None = None
    seed: int | None = None

    def key(self) -> tuple[Any, ...]:
        """Hashable identity (the model cache key)."""
        return (self.name, self.layers, self.heads, self.hidden, self.seed)

    def label(self) -> str:
        """``gpt2-random (layers=2, seed=3)``: the name plus the settings that differ from model_info."""
        parts = [f"{k}={getattr(self, k)}" for k in ("layers", "heads", "hidden", "seed")
                 if getattr(self, k) is not None]
        return f"{self.name} ({', '.join(parts)})" if parts else self.name


@dataclass(frozen=True)
class InputRequest:
    """What to feed the model: typed text (one sentence, a pair, source + target) or a random token sequence."""

    task: str = "single"
    text: str = ""
    second: str = ""  #: the pair's second sentence (task "pair") or the target text (task "translation")
    random: bool = False
    length: int = 16  #: random sequence: content tokens
    seed: int = 0  #: random sequence: seed


@dataclass(frozen=True)
class GenerateRequest:
    """Predict the next ``n_tokens`` tokens (causal and encoder-decoder models)."""

    n_tokens: int = 10
    greedy: bool = True
    temperature: float = 1.0
    seed: int = 0
    top_k: int = 5


@dataclass(frozen=True)
class MaskRequest:
    """Masked-token prediction (encoder models with an MLM head): mask ``position`` (a token index of the
    input), or, when None, predict every ``[MASK]`` typed in the text."""

    position: int | None = None
    top_k: int = 10


@dataclass
class TokenProb:
    """One vocabulary entry with its probability."""

    token_id: int
    token: str  #: tokenizer string (``Ġworld``, ``##ing``)
    text: str  #: decoded text (`` world``)
    prob: float


@dataclass
class GenerationStep:
    """One generated token: the model's probability of it (softmax of the logits), the probability it was drawn
    with (temperature applied; equal to ``chosen.prob`` for greedy decoding) and the top alternatives."""

    position: int  #: index of the generated token in its token sequence (``Generation.side``)
    chosen: TokenProb
    sampling_prob: float
    alternatives: list[TokenProb]


@dataclass
class Generation:
    """A generated continuation. Step k's token was predicted by the query at ``position - 1``."""

    side: str  #: "source" (decoder-only models) or "target" (encoder-decoder models)
    prompt_length: int  #: tokens of that side before the first generated one
    steps: list[GenerationStep]
    text: str  #: the generated tokens, decoded
    prompt_text: str
    greedy: bool
    temperature: float
    seed: int
    stopped_at_eos: bool


@dataclass
class MaskedPosition:
    """Predictions for one masked position."""

    position: int
    original: str | None  #: the token that was replaced by [MASK] (None when [MASK] was typed)
    predictions: list[TokenProb]


@dataclass
class MaskedPrediction:
    """Masked-token predictions of an encoder model with an MLM head."""

    positions: list[MaskedPosition]
    random_weights: bool  #: predictions of a random model are meaningless (the page says so)


@dataclass
class PlaygroundResult:
    """Everything one playground job produced; ``example`` is the pipeline's own record (float32)."""

    id: str
    choice: ModelChoice
    request: InputRequest
    display_name: str
    family: str
    random_weights: bool
    has_lm_head: bool
    shape: dict[str, tuple[int, int]]
    max_length: int
    overrides: dict[str, Any]
    example: ExampleResult
    generation: Generation | None = None
    masked: MaskedPrediction | None = None
    seconds: float = 0.0
    created: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        """JSON-able description for the page's ``dcc.Store`` (the arrays stay in the result file)."""
        return {
            "id": self.id, "model": self.choice.name, "label": self.choice.label(), "display_name": self.display_name,
            "family": self.family, "random_weights": self.random_weights, "has_lm_head": self.has_lm_head,
            "kinds": list(self.example.attention), "shape": {k: list(v) for k, v in self.shape.items()},
            "n_source": len(self.example.source),
            "n_target": len(self.example.target) if self.example.target is not None else 0,
            "tokens": list(self.example.source.strings),
            "generated": self.generation is not None, "masked": self.masked is not None,
            "generation": None if self.generation is None else {
                "side": self.generation.side, "prompt_length": self.generation.prompt_length,
                "steps": len(self.generation.steps), "text": self.generation.text},
            "seconds": round(self.seconds, 3),
        }


def model_defaults(info: ModelInfo) -> dict[str, int | None]:
    """Layers, heads, hidden size and seed a model_info entry builds (None where transformers' default applies)."""
    out: dict[str, int | None] = {}
    for what, keys in _DEFAULT_KEYS.items():
        out[what] = next((int(info.config[k]) for k in keys if isinstance(info.config.get(k), int)), None)
    out["seed"] = info.seed
    return out


def config_overrides(info: ModelInfo, choice: ModelChoice) -> dict[str, Any]:
    """The config changes a choice asks of ``info``: only settings that differ from model_info's, under the
    architecture's own attribute names (both stacks of an encoder-decoder model)."""
    defaults = model_defaults(info)
    keys = _OVERRIDE_KEYS["encoder-decoder" if info.family == "encoder-decoder" else "other"]
    out: dict[str, Any] = {}
    for what in ("layers", "heads", "hidden"):
        value = getattr(choice, what)
        if value is not None and value != defaults[what]:
            for key in keys[what]:
                out[key] = int(value)
    return out


def validate_choice(info: ModelInfo, choice: ModelChoice) -> None:
    """Refuse configurations outside the playground's limits, or settings on a model with trained weights."""
    settings = {k: getattr(choice, k) for k in ("layers", "heads", "hidden")}
    changed = {k: v for k, v in settings.items() if v is not None and v != model_defaults(info)[k]}
    if not info.random_weights and (changed or (choice.seed is not None and choice.seed != info.seed)):
        raise PlaygroundError(f"model {info.name!r} has trained weights: layers, heads, hidden size and seed can "
                              "only be set for random-weight models")
    for what, value in settings.items():
        lo, hi = CONFIG_LIMITS[what]
        if value is not None and not lo <= value <= hi:
            raise PlaygroundLimitError(f"{what} must be between {lo} and {hi} (got {value})")
    defaults = model_defaults(info)
    heads = choice.heads if choice.heads is not None else defaults["heads"]
    hidden = choice.hidden if choice.hidden is not None else defaults["hidden"]
    if heads and hidden and hidden % heads:
        raise PlaygroundError(f"hidden size {hidden} is not a multiple of {heads} heads: choose sizes that divide")
    if choice.seed is not None and not 0 <= choice.seed < 2**32:
        raise PlaygroundError(f"model seed must be between 0 and {2**32 - 1}")


def validate_input(req: InputRequest) -> None:
    """Refuse an input the playground cannot run, before any model work (token limits are checked later)."""
    if req.task not in TASKS:
        raise PlaygroundError(f"unknown task {req.task!r}: use one of {', '.join(TASKS)}")
    if req.random:
        if req.length < 1:
            raise PlaygroundError("the random sequence needs a length of at least 1 token")
        if not 0 <= req.seed < 2**32:
            raise PlaygroundError(f"the random seed must be between 0 and {2**32 - 1}")
    elif not req.text.strip():
        raise PlaygroundError("type a sentence to run (or choose a random token sequence)")
    if req.task == "pair" and not req.random and not req.second.strip():
        raise PlaygroundError("a sentence pair needs a second sentence")
    for what, text in (("text", req.text), ("second text", req.second)):
        if len(text) > MAX_TEXT_CHARS:
            raise PlaygroundLimitError(f"the {what} has {len(text)} characters; the playground accepts at most "
                                       f"{MAX_TEXT_CHARS}: shorten it")


def validate_generate(req: GenerateRequest) -> None:
    """Refuse generation settings beyond the limits."""
    if not 1 <= req.n_tokens <= MAX_GENERATION_TOKENS:
        raise PlaygroundLimitError(f"the playground generates 1 to {MAX_GENERATION_TOKENS} tokens "
                                   f"(asked for {req.n_tokens})")
    lo, hi = TEMPERATURE_RANGE
    if not req.greedy and not lo <= req.temperature <= hi:
        raise PlaygroundError(f"temperature must be between {lo} and {hi} (got {req.temperature})")
    if not 1 <= req.top_k <= MAX_TOP_K:
        raise PlaygroundLimitError(f"top-k must be between 1 and {MAX_TOP_K}")
    if not 0 <= req.seed < 2**32:
        raise PlaygroundError(f"the sampling seed must be between 0 and {2**32 - 1}")


def validate_mask(req: MaskRequest) -> None:
    """Refuse masked-prediction settings beyond the limits."""
    if not 1 <= req.top_k <= MAX_TOP_K:
        raise PlaygroundLimitError(f"top-k must be between 1 and {MAX_TOP_K}")
    if req.position is not None and req.position < 0:
        raise PlaygroundError("the masked position must be a token index (0 or more)")


# --------------------------------------------------------------------------------------------------------
# Result files: written by the model worker, read by the dashboard process. Arrays go to an ``.npz`` file (read
# with ``allow_pickle=False``), everything else to a JSON file written last: a result is complete when its JSON
# file exists. Nothing here pickles or unpickles.
# --------------------------------------------------------------------------------------------------------

#: Version of the result files' layout (in the JSON file).
RESULT_FORMAT = 1


def new_result_id() -> str:
    """A fresh result id (32 hex digits)."""
    return os.urandom(16).hex()


def result_path(folder: str | os.PathLike, result_id: str) -> Path:
    """The JSON file of a result (its arrays are the ``.npz`` file beside it); refuses ids that are not 32 hex
    digits (they come back from the browser)."""
    if not isinstance(result_id, str) or not _RESULT_ID.match(result_id):
        raise PlaygroundError("unknown playground result: run the model again")
    return Path(folder) / "results" / f"{result_id}.json"


def result_arrays_path(folder: str | os.PathLike, result_id: str) -> Path:
    """The ``.npz`` file of a result's arrays."""
    return result_path(folder, result_id).with_suffix(".npz")


def result_store_path(folder: str | os.PathLike, result_id: str) -> Path:
    """The one-example store of a result (run :data:`RESULT_RUN`), read by the Example tab's views."""
    return result_path(folder, result_id).with_suffix(".h5")


def _example_arrays(ex: ExampleResult) -> dict[str, np.ndarray]:
    """Every array of an example under a flat key (``attention/self``, ``qkv/self/0`` ...)."""
    arrays: dict[str, np.ndarray] = {"source/ids": ex.source.ids, "source/flags": ex.source.flags}
    if ex.target is not None:
        arrays |= {"target/ids": ex.target.ids, "target/flags": ex.target.flags}
    arrays |= {f"attention/{k}": a for k, a in ex.attention.items()}
    arrays |= {f"metrics/{k}/{m}": a for k, ms in ex.metrics.items() for m, a in ms.items()}
    arrays |= {f"qkv/{k}/{i}": a for k, t in ex.qkv.items() for i, a in enumerate(t)}
    arrays |= {f"hidden/{s}": a for s, a in ex.hidden.items()}
    arrays |= {f"embeddings/{s}/{i}": a for s, t in ex.embeddings.items() for i, a in enumerate(t)}
    return {k: np.asarray(a) for k, a in arrays.items()}


def _example_fields(ex: ExampleResult) -> dict[str, Any]:
    """The JSON part of an example: its plain fields and the keys (in order) of its arrays."""
    return {
        "input_index": ex.input_index, "text": ex.text, "truncated": ex.truncated, "target_text": ex.target_text,
        "label": ex.label, "meta": ex.meta, "source_strings": list(ex.source.strings),
        "target_strings": None if ex.target is None else list(ex.target.strings),
        "attention": list(ex.attention), "metrics": {k: list(ms) for k, ms in ex.metrics.items()},
        "qkv": list(ex.qkv), "hidden": list(ex.hidden), "embeddings": list(ex.embeddings),
    }


def result_fields(result: PlaygroundResult) -> dict[str, Any]:
    """The JSON part of a result (everything but the example's arrays)."""
    return {
        "format": RESULT_FORMAT, "id": result.id, "choice": asdict(result.choice), "request": asdict(result.request),
        "display_name": result.display_name, "family": result.family, "random_weights": result.random_weights,
        "has_lm_head": result.has_lm_head, "shape": {k: list(v) for k, v in result.shape.items()},
        "max_length": result.max_length, "overrides": result.overrides, "example": _example_fields(result.example),
        "generation": None if result.generation is None else asdict(result.generation),
        "masked": None if result.masked is None else asdict(result.masked),
        "seconds": result.seconds, "created": result.created,
    }


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_result(folder: str | os.PathLike, result: PlaygroundResult) -> Path:
    """Write a result's files atomically: its arrays (``.npz``), then its JSON file; return the JSON file."""
    path = result_path(folder, result.id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    arrays: dict[str, Any] = _example_arrays(result.example)
    _write_atomically(path.with_suffix(".npz"), lambda f: np.savez(f, **arrays))
    text = json.dumps(result_fields(result), ensure_ascii=False)
    _write_atomically(path, lambda f: f.write(text.encode("utf-8")))
    return path


def prune_results(folder: str | os.PathLike, keep: int = KEEP_RESULTS) -> int:
    """Remove the files of all but the newest ``keep`` results; return how many results were removed."""
    results = Path(folder) / "results"
    files = sorted(results.glob("*.json"), key=lambda p: p.stat().st_mtime)
    old = files[:-keep] if keep > 0 else files
    for record in old:
        store = record.with_suffix(".h5")
        for path in (record, record.with_suffix(".npz"), store, store.with_name(store.name + ".lock")):
            path.unlink(missing_ok=True)
        shutil.rmtree(store.with_name(store.name + ".d"), ignore_errors=True)
    return len(old)


def _tokens(ids: np.ndarray, strings: list[str], flags: np.ndarray) -> TokenSequence:
    return TokenSequence(ids=ids, strings=list(strings), flags=flags)


def _example(fields: dict[str, Any], arrays: Any) -> ExampleResult:
    target = None
    if fields["target_strings"] is not None:
        target = _tokens(arrays["target/ids"], fields["target_strings"], arrays["target/flags"])
    return ExampleResult(
        input_index=fields["input_index"], text=fields["text"],
        source=_tokens(arrays["source/ids"], fields["source_strings"], arrays["source/flags"]),
        attention={k: arrays[f"attention/{k}"] for k in fields["attention"]},
        metrics={k: {m: arrays[f"metrics/{k}/{m}"] for m in ms} for k, ms in fields["metrics"].items()},
        truncated=fields["truncated"], target_text=fields["target_text"], target=target, label=fields["label"],
        meta=fields["meta"],
        qkv={k: (arrays[f"qkv/{k}/0"], arrays[f"qkv/{k}/1"], arrays[f"qkv/{k}/2"]) for k in fields["qkv"]},
        hidden={s: arrays[f"hidden/{s}"] for s in fields["hidden"]},
        embeddings={s: (arrays[f"embeddings/{s}/0"], arrays[f"embeddings/{s}/1"]) for s in fields["embeddings"]})


def _token_prob(d: dict[str, Any]) -> TokenProb:
    return TokenProb(**d)


def _generation(d: dict[str, Any] | None) -> Generation | None:
    if d is None:
        return None
    steps = [GenerationStep(position=s["position"], chosen=_token_prob(s["chosen"]), sampling_prob=s["sampling_prob"],
                            alternatives=[_token_prob(a) for a in s["alternatives"]]) for s in d["steps"]]
    return Generation(**{**d, "steps": steps})


def _masked(d: dict[str, Any] | None) -> MaskedPrediction | None:
    if d is None:
        return None
    positions = [MaskedPosition(p["position"], p["original"], [_token_prob(t) for t in p["predictions"]])
                 for p in d["positions"]]
    return MaskedPrediction(positions, d["random_weights"])


def load_result(folder: str | os.PathLike, result_id: str) -> PlaygroundResult:
    """Read a result written by :func:`save_result` (JSON and ``np.load(allow_pickle=False)``: only data, never
    code; ids are checked)."""
    path = result_path(folder, result_id)
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise PlaygroundError("this playground result is no longer available: run the model again") from None
    except (ValueError, OSError, KeyError) as exc:
        raise PlaygroundError(f"{path.name} is not a readable playground result ({type(exc).__name__})") from None
    try:
        if not isinstance(fields, dict) or fields.get("format") != RESULT_FORMAT or fields.get("id") != result_id:
            raise KeyError("format")
        return PlaygroundResult(
            id=fields["id"], choice=ModelChoice(**fields["choice"]), request=InputRequest(**fields["request"]),
            display_name=fields["display_name"], family=fields["family"], random_weights=fields["random_weights"],
            has_lm_head=fields["has_lm_head"], shape={k: (int(v[0]), int(v[1])) for k, v in fields["shape"].items()},
            max_length=fields["max_length"], overrides=fields["overrides"],
            example=_example(fields["example"], arrays), generation=_generation(fields["generation"]),
            masked=_masked(fields["masked"]), seconds=fields["seconds"], created=fields["created"])
    except (KeyError, TypeError, IndexError, ValueError):
        raise PlaygroundError(f"{path.name} is not a playground result") from None
