"""Usage and activity stats, the backend-neutral part: the period asked for, and the answer
assembled from the backend's rollup rows (``ReadTx.activity``; docs/adr/0007-usage-rollup.md).

Days are UTC days, numbered from the epoch (``floor(created_at / 86400)``); a message counts on
the day of its ``created_at`` — an imported transcript's own time — and a response's tokens on
the day of its first message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

from ..models import DayStats, Stats, Tokens, Usage
from . import validate as v

DAY = 86400
_EPOCH = date(1970, 1, 1)

ActivityRow = tuple[Any, ...]
"""``(day, source, model, sessions, messages, input, output, cache_read, cache_write)``."""


def day_of(value: object, field: str) -> int:
    """The UTC day number of a time (epoch seconds or a datetime) or a date."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return (value - _EPOCH).days
    return math.floor(v.timestamp(value, field) / DAY)


def iso_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).isoformat()


def period(since: object, until: object) -> tuple[int | None, int | None]:
    """First and last day (inclusive) of the period asked for; None: unbounded."""
    first = None if since is None else day_of(since, "since")
    last = None if until is None else day_of(until, "until")
    return first, last


def _tokens(row: Sequence[Any]) -> Tokens:
    return Tokens(*(int(x or 0) for x in row))


def _add(a: Tokens, b: Tokens) -> Tokens:
    return Tokens(
        a.input + b.input,
        a.output + b.output,
        a.cache_read + b.cache_read,
        a.cache_write + b.cache_write,
    )


def assemble(
    rows: Sequence[ActivityRow],
    sessions_per_day: dict[int, int],
    sessions: int,
    first: int | None,
    last: int | None,
) -> Stats:
    days: dict[int, list[Usage]] = {}
    for row in rows:
        day, source, model, n_sessions, messages = row[:5]
        usage = Usage(
            str(source), str(model) or None, int(n_sessions), int(messages or 0), _tokens(row[5:])
        )
        days.setdefault(int(day), []).append(usage)
    out: list[DayStats] = []
    total_messages, total_tokens = 0, Tokens()
    for day in sorted(days):
        by = days[day]
        messages = sum(u.messages for u in by)
        tokens = Tokens()
        for u in by:
            tokens = _add(tokens, u.tokens)
        out.append(
            DayStats(iso_day(day), sessions_per_day.get(day, 0), messages, tokens, tuple(by))
        )
        total_messages += messages
        total_tokens = _add(total_tokens, tokens)
    return Stats(
        None if first is None else iso_day(first),
        None if last is None else iso_day(last),
        tuple(out),
        sessions,
        total_messages,
        total_tokens,
    )


def today() -> int:
    return math.floor(datetime.now(timezone.utc).timestamp() / DAY)


__all__ = ["DAY", "ActivityRow", "assemble", "day_of", "iso_day", "period", "today"]
