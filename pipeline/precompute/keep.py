"""Which examples of a run keep their raw attention (``--attention all|none|first:N|every:K|sample:N``).

Metrics, tokens and every per-example column are stored for every example; the raw tensors (attention, Q/K/V,
hidden states, embeddings) only for the examples the policy keeps. The choice depends only on the example's
input index, the policy and (for ``sample``) the number of examples in the whole input and the seed, so a
resumed or extended run keeps exactly the examples an uninterrupted run keeps. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from attnviz.pipeline.precompute.inputs import InputError

#: The policy keyword of each form, in ``--help`` order.
FORMS = ("all", "none", "first:N", "every:K", "sample:N")
_SPEC = re.compile(r"^(?:(all|none)|(first|every|sample):(\d{1,12})(?:,seed=(\d{1,12}))?)$")


@dataclass(frozen=True)
class AttentionKeep:
    """A parsed ``--attention`` policy: ``kind`` is ``all``, ``none``, ``first``, ``every`` or ``sample``."""

    kind: str = "all"
    n: int = 0  #: N of first:N and sample:N, K of every:K
    seed: int = 0  #: the seed of sample:N

    @property
    def spec(self) -> str:
        """The canonical spelling (``sample:N,seed=S`` always names its seed)."""
        if self.kind in ("all", "none"):
            return self.kind
        return f"{self.kind}:{self.n}" + (f",seed={self.seed}" if self.kind == "sample" else "")

    @property
    def meta_value(self) -> str | None:
        """What the run's metadata records: None for ``all`` (as every store written before the option), else
        :attr:`spec`."""
        return None if self.kind == "all" else self.spec

    def keep_mask(self, count: int, input_size: int) -> np.ndarray:
        """``[count]`` bool: whether each of the input's first ``count`` examples keeps raw attention.

        ``input_size``: examples in the whole input (``sample`` draws N of them, whatever ``--limit`` is)."""
        index = np.arange(count)
        if self.kind == "all":
            return np.ones(count, dtype=bool)
        if self.kind == "none":
            return np.zeros(count, dtype=bool)
        if self.kind == "first":
            return index < self.n
        if self.kind == "every":
            return index % self.n == 0
        mask = np.zeros(count, dtype=bool)
        size = max(int(input_size), count)
        chosen = np.random.default_rng(self.seed).choice(size, size=min(self.n, size), replace=False)
        mask[chosen[chosen < count]] = True
        return mask


def parse_attention(spec: str | AttentionKeep | None) -> AttentionKeep:
    """``--attention`` as an :class:`AttentionKeep` (None: ``all``); a one-line InputError for anything else."""
    if isinstance(spec, AttentionKeep):
        return spec
    text = "all" if spec is None else str(spec).strip().lower()
    m = _SPEC.match(text)
    if m is None:
        raise InputError(f"--attention {spec!r} is not a policy: use all, none, first:N, every:K or "
                         "sample:N[,seed=S] (e.g. every:100)")
    if m.group(1):
        return AttentionKeep(m.group(1))
    kind, n = m.group(2), int(m.group(3))
    if m.group(4) is not None and kind != "sample":
        raise InputError(f"--attention {spec!r}: only sample:N takes a seed")
    if kind == "every" and n < 1:
        raise InputError(f"--attention {spec!r}: every:K needs K of at least 1 (every:1 is all)")
    return AttentionKeep(kind, n, int(m.group(4) or 0))


def policy_of_meta(value: str | None) -> AttentionKeep:
    """The policy a run's metadata records (``attention``; absent or null: ``all``)."""
    try:
        return parse_attention(value)
    except InputError:
        return AttentionKeep("all")


__all__ = ["FORMS", "AttentionKeep", "parse_attention", "policy_of_meta"]
