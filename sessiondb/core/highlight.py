"""Highlighting: the query's words marked in message text, and a snippet cut around the first
match. Folding (case and diacritics) follows the word index's rules, so what the search found is
what gets marked."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from .query import Word


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


def fold(text: str) -> str:
    """Case- and diacritic-folded text (the rule the word index and the highlighter share)."""
    return _fold(text)[0]


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
                prefix = w.prefix
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


__all__ = ["Highlighter", "fold"]
