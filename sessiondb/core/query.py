"""Search queries typed by people, backend-neutral: validation, the plain mode's words, and the
advanced grammar (``mode="fts"``), parsed here once and compiled by each backend.

The rules (shared by every backend, documented in docs/search.md and the README):

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

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import InvalidInput, QueryError
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
    prefix: bool = False  # the last token is a prefix (advanced grammar's ``retr*``)


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


def is_no_space_char(ch: str) -> bool:
    """Is ``ch`` of a script written without spaces (matched as a substring, never a word)?"""
    return _is_no_space_char(ch)


def split_runs(text: str) -> tuple[str, ...]:
    """The runs of letters, digits and marks of a text: the words of the word index."""
    return _tokens(text)


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


# -- the advanced grammar (mode="fts") ---------------------------------------------------------
#
#   query    := or_expr
#   or_expr  := and_expr ("OR" and_expr)*
#   and_expr := unary (["AND"] unary)*          -- AND is also implied between terms
#   unary    := ("NOT" | "-") unary | primary
#   primary  := "(" or_expr ")" | '"' phrase '"' ["*"] | word ["*"]
#
# Operators are the upper-case words AND, OR, NOT; lower-case ones are words. A term (a word or a
# quoted phrase) is the sequence of its letter/digit runs, matched as a phrase (``foo.bar`` is
# the phrase "foo bar"); ``*`` right after a term makes its last run a prefix. Bare words with
# no letter or digit (``-``, ``+++``) are skipped, as in plain mode. A negation must subtract
# from something: ``a -b``, ``a NOT (b OR c)``; ``-b`` alone or ``a OR -b`` are refused, since no
# index can answer "every message without b".

MAX_TERMS = 64
MAX_DEPTH = 16


@dataclass(frozen=True)
class Term:
    """A word or phrase: its letter/digit runs, the last one a prefix when ``prefix``."""

    tokens: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


Expr = Term | And | Or | Not


def _malformed(reason: str) -> QueryError:
    return QueryError(
        f"malformed search query: {reason} — check quotes, parentheses and operators, "
        "or search with mode='plain' (the CLI without --fts) for the words as typed"
    )


_OPERATORS = {"AND", "OR", "NOT"}
_SPECIAL = '()"'


def _lex(text: str) -> Iterator[tuple[str, str | Term]]:
    """Tokens of an advanced query: ("(", ")", "AND", "OR", "NOT", "-") or ("term", Term)."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            yield ch, ch
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _malformed('a quote is never closed (add the closing ")')
            phrase = text[i + 1 : end]
            i = end + 1
            star = i < n and text[i] == "*"
            i += star
            tokens = _tokens(phrase)
            if not tokens:
                raise _malformed(f'the phrase "{phrase[:40]}" holds no letters or digits')
            yield "term", Term(tokens, star)
        elif ch == "-" and i + 1 < n and not text[i + 1].isspace():
            yield "-", "-"
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            word = text[i:j]
            i = j
            if word in _OPERATORS:
                yield word, word
                continue
            star = word.endswith("*")
            tokens = _tokens(word)
            if tokens:
                yield "term", Term(tokens, star)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = list(_lex(text))
        self.pos = 0
        self.terms = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str | Term]:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def parse(self) -> Expr:
        expr = self.or_expr(0)
        if self.pos < len(self.tokens):
            kind = self.peek()
            if kind == ")":
                raise _malformed('a ")" has no "(" before it')
            raise _malformed(f'unexpected "{kind}"')  # pragma: no cover - or_expr consumes all
        return expr

    def or_expr(self, depth: int) -> Expr:
        items = [self.and_expr(depth, None)]
        while self.peek() == "OR":
            self.take()
            items.append(self.and_expr(depth, "OR"))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, depth: int, after: str | None) -> Expr:
        items = [self.unary(depth, after)]
        while self.peek() not in (None, ")", "OR"):
            if self.peek() == "AND":
                self.take()
                items.append(self.unary(depth, "AND"))
            else:
                items.append(self.unary(depth, None))
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, depth: int, after: str | None) -> Expr:
        kind = self.peek()
        if kind in ("NOT", "-"):
            self.take()
            return Not(self.unary(depth, "NOT" if kind == "NOT" else "-"))
        return self.primary(depth, after)

    def primary(self, depth: int, after: str | None) -> Expr:
        kind = self.peek()
        if kind is None or kind in (")", "AND", "OR"):
            if after is not None:
                raise _malformed(f'"{after}" needs a search term after it')
            if kind is None:
                raise _malformed('a "(" is never closed')
            if kind == ")":
                raise _malformed('a ")" has no "(" before it')
            raise _malformed(f'"{kind}" needs a search term before it')
        _, value = self.take()
        if kind == "(":
            if depth >= MAX_DEPTH:
                raise _malformed(f"parentheses nested more than {MAX_DEPTH} deep")
            if self.peek() == ")":
                raise _malformed("empty parentheses")
            inner = self.or_expr(depth + 1)
            if self.peek() != ")":
                raise _malformed('a "(" is never closed')
            self.take()
            return inner
        assert isinstance(value, Term)
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise _malformed(f"more than {MAX_TERMS} search terms")
        return value


def _positive(expr: Expr) -> bool:
    """Can the expression match without "everything but": refuse ``-b`` and ``a OR -b``."""
    if isinstance(expr, Term):
        return True
    if isinstance(expr, Not):
        return False
    if isinstance(expr, Or):
        return all(_positive(x) for x in expr.items)
    return any(_positive(x) for x in expr.items) and all(
        _positive(x.item) if isinstance(x, Not) else _positive(x) for x in expr.items
    )


def parse_advanced(query: str) -> Expr | None:
    """Parse a normalized advanced query; None when it holds no term; ``QueryError`` with a
    readable reason when it is malformed (the same text on every backend)."""
    parser = _Parser(query)
    if not parser.tokens:
        return None
    expr = parser.parse()
    if not _positive(expr):
        raise _malformed(
            "a NOT or -word must exclude from something: write `retry -timeout`, not `-timeout` "
            "alone or after OR"
        )
    return expr


def positive_words(expr: Expr) -> list[Word]:
    """The words a match may contain (for highlighting): every term outside a NOT."""
    out: list[Word] = []

    def walk(e: Expr) -> None:
        if isinstance(e, Term):
            for i, t in enumerate(e.tokens):
                prefix = e.prefix and i == len(e.tokens) - 1
                out.append(Word(t, (t,), False, prefix=prefix))
        elif isinstance(e, (And, Or)):
            for x in e.items:
                walk(x)

    walk(expr)
    return out


__all__ = [
    "MAX_QUERY_CHARS",
    "And",
    "Expr",
    "Not",
    "Or",
    "Term",
    "Word",
    "clean_text",
    "is_no_space_char",
    "no_space_glob",
    "normalize_query",
    "parse_advanced",
    "positive_words",
    "split_runs",
    "split_words",
]
