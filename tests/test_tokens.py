"""Readable token labels (``dashboard/example/tokens.py``) on the real GPT-2 BPE and on WordPiece/SentencePiece.

The check is independent of the labelling code: the labels of a real GPT-2 tokenization, read back as text (the
quiet marks replaced by what they stand for, continuation halves dropped), must give the input text again, and no
label may show a byte-level stand-in or an escaped byte.
"""

from __future__ import annotations

import pytest
import transformers

from attnviz.dashboard.example.tokens import (
    CONTINUES,
    SPACE_MARK,
    axis_labels,
    display_token,
    display_tokens,
    is_byte_level,
    raw_label,
    raw_labels,
    raw_token,
)
from attnviz.pipeline.models.loading import gpt2_bpe_files

TEXTS = [
    "\ufeffHello world",  # a byte-order mark in front (three bytes, often three tokens)
    "Él mañana comerá crème brûlée à Zürich.",
    "Emoji 🙂 and 👩‍👩‍👧 families",  # four-byte characters, zero-width joiners
    "tabs\tand\nnew lines  and   runs of spaces",
    "日本語のテキスト",
    "curly ’quotes’ and a non\u00a0breaking space",
]


@pytest.fixture(scope="module")
def gpt2() -> transformers.GPT2Tokenizer:
    vocab, merges = gpt2_bpe_files()
    return transformers.GPT2Tokenizer(vocab=str(vocab), merges=str(merges))


def read_back(labels: list[str]) -> str:
    """The text a reader sees in the labels: the marks replaced, each split character counted once (where it
    starts: a label part ``x…``), continuations ``…x`` dropped."""
    marks = {"⟨BOM⟩": "\ufeff", "⟨ZWJ⟩": "\u200d", "⟨NBSP⟩": "\u00a0", "↵": "\n", "⇥": "\t"}
    out = []
    for label in labels:
        text = label
        if text.startswith(CONTINUES):
            # drop the continuation of a character started in an earlier token
            rest = text[1:]
            for mark in marks:
                if rest.startswith(mark):
                    rest = rest[len(mark):]
                    break
            else:
                rest = rest[1:]
            text = rest.removeprefix(CONTINUES)
        text = text.removesuffix(CONTINUES)
        text = text.replace(SPACE_MARK, " ")
        for mark, char in marks.items():
            text = text.replace(mark, char)
        out.append(text)
    return "".join(out)


@pytest.mark.parametrize("text", TEXTS)
def test_real_gpt2_tokens_read_back_as_the_text(gpt2: transformers.GPT2Tokenizer, text: str) -> None:
    tokens = gpt2.convert_ids_to_tokens(gpt2(text)["input_ids"])
    assert is_byte_level(tokens)
    labels = display_tokens(tokens)
    assert len(labels) == len(tokens)
    for label in labels:
        assert "Ġ" not in label and "Ċ" not in label and "\\x" not in label and "‹" not in label, label
        assert not any(ch in label for ch in "ÃâðïĢĻ"), label  # no byte stand-ins of a multi-byte character
    assert read_back(labels) == text


def test_a_bom_split_over_tokens_is_named_not_shown_as_latin1(gpt2: transformers.GPT2Tokenizer) -> None:
    tokens = gpt2.convert_ids_to_tokens(gpt2("\ufeffHi")["input_ids"])
    labels = display_tokens(tokens)
    assert "ï" not in "".join(labels) and "⟨BOM⟩" in labels[0]
    # three separate byte tokens with no space marker anywhere are still recognised as byte-level
    assert display_tokens(["ï", "»", "¿", "Hi"]) == ["⟨BOM⟩…", "…⟨BOM⟩…", "…⟨BOM⟩", "Hi"]


def test_split_characters_spaces_specials_and_invalid_bytes() -> None:
    assert display_tokens(["ĠÃ", "¡", "Ġcaf", "Ã©"]) == ["·á…", "…á", "·caf", "é"]
    assert display_tokens(["ĠĠĠ", "<|endoftext|>", "Ġ", "ðŁ", "ĻĤ"]) == ["···", "<|endoftext|>", "·", "🙂…", "…🙂"]
    # a byte that is no part of any UTF-8 character (random token ids) shows as quiet hex
    assert display_tokens(["Ġ\u00e2", "Ġx"]) == ["·‹e2›", "·x"]
    assert display_token("âĢ", byte_level=True) == "‹e2 80›"  # half a character, alone
    assert display_tokens(["[CLS]", "play", "##ing", "▁x", "[SEP]"]) == ["[CLS]", "play", "##ing", "·x", "[SEP]"]
    assert display_tokens(["", "▁", "a\tb"]) == ["∅", "·", "a⇥b"]
    assert not is_byte_level(["[CLS]", "café", "[SEP]"])  # WordPiece with a Latin-1 letter: not bytes
    assert raw_token("Ġx") == "Ġx" and raw_token("") == "''"
    assert axis_labels(["a", "a"]) == ["0 a", "1 a"]


def test_raw_labels_quote_the_tokenizer_string_and_show_hidden_bytes(gpt2: transformers.GPT2Tokenizer) -> None:
    tokens = gpt2.tokenize("A café, ’quoted’ \ufeffmark.")
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # transformers' byte map, not ours

    byte_of = {ch: b for b, ch in bytes_to_unicode().items()}
    raw = raw_labels(tokens)
    assert len(raw) == len(tokens)
    for token, label in zip(tokens, raw, strict=True):
        data = bytes(byte_of[ch] for ch in token)
        assert label.startswith(repr(token))
        # the bytes follow exactly when a stand-in character hides a non-ASCII byte
        assert label == (f"{token!r} {data!r}" if any(b >= 0x80 for b in data) else repr(token))
    assert raw[tokens.index("Ġï")] == "'Ġï' b' \\xef'"  # the BOM's first byte
    # WordPiece and special tokens: the string, quoted; invisible characters escaped
    assert raw_labels(["[CLS]", "##ing", "\ufeff"]) == ["'[CLS]'", "'##ing'", "'\\ufeff'"]
    assert raw_label("Ã", byte_level=False) == "'Ã'" and raw_label("Ã", byte_level=True) == "'Ã' b'\\xc3'"
