"""Everything readable from a private copy of a damaged store: what plain reads return (the
floor a repair must keep), what rowid-range scans find around the damage, and what the pages
hold that SQL cannot reach.

Three readers, because each misses something the others see:

* **plain reads** — per session, the messages in seq order through the ``(sid, seq)`` index,
  as ``store.messages()`` reads them (and newest first, as ``messages(last=N)`` does, when the
  first read stops at damage). What they return is the *floor*: a repair never stores less
  (docs/doctor.md, "--repair"). A rowid scan cannot stand in for them: it walks the table's own
  b-tree, and one damaged page there can end it early without an error while every session
  still reads through the index
  (tests/sqlite/test_repair_faults.py::test_wal_only_messages_survive_a_damaged_main_file).
* **rowid-range scans** of ``sessions`` and ``messages``: each range is read upwards and, when
  it stops short (an error, a row out of order, or an early end that a read from the top
  contradicts), downwards from its end; what lies between is bisected, within a budget.
* **the page scan** (``pagescan.py``): every table-leaf page not on the freelist, with the
  copy's WAL applied — rows under a damaged interior page.

The copy is opened through ``untrusted.py`` (no triggers, no views, no ATTACH, no writes by
SQL); every statement here is fixed text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from .pagescan import open_pages
from .untrusted import open_untrusted

SESSION_COLS = (
    "id, session_id, source, title, meta, created_at, updated_at, ended_at, end_reason, "
    "message_count"
)
MESSAGE_COLS = "id, sid, seq, role, content, key, meta, created_at"
READ_PAGE = 2000  # messages per plain read, as the store reads them (docs/design.md rule 6)
SCAN_BUDGET = 20_000  # range reads per table before the page scan is left to find the rest
_NUM = (int, float)
Row = tuple[Any, ...]

_RANGE_SQL = {
    ("sessions", True): f"SELECT {SESSION_COLS} FROM sessions WHERE id BETWEEN ? AND ? ORDER BY id",
    ("sessions", False): (
        f"SELECT {SESSION_COLS} FROM sessions WHERE id BETWEEN ? AND ? ORDER BY id DESC"
    ),
    ("messages", True): f"SELECT {MESSAGE_COLS} FROM messages WHERE id BETWEEN ? AND ? ORDER BY id",
    ("messages", False): (
        f"SELECT {MESSAGE_COLS} FROM messages WHERE id BETWEEN ? AND ? ORDER BY id DESC"
    ),
}
_MAX_ROWID = {
    "sessions": "SELECT max(id) FROM sessions",
    "messages": "SELECT max(id) FROM messages",
}
_PLAIN_UP = (
    f"SELECT {MESSAGE_COLS} FROM messages WHERE sid = ? AND seq > ? ORDER BY seq LIMIT {READ_PAGE}"
)
_PLAIN_DOWN = (
    f"SELECT {MESSAGE_COLS} FROM messages WHERE sid = ? AND seq < ? AND seq > ?"
    f" ORDER BY seq DESC LIMIT {READ_PAGE}"
)
# The session ids through their unique index, which a plain read uses to find a session even
# when the session's own row sits on a damaged page.
_SESSION_IDS = "SELECT id, session_id FROM sessions INDEXED BY sqlite_autoindex_sessions_1"


def is_message(v: Row) -> bool:
    """The exact shape of a ``messages`` row (rowid alias first, read as NULL from a page)."""
    return (
        len(v) == 8
        and v[0] is None
        and isinstance(v[1], int)
        and isinstance(v[2], int)
        and v[2] >= 1
        and isinstance(v[3], str)
        and isinstance(v[4], str)
        and (v[5] is None or isinstance(v[5], str))
        and (v[6] is None or isinstance(v[6], str))
        and isinstance(v[7], _NUM)
    )


def is_session(v: Row) -> bool:
    """The exact shape of a ``sessions`` row. Rows written since schema version 4 carry an 11th
    value, the revision, and since version 7 a 12th, the index claim (always 0 once committed:
    sqlite/selfindex.py); a repaired store starts every session at revision 0 again."""
    if len(v) in (11, 12) and all(isinstance(x, int) for x in v[10:]):
        v = v[:10]
    return (
        len(v) == 10
        and v[0] is None
        and isinstance(v[1], str)
        and isinstance(v[2], str)
        and all(x is None or isinstance(x, str) for x in (v[3], v[4], v[8]))
        and isinstance(v[5], _NUM)
        and isinstance(v[6], _NUM)
        and (v[7] is None or isinstance(v[7], _NUM))
        and isinstance(v[9], int)
    )


def _is_schema_table(v: Row) -> bool:
    """A ``sqlite_schema`` row describing a table."""
    return (
        len(v) == 5
        and v[0] == "table"
        and isinstance(v[1], str)
        and isinstance(v[3], int)
        and isinstance(v[4], str)
        and v[4].upper().startswith("CREATE")
    )


def _rows(conn: apsw.Connection, sql: str, params: tuple[Any, ...] = ()) -> Iterator[Row]:
    """The rows of a statement until it ends or fails; a failure ends the iteration quietly
    (what was read before it is kept by the caller). ValueError: text that is not UTF-8."""
    with suppress(apsw.Error, ValueError):
        for row in conn.execute(sql, params):
            yield tuple(row)


class _Budget:
    def __init__(self, reads: int) -> None:
        self.left = reads

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


def _read_range(
    conn: apsw.Connection, sql: str, lo: int, hi: int, up: bool, into: dict[int, Row]
) -> tuple[int | None, bool]:
    """Read rowids [lo, hi] in one direction into ``into``; return the last rowid read in
    order (None if none) and whether the read ended cleanly (no error, nothing out of order)."""
    last: int | None = None
    clean = True
    try:
        for raw in conn.execute(sql, (lo, hi)):
            row = tuple(raw)
            rowid = row[0]
            in_order = isinstance(rowid, int) and lo <= rowid <= hi
            if in_order and last is not None:
                in_order = rowid > last if up else rowid < last
            if not in_order:
                # A damaged page yields garbage cells: such a row is not a row, and the order
                # of what follows cannot be trusted.
                clean = False
                break
            into.setdefault(rowid, row)
            last = rowid
    except (apsw.Error, ValueError):
        clean = False
    return last, clean


def scan(conn: apsw.Connection, table: str, lo: int, hi: int, budget: _Budget) -> dict[int, Row]:
    """Rows of ``table`` with rowid in [lo, hi], read around damage (module docstring)."""
    got: dict[int, Row] = {}
    todo = [(lo, hi)]
    while todo and budget.take():
        a, b = todo.pop()
        top, clean_up = _read_range(conn, _RANGE_SQL[table, True], a, b, True, got)
        if top == b:
            continue
        start = a if top is None else top + 1
        bottom, clean_down = _read_range(conn, _RANGE_SQL[table, False], start, b, False, got)
        end = b if bottom is None else bottom - 1
        # An upward read that ended early without an error is contradicted by a downward read
        # that found rows above where it ended.
        stopped_short = not clean_up or not clean_down or (bottom is not None and clean_up)
        if start <= end and stopped_short:
            if start == end:
                continue  # this one rowid is unreadable
            mid = (start + end) // 2
            todo += [(mid + 1, end), (start, mid)]
    return got


def _max_rowid(conn: apsw.Connection, table: str) -> int:
    try:
        value = conn.execute(_MAX_ROWID[table]).get
        return int(value) if isinstance(value, int) else 0
    except (apsw.Error, ValueError):
        return 0


@dataclass
class Salvage:
    """What could be read from a damaged store's copy, with the floor the repair must keep."""

    sessions: dict[int, Row] = field(default_factory=dict)  # rowid -> SESSION_COLS values
    messages: dict[int, Row] = field(default_factory=dict)  # rowid -> MESSAGE_COLS values
    # sid -> {seq: (content, rowid)}: what plain reads returned before the repair
    floor: dict[int, dict[int, tuple[str, int]]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # sid -> session_id, as reads found it
    purged: set[int] = field(default_factory=set)
    sequence: int | None = None
    messages_before: int | None = None
    placeholders: int = 0
    unreadable: bool = False
    # tables named by schema rows found in the pages when SQL could not read the schema and
    # none of them is sessiondb's: the file is another application's database
    foreign_tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def floor_count(self) -> int:
        return sum(len(v) for v in self.floor.values())

    @classmethod
    def from_copy(cls, copy: Path) -> Salvage:
        """Read everything from ``copy`` (a private copy with its ``-wal``/``-journal``)."""
        s = cls()
        s._recover_journal(copy)
        with open_pages(copy) as pages:
            raw = [(row.rowid, row.values) for row in pages.all_leaf_rows()]
        hints = {
            "sessions": max((r for r, v in raw if is_session(v)), default=0),
            "messages": max((r for r, v in raw if is_message(v)), default=0),
        }
        sql_sessions: dict[int, Row] = {}
        sql_messages: dict[int, Row] = {}
        s._by_sql(copy, hints, sql_sessions, sql_messages)
        if s.unreadable:
            tables = sorted({str(v[1]) for _, v in raw if _is_schema_table(v)})
            if tables and not {"sessions", "messages"} & set(tables):
                s.foreign_tables = tables
        s._merge(raw, sql_sessions, sql_messages)
        return s

    # -- readers ------------------------------------------------------------------------------

    @staticmethod
    def _recover_journal(copy: Path) -> None:
        """Let SQLite roll a hot journal back into the copy (and index its WAL) before its
        pages are read directly: one read on a read-write connection does both."""
        with suppress(apsw.Error):
            conn = open_untrusted(copy, readonly=False, no_checkpoint_on_close=True)
            try:
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
            finally:
                conn.close()

    def _by_sql(
        self,
        copy: Path,
        hints: dict[str, int],
        sessions: dict[int, Row],
        messages: dict[int, Row],
    ) -> None:
        try:
            conn = open_untrusted(copy, readonly=False, no_checkpoint_on_close=True)
        except apsw.Error:
            self.unreadable = True
            return
        try:
            try:
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
            except apsw.Error:
                self.unreadable = True
                return
            with suppress(apsw.Error, TypeError, ValueError):
                self.messages_before = int(conn.execute("SELECT count(*) FROM messages").get)
            with suppress(apsw.Error, TypeError, ValueError):
                value = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='sessions'").get
                self.sequence = int(value) if isinstance(value, int) else None
            with suppress(apsw.Error, ValueError):
                self.purged = {
                    int(r[0])
                    for r in conn.execute("SELECT sid FROM purge_queue")
                    if isinstance(r[0], int)
                }
            budget = _Budget(SCAN_BUDGET)
            hi = max(_max_rowid(conn, "sessions"), hints["sessions"])
            for rowid, row in scan(conn, "sessions", 1, hi, budget).items():
                if is_session((None, *row[1:])):
                    sessions[rowid] = row
                    self.names.setdefault(rowid, row[1])
            for sid, name in _rows(conn, _SESSION_IDS):
                if isinstance(sid, int) and isinstance(name, str):
                    self.names.setdefault(sid, name)
            for sid in sorted(self.names):
                self._plain_read(conn, sid, messages)
            budget = _Budget(SCAN_BUDGET)
            hi = max(_max_rowid(conn, "messages"), hints["messages"])
            for rowid, row in scan(conn, "messages", 1, hi, budget).items():
                if is_message((None, *row[1:])):
                    messages.setdefault(rowid, row)
        finally:
            conn.close()

    def _plain_read(self, conn: apsw.Connection, sid: int, into: dict[int, Row]) -> None:
        """One session's messages as the store's reads return them: in pages of READ_PAGE by
        seq, then newest first down to where that ended (it stops at damage, sometimes without
        an error: a damaged index page can end it early)."""
        got: dict[int, Row] = {}
        after = 0
        while True:
            page = _valid(_rows(conn, _PLAIN_UP, (sid, after)), sid, after, None)
            for r in page:
                got.setdefault(r[2], r)
            if len(page) < READ_PAGE:
                break
            after = page[-1][2]
        top = max(got, default=0)
        before = 2**63 - 1
        while True:
            page = _valid(_rows(conn, _PLAIN_DOWN, (sid, before, top)), sid, top, before)
            for r in page:
                got.setdefault(r[2], r)
            if len(page) < READ_PAGE:
                break
            before = page[-1][2]
        floor = self.floor.setdefault(sid, {})
        for seq, r in got.items():
            floor[seq] = (r[4], int(r[0]))
            into.setdefault(int(r[0]), r)

    # -- merging ------------------------------------------------------------------------------

    def _merge(
        self, raw: list[tuple[int, Row]], sessions: dict[int, Row], messages: dict[int, Row]
    ) -> None:
        """SQL's rows first (plain reads' among them), then what only the pages hold; a page
        row never displaces a row SQL read, by rowid or by (session, seq)."""
        self.sessions = dict(sessions)
        floor_rowids = {rowid for seqs in self.floor.values() for _, rowid in seqs.values()}
        self.messages = {k: messages[k] for k in sorted(floor_rowids)}
        self.messages.update((k, v) for k, v in sorted(messages.items()) if k not in floor_rowids)
        taken = {(m[1], m[2]) for m in self.messages.values()}
        names = {s[1] for s in self.sessions.values()}
        extra = 0
        for rowid, v in raw:
            if is_message(v) and rowid not in self.messages and (v[1], v[2]) not in taken:
                self.messages[rowid] = (rowid, *v[1:])
                taken.add((v[1], v[2]))
                extra += 1
            elif (
                is_session(v)
                and rowid not in self.sessions
                and v[1] not in names
                and self.names.get(rowid, v[1]) == v[1]  # the index, if it knew it, agrees
            ):
                self.sessions[rowid] = (rowid, *v[1:10])
                names.add(v[1])
                extra += 1
        if extra:
            self.notes.append(f"{extra} row(s) read directly from pages SQL could not reach")
        # Messages of a session being deleted (purge_queue) stay deleted, unless a plain read
        # still returned them (a damaged purge_queue must not drop a live session); other
        # orphans keep their messages under a placeholder session so nothing readable is lost.
        purged = self.purged - set(self.floor)
        self.messages = {k: m for k, m in self.messages.items() if m[1] not in purged}
        now = time.time()
        for sid in sorted({m[1] for m in self.messages.values()} - set(self.sessions)):
            name = self.names.get(sid)
            if name is None or name in names:
                name, n = f"recovered-{sid}", 1
                while name in names:
                    name, n = f"recovered-{sid}-{n}", n + 1
            names.add(name)
            self.names[sid] = name
            self.sessions[sid] = (
                sid,
                name,
                "recovered",
                "recovered by sessiondb doctor --repair: the session row was unreadable",
                None,
                now,
                now,
                None,
                None,
                0,
            )
            self.placeholders += 1
        if self.placeholders:
            self.notes.append(
                f"{self.placeholders} session row(s) were unreadable: their messages are kept "
                "under their session ids when the index still had them, else 'recovered-<n>'"
            )

    def ordered_sessions(self) -> list[Row]:
        return sorted(self.sessions.values(), key=lambda r: r[0])

    def ordered_messages(self) -> list[Row]:
        """The floor's rows first, so that they win any conflict in the new file."""
        return list(self.messages.values())


def _valid(rows: Iterator[Row], sid: int, above: int, below: int | None) -> list[Row]:
    """The rows of one session's read that are messages of that session within (above, below)
    and in order; the read ends at the first row that is not."""
    out: list[Row] = []
    for r in rows:
        seq = r[2]
        if r[1] != sid or not is_message((None, *r[1:])) or seq <= above:
            break
        if below is not None and seq >= below:
            break
        if out and (seq <= out[-1][2] if below is None else seq >= out[-1][2]):
            break
        out.append(r)
    return out


__all__ = ["MESSAGE_COLS", "SESSION_COLS", "Salvage", "is_message", "is_session", "scan"]
