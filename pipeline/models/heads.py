"""Whether a model can predict words (an LM or masked-LM head), known from its model_info entry and its
checkpoint's ``config.json`` alone: no torch, no weights read (the dashboard asks before anything is loaded)."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from attnviz.pipeline.models.info import ModelInfo

#: Architecture names (``config.json`` ``architectures``) whose checkpoints carry a masked-LM head.
MLM_MARKERS = ("MaskedLM", "ForPreTraining")


def has_mlm_head(architectures: Sequence[str] | None) -> bool:
    """Whether a checkpoint of these architectures holds a masked-LM head (else one would be random)."""
    return any(marker in a for a in architectures or () for marker in MLM_MARKERS)


def _checkpoint_folder(info: ModelInfo) -> Path | None:
    """The folder of a package or local checkpoint (None for the hub, or a package that is not installed)."""
    src = info.source
    if src.kind == "local":
        return Path(os.path.expanduser(src.path or ""))
    if src.kind == "package":
        try:
            module = importlib.import_module(src.package or "")
        except ImportError:
            return None
        get_path = getattr(module, "get_model_path", None)
        return Path(get_path()) if callable(get_path) else None
    return None


def prediction_head(info: ModelInfo) -> bool | None:
    """Whether the model predicts words (LM head of a decoder or encoder-decoder, masked-LM head of an encoder),
    as :func:`attnviz.pipeline.models.loading.load_model` will load it: random-weight models always get their head;
    a trained encoder only if its checkpoint has one. None when that cannot be known without the hub."""
    if info.random_weights or info.family != "encoder":
        return True
    folder = _checkpoint_folder(info)
    if folder is None:
        return None
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return has_mlm_head(config.get("architectures") if isinstance(config, dict) else None)
