"""Readable labels for tokenizer token strings (byte-level BPE "Ġword", WordPiece "##ing", SentencePiece "▁x").

Pure functions. Labels are made unique by their position (``"3 the"``) because plotly merges equal category
labels on an axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

_BYTE_LEVEL_MARKERS = ("Ġ", "Ċ", "ĉ")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable stand-in character -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def is_byte_level(tokens: Sequence[str]) -> bool:
    """Whether tokens look like GPT-2 byte-level BPE (some token uses the Ġ/Ċ stand-ins)."""
    return any(marker in t for t in tokens for marker in _BYTE_LEVEL_MARKERS)


def _decode_byte_level(token: str) -> str:
    table = _byte_decoder()
    if any(ch not in table for ch in token):
        return token
    raw = bytes(table[ch] for ch in token)
    return raw.decode("utf-8", errors="backslashreplace")


def display_token(token: str, *, byte_level: bool = False) -> str:
    """A short readable form of one token: byte-level BPE decoded, a leading space shown as ``·``,
    newlines and tabs escaped, and an empty token shown as ``∅``."""
    text = _decode_byte_level(token) if byte_level else token.replace("▁", " ")
    if text.startswith(" ") and text.strip():
        text = "·" + text.lstrip(" ")
    text = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if not text.strip():
        return "␣" * len(text) if text else "∅"
    return text


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """:func:`display_token` for a whole sequence (byte-level decoding detected from the sequence)."""
    byte_level = is_byte_level(tokens)
    return [display_token(t, byte_level=byte_level) for t in tokens]


def axis_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels ``"<position> <token>"`` for display tokens."""
    return [f"{i} {t}" for i, t in enumerate(tokens)]
