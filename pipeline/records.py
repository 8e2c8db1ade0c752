"""Plain in-memory records passed from the model side to the store writer (numpy only, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Attention kinds a run can hold. Encoder-only and decoder-only models have "self"; encoder-decoder models
#: have "self" (encoder self-attention), "decoder" (decoder self-attention) and "cross" (decoder → encoder).
ATTENTION_KINDS: tuple[str, ...] = ("self", "decoder", "cross")

#: Which token sequence the queries and keys of each kind index: "source" (encoder / single sequence)
#: or "target" (decoder input of an encoder-decoder model).
KIND_SIDES: dict[str, tuple[str, str]] = {
    "self": ("source", "source"),
    "decoder": ("target", "target"),
    "cross": ("target", "source"),
}

#: Which token side carries hidden states / embeddings / Q,K,V for a kind.
SIDE_OF_KIND: dict[str, str] = {"self": "source", "decoder": "target", "cross": "target"}


@dataclass
class TokenSequence:
    """The tokens of one side of one example."""

    ids: np.ndarray  #: [T] int32 token ids
    strings: list[str]  #: [T] tokenizer token strings (e.g. "##ing", "Ġworld")
    flags: np.ndarray  #: [T] uint8 bit flags from ``attnviz.pipeline.token_classes``

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class ExampleResult:
    """Everything the pipeline stores for one example. Arrays are float32 until the writer down-casts."""

    input_index: int  #: position of the example in the (blank-line-free) input
    text: str
    source: TokenSequence
    attention: dict[str, np.ndarray]  #: kind -> [L, H, Tq, Tk]
    metrics: dict[str, dict[str, np.ndarray]]  #: kind -> metric name -> [L, H]
    truncated: bool = False
    target_text: str = ""
    target: TokenSequence | None = None
    label: str = ""
    meta: dict = field(default_factory=dict)
    qkv: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  #: kind -> [L,H,T,d] x3
    hidden: dict[str, np.ndarray] = field(default_factory=dict)  #: side -> [L+1, T, D]
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  #: side -> ([T,D], [T,D])
    #: kind -> [L, H, Tq, Tk] value-weighted norms ‖a_ij f(x_j)‖ (``--capture norms``; pipeline/models/norms.py)
    norms: dict[str, np.ndarray] = field(default_factory=dict)
    #: Whether the raw tensors (attention, Q/K/V, hidden states, embeddings) are kept; when False they are empty
    #: arrays and only the metrics, tokens and columns are stored (``--attention``).
    kept: bool = True
