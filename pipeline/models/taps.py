"""Stop a forward pass right after its last attention when nothing computed later is captured.

A model's attention weights of layer ``l`` depend only on layers ``0..l``: the last layer's feed-forward, the
final layer norm and the pooler change no attention weight. When only attention (and Q/K/V) is captured, the
pipeline records each attention tensor where the model's module returns it and stops the forward pass once
the last one is recorded. On all-MiniLM-L6-v2 this skips about a tenth of the forward.

Which module call returns which attention tensor is not hard-coded per architecture: it is found on a model's
first full forward pass, by identity of the tensors the model itself returned (:func:`discover`). The stopped
forward is then checked once against the full one on the same batch (bitwise equal). A model whose attention
cannot be traced that way (each tensor returned by a module call of its own), or fails the check, always runs
the full forward. The tensors recorded are the very objects the full forward returns, so stored attention is
unchanged.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import torch


class _StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a tap once the last attention tensor of the forward pass is recorded."""


@dataclass(frozen=True)
class AttentionSite:
    """Where one attention tensor comes from: the ``call``-th call (from 0) of ``module`` in a forward pass, element
    ``index`` of its output tuple (``None``: the output itself)."""

    module: torch.nn.Module
    call: int
    index: int | None


#: kind -> per-layer sites, by model; ``None`` where the model's attention could not be traced (full forwards).
_SITES: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, list[AttentionSite]] | None] = \
    weakref.WeakKeyDictionary()


def known_sites(model: torch.nn.Module) -> dict[str, list[AttentionSite]] | None:
    """The traced attention sites of ``model``, or ``None`` when they are unknown or untraceable."""
    return _SITES.get(model)


def is_traced(model: torch.nn.Module) -> bool:
    """Whether :func:`discover` already ran for ``model`` (successfully or not)."""
    return model in _SITES


def discover(model: torch.nn.Module, forward: Callable[[], Mapping[str, tuple[torch.Tensor, ...]]]) -> \
        Mapping[str, tuple[torch.Tensor, ...]]:
    """Run ``forward`` (a full forward pass of ``model`` returning kind -> per-layer attention) with every module's
    output watched; remember where each returned attention tensor came from (if a stopped forward on the same
    input then returns the same weights); return ``forward``'s result."""
    seen: dict[int, list[tuple[torch.nn.Module, int, int | None, torch.Tensor]]] = {}
    calls: dict[torch.nn.Module, int] = {}
    owner = threading.get_ident()

    def watch(module: torch.nn.Module, _inputs: object, output: object) -> None:
        if threading.get_ident() != owner:
            return  # another thread's forward pass of the same model
        call = calls.get(module, 0)
        calls[module] = call + 1
        items = enumerate(output) if isinstance(output, tuple) else [(None, output)]
        for index, value in items:
            if isinstance(value, torch.Tensor) and value.dim() == 4:
                seen.setdefault(id(value), []).append((module, call, index, value))

    handles = [m.register_forward_hook(watch) for m in model.modules()]
    try:
        attentions = forward()
    finally:
        for h in handles:
            h.remove()
    found_sites: dict[str, list[AttentionSite]] = {}
    sites: dict[str, list[AttentionSite]] | None = found_sites
    used: set[tuple[int, int]] = set()
    for kind, layers in attentions.items():
        for tensor in layers:
            # The tensor itself, not just its id (a freed tensor's id can be reused). Modules that pass it on
            # (BERT's attention block returns its self-attention's weights) return it again later: the first
            # module to return it is tapped.
            found = [(m, c, i) for m, c, i, v in seen.get(id(tensor), []) if v is tensor]
            if not found or (id(found[0][0]), found[0][1]) in used:
                sites = None
                break
            used.add((id(found[0][0]), found[0][1]))
            found_sites.setdefault(kind, []).append(AttentionSite(*found[0]))
        if sites is None:
            break
    if sites:
        # Verified once on the same input: a model that changed an attention tensor in place after returning it
        # would give different weights when stopped early; such a model keeps running whole forwards.
        stopped = forward_until_last_attention(sites, forward)
        same = stopped.keys() == attentions.keys() and all(
            len(stopped[kind]) == len(layers)
            and all(torch.equal(a, b) for a, b in zip(stopped[kind], layers, strict=True))
            for kind, layers in attentions.items())
        if not same:
            sites = None
    _SITES[model] = sites
    return attentions


def forward_until_last_attention(sites: Mapping[str, list[AttentionSite]],
                                 forward: Callable[[], Mapping[str, tuple[torch.Tensor, ...]]]
                                 ) -> Mapping[str, tuple[torch.Tensor, ...]]:
    """Run ``forward`` (as for :func:`discover`) but stop it once every attention site has returned; return
    kind -> per-layer attention. Should a forward pass end without reaching every site, its own result is used.
    """
    wanted: dict[tuple[int, int], tuple[str, int, int | None]] = {}
    for kind, layer_sites in sites.items():
        for layer, site in enumerate(layer_sites):
            wanted[(id(site.module), site.call)] = (kind, layer, site.index)
    recorded: dict[str, list[torch.Tensor | None]] = {kind: [None] * len(s) for kind, s in sites.items()}
    calls: dict[int, int] = {}
    remaining = len(wanted)
    owner = threading.get_ident()

    def tap(module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal remaining
        if threading.get_ident() != owner:
            return  # another thread's forward pass of the same model (hooks are per module, not per thread)
        call = calls.get(id(module), 0)
        calls[id(module)] = call + 1
        site = wanted.get((id(module), call))
        if site is None:
            return
        kind, layer, index = site
        recorded[kind][layer] = cast(torch.Tensor, output if index is None else cast(tuple, output)[index])
        remaining -= 1
        if remaining == 0:
            raise _StopForward

    modules = {id(s.module): s.module for layer_sites in sites.values() for s in layer_sites}
    handles = [m.register_forward_hook(tap) for m in modules.values()]
    try:
        return forward()
    except _StopForward:
        return {kind: tuple(cast(list[torch.Tensor], layers)) for kind, layers in recorded.items()}
    finally:
        for h in handles:
            h.remove()
