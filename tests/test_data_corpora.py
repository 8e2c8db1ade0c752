"""Checks on the committed text corpora in ``data/`` (see ``data/README.md``).

These tests only read the committed files (and import the pure helpers of
``data/extract_corpora.py``); they never call ``diatheke``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"

# Exact line counts, as documented in data/README.md.
EXPECTED_LINES = {
    "english_sentences.txt": 3000,
    "english_sentences.jsonl": 3000,
    "en_es_pairs.tsv": 1000,
    "en_es_pairs.jsonl": 1000,
    "demo.jsonl": 300,
    "demo_pairs.jsonl": 100,
}
N_WORDNET, N_WEB = 2000, 1000
DEMO_PER_BUCKET = 100

SENTENCE_FIELDS = {"text", "source", "ref"}
DEMO_FIELDS = SENTENCE_FIELDS | {"length_bucket"}
PAIR_FIELDS = {"text", "target", "source_lang", "target_lang", "ref"}

WORDNET_REF = re.compile(r"^\d{8}-[nvasr]$")
VERSE_REF = re.compile(r"^(?:I{1,3} )?[A-Z][A-Za-z]+(?: (?:of )?[A-Z][A-Za-z]+)* \d+:\d+$")


def _lines(name: str) -> list[str]:
    raw = (DATA / name).read_bytes()
    text = raw.decode("utf-8")  # strict: raises on invalid UTF-8
    assert "\r" not in text, f"{name}: CR characters"
    assert text.endswith("\n"), f"{name}: missing final newline"
    return text[:-1].split("\n")


def _jsonl(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in _lines(name)]


def _n_words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def extractor() -> ModuleType:
    """The extraction script, imported without running it."""
    path = DATA / "extract_corpora.py"
    spec = importlib.util.spec_from_file_location("extract_corpora", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(EXPECTED_LINES))
def test_file_exists_utf8_exact_count_no_blank_lines(name: str) -> None:
    lines = _lines(name)
    assert len(lines) == EXPECTED_LINES[name]
    assert all(line.strip() for line in lines), f"{name}: blank line"
    assert all(line == line.strip() for line in lines), f"{name}: stray whitespace"


def test_readme_and_script_exist() -> None:
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "python data/extract_corpora.py --out data/" in readme
    for name in EXPECTED_LINES:
        assert name in readme
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in readme
    assert (DATA / "extract_corpora.py").is_file()


def test_english_sentences_size_is_small() -> None:
    assert (DATA / "english_sentences.txt").stat().st_size < 400_000


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED_LINES if n.endswith(".jsonl")))
def test_jsonl_values_are_clean_strings(name: str) -> None:
    for record in _jsonl(name):
        for key, value in record.items():
            assert isinstance(value, str) and value, (name, key)
            assert value == value.strip(), (name, key, value)
            assert not any(ch in value for ch in "\t\n\r<>"), (name, key, value)


def test_english_sentences_jsonl_fields_and_sources() -> None:
    records = _jsonl("english_sentences.jsonl")
    assert all(set(r) == SENTENCE_FIELDS for r in records)
    sources = [r["source"] for r in records]
    assert sources.count("wordnet") == N_WORDNET
    assert sources.count("web") == N_WEB
    for r in records:
        n = _n_words(r["text"])
        if r["source"] == "wordnet":
            assert WORDNET_REF.match(r["ref"]), r
            assert 5 <= n <= 40, r
            assert '"' not in r["text"], r
        else:
            assert r["source"] == "web", r
            assert VERSE_REF.match(r["ref"]), r
            assert 6 <= n <= 60, r


def test_english_txt_matches_jsonl_and_is_unique() -> None:
    texts = _lines("english_sentences.txt")
    assert texts == [r["text"] for r in _jsonl("english_sentences.jsonl")]
    assert len({t.lower() for t in texts}) == len(texts)


def test_pairs_tsv_has_two_nonempty_columns() -> None:
    for line in _lines("en_es_pairs.tsv"):
        cols = line.split("\t")
        assert len(cols) == 2, line
        assert all(c.strip() for c in cols), line


def test_pairs_tsv_and_jsonl_agree() -> None:
    tsv = [tuple(line.split("\t")) for line in _lines("en_es_pairs.tsv")]
    records = _jsonl("en_es_pairs.jsonl")
    assert tsv == [(r["text"], r["target"]) for r in records]


def test_pairs_jsonl_fields_and_lengths() -> None:
    records = _jsonl("en_es_pairs.jsonl")
    assert all(set(r) == PAIR_FIELDS for r in records)
    assert len({r["ref"] for r in records}) == len(records)
    for r in records:
        assert r["source_lang"] == "en" and r["target_lang"] == "es", r
        assert VERSE_REF.match(r["ref"]), r
        assert 5 <= _n_words(r["text"]) <= 50, r
        assert 5 <= _n_words(r["target"]) <= 50, r
        assert not re.match(r"^Psalms \d+:1$", r["ref"]), r


def test_spanish_side_has_accents() -> None:
    spanish = "".join(r["target"] for r in _jsonl("en_es_pairs.jsonl"))
    for ch in "áéíóúñ¿":
        assert ch in spanish, ch
    assert "\ufffd" not in spanish  # no replacement characters from bad decoding


def test_demo_sentences() -> None:
    demo = _jsonl("demo.jsonl")
    assert all(set(r) == DEMO_FIELDS for r in demo)
    full = {(r["text"], r["source"], r["ref"]) for r in _jsonl("english_sentences.jsonl")}
    buckets = {"short": 0, "medium": 0, "long": 0}
    for r in demo:
        assert (r["text"], r["source"], r["ref"]) in full, r
        n = _n_words(r["text"])
        assert n <= 40, r
        expected = "short" if n <= 10 else "medium" if n <= 20 else "long"
        assert r["length_bucket"] == expected, r
        buckets[r["length_bucket"]] += 1
    assert buckets == dict.fromkeys(buckets, DEMO_PER_BUCKET)
    assert {r["source"] for r in demo} == {"wordnet", "web"}
    assert len({r["text"] for r in demo}) == len(demo)


def test_demo_pairs_are_a_subset() -> None:
    demo = _jsonl("demo_pairs.jsonl")
    assert all(set(r) == PAIR_FIELDS for r in demo)
    full = _jsonl("en_es_pairs.jsonl")
    assert all(r in full for r in demo)
    assert len({r["ref"] for r in demo}) == len(demo)
    assert all(max(_n_words(r["text"]), _n_words(r["target"])) <= 30 for r in demo)


# ---------------------------------------------------------------------------
# Pure helpers of the extraction script (no diatheke needed)
# ---------------------------------------------------------------------------


def test_clean_osis_restores_missing_spaces(extractor: ModuleType) -> None:
    raw = (
        '<title type="psalm">A Psalm.</title> <w savlm="strong:H1">In</w> '
        '<w savlm="strong:H2">God</w><w savlm="strong:H3">created</w>,'
        '<w savlm="strong:H4">the</w> earth.<l eID="x"/> <l sID="y"/>“Yes,” he<w>said</w>.'
    )
    assert extractor.clean_osis(raw) == "In God created, the earth. “Yes,” he said."


def test_spread_is_deterministic_and_ordered(extractor: ModuleType) -> None:
    items = list(range(100))
    assert extractor.spread(items, 4) == [0, 25, 50, 75]
    assert extractor.spread(items, 4, phase=0.5) == [12, 37, 62, 87]
    assert extractor.spread(items[:3], 10) == [0, 1, 2]


def test_length_bucket_and_sentence_filters(extractor: ModuleType) -> None:
    assert extractor.length_bucket("one two three") == "short"
    assert extractor.length_bucket(" ".join(["w"] * 11)) == "medium"
    assert extractor.length_bucket(" ".join(["w"] * 21)) == "long"
    assert extractor.is_sentence_like("he arranged his robes to avoid a trip")
    assert extractor.is_sentence_like("the meeting was postponed until next week")
    assert not extractor.is_sentence_like("a rich vein of copper ore")
    assert not extractor.is_sentence_like("short one")
    assert extractor.is_sentence_shaped("“Let there be light,” he said.")
    assert extractor.is_sentence_shaped("¿Qué haremos?")
    assert not extractor.is_sentence_shaped("and there was light,")
    assert not extractor.is_sentence_shaped("He said, “Go.")


def test_wordnet_ref_regex_matches_committed_refs() -> None:
    refs = [r["ref"] for r in _jsonl("english_sentences.jsonl") if r["source"] == "wordnet"]
    assert {ref[-1] for ref in refs} <= set("nvasr")
