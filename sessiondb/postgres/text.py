"""NUL-safe text: PostgreSQL ``text`` cannot hold U+0000 (``DataError``), the contract accepts any
Unicode (tests/contract/test_fidelity.py round-trips it).

A string with NUL is stored with each NUL replaced by a space, and the code-point offsets of the
NULs kept beside it (``content_nul``, ``title_nul``, ``reason_nul``: NULL for the usual string
without one). Only the rare string with a NUL is touched, and the stored text stays searchable as
it is: a search word never holds a NUL (sessiondb.core.query turns control characters into word
separators), so replacing it by a space changes no match. ``meta`` needs nothing: its canonical
JSON text (sessiondb.core.validate.meta) writes NUL as ``\\u0000``.
"""

from __future__ import annotations

from collections.abc import Sequence


def encode(text: str | None) -> tuple[str | None, list[int] | None]:
    """``(stored text, NUL offsets or None)``."""
    if text is None or "\x00" not in text:
        return text, None
    offsets = [i for i, ch in enumerate(text) if ch == "\x00"]
    return text.replace("\x00", " "), offsets


def decode(stored: str | None, offsets: Sequence[int] | None) -> str | None:
    """The original string of :func:`encode`'s pair."""
    if stored is None or not offsets:
        return stored
    chars = list(stored)
    for i in offsets:
        chars[i] = "\x00"
    return "".join(chars)


__all__ = ["decode", "encode"]
