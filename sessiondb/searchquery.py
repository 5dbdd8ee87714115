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
  person are just characters of words. Quotes and brackets around a word and sentence
  punctuation after it are trimmed (``"retry``, ``(foo.bar)``, ``done?``). A word without any
  letter or digit and shorter than three characters (``-``, ``&``, ``?``) carries no meaning and
  is ignored.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import InvalidInput
from .validate import clean_text

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
    (0xFF66, 0xFFBF),  # halfwidth Katakana / Hangul (not U+FFFD: it is everywhere)
    (0x20000, 0x3FFFF),  # CJK ext. B and later planes
)


def no_space_glob() -> str:
    """SQLite GLOB pattern true for text holding any character of :data:`_NO_SPACE_RANGES`.

    The index keeps its trigram table for exactly these messages, so this pattern and
    :attr:`Word.no_space` must agree (GLOB classes compare code points: tests cover it).
    """
    return "*[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _NO_SPACE_RANGES) + "]*"


def _is_no_space_char(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _NO_SPACE_RANGES)


def _is_word_char(ch: str) -> bool:
    # Mirrors SQLite unicode61's default token characters (categories L*, N*, Co) plus
    # combining marks, which it folds away with remove_diacritics.
    cat = unicodedata.category(ch)
    return cat[0] in "LNM" or cat == "Co"


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
    it must be found as a substring (punctuation inside, or a script written without spaces);
    ``no_space`` is True when it holds a character of a script written without spaces (then
    ``tokens`` is empty: a word index cannot cut such runs into words).
    """

    text: str
    tokens: tuple[str, ...]
    literal: bool
    no_space: bool = False


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


# Quotes and brackets around a word, and sentence punctuation after it, are how people write,
# not part of what they look for: `"retry policy"`, `(foo.bar)`, `done?` find retry, foo.bar,
# done. Leading "." or "/" and trailing "+" or "#" stay (.bashrc, /usr/bin, C++, C#).
_OPENERS = frozenset("\"'`“”‘’«»„([{<")
_CLOSERS = frozenset("\"'`“”‘’«»)]}>,;:!?.")


def _trim(word: str) -> str:
    start, stop = 0, len(word)
    while start < stop and word[start] in _OPENERS:
        start += 1
    while stop > start and word[stop - 1] in _CLOSERS:
        stop -= 1
    return word[start:stop] or word


def split_words(query: str) -> list[Word]:
    """Split a normalized plain query into distinct words (first occurrence order kept)."""
    words: list[Word] = []
    seen: set[str] = set()
    for raw in map(_trim, query.split()):
        key = raw.casefold()
        if key in seen:
            continue
        seen.add(key)
        tokens = _tokens(raw)
        if not tokens and len(raw) < 3:
            continue  # "-", "&", "?": no letters, too short to mean anything as a substring
        no_space = any(_is_no_space_char(ch) for ch in raw)
        literal = no_space or len(tokens) != 1 or tokens[0] != raw
        words.append(
            Word(text=raw, tokens=() if no_space else tokens, literal=literal, no_space=no_space)
        )
    return words


_FTS_OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})
_FTS_TERM = re.compile(r'"([^"]*)"|([^\W_]+)(\*?)')


def fts_terms(query: str) -> list[Word]:
    """Best-effort words of an FTS5 query, for highlighting only (operators dropped)."""
    out: list[Word] = []
    for m in _FTS_TERM.finditer(query):
        phrase, bare, star = m.group(1), m.group(2), m.group(3)
        if phrase is not None:
            out.extend(Word(t, (t,), False) for t in _tokens(phrase))
        elif bare not in _FTS_OPERATORS and bare != "content":
            # A trailing * makes a prefix: marked by an empty second token.
            out.append(Word(bare, (bare, "") if star else (bare,), False))
    return out


@functools.lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    decomposed = unicodedata.normalize("NFKD", ch)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


_UNEVEN: set[str] = set()  # characters whose fold is not exactly one character


class _FoldTable(dict[int, str]):
    """str.translate table folding each character, filled on first sight of a character."""

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code))
        if len(folded) != 1:
            _UNEVEN.add(chr(code))
        self[code] = folded
        return folded


_FOLD_TABLE = _FoldTable()


def _fold(text: str) -> tuple[str, list[int] | None]:
    """Case- and diacritic-folded text, with the map from folded to original offsets.

    The map is None when offsets are unchanged: ASCII, and text (CJK, most accented Latin)
    whose every character folds to exactly one character — then one str.translate suffices.
    """
    if text.isascii():
        return text.lower(), None
    folded = text.translate(_FOLD_TABLE)
    if _UNEVEN.isdisjoint(text):
        return folded, None
    parts: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        folded = _fold_char(ch)
        parts.append(folded)
        where.extend([i] * len(folded))
    where.append(len(text))
    return "".join(parts), where


_WS = re.compile(r"\s+")
_LETTER_OR_DIGIT = "[^\\W_]"


class Highlighter:
    """Marks the words of a query in message text and cuts a snippet around the first match."""

    def __init__(
        self, words: Iterable[Word], markers: tuple[str, str] = ("[", "]"), width: int = 160
    ) -> None:
        words = list(words)
        patterns: list[str] = []
        for w in words:
            if w.literal:
                patterns.append(re.escape(_fold(w.text)[0]))
            elif w.tokens:
                prefix = len(w.tokens) == 2 and w.tokens[1] == ""
                body = re.escape(_fold(w.tokens[0])[0])
                end = "" if prefix else f"(?!{_LETTER_OR_DIGIT})"
                patterns.append(f"(?<!{_LETTER_OR_DIGIT}){body}{end}")
        # Longest first, so that "foo.bar" wins over "foo" where both match.
        patterns.sort(key=len, reverse=True)
        self._longest = max((len(w.text) for w in words), default=0) + 1
        self._regex = re.compile("|".join(patterns)) if patterns else None
        self.open, self.close = markers
        self.width = width

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Every match as (start, end) offsets of ``text``."""
        return self._spans(*_fold(text))

    def _spans(
        self, folded: str, where: list[int] | None, start: int = 0, stop: int | None = None
    ) -> list[tuple[int, int]]:
        """Matches of the folded text as offsets of the original; a region [start, stop) of
        text whose offsets folding kept (``where`` is None) gives the same spans as the whole
        text would, as far as they touch the region."""
        if self._regex is None:
            return []
        if where is not None:
            start, stop = 0, None
        out: list[tuple[int, int]] = []
        for m in self._regex.finditer(folded, max(0, start - self._longest)):
            if stop is not None and m.start() >= stop:
                break
            if m.end() == m.start():
                continue
            if where is None:
                a, b = m.start(), m.end()
            else:
                a, b = where[m.start()], where[m.end() - 1] + 1
            if out and a < out[-1][1]:
                continue
            out.append((a, b))
        return out

    def snippet(self, text: str) -> str:
        """About ``width`` characters around the first match, matches between the markers."""
        folded, where = _fold(text)
        spans: list[tuple[int, int]] | None = None
        if where is None:
            # A long message full of a common word: find the first match, then the window's.
            found = self._regex.search(folded) if self._regex is not None else None
            first = found.start() if found else 0
        else:
            spans = self._spans(folded, where)
            first = spans[0][0] if spans else 0
        start = max(0, first - self.width // 4)
        if start:
            space = text.rfind(" ", max(0, start - 20), start + 1)
            start = space + 1 if space >= 0 else start
        stop = min(len(text), start + self.width)
        if stop < len(text):
            space = text.rfind(" ", stop - 20, stop)
            stop = space if space > start else stop
        if spans is None:
            spans = self._spans(folded, where, start, stop)
        pieces: list[str] = ["…" if start else ""]
        pos = start
        for a, b in spans:
            if b <= start or a >= stop:
                continue
            a, b = max(a, start), min(b, stop)
            pieces += [_WS.sub(" ", text[pos:a]), self.open, _WS.sub(" ", text[a:b]), self.close]
            pos = b
        pieces.append(_WS.sub(" ", text[pos:stop]))
        pieces.append("…" if stop < len(text) else "")
        return "".join(pieces)


__all__ = [
    "MAX_QUERY_CHARS",
    "Highlighter",
    "Word",
    "clean_text",
    "fts_terms",
    "no_space_glob",
    "normalize_query",
    "split_words",
]
