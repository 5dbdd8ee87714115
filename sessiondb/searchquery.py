"""Backend-neutral handling of search queries typed by people: validation and word splitting.

The rules (shared by the SQLite and PostgreSQL backends, documented in docs/search.md):

* A query is any Unicode string of at most :data:`MAX_QUERY_CHARS` code points; longer is
  :class:`~sessiondb.errors.InvalidInput`.
* Lone surrogates (which no database driver can encode) become U+FFFD, the same rule the store
  applies to message content, so a query copied from stored text still matches it.
* Control characters (NUL, tabs, newlines, ...) separate words like spaces do. NUL matters: SQLite
  cuts C strings at NUL, which used to turn a stray NUL into "unterminated string".
* ``plain`` mode splits on whitespace; every word must occur in a message (AND). A word made only
  of letters, digits and combining marks is a *token word*, matched as a whole word with case and
  diacritics folded (``cafe`` finds ``Café``). Any other word (``foo.bar``, ``x:y``, ``C++``,
  ``/usr/local/bin``, ``user@example.com``, CJK text) is a *literal word*, found as a substring
  of the message, case-insensitively for ASCII letters. ``AND``/``NEAR``/``*``/quotes typed by a
  person are just characters of words. A word without any letter or digit and shorter than three
  characters (``-``, ``&``, ``?``) carries no meaning and is ignored.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .errors import InvalidInput

MAX_QUERY_CHARS = 10_000

# Scripts written without spaces between words: a word index cannot cut their runs into words,
# so words containing them are matched as substrings (the trigram index serves them).
_NO_SPACE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Hangul compatibility jamo, Katakana ext.
    (0x3400, 0x4DBF),  # CJK ext. A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA960, 0xA97F),  # Hangul jamo ext. A
    (0xAC00, 0xD7FF),  # Hangul syllables (+ jamo ext. B)
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFFDC),  # halfwidth Katakana / Hangul
    (0x20000, 0x3FFFF),  # CJK ext. B and later planes
)


def _is_no_space_char(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _NO_SPACE_RANGES)


def _is_word_char(ch: str) -> bool:
    # Mirrors SQLite unicode61's default token characters (categories L*, N*, Co) plus
    # combining marks, which it folds away with remove_diacritics.
    cat = unicodedata.category(ch)
    return cat[0] in "LNM" or cat == "Co"


def clean_text(text: str) -> str:
    """Replace lone surrogates with U+FFFD (drivers cannot encode them)."""
    if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        return text
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def normalize_query(query: object) -> str:
    """Validate a query string and apply the surrogate and control-character rules."""
    if not isinstance(query, str):
        raise InvalidInput(f"search query must be a string, not {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"search query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS} "
            "— search for a shorter, distinctive part of the text"
        )
    text = clean_text(query)
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


@dataclass(frozen=True)
class Word:
    """One word of a plain query.

    ``text`` is the word as typed; ``tokens`` its runs of letters/digits; ``literal`` is True when
    it must be found as a substring (punctuation inside, or a script written without spaces).
    """

    text: str
    tokens: tuple[str, ...]
    literal: bool


def _tokens(word: str) -> tuple[str, ...]:
    out: list[str] = []
    current: list[str] = []
    for ch in word:
        if _is_word_char(ch):
            current.append(ch)
        elif current:
            out.append("".join(current))
            current = []
    if current:
        out.append("".join(current))
    return tuple(out)


def split_words(query: str) -> list[Word]:
    """Split a normalized plain query into distinct words (first occurrence order kept)."""
    words: list[Word] = []
    seen: set[str] = set()
    for raw in query.split():
        key = raw.casefold()
        if key in seen:
            continue
        seen.add(key)
        tokens = _tokens(raw)
        if not tokens and len(raw) < 3:
            continue  # "-", "&", "?": no letters, too short to mean anything as a substring
        no_space = any(_is_no_space_char(ch) for ch in raw)
        literal = no_space or len(tokens) != 1 or tokens[0] != raw
        words.append(Word(text=raw, tokens=() if no_space else tokens, literal=literal))
    return words


__all__ = ["MAX_QUERY_CHARS", "Word", "clean_text", "normalize_query", "split_words"]
