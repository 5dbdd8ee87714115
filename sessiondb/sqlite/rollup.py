"""Migration 5: the usage rollup behind ``store.stats()`` — messages and tokens per session, UTC day
and model, kept in the write transaction by triggers (docs/adr/0007-usage-rollup.md).

``activity(sid, day, model)`` counts messages and tokens; ``responses(sid, response_id)`` holds
each API response's tokens, so that a response written as several messages (Claude Code writes
one entry per content block, each repeating the response's usage with ``output_tokens`` growing)
counts once, at its largest, on the ``activity`` row of its first message. A message whose usage
names no ``response_id`` is a response of its own. Usage is ``meta["usage"]``'s integer fields
(:mod:`sessiondb.core.usage`), the model ``meta["model"]``.

The rule is written once, as the ``INSTEAD OF`` triggers of two views: ``rollup_add`` (a
message counted) and ``rollup_remove`` (a message removed while its session stays:
``pop_message``). Triggers on ``messages`` feed them, so every writer keeps the rollup — an older
sessiondb's too, once the file has the migration — and :func:`backfill_step` feeds the messages
the file held before the migration through the same views, 2000 per write transaction (rule 5).
``rollup_state`` says which ids the backfill still owes: a message id in ``(done, upto]`` is
counted by the backfill, any other by the triggers, so each message is counted exactly once
even while the backfill runs. A deleted or cleared session's rows go with it
(``SQLiteTx.delete_session``); its messages, purged later, are no longer counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import apsw

from ..core.usage import FIELDS

if TYPE_CHECKING:
    from .engine import Engine

#: Messages fed to the rollup per write transaction while a migrated file is backfilled.
BACKFILL_BATCH = 2000
_DAY = 86400

# SQL fragments over a row alias (`new`, `m`): values derived from constants, never from input.


def _day(r: str) -> str:
    return f"CAST({r}.created_at / {_DAY} AS INTEGER)"  # created_at >= 0: truncation is floor


def _model(r: str) -> str:
    return f"substr(coalesce(json_extract({r}.meta, '$.model'), ''), 1, 200)"


def _has_usage(r: str) -> str:
    return f"({r}.meta IS NOT NULL AND json_type({r}.meta, '$.usage') = 'object')"


def _rid(r: str) -> str:
    return f"substr(coalesce(json_extract({r}.meta, '$.response_id'), '#' || {r}.seq), 1, 200)"


def _tokens(r: str, f: str) -> str:
    path = f"'$.usage.{f}'"
    return (
        f"(CASE json_type({r}.meta, {path}) WHEN 'integer'"
        f" THEN max(json_extract({r}.meta, {path}), 0) ELSE 0 END)"
    )


_COUNTED = "(SELECT {id} > upto OR {id} <= done FROM rollup_state)"
# A message counted on its (session, day, model) row: the rule of ``rollup_add_row`` (one
# message, n = 1) and of add_batch's set-based upsert (n messages of one row at once).
_COUNT_MESSAGES = "messages = messages + {n}"
_SAME_RESPONSE = "r.sid = new.sid AND r.response_id = new.rid"
# No alias on the target of an UPDATE or DELETE in a trigger: ALTER TABLE re-checks every
# trigger and cannot resolve one (a DROP COLUMN failed on "no such column: r.sid").
_THIS_RESPONSE = "responses.sid = new.sid AND responses.response_id = new.rid"
_ACTIVITY_OF_R = "activity.sid = r.sid AND activity.day = r.day AND activity.model = r.model"
# What the rollup needs of a message, read from its meta in ONE statement: SQLite parses a JSON
# text once per statement however many json_* calls read it (3.45's parse cache), so the views
# take these columns rather than the meta (appends with usage: 1.35x slower otherwise).
_FACT_COLUMNS = ("sid", "seq", "day", "model", "rid", "usage", "shared", *FIELDS)


def _facts(r: str) -> str:
    """The ``_FACT_COLUMNS`` of the message row ``r``, as a select list."""
    return ", ".join(
        [
            f"{r}.sid",
            f"{r}.seq",
            _day(r),
            _model(r),
            _rid(r),
            _has_usage(r),
            f"json_type({r}.meta, '$.response_id') IS NOT NULL",
            *(_tokens(r, f) for f in FIELDS),
        ]
    )


def _statements() -> list[str]:
    cols = ", ".join(f"{f} INTEGER NOT NULL DEFAULT 0" for f in FIELDS)
    growth = ", ".join(f"max(0, new.{f} - coalesce(r.{f}, 0))" for f in FIELDS)
    add = ", ".join(f"{f} = {f} + excluded.{f}" for f in FIELDS)
    keep_max = ", ".join(f"{f} = max({f}, excluded.{f})" for f in FIELDS)
    news = ", ".join(f"new.{f}" for f in FIELDS)
    left = ", ".join(f"coalesce(max({_tokens('m', f)}), 0)" for f in FIELDS)
    shrink = ", ".join(f"{f} = activity.{f} - (r.{f} - x.{f})" for f in FIELDS)
    lower = ", ".join(f"{f} = (SELECT {f} FROM rollup_scratch)" for f in FIELDS)
    nothing = " AND ".join(f"{f} = 0" for f in FIELDS)
    view = ", ".join(_FACT_COLUMNS)
    empty = ", ".join("0" for _ in _FACT_COLUMNS)
    return [
        f"""CREATE TABLE activity (
            sid INTEGER NOT NULL,              -- sessions.id
            day INTEGER NOT NULL,              -- UTC day: floor(created_at / 86400)
            model TEXT NOT NULL,               -- meta.model, '' when none
            messages INTEGER NOT NULL DEFAULT 0, {cols},
            PRIMARY KEY (day, sid, model)) WITHOUT ROWID""",
        # Clustered by day: stats() reads a range of days in key order (1.4-1.7x faster than
        # through an index on day, benchmarks/stats.py); deleting a session goes by sid.
        "CREATE INDEX activity_by_sid ON activity(sid)",
        f"""CREATE TABLE responses (
            sid INTEGER NOT NULL, response_id TEXT NOT NULL,
            day INTEGER NOT NULL, model TEXT NOT NULL, {cols},
            PRIMARY KEY (sid, response_id)) WITHOUT ROWID""",
        f"CREATE TABLE rollup_scratch (n INTEGER, {cols})",
        """CREATE TABLE rollup_state (one INTEGER PRIMARY KEY CHECK (one = 1),
            done INTEGER NOT NULL, upto INTEGER NOT NULL)""",
        """INSERT INTO rollup_state
            SELECT 1, 0, coalesce(max(id), 0) FROM messages""",
        f"CREATE VIEW rollup_add({view}) AS SELECT {empty} WHERE 0",
        f"CREATE VIEW rollup_remove({view}) AS SELECT {empty} WHERE 0",
        f"""CREATE TRIGGER rollup_add_row INSTEAD OF INSERT ON rollup_add BEGIN
            INSERT INTO activity(sid, day, model, messages)
                VALUES (new.sid, new.day, new.model, 1)
                ON CONFLICT DO UPDATE SET {_COUNT_MESSAGES.format(n="1")};
        END""",
        # Tokens in a trigger of their own: a message without usage runs none of this. The
        # response's growth goes to the activity row of its first message (read before the
        # response's row is raised), then the response keeps its largest counts.
        f"""CREATE TRIGGER rollup_add_usage INSTEAD OF INSERT ON rollup_add WHEN new.usage BEGIN
            INSERT INTO activity(sid, day, model, {", ".join(FIELDS)})
                SELECT new.sid, coalesce(r.day, new.day), coalesce(r.model, new.model), {growth}
                FROM (SELECT 1) LEFT JOIN responses r
                    ON r.sid = new.sid AND r.response_id = new.rid
                WHERE true
                ON CONFLICT DO UPDATE SET {add};
            INSERT INTO responses(sid, response_id, day, model, {", ".join(FIELDS)})
                VALUES (new.sid, new.rid, new.day, new.model, {news})
                ON CONFLICT DO UPDATE SET {keep_max};
        END""",
        f"""CREATE TRIGGER rollup_remove_row INSTEAD OF INSERT ON rollup_remove BEGIN
            UPDATE activity SET messages = messages - 1
                WHERE sid = new.sid AND day = new.day AND model = new.model;
            DELETE FROM rollup_scratch;
            INSERT INTO rollup_scratch
                SELECT count(*), {left} FROM messages m
                WHERE new.usage AND new.shared AND m.sid = new.sid AND {_has_usage("m")}
                AND {_rid("m")} = new.rid;
            UPDATE activity SET {shrink} FROM responses r, rollup_scratch x
                WHERE new.usage AND {_SAME_RESPONSE} AND {_ACTIVITY_OF_R};
            UPDATE responses SET {lower} WHERE new.usage AND {_THIS_RESPONSE};
            DELETE FROM responses WHERE new.usage AND {_THIS_RESPONSE}
                AND coalesce((SELECT n FROM rollup_scratch), 0) = 0;
            DELETE FROM activity WHERE sid = new.sid AND messages <= 0 AND {nothing};
        END""",
        insert_trigger(),
        f"""CREATE TRIGGER messages_rollup_ad AFTER DELETE ON messages
            WHEN {_COUNTED.format(id="old.id")}
            AND EXISTS (SELECT 1 FROM sessions WHERE id = old.sid) BEGIN
            INSERT INTO rollup_remove SELECT {_facts("old")};
        END""",
    ]


def insert_trigger(unclaimed: str | None = None) -> str:
    """The AFTER INSERT trigger feeding ``rollup_add`` one row at a time; ``unclaimed`` is the
    extra condition of migration 7 (sqlite/selfindex.py: a writer that feeds its batch itself)."""
    when = _COUNTED.format(id="new.id")
    if unclaimed is not None:
        when = f"{unclaimed} AND {when}"
    return f"""CREATE TRIGGER messages_rollup_ai AFTER INSERT ON messages
            WHEN {when} BEGIN
            INSERT INTO rollup_add SELECT {_facts("new")};
        END"""


def add_batch(conn: apsw.Connection, where: str, args: tuple[Any, ...]) -> None:
    """Count the messages ``m`` matching ``where`` (a constant SQL condition with placeholders)
    in the rollup, as ``rollup_add`` would one row at a time (selfindex.index_batch): those with
    usage through the view, in id order — the order the insert trigger would have seen them; the
    usage rule stays written once, in its INSTEAD OF trigger — and the others, which only add
    one message to their (session, day, model) row, with one upsert per such row (ADR 0007,
    amendment: each row through the view ran the trigger program once per message)."""
    counted = _COUNTED.format(id="m.id")
    usage = f"coalesce({_has_usage('m')}, 0)"
    conn.execute(
        f"INSERT INTO rollup_add SELECT {_facts('m')} FROM messages m"
        f" WHERE {where} AND {counted} AND {usage} ORDER BY m.id",
        args,
    )
    conn.execute(
        f"INSERT INTO activity(sid, day, model, messages)"
        f" SELECT m.sid, {_day('m')}, {_model('m')}, count(*) FROM messages m"
        f" WHERE {where} AND {counted} AND NOT {usage} GROUP BY 1, 2, 3"
        f" ON CONFLICT DO UPDATE SET {_COUNT_MESSAGES.format(n='excluded.messages')}",
        args,
    )


def _one(cursor: apsw.Cursor) -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None  # an aggregate, or the one row rollup_state always holds
    return tuple(row)


def create(conn: apsw.Connection) -> None:
    """Apply migration 5 on ``conn`` (inside the migration's write transaction)."""
    for statement in _statements():
        conn.execute(statement)


def forget_session(conn: apsw.Connection, sid: int) -> None:
    """A session deleted or cleared: its rows leave the rollup with it (same transaction)."""
    conn.execute("DELETE FROM activity WHERE sid = ?", (sid,))
    conn.execute("DELETE FROM responses WHERE sid = ?", (sid,))


def forget_copied_tokens(conn: apsw.Connection, sid: int) -> None:
    """A fork's copies (``copy_messages``, into a session made in the same transaction) count as
    its messages but carry no tokens: those were spent once, by the session they came from, and
    stats count them there (docs/adr/0009-framework-primitives.md). The triggers counted them as
    they were inserted; undone here, and the responses too (a copied message popped later then
    takes nothing off)."""
    zero = ", ".join(f"{f} = 0" for f in FIELDS)
    conn.execute(f"UPDATE activity SET {zero} WHERE sid = ?", (sid,))
    conn.execute("DELETE FROM responses WHERE sid = ?", (sid,))


def backfill_step(engine: Engine, batch: int = BACKFILL_BATCH) -> bool:
    """Count the next ``batch`` message ids the file held before the migration, in one write
    transaction; True while more remain (schema hook)."""
    with engine.read() as conn:
        state = conn.execute("SELECT done, upto FROM rollup_state").fetchone()
        if state is None or state[0] >= state[1]:
            return False
    with engine.write() as conn:
        done, upto = _one(conn.execute("SELECT done, upto FROM rollup_state"))
        hi = min(done + batch, upto)
        conn.execute(
            f"INSERT INTO rollup_add SELECT {_facts('m')} FROM messages m"
            " WHERE m.id > ? AND m.id <= ?"
            " AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = m.sid) ORDER BY m.id",
            (done, hi),
        )
        conn.execute("UPDATE rollup_state SET done = ?", (hi,))
        return bool(hi < upto)


def activity(
    conn: apsw.Connection,
    first_day: int | None,
    last_day: int | None,
    source: str | None,
    session_id: str | None = None,
) -> tuple[list[tuple[Any, ...]], dict[int, int], int]:
    """Rows ``(day, source, model, sessions, messages, *tokens)``, sessions active per day, and
    sessions active in the whole period — from the rollup alone, never the messages."""
    where = ["a.day >= ?", "a.day <= ?"]
    args: list[Any] = [
        -1 if first_day is None else first_day,
        1 << 40 if last_day is None else last_day,
    ]
    if source is not None:
        where.append("s.source = ?")
        args.append(source)
    if session_id is not None:
        where.append("s.session_id = ?")
        args.append(session_id)
    cond = " AND ".join(where)
    sums = ", ".join(f"sum(a.{f})" for f in FIELDS)
    base = f"FROM activity a JOIN sessions s ON s.id = a.sid WHERE {cond}"
    rows = conn.execute(
        f"SELECT a.day, s.source, a.model, count(DISTINCT a.sid), sum(a.messages), {sums}"
        f" {base} GROUP BY a.day, s.source, a.model ORDER BY a.day, s.source, a.model",
        args,
    ).fetchall()
    found: list[Any] = conn.execute(
        f"SELECT a.day, count(DISTINCT a.sid) {base} GROUP BY a.day", args
    ).fetchall()
    per_day = {int(d): int(n) for d, n in found}
    (total,) = _one(conn.execute(f"SELECT count(DISTINCT a.sid) {base}", args))
    return [tuple(r) for r in rows], per_day, int(total)


__all__ = [
    "BACKFILL_BATCH",
    "activity",
    "add_batch",
    "backfill_step",
    "create",
    "forget_copied_tokens",
    "forget_session",
    "insert_trigger",
]
