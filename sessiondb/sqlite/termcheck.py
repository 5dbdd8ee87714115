"""How often a message holds each of some words, counted as the word index counts them.

The search checks the commonest words of a multi-word query on each candidate row instead of
walking their doclists (search.py, ADR 0004 amendment 1). Counting must equal the index's: a
word is one token of the index's tokenizer (unicode61, remove_diacritics 2, fts.py), matched
whole after its folding. For ASCII text that tokenizer's token characters are exactly
``[A-Za-z0-9]`` and its folding is ASCII lower case, so the lower-cased word found in the
lower-cased text between non-token characters counts the same
(tests/sqlite/test_search_plan.py compares the
two on generated text); any other text is cut by the index's own tokenizer
(``FTS5ExtensionApi.tokenize``), which is what indexed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apsw


def checkable(word: str) -> bool:
    """Can ``word`` be counted here? ASCII letters and digits only: one token, ``word.lower()``."""
    return word.isascii() and word.isalnum()


HOLDS = "sessiondb_holds"  # SQL: holds(text as blob, space-separated needles) -> 1, 0 or NULL


def holds(*args: Any) -> int | None:
    """``sessiondb_holds(text, needles)``: 1 when an ASCII ``text`` holds every needle
    (:func:`needles`, space-separated), 0 when it lacks one, None when the text is not ASCII
    (the caller asks the index's tokenizer then: rank.py ``sessiondb_rank_checked``)."""
    text, needles = args
    if not isinstance(text, bytes) or not text.isascii():
        return None
    low = text.lower()
    return int(all(_ascii_count(low, n.encode()) for n in str(needles).split()))


def register(conn: apsw.Connection) -> None:
    conn.create_scalar_function(HOLDS, holds, 2, deterministic=True)


def needles(tokens: Sequence[str]) -> tuple[bytes, ...]:
    """The (checkable, lower-case) tokens as :func:`counts` looks for them."""
    return tuple(t.encode() for t in tokens)


def _ascii_count(low: bytes, needle: bytes) -> int:
    """Occurrences of ``needle`` in lower-cased ASCII ``low`` bounded by non-token characters.

    ``bytes.find`` and a look at the two neighbours: a regular expression with look-around and
    IGNORECASE took ~40x longer per message (docs/benchmarks.md).
    """
    n, size, end = 0, len(needle), len(low)
    i = low.find(needle)
    while i >= 0:
        j = i + size
        if (i == 0 or not low[i - 1 : i].isalnum()) and (j == end or not low[j : j + 1].isalnum()):
            n += 1
        i = low.find(needle, i + 1)
    return n


def counts(api: apsw.FTS5ExtensionApi, text: bytes, needles: Sequence[bytes]) -> list[int]:
    """Occurrences of each needle (:func:`needles`) in ``text`` (UTF-8), as the index's tokenizer
    cuts it; stops at the first needle found zero times (the rest are reported as 0)."""
    out = [0] * len(needles)
    if text.isascii():
        low = text.lower()
        for i, needle in enumerate(needles):
            out[i] = _ascii_count(low, needle)
            if not out[i]:
                break
        return out
    cut = api.tokenize(text, None, include_offsets=False, include_colocated=False)
    seen: dict[str, int] = {}
    for token in cut:
        seen[token] = seen.get(token, 0) + 1
    for i, needle in enumerate(needles):
        out[i] = seen.get(needle.decode(), 0)
        if not out[i]:
            break
    return out


__all__ = ["HOLDS", "checkable", "counts", "holds", "needles", "register"]
