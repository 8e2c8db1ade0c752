"""The playground's plain records (no torch): what the page asks for, the limits that protect the server, what
a job returns, and the result files the model worker leaves for the dashboard.

Shared by the dashboard process (which must never import torch), the model worker and the tests.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnviz.pipeline.models.info import ModelInfo
from attnviz.pipeline.records import ExampleResult

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
# Result files: written by the model worker, read by the dashboard process (pickle of numpy-only records).
# --------------------------------------------------------------------------------------------------------


def new_result_id() -> str:
    """A fresh result id (32 hex digits)."""
    return os.urandom(16).hex()


def result_path(folder: str | os.PathLike, result_id: str) -> Path:
    """File of a result; refuses ids that are not 32 hex digits (they come back from the browser)."""
    if not isinstance(result_id, str) or not _RESULT_ID.match(result_id):
        raise PlaygroundError("unknown playground result: run the model again")
    return Path(folder) / "results" / f"{result_id}.pkl"


def result_store_path(folder: str | os.PathLike, result_id: str) -> Path:
    """The one-example store of a result (run :data:`RESULT_RUN`), read by the Example tab's views."""
    return result_path(folder, result_id).with_suffix(".h5")


def save_result(folder: str | os.PathLike, result: PlaygroundResult) -> Path:
    """Write a result's record file atomically (the numpy-only :class:`PlaygroundResult`)."""
    path = result_path(folder, result.id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return path


def prune_results(folder: str | os.PathLike, keep: int = KEEP_RESULTS) -> int:
    """Remove the files of all but the newest ``keep`` results; return how many results were removed."""
    results = Path(folder) / "results"
    files = sorted(results.glob("*.pkl"), key=lambda p: p.stat().st_mtime)
    old = files[:-keep] if keep > 0 else files
    for pkl in old:
        store = pkl.with_suffix(".h5")
        for path in (pkl, store, store.with_name(store.name + ".lock")):
            path.unlink(missing_ok=True)
        shutil.rmtree(store.with_name(store.name + ".d"), ignore_errors=True)
    return len(old)


def load_result(folder: str | os.PathLike, result_id: str) -> PlaygroundResult:
    """Read a result file written by :func:`save_result` (only files this app wrote: ids are checked)."""
    path = result_path(folder, result_id)
    try:
        with open(path, "rb") as f:
            result = pickle.load(f)  # our own files, in our own 0700 folder
    except FileNotFoundError:
        raise PlaygroundError("this playground result is no longer available: run the model again") from None
    if not isinstance(result, PlaygroundResult):
        raise PlaygroundError(f"{path} is not a playground result")
    return result
