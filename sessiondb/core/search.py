"""Search, the backend-neutral part: argument checks, the request a backend executes, and the
assembly of hits (snippets, context). What matches is defined in :mod:`sessiondb.core.query`
and docs/search.md; how it is found is each backend's business (``Backend.search``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import InvalidInput
from ..models import Hit, Message
from . import validate as v
from .highlight import Highlighter
from .query import Expr, Word, normalize_query, parse_advanced, positive_words, split_words

MAX_CONTEXT = 100
Mode = Literal["plain", "fts"]


@dataclass(frozen=True)
class SearchRequest:
    """One search as a backend executes it: the best ``need`` matches, best first.

    ``words`` are the plain mode's words (every one must occur, docs/search.md); in the advanced
    mode ``expr`` is the parsed query and ``words`` its positive terms (for highlighting).
    """

    mode: Mode
    words: tuple[Word, ...]
    expr: Expr | None
    need: int
    session_id: str | None = None
    source: str | None = None
    role: str | None = None
    since: float | None = None
    until: float | None = None


def _count(value: object, name: str, top: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{name} must be an integer >= 0, not {value!r}")
    if top is not None and value > top:
        raise InvalidInput(f"{name} must be an integer >= 0 and at most {top}, not {value!r}")
    return value


def check_markers(markers: object) -> tuple[str, str]:
    if (
        not isinstance(markers, tuple)
        or len(markers) != 2
        or not all(isinstance(m, str) for m in markers)
    ):
        raise InvalidInput(f"markers must be a pair of strings, not {markers!r}")
    return markers[0], markers[1]


def request(
    query: object,
    *,
    session_id: object = None,
    source: object = None,
    role: object = None,
    since: object = None,
    until: object = None,
    limit: object = 20,
    offset: object = 0,
    mode: object = "plain",
) -> SearchRequest | None:
    """Validate a search's arguments; None when nothing can match (no words, ``limit=0``)."""
    if mode not in ("plain", "fts"):
        raise InvalidInput(f"search mode must be 'plain' or 'fts', not {mode!r}")
    lim, off = _count(limit, "limit"), _count(offset, "offset")
    text = normalize_query(query)
    sid = None if session_id is None else v.session_id(session_id)
    src = None if source is None else v.source(source)
    rl = None if role is None else v.role(role)
    start = v.optional_timestamp(since, "since")
    end = v.optional_timestamp(until, "until")
    expr: Expr | None = None
    if mode == "plain":
        words = split_words(text)
    else:
        expr = parse_advanced(text)
        words = positive_words(expr) if expr is not None else []
    if lim == 0 or not words:
        return None
    return SearchRequest(mode, tuple(words), expr, off + lim, sid, src, rl, start, end)


def check_context(context: object) -> int:
    return _count(context, "context", MAX_CONTEXT)


def assemble(
    rows: Sequence[tuple[Message, float]],
    around: Sequence[tuple[list[Message], list[Message]]] | None,
    words: Sequence[Word],
    markers: tuple[str, str],
) -> list[Hit]:
    """Hits from the backend's rows and the neighbours read for them."""
    light = Highlighter(words, markers)
    hits = []
    for i, (message, score) in enumerate(rows):
        before, after = around[i] if around is not None else ([], [])
        hits.append(
            Hit(
                message=message,
                snippet=light.snippet(message.content),
                score=score,
                before=tuple(before),
                after=tuple(after),
            )
        )
    return hits


__all__ = ["MAX_CONTEXT", "SearchRequest", "assemble", "check_context", "check_markers", "request"]
