"""Readable labels for tokenizer token strings (byte-level BPE "Ġword", WordPiece "##ing", SentencePiece "▁x").

Pure functions. GPT-2's byte-level tokens are decoded as a *sequence*: the bytes of consecutive tokens are
joined and decoded as UTF-8, so a character whose bytes are split over two tokens ("âĢ" + "Ļ" for ``’``) is
shown as text on both (``’…`` where it starts, ``…’`` where it ends) instead of as raw bytes. What a label
shows:

* a leading space as a quiet ``·`` (every space of a whitespace-only token too);
* newline ``↵``, tab ``⇥``, carriage return ``␍``;
* invisible characters by name: ``⟨BOM⟩`` (U+FEFF, a byte-order mark), ``⟨ZWSP⟩``, ``⟨ZWJ⟩``, ``⟨ZWNJ⟩``,
  ``⟨NBSP⟩``, other control or format characters as ``⟨U+XXXX⟩``;
* bytes that are not UTF-8 (random token sequences) as hex in quiet brackets, ``‹e2 80›``;
* an empty token as ``∅``; special tokens (``[CLS]``, ``<|endoftext|>``, ``<s>``) as they are.

:func:`raw_token` is the tokenizer's own string, for hovers and tooltips; :func:`raw_labels` quotes it for a
hover beside the readable label (``'Ġthe'``; a byte-level token that is not plain ASCII also as its bytes,
``'Ã' b'\xc3'``). Axis labels are made unique by their
position (``"3 the"``) because plotly merges equal category labels on an axis.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

_BYTE_LEVEL_MARKERS = ("Ġ", "Ċ", "ĉ")
#: Tokens shown as they are: bracketed special tokens of BERT, GPT-2, T5, Marian, SentencePiece.
_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|[^|<>]*\|>|</?[A-Za-z_]+>|<extra_id_\d+>)$")
SPACE_MARK = "·"
CONTINUES = "…"
EMPTY = "∅"
_WHITESPACE = {"\n": "↵", "\t": "⇥", "\r": "␍"}
_NAMED = {"\ufeff": "⟨BOM⟩", "\u200b": "⟨ZWSP⟩", "\u200c": "⟨ZWNJ⟩", "\u200d": "⟨ZWJ⟩", "\u00a0": "⟨NBSP⟩",
          "\u2060": "⟨WJ⟩", "\u00ad": "⟨SHY⟩"}


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


def _token_bytes(token: str) -> bytes | None:
    """The bytes a byte-level token stands for; None for a special token or one outside the alphabet."""
    table = _byte_decoder()
    if _SPECIAL.match(token) or any(ch not in table for ch in token):
        return None
    return bytes(table[ch] for ch in token)


def is_byte_level(tokens: Sequence[str]) -> bool:
    """Whether tokens look like GPT-2 byte-level BPE: some token uses the Ġ/Ċ stand-ins, or every token is in
    the byte alphabet and their bytes hold UTF-8 multi-byte characters (a text without spaces, a lone BOM)."""
    if any(marker in t for t in tokens for marker in _BYTE_LEVEL_MARKERS):
        return True
    pieces = [_token_bytes(t) for t in tokens if not _SPECIAL.match(t)]
    if not pieces or any(p is None for p in pieces):
        return False
    joined = b"".join(p for p in pieces if p is not None)
    if all(b < 0x80 for b in joined):
        return False
    try:
        joined.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8_units(data: bytes) -> list[tuple[int, int, str | None]]:
    """``data`` cut into (start, end, character) units: each UTF-8 character, or one byte that is not part of
    a valid character (character ``None``)."""
    units: list[tuple[int, int, str | None]] = []
    p, n = 0, len(data)
    while p < n:
        lead = data[p]
        size = 1 if lead < 0x80 else 2 if 0xC2 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else \
            4 if 0xF0 <= lead < 0xF5 else 0
        if size and p + size <= n:
            try:
                units.append((p, p + size, data[p:p + size].decode("utf-8")))
                p += size
                continue
            except UnicodeDecodeError:
                pass
        units.append((p, p + 1, None))
        p += 1
    return units


def _visible(text: str) -> str:
    """Whitespace and invisible characters of decoded text as quiet visible marks (a leading space as ``·``)."""
    if text and not text.strip(" "):
        return SPACE_MARK * len(text)
    stripped = text.lstrip(" ")
    out = [SPACE_MARK] if len(stripped) < len(text) else []
    for ch in stripped:
        if ch in _WHITESPACE:
            out.append(_WHITESPACE[ch])
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs", "Cn") and ch != " ":
            out.append(f"⟨U+{ord(ch):04X}⟩")
        else:
            out.append(ch)
    return "".join(out) if out else EMPTY


def _hex(data: bytes) -> str:
    return "‹" + " ".join(f"{b:02x}" for b in data) + "›"


def _byte_level_labels(tokens: Sequence[str]) -> list[str]:
    """Labels of a byte-level token sequence, decoded across token boundaries."""
    pieces = [_token_bytes(t) for t in tokens]
    stream = b"".join(p for p in pieces if p is not None)
    units = _utf8_units(stream)
    labels: list[str] = []
    offset, u = 0, 0
    for token, piece in zip(tokens, pieces, strict=True):
        if piece is None:
            labels.append(token if token else EMPTY)
            continue
        lo, hi = offset, offset + len(piece)
        offset = hi
        text: list[str] = []
        invalid = bytearray()
        while u < len(units) and units[u][1] <= lo:
            u += 1
        k = u
        while k < len(units) and units[k][0] < hi:
            start, end, ch = units[k]
            if ch is None:
                invalid += stream[start:end]
            else:
                if invalid:
                    text.append(_hex(bytes(invalid)))
                    invalid.clear()
                shown = _visible(ch) if ch != " " else " "
                text.append((CONTINUES if start < lo else "") + shown + (CONTINUES if end > hi else ""))
            k += 1
        if invalid:
            text.append(_hex(bytes(invalid)))
        joined = "".join(text)
        labels.append(_spaces(joined) if joined else EMPTY)
    return labels


def _spaces(text: str) -> str:
    """Leading and whitespace-only spaces as ``·`` (other characters were made visible already)."""
    if not text.strip(" "):
        return SPACE_MARK * len(text)
    stripped = text.lstrip(" ")
    return (SPACE_MARK if len(stripped) < len(text) else "") + stripped


def display_token(token: str, *, byte_level: bool = False) -> str:
    """A short readable form of one token (see the module's list); a byte-level token alone is decoded on its
    own, so a token holding part of a character shows its bytes (``‹e2 80›``)."""
    if byte_level:
        return _byte_level_labels([token])[0]
    if not token:
        return EMPTY
    if _SPECIAL.match(token):
        return token
    return _visible(token.replace("▁", " "))


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """Readable labels of a whole token sequence (byte-level decoding detected from the sequence and done
    across token boundaries)."""
    if is_byte_level(tokens):
        return _byte_level_labels(tokens)
    return [display_token(t) for t in tokens]


def raw_token(token: str) -> str:
    """The tokenizer's own token string, for a hover or tooltip (``""`` shown as ``''``)."""
    return token if token else "''"


def raw_label(token: str, *, byte_level: bool = False) -> str:
    """The tokenizer's own token string quoted as Python writes a string (escapes for control and invisible
    characters: ``'\ufeff'``); for a byte-level token whose bytes are not plain ASCII, its bytes after it
    (``'âĢ' b'\xe2\x80'``), since the stand-in characters hide them."""
    quoted = repr(token)
    if byte_level:
        data = _token_bytes(token)
        if data is not None and any(b >= 0x80 for b in data):
            return f"{quoted} {data!r}"
    return quoted


def raw_labels(tokens: Sequence[str]) -> list[str]:
    """:func:`raw_label` of every token of a sequence (byte-level detected from the whole sequence)."""
    byte_level = is_byte_level(tokens)
    return [raw_label(t, byte_level=byte_level) for t in tokens]


def axis_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels ``"<position> <token>"`` for display tokens."""
    return [f"{i} {t}" for i, t in enumerate(tokens)]
