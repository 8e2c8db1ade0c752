"""Regenerate the small real-text corpora bundled with attnviz in ``data/``.

Sources (all installed from Debian packages, no network access needed):

* ``wordnet-base``: WordNet 3.0 database files (``/usr/share/wordnet/data.*``).
  Example sentences are the double-quoted parts of each synset gloss.
* ``sword-text-web`` read with ``diatheke``: the World English Bible
  (SWORD module ``engWEB2015eb``, public domain).
* ``sword-text-sparv`` read with ``diatheke``: the Spanish Reina-Valera 1909
  (SWORD module ``spaRV1909eb``, public domain), aligned to the WEB by verse
  reference.

The selection is fixed: candidates are filtered by simple, documented rules,
kept in source order, and then picked at evenly spaced positions. There is no
randomness, so running the script twice gives byte-identical files.

Usage::

    python data/extract_corpora.py --out data/

Files written (see ``data/README.md``): ``english_sentences.txt``,
``english_sentences.jsonl``, ``en_es_pairs.tsv``, ``en_es_pairs.jsonl``,
``demo.jsonl`` and ``demo_pairs.jsonl``.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

WEB_MODULE = "engWEB2015eb"
RV_MODULE = "spaRV1909eb"
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_POS_FILES = ("noun", "verb", "adj", "adv")

# Target sizes of the generated files.
N_WORDNET = 2000
N_WEB = 1000
N_PAIRS = 1000
N_DEMO_PER_BUCKET = 100
N_DEMO_PAIRS = 100

# Length rules (in whitespace-separated words).
WORDNET_MIN_WORDS, WORDNET_MAX_WORDS = 5, 40
WEB_MIN_WORDS, WEB_MAX_WORDS = 6, 60
PAIR_MIN_WORDS, PAIR_MAX_WORDS = 5, 50
PAIR_MIN_RATIO, PAIR_MAX_RATIO = 0.5, 2.0  # Spanish words / English words
DEMO_MAX_WORDS = 40
DEMO_PAIR_MAX_WORDS = 30
SHORT_MAX_WORDS = 10  # short: <= 10, medium: 11-20, long: 21-40
MEDIUM_MAX_WORDS = 20

# The 66 books present in both modules, as diatheke names them.
BOOKS: tuple[str, ...] = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua",
    "Judges", "Ruth", "I Samuel", "II Samuel", "I Kings", "II Kings",
    "I Chronicles", "II Chronicles", "Ezra", "Nehemiah", "Esther", "Job",
    "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah",
    "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos",
    "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai",
    "Zechariah", "Malachi", "Matthew", "Mark", "Luke", "John", "Acts",
    "Romans", "I Corinthians", "II Corinthians", "Galatians", "Ephesians",
    "Philippians", "Colossians", "I Thessalonians", "II Thessalonians",
    "I Timothy", "II Timothy", "Titus", "Philemon", "Hebrews", "James",
    "I Peter", "II Peter", "I John", "II John", "III John", "Jude",
    "Revelation of John",
)  # fmt: skip

# Lower-case first words that start a clause (used to keep WordNet examples
# that are sentences rather than bare noun phrases).
CLAUSE_STARTERS = frozenset({
    "i", "you", "he", "she", "it", "we", "they", "there", "he's", "she's", "it's",
    "they're", "we're", "i'm", "you're", "i'll", "he'll", "she'll", "we'll",
    "they'll", "don't", "doesn't", "didn't", "let's", "what", "who", "how", "why",
    "when", "where", "if"
})  # fmt: skip
# Auxiliary/copular verbs: a lower-case example opening with a determiner is
# kept only if it contains one of these (e.g. "the meeting was postponed").
AUXILIARIES = frozenset({
    "is", "was", "are", "were", "am", "be", "been", "has", "had", "have", "will",
    "would", "can", "could", "shall", "should", "must", "may", "might", "did",
    "does", "do", "isn't", "wasn't", "aren't", "weren't", "won't", "can't",
    "couldn't", "hasn't", "hadn't"
})  # fmt: skip
DETERMINERS = frozenset({
    "the", "a", "an", "his", "her", "my", "our", "their", "your", "this", "that",
    "these", "those", "some", "many", "every", "each", "all", "no", "most"
})  # fmt: skip
# Characters that mark formulas, nested quotations or verse layout.
WORDNET_BAD_CHARS = frozenset("`()/\\^=+[]{}<>|_~*#@")

_INLINE_TAGS = frozenset(
    {"w", "q", "transchange", "seg", "name", "divinename", "hi", "foreign",
     "catchword", "rdg", "a"}
)  # fmt: skip
_DROP_WITH_CONTENT = re.compile(r"<(title|note|speaker)\b[^>]*>.*?</\1>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?\s*([A-Za-z]+)[^>]*>")
_ADJACENT_W = re.compile(r"</w>([,;:.!?]?)<w\b")
_GLUED_W = re.compile(r"(?<=[\w,;:.!?])<w\b")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,;:.!?])(?=\s|$)")


@dataclass(frozen=True)
class Sentence:
    """One English sentence with its provenance."""

    text: str
    source: str  # "wordnet" or "web"
    ref: str


@dataclass(frozen=True)
class Pair:
    """One aligned English-Spanish verse pair."""

    text: str
    target: str
    ref: str


def n_words(text: str) -> int:
    """Return the number of whitespace-separated words in ``text``."""
    return len(text.split())


def spread(items: Sequence[T], n: int, phase: float = 0.0) -> list[T]:
    """Pick ``n`` items at evenly spaced positions, keeping their order.

    ``phase`` in ``[0, 1)`` shifts the picks by that fraction of a step.
    """
    if n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int((i + phase) * step)] for i in range(n)]


# --------------------------------------------------------------------------
# WordNet
# --------------------------------------------------------------------------


def is_sentence_like(text: str) -> bool:
    """Heuristic: keep examples that read as sentences, not bare phrases."""
    words = text.split()
    if not WORDNET_MIN_WORDS <= len(words) <= WORDNET_MAX_WORDS:
        return False
    if any(ch in WORDNET_BAD_CHARS for ch in text) or "--" in text:
        return False
    if not text[0].isalpha():
        return False
    if text[0].isupper():
        return True
    first = words[0].lower()
    if first in CLAUSE_STARTERS:
        return True
    lowered = {w.lower().strip(",;:.!?'") for w in words[1:]}
    return first in DETERMINERS and bool(lowered & AUXILIARIES)


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> list[Sentence]:
    """Return sentence-like WordNet examples in file order, deduplicated.

    The ref is the synset offset and synset type, e.g. ``"00941464-v"``
    (``s`` marks an adjective satellite).
    """
    out: list[Sentence] = []
    seen: set[str] = set()
    for pos in WORDNET_POS_FILES:
        path = wordnet_dir / f"data.{pos}"
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("  ") or " | " not in line:
                    continue  # licence header
                fields, gloss = line.split(" | ", 1)
                offset, _lex_filenum, ss_type = fields.split(" ", 3)[:3]
                for part in gloss.strip().split(";"):
                    part = part.strip()
                    if len(part) < 3 or part[0] != '"' or part[-1] != '"':
                        continue
                    text = " ".join(part[1:-1].split())
                    if '"' in text or not is_sentence_like(text):
                        continue
                    key = text.lower()
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append(Sentence(text, "wordnet", f"{offset}-{ss_type}"))
    return out


# --------------------------------------------------------------------------
# SWORD modules via diatheke
# --------------------------------------------------------------------------


def clean_osis(fragment: str) -> str:
    """Turn one verse of diatheke's OSIS-ish output into plain text."""
    text = _DROP_WITH_CONTENT.sub(" ", fragment)
    # Adjacent <w> elements lack the space between words in the source data.
    text = _ADJACENT_W.sub(r"</w>\1 <w", text)
    text = _GLUED_W.sub(" <w", text)

    def _tag(match: re.Match[str]) -> str:
        return "" if match.group(1).lower() in _INLINE_TAGS else " "

    text = _TAG.sub(_tag, text)
    text = html.unescape(text)
    text = " ".join(text.split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def read_book(module: str, book: str, diatheke: str = "diatheke") -> dict[str, str]:
    """Return ``{"Book C:V": text}`` for every verse of ``book`` in ``module``."""
    raw = subprocess.run(
        [diatheke, "-b", module, "-k", book],
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8")
    marker = re.compile(rf"(?:^|>)\s*{re.escape(book)} (\d+):(\d+): ")
    bodies: dict[str, list[str]] = {}
    current: str | None = None
    for line in raw.splitlines():
        match = marker.search(line)
        if match:
            current = f"{book} {match.group(1)}:{match.group(2)}"
            bodies[current] = [line[match.end() :]]
        elif current is not None and line.strip() != f"({module})":
            bodies[current].append(line)  # a verse spread over several lines
    return {ref: clean_osis(" ".join(parts)) for ref, parts in bodies.items()}


def read_bible(module: str, diatheke: str = "diatheke") -> dict[str, str]:
    """Return all verses of the 66 shared books, in canonical order."""
    verses: dict[str, str] = {}
    for book in BOOKS:
        verses.update(read_book(module, book, diatheke))
    return verses


def is_clean_line(text: str) -> bool:
    """True if ``text`` is non-empty and has no tabs, newlines or markup."""
    return bool(text) and not any(ch in text for ch in "\t\r\n<>")


def is_sentence_shaped(text: str) -> bool:
    """True if ``text`` starts with a capital and ends like a sentence.

    An opening quotation mark or Spanish ``¿``/``¡`` may precede the capital,
    closing quotation marks may follow the final ``.``, ``!`` or ``?``, and
    curly double quotes must be balanced.
    """
    body = text.lstrip("“‘\"'¿¡(")
    tail = text.rstrip("”’\"')")
    return bool(body) and body[0].isupper() and tail.endswith((".", "!", "?")) and text.count("“") == text.count("”")


def web_candidates(web: dict[str, str]) -> list[Sentence]:
    """WEB verses usable as single English sentences.

    Kept: 6-60 words, no markup left, starting with a capital letter, ending
    with ``.``, ``!`` or ``?`` and with balanced curly double quotes.
    """
    return [
        Sentence(text, "web", ref)
        for ref, text in web.items()
        if is_clean_line(text) and is_sentence_shaped(text) and WEB_MIN_WORDS <= n_words(text) <= WEB_MAX_WORDS
    ]


def _chapter(ref: str) -> tuple[str, int]:
    """``"I Samuel 23:29"`` -> ``("I Samuel", 23)``."""
    book_chapter = ref.rsplit(":", 1)[0]
    book, chapter = book_chapter.rsplit(" ", 1)
    return book, int(chapter)


def misaligned_chapters(web: dict[str, str], rv: dict[str, str]) -> set[tuple[str, int]]:
    """Chapters whose verse numbering may differ between the two modules.

    The WEB follows the NRSVA versification and the RV1909 module mostly the
    KJV one, but in a few places the RV1909 text keeps the Spanish (Hebrew)
    numbering and leaves a verse empty (e.g. Numbers 12:16, Jonah 1:17); the
    WEB in turn has a few empty or extra verses (e.g. Acts 8:37, III John
    1:15). Wherever a verse is empty or missing on either side, that chapter
    and the next one are treated as possibly shifted.
    """
    bad: set[tuple[str, int]] = set()
    for ref in web.keys() | rv.keys():
        if not web.get(ref) or not rv.get(ref):
            book, chapter = _chapter(ref)
            bad.update({(book, chapter), (book, chapter + 1)})
    return bad


def pair_candidates(web: dict[str, str], rv: dict[str, str]) -> list[Pair]:
    """Aligned verse pairs, in canonical order.

    Kept: both sides sentence-shaped and 5-50 words, Spanish/English word
    ratio within 0.5-2.0, not in a possibly shifted chapter (see
    :func:`misaligned_chapters`), and not the first verse of a psalm (the
    RV1909 puts psalm titles into verse 1, the WEB does not).
    """
    skip = misaligned_chapters(web, rv)
    pairs: list[Pair] = []
    for ref, en in web.items():
        es = rv.get(ref, "")
        book, chapter = _chapter(ref)
        if (book, chapter) in skip or (book == "Psalms" and ref.endswith(":1")):
            continue
        if not all(is_clean_line(t) and is_sentence_shaped(t) for t in (en, es)):
            continue
        n_en, n_es = n_words(en), n_words(es)
        if not (PAIR_MIN_WORDS <= n_en <= PAIR_MAX_WORDS):
            continue
        if not (PAIR_MIN_WORDS <= n_es <= PAIR_MAX_WORDS):
            continue
        if not (PAIR_MIN_RATIO <= n_es / n_en <= PAIR_MAX_RATIO):
            continue
        pairs.append(Pair(en, es, ref))
    return pairs


# --------------------------------------------------------------------------
# Demo subsets
# --------------------------------------------------------------------------


def length_bucket(text: str) -> str:
    """``short`` (<= 10 words), ``medium`` (11-20) or ``long`` (21+)."""
    n = n_words(text)
    if n <= SHORT_MAX_WORDS:
        return "short"
    if n <= MEDIUM_MAX_WORDS:
        return "medium"
    return "long"


def demo_sentences(sentences: Sequence[Sentence]) -> list[Sentence]:
    """Pick ``N_DEMO_PER_BUCKET`` sentences per length bucket, in file order."""
    indexed = [(i, s) for i, s in enumerate(sentences) if n_words(s.text) <= DEMO_MAX_WORDS]
    picked: list[tuple[int, Sentence]] = []
    for bucket in ("short", "medium", "long"):
        members = [p for p in indexed if length_bucket(p[1].text) == bucket]
        picked.extend(spread(members, N_DEMO_PER_BUCKET, phase=0.5))
    return [s for _, s in sorted(picked, key=lambda p: p[0])]


def demo_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """Pick ``N_DEMO_PAIRS`` shorter pairs (both sides <= 30 words)."""
    short = [p for p in pairs if max(n_words(p.text), n_words(p.target)) <= DEMO_PAIR_MAX_WORDS]
    return spread(short, N_DEMO_PAIRS, phase=0.5)


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line + "\n")


def _json(record: dict[str, str]) -> str:
    return json.dumps(record, ensure_ascii=False)


def sentence_record(s: Sentence) -> dict[str, str]:
    """JSON record of an English sentence."""
    return {"text": s.text, "source": s.source, "ref": s.ref}


def pair_record(p: Pair) -> dict[str, str]:
    """JSON record of an English-Spanish pair."""
    return {
        "text": p.text,
        "target": p.target,
        "source_lang": "en",
        "target_lang": "es",
        "ref": p.ref,
    }


def build(out_dir: Path, diatheke: str = "diatheke") -> dict[str, int]:
    """Write all corpus files into ``out_dir``; return line counts per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    web = read_bible(WEB_MODULE, diatheke)
    rv = read_bible(RV_MODULE, diatheke)

    wn = spread(wordnet_examples(), N_WORDNET)
    wn_texts = {s.text.lower() for s in wn}
    web_pool = [s for s in web_candidates(web) if s.text.lower() not in wn_texts]
    web_sel = spread(web_pool, N_WEB)
    sentences = wn + web_sel

    pairs = spread(pair_candidates(web, rv), N_PAIRS, phase=0.5)
    demo = demo_sentences(sentences)
    dpairs = demo_pairs(pairs)

    outputs: dict[str, list[str]] = {
        "english_sentences.txt": [s.text for s in sentences],
        "english_sentences.jsonl": [_json(sentence_record(s)) for s in sentences],
        "en_es_pairs.tsv": [f"{p.text}\t{p.target}" for p in pairs],
        "en_es_pairs.jsonl": [_json(pair_record(p)) for p in pairs],
        "demo.jsonl": [_json({**sentence_record(s), "length_bucket": length_bucket(s.text)}) for s in demo],
        "demo_pairs.jsonl": [_json(pair_record(p)) for p in dpairs],
    }
    for name, lines in outputs.items():
        _write_lines(out_dir / name, lines)
    return {name: len(lines) for name, lines in outputs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent,
        help="output directory (default: the directory of this script)",
    )  # fmt: skip
    parser.add_argument("--diatheke", default="diatheke", help="path to the diatheke binary")
    args = parser.parse_args(argv)
    counts = build(args.out, args.diatheke)
    for name, count in counts.items():
        print(f"{name}: {count} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
