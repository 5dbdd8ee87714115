"""The usage rollup behind ``store.stats()`` on PostgreSQL, kept in the write transaction by the
backend's own statements (no triggers: the portable subset of docs/scale-out.md).

The rule is the SQLite backend's (sessiondb/sqlite/rollup.py, docs/adr/0007-usage-rollup.md):
``activity(sid, day, model)`` counts messages and tokens; ``responses(sid, response_id)`` holds
each API response's tokens, so that a response written as several messages counts once, at its
largest, on the day and model of its first message. A message whose usage names no
``response_id`` is a response of its own (``#<seq>``). The facts of a message are read from its
meta here, in Python, with the same reading as the SQLite backend's SQL.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..core.usage import FIELDS

if TYPE_CHECKING:
    from .wire import Wire

_DAY = 86400
_COLS = ", ".join(FIELDS)


class Facts(NamedTuple):
    day: int
    model: str
    rid: str | None  # the response, for a message with usage
    shared: bool  # the response id was given (several messages may share it)
    tokens: tuple[int, ...]


def _text(value: Any) -> str:
    """A JSON value as SQLite's ``json_extract`` turns it into text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(value, 0)


def facts(seq: int, created_at: float, meta: str | None) -> Facts:
    """What the rollup needs of a message."""
    day = int(created_at // _DAY)
    if meta is None:
        return Facts(day, "", None, False, (0,) * len(FIELDS))
    data = json.loads(meta)
    model = data.get("model")
    model_text = "" if model is None else _text(model)[:200]
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return Facts(day, model_text, None, False, (0,) * len(FIELDS))
    given = data.get("response_id")
    rid = (f"#{seq}" if given is None else _text(given))[:200]
    tokens = tuple(_count(usage.get(f)) for f in FIELDS)
    return Facts(day, model_text, rid, "response_id" in data, tokens)


def counts(found: Sequence[Facts]) -> tuple[list[int], list[str], list[int]]:
    """Messages stored, per (day, model): what the append statement adds to ``activity``
    (backend.py ``_APPEND``), as three parallel arrays."""
    by = Counter((f.day, f.model) for f in found)
    return [d for d, _ in by], [m for _, m in by], list(by.values())


def add_usage(conn: Wire, sid: int, found: Sequence[Facts]) -> None:
    """Messages stored (already counted by the append statement): their usage added."""
    growth = ", ".join(f"greatest(0, %({f})s - coalesce(r.{f}, 0))" for f in FIELDS)
    add_up = ", ".join(f"{f} = activity.{f} + excluded.{f}" for f in FIELDS)
    keep_max = ", ".join(f"{f} = greatest(responses.{f}, excluded.{f})" for f in FIELDS)
    values = ", ".join(f"%({f})s" for f in FIELDS)
    for f in found:
        if f.rid is None:
            continue
        # One statement: the response's growth goes to the activity row of its first message
        # (read before the response's row is raised), then the response keeps its largest.
        conn.execute(
            f"WITH r AS (SELECT day, model, {_COLS} FROM responses"
            "  WHERE sid = %(sid)s AND response_id = %(rid)s),"
            f" a AS (INSERT INTO activity (sid, day, model, {_COLS})"
            f"  SELECT %(sid)s, coalesce(r.day, %(day)s), coalesce(r.model, %(model)s), {growth}"
            "  FROM (SELECT 1) one LEFT JOIN r ON true"
            f"  ON CONFLICT (sid, day, model) DO UPDATE SET {add_up})"
            f" INSERT INTO responses (sid, response_id, day, model, {_COLS})"
            f" VALUES (%(sid)s, %(rid)s, %(day)s, %(model)s, {values})"
            f" ON CONFLICT (sid, response_id) DO UPDATE SET {keep_max}",
            {
                "sid": sid,
                "rid": f.rid,
                "day": f.day,
                "model": f.model,
                **dict(zip(FIELDS, f.tokens, strict=True)),
            },
        )


def remove(conn: Wire, sid: int, f: Facts) -> None:
    """A message removed while its session stays (``pop_message``), after its row is gone."""
    conn.execute(
        "UPDATE activity SET messages = messages - 1 WHERE sid = %s AND day = %s AND model = %s",
        (sid, f.day, f.model),
    )
    if f.rid is not None:
        left = [0] * len(FIELDS)
        n = 0
        if f.shared:
            for (meta,) in conn.execute(
                "SELECT meta FROM messages WHERE sid = %s AND rid = %s", (sid, f.rid)
            ).fetchall():
                other = facts(0, 0.0, meta)
                if other.rid is None:
                    continue
                n += 1
                left = [max(a, b) for a, b in zip(left, other.tokens, strict=True)]
        shrink = ", ".join(f"{x} = activity.{x} - (r.{x} - %s)" for x in FIELDS)
        conn.execute(
            f"UPDATE activity SET {shrink} FROM responses r"
            " WHERE r.sid = %s AND r.response_id = %s"
            " AND activity.sid = r.sid AND activity.day = r.day AND activity.model = r.model",
            (*left, sid, f.rid),
        )
        if n == 0:
            conn.execute("DELETE FROM responses WHERE sid = %s AND response_id = %s", (sid, f.rid))
        else:
            lower = ", ".join(f"{x} = %s" for x in FIELDS)
            conn.execute(
                f"UPDATE responses SET {lower} WHERE sid = %s AND response_id = %s",
                (*left, sid, f.rid),
            )
    nothing = " AND ".join(f"{x} = 0" for x in FIELDS)
    conn.execute(f"DELETE FROM activity WHERE sid = %s AND messages <= 0 AND {nothing}", (sid,))


def forget_session(conn: Wire, sid: int) -> None:
    """A session deleted or cleared: its rows leave the rollup with it (same transaction)."""
    conn.execute("DELETE FROM activity WHERE sid = %s", (sid,))
    conn.execute("DELETE FROM responses WHERE sid = %s", (sid,))


def add_copies(conn: Wire, sid: int, found: Sequence[Facts]) -> None:
    """A fork's copies (``copy_messages``): counted as its messages, without their tokens —
    spent once, by the session they came from, and counted there only
    (docs/adr/0009-framework-primitives.md); no response rows either, so a copy popped later
    takes nothing off."""
    days, models, n = counts(found)
    conn.execute(
        "INSERT INTO activity (sid, day, model, messages)"
        " SELECT %s, d, m, c FROM unnest(%s::integer[], %s::text[], %s::bigint[]) AS a(d, m, c)"
        " ON CONFLICT (sid, day, model) DO UPDATE SET messages = activity.messages"
        " + excluded.messages",
        (sid, days, models, n),
    )


def activity(
    conn: Wire,
    first_day: int | None,
    last_day: int | None,
    source: str | None,
    session_id: str | None = None,
) -> tuple[list[tuple[Any, ...]], dict[int, int], int]:
    """Rows ``(day, source, model, sessions, messages, *tokens)``, sessions active per day, and
    sessions active in the whole period — from the rollup alone, never the messages."""
    where = ["a.day >= %s", "a.day <= %s"]
    args: list[Any] = [
        -(1 << 30) if first_day is None else first_day,
        (1 << 30) if last_day is None else last_day,
    ]
    if source is not None:
        where.append("s.source = %s")
        args.append(source)
    if session_id is not None:
        where.append("s.session_id = %s")
        args.append(session_id)
    cond = " AND ".join(where)
    sums = ", ".join(f"sum(a.{f})" for f in FIELDS)
    base = f"FROM activity a JOIN sessions s ON s.id = a.sid WHERE {cond}"
    rows = conn.execute(
        f"SELECT a.day, s.source, a.model, count(DISTINCT a.sid), sum(a.messages), {sums}"
        f" {base} GROUP BY a.day, s.source, a.model"
        ' ORDER BY a.day, s.source COLLATE "C", a.model COLLATE "C"',
        args,
    ).fetchall()
    found = conn.execute(f"SELECT a.day, count(DISTINCT a.sid) {base} GROUP BY a.day", args)
    per_day = {int(d): int(n) for d, n in found.fetchall()}
    total = conn.execute(f"SELECT count(DISTINCT a.sid) {base}", args).fetchone()
    out = [(int(r[0]), r[1], r[2], *(int(x or 0) for x in r[3:])) for r in rows]
    return out, per_day, int(total[0]) if total else 0


__all__ = [
    "Facts",
    "activity",
    "add_copies",
    "add_usage",
    "counts",
    "facts",
    "forget_session",
    "remove",
]
