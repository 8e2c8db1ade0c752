"""Value-weighted attention norms ‖α_ij f(x_j)‖ (Kobayashi et al. 2020, "Attention is Not Only a Weight").

For head ``h`` of a layer, ``f_h(x_j) = (x_j W_V^h + b_V^h) W_O^h`` is what token ``j`` contributes to the
attention output through that head: its value vector times the head's slice of the output projection (rows
``h·d .. h·d+d−1`` of ``W_O``; the output bias is shared by all heads and left out). Since ``α_ij ≥ 0``,
``‖α_ij f_h(x_j)‖ = α_ij ‖f_h(x_j)‖``: this module records ``‖f_h(x_j)‖`` per layer, head and token with a forward
hook on the value projection (the value vectors the model itself computed, bias included) and the output
projection's weights; :func:`value_weighted` multiplies by the attention weights. Definition: docs/metrics.md.

Per-family module names (inside one layer): :data:`VALUE_OUTPUT_SUFFIXES`. GPT-2 computes Q, K and V with one
fused ``Conv1D`` (``c_attn``; V is its last third) and projects with a ``Conv1D`` (``c_proj``), whose weight is
stored ``[in, out]``, the transpose of ``nn.Linear``'s. ALBERT shares one layer's modules across all layers: the
value hook fires once per layer, in layer order, like any other model's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from attnviz.pipeline.models.loading import LoadedModel

#: model_type -> (value projection suffix, or "fused:<suffix>" for a fused Q/K/V projection, output projection
#: suffix), both inside one attention block.
VALUE_OUTPUT_SUFFIXES: dict[str, tuple[str, str]] = {
    "bert": ("attention.self.value", "attention.output.dense"),
    "roberta": ("attention.self.value", "attention.output.dense"),
    "albert": ("attention.value", "attention.dense"),
    "distilbert": ("attention.v_lin", "attention.out_lin"),
    "gpt2": ("fused:attn.c_attn", "attn.c_proj"),
    "bart": ("v_proj", "out_proj"),
    "marian": ("v_proj", "out_proj"),
    "mbart": ("v_proj", "out_proj"),
}


class NormsUnsupportedError(ValueError):
    """The model's value and output projections are not known (one line, with the fix)."""


