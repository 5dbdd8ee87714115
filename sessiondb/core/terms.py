"""Index terms: the folded letter/digit runs of a text, computed in Python, for backends whose
word index is built by the client (PostgreSQL: docs/postgres.md, evidence 5).

The same function folds the stored text and the query's tokens, so a word matches exactly when
the plain mode says it should (sessiondb.core.query): runs are cut where
:func:`~sessiondb.core.query` cuts them (letters, digits, marks, private use), then folded for
case and diacritics the way the highlighter marks matches (sessiondb.core.highlight), so what
the search found is what gets marked. PostgreSQL's own parser cut ``foo.bar``, paths and e-mail
addresses into single tokens and folded no accents (7 of 14 rule probes failed: docs/postgres.md,
evidence 5)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .highlight import fold
from .query import split_runs

# Pieces of text between whitespace and ASCII punctuation, found lazily so that a 16 MiB message
# stops being read once its indexed prefix is complete; split_runs then cuts each piece exactly.
_PIECES = re.compile(r"[^\s!-/:-@\[-`{-~]+")

#: Words of a message indexed, from its start: the bounded prefix every client-built index
#: keeps (PostgreSQL keeps positions up to 16 383; a tsvector is capped at 1 MiB, and ~1 MiB
#: of distinct tokens — hashes, UUIDs in tool output — made an append fail: docs/postgres.md,
#: evidence 7).
MAX_INDEXED_WORDS = 16_383
#: Bytes of distinct words indexed per message (UTF-8), well under the 1 MiB tsvector cap.
MAX_INDEXED_BYTES = 512 * 1024
#: Longest word indexed (PostgreSQL refuses lexemes of 2 KiB or more).
MAX_WORD_BYTES = 2000


def fold_token(token: str) -> list[str]:
    """The index terms of one run of letters/digits (folding may split it: ``½`` -> 1, 2)."""
    folded = fold(token)
    if folded == token.lower() and folded.isalnum():
        return [folded]
    return [t for t in split_runs(folded) if t]


def index_terms(text: str) -> tuple[dict[str, list[int]], int]:
    """The terms of a text with their 1-based positions, and the number of words indexed.

    Only the first :data:`MAX_INDEXED_WORDS` words are indexed, and no new distinct word once
    :data:`MAX_INDEXED_BYTES` of them are; longer words than :data:`MAX_WORD_BYTES` are skipped
    (they still count as a position).
    """
    out: dict[str, list[int]] = {}
    size = 0
    pos = 0
    for term in _terms(text):
        if pos >= MAX_INDEXED_WORDS:
            return out, pos
        pos += 1
        seen = out.get(term)
        if seen is not None:
            seen.append(pos)
            continue
        n = len(term.encode("utf-8"))
        if n > MAX_WORD_BYTES or size + n > MAX_INDEXED_BYTES:
            continue
        size += n
        out[term] = [pos]
    return out, pos


def _terms(text: str) -> Iterable[str]:
    """The folded terms of *text* in order; read lazily past :data:`EAGER_CHARS` (a 16 MiB
    message stops being read once its indexed prefix is complete)."""
    if text.isascii():
        # In ASCII text the runs are exactly the maximal runs of letters and digits (everything
        # else is whitespace, punctuation or a control character), folded by lower() alone:
        # the character-by-character cut was most of an append's CPU on PostgreSQL
        # (benchmarks/pg_terms.py; tests/unit/test_terms.py). Lowering first changes no run.
        if len(text) <= EAGER_CHARS:  # all at once, in C: a message's usual size
            return _ASCII_RUNS.findall(text.lower())
        return (match.group().lower() for match in _ASCII_RUNS.finditer(text))
    return (term for run in _runs(text) for term in _fold_run(run))


_ASCII_RUNS = re.compile(r"[A-Za-z0-9]+")
#: ASCII text up to this many characters is cut in one pass (its runs found at once); longer
#: text lazily, run by run (benchmarks/pg_terms.py --eager measures the difference).
EAGER_CHARS = 64 * 1024


def _runs(text: str) -> Iterator[str]:
    for match in _PIECES.finditer(text):
        piece = match.group()
        # ASCII letters and digits only (most pieces of mixed text): one run, nothing to cut.
        if piece.isascii() and piece.isalnum():
            yield piece
        else:
            yield from split_runs(piece)


def _fold_run(run: str) -> list[str]:
    """:func:`fold_token`, with ASCII letters and digits folded by ``lower()`` alone (what
    :func:`~sessiondb.core.highlight.fold` does for them)."""
    if run.isascii() and run.isalnum():
        return [run.lower()]
    return fold_token(run)


def query_terms(tokens: tuple[str, ...] | list[str]) -> list[str]:
    """The index terms of a query's tokens, folded by the same rule as the text."""
    out: list[str] = []
    for t in tokens:
        out.extend(fold_token(t))
    return out


__all__ = [
    "MAX_INDEXED_BYTES",
    "MAX_INDEXED_WORDS",
    "MAX_WORD_BYTES",
    "fold_token",
    "index_terms",
    "query_terms",
]