def output_heads(module: torch.nn.Module, heads: int) -> torch.Tensor:
    """The output projection's weight as ``[H, d, D]`` float32: ``W_O^h`` for each head ``h`` (input rows
    ``h·d .. h·d+d−1``). ``nn.Linear`` stores ``[D, H·d]``; GPT-2's ``Conv1D`` stores ``[H·d, D]``."""
    weight = cast(torch.Tensor, module.weight).detach().float()
    if isinstance(module, torch.nn.Linear):
        weight = weight.t()
    elif type(module).__name__ != "Conv1D":
        raise NormsUnsupportedError(f"output projection {type(module).__name__} is neither nn.Linear nor Conv1D")
    inner, out = weight.shape
    return weight.reshape(heads, inner // heads, out)


def head_value_norms(values: torch.Tensor, w_o: torch.Tensor) -> torch.Tensor:
    """``‖f_h(x_j)‖`` as ``[B, H, T]`` from the value projection's output ``[B, T, H·d]`` (bias included) and the
    output weights ``[H, d, D]`` of :func:`output_heads`."""
    b, t, hd = values.shape
    heads, d, _ = w_o.shape
    v = values.float().reshape(b, t, heads, d)
    f = torch.einsum("bthd,hde->bhte", v, w_o.to(v.device))
    return torch.linalg.vector_norm(f, dim=-1)


class ValueNormRecorder:
    """Forward hooks on a model's value projections; per attention kind, ``‖f_h(x_j)‖`` of every layer in call
    (= layer) order, each ``[B, H, T_keys]`` on the model's device."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        suffixes = VALUE_OUTPUT_SUFFIXES.get(lm.config.model_type)
        if suffixes is None:
            raise NormsUnsupportedError(
                f"model {lm.info.name!r} ({lm.config.model_type}): value-weighted norms (--capture norms) need its "
                f"value and output projections, known for {', '.join(sorted(VALUE_OUTPUT_SUFFIXES))}: drop norms "
                "from --capture")
        value_suffix, out_suffix = suffixes
        fused = value_suffix.startswith("fused:")
        value_suffix = value_suffix.removeprefix("fused:")
        self.records: dict[str, list[torch.Tensor]] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        base = cast(torch.nn.Module, lm.model.base_model)
        modules = dict(base.named_modules())
        shape = lm.shape()
        for name, module in modules.items():
            if not (name == value_suffix or name.endswith("." + value_suffix)):
                continue
            prefix = name[: len(name) - len(value_suffix)]
            out_module = modules.get(prefix + out_suffix)
            if out_module is None:
                raise NormsUnsupportedError(f"model {lm.info.name!r}: no output projection {prefix + out_suffix!r} "
                                            f"beside {name!r}: drop norms from --capture")
            kind = self._kind_of(name)
            w_o = output_heads(out_module, shape[kind][1])
            self.handles.append(module.register_forward_hook(self._hook(kind, w_o, fused)))
        if not self.handles:
            raise NormsUnsupportedError(f"model {lm.info.name!r}: no value projection named *{value_suffix}: drop "
                                        "norms from --capture")

    def _kind_of(self, name: str) -> str:
        if self.lm.family != "encoder-decoder":
            return "self"
        if "encoder_attn" in name:
            return "cross"
        return "decoder" if name.startswith("decoder.") or ".decoder." in name else "self"

    def _hook(self, kind: str, w_o: torch.Tensor, fused: bool):  # noqa: ANN202 - torch hook signature
        owner = threading.get_ident()

        def hook(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if threading.get_ident() != owner:  # another thread's forward pass of the same model
                return
            values = output.chunk(3, dim=-1)[2] if fused else output
            self.records.setdefault(kind, []).append(head_value_norms(values.detach(), w_o))
        return hook

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self.handles:
            h.remove()


def value_weighted(attn: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """``α_ij ‖f_h(x_j)‖``: attention ``[..., H, Tq, Tk]`` times per-key norms ``[..., H, Tk]``."""
    return attn.float() * norms.unsqueeze(-2).float()


def normalize_rows(weighted: np.ndarray, query_mask: np.ndarray, key_mask: np.ndarray, *, causal: bool
                   ) -> np.ndarray:
    """Row-normalized value-weighted norms ``ñ_ij = n_ij / Σ_{k∈K_i} n_ik`` of a padded batch ``[B, L, H, Tq, Tk]``
    (float32): keys outside ``K_i`` (padding, the future of a causal query) are set to 0 first, as are rows of
    padded queries; a row whose norms sum to 0 stays 0. The per-head metrics are computed on this."""
    valid = key_mask[:, None, None, None, :].astype(bool)
    if causal:
        tq, tk = weighted.shape[-2:]
        valid = valid & np.tril(np.ones((tq, tk), dtype=bool))[None, None, None]
    valid = valid & query_mask[:, None, None, :, None].astype(bool)
    masked = np.where(valid, weighted, np.float32(0)).astype(np.float32)
    total = masked.sum(axis=-1, keepdims=True)
    return np.divide(masked, total, out=np.zeros_like(masked), where=total > 0)


def stacked_norms(records: dict[str, list[torch.Tensor]], kind: str, rows: Sequence[int] | None = None
                  ) -> torch.Tensor:
    """The recorded norms of a kind as ``[B, L, H, Tk]`` (only ``rows`` of the batch when given)."""
    out = torch.stack(records[kind], 1)
    if rows is not None:
        out = out[torch.as_tensor(list(rows), dtype=torch.long, device=out.device)]
    return out
