"""Search over the FTS5 index (see fts.py): query translation, ranking, snippets, context.

Read discipline (DESIGN doctrine 6): the ranked query is one short read transaction that returns
plain rows; the context of all hits is a second short read; snippets are cut in Python after both
have ended. Nothing lazy escapes, so no snapshot outlives the call.

Plan of a plain query (words from :mod:`sessiondb.searchquery`):

* token words, and the letter/digit runs of literal words as phrases (``foo.bar`` -> ``"foo
  bar"``), form an AND expression over the word index, which ranks by bm25;
* every literal word is also required verbatim: ``content LIKE '%foo.bar%'`` (ASCII
  case-insensitive), checked on the candidate rows;
* candidates come from the trigram index (which holds only messages with CJK-like text) when
  the query has such a word of >= 3 characters, else from the word index; a query made only
  of 1–2 character CJK words (``東京``) scans the CJK messages (``messages_tri_rows``) newest
  first, and one made only of punctuation (``-->``) scans the messages newest first.

Unfiltered queries rank the newest :data:`RANK_WINDOW` matches by bm25 (ties: newest first):
ranking every match of a word present in half a million messages would cost seconds, and
agents mostly look for recent work. Filters (session, source, role, time) apply before the
window, so a session-scoped query is ranked over all its matches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apsw

from ..errors import InvalidInput, QueryError
from ..models import Hit, Message
from ..searchquery import Highlighter, Word, fts_terms, normalize_query, split_words
from . import fts
from .rows import message_of

RANK_WINDOW = 500
MAX_CONTEXT = 100
_TRIGRAMS_PER_WORD = 12  # enough to be selective; LIKE re-checks the whole word anyway
_COLS = "m.id, s.session_id, m.seq, m.role, m.content, m.key, m.meta, m.created_at, m.sid"


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _trigram_expr(text: str) -> str:
    """AND of the word's trigrams (detail=none has no phrases), evenly sampled when long."""
    grams = [text[i : i + 3] for i in range(len(text) - 2)]
    if len(grams) > _TRIGRAMS_PER_WORD:
        step = (len(grams) - 1) / (_TRIGRAMS_PER_WORD - 1)
        grams = [grams[round(i * step)] for i in range(_TRIGRAMS_PER_WORD)]
    return " AND ".join(_quote(g) for g in dict.fromkeys(grams))


def _message(row: Sequence[Any]) -> Message:
    # Search rows carry the message id first (for context fetches), then the message columns.
    return message_of(row[1:8])


def _check_args(context: int, limit: int, offset: int, mode: str, markers: object) -> None:
    if mode not in ("plain", "fts"):
        raise InvalidInput(f"search mode must be 'plain' or 'fts', not {mode!r}")
    for name, value, top in (("context", context, MAX_CONTEXT), ("limit", limit, None)):
        if not isinstance(value, int) or value < 0 or (top is not None and value > top):
            bound = f" and at most {top}" if top else ""
            raise InvalidInput(f"{name} must be an integer >= 0{bound}, not {value!r}")
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput(f"offset must be an integer >= 0, not {offset!r}")
    if (
        not isinstance(markers, tuple)
        or len(markers) != 2
        or not all(isinstance(m, str) for m in markers)
    ):
        raise InvalidInput(f"markers must be a pair of strings, not {markers!r}")


class _Query:
    """SQL text and parameters of one ranked search, built from the plan described above."""

    def __init__(self) -> None:
        self.where: list[str] = []
        self.params: dict[str, Any] = {}

    def param(self, name: str, value: Any) -> str:
        self.params[name] = value
        return f":{name}"


def _filters(
    q: _Query,
    driver: str,
    session: tuple[int, int, int] | None,
    source: str | None,
    role: str | None,
    since: float | None,
    until: float | None,
) -> None:
    if session is not None:
        sid, lo, hi = session
        # The rowid range lets FTS5 read only the session's stretch of every doclist.
        q.where.append(f"m.sid = {q.param('sid', sid)}")
        q.where.append(f"{driver} BETWEEN {q.param('lo', lo)} AND {q.param('hi', hi)}")
    if source is not None:
        q.where.append(f"s.source = {q.param('source', source)}")
    if role is not None:
        q.where.append(f"m.role = {q.param('role', role)}")
    if since is not None:
        q.where.append(f"m.created_at >= {q.param('since', float(since))}")
    if until is not None:
        q.where.append(f"m.created_at < {q.param('until', float(until))}")


def _plain_sql(words: list[Word], q: _Query) -> tuple[str, str] | None:
    """(FROM clause, score expression) for plain words; None when nothing can match."""
    phrases = [_quote(" ".join(w.tokens) if w.literal else w.text) for w in words if w.tokens]
    literals = [w.text for w in words if w.literal]
    if literals:
        # One JSON parameter instead of N ANDed LIKEs: a 10 000-character query may hold
        # thousands of words, beyond SQLite's expression depth limit.
        q.where.append(
            "NOT EXISTS (SELECT 1 FROM json_each("
            + q.param("likes", json.dumps([_like(t) for t in literals]))
            + ") j WHERE m.content NOT LIKE j.value ESCAPE '\\')"
        )
    # The trigram index holds only messages with CJK-like text; it drives for such words of >= 3
    # characters. Every other literal (foo.bar, x:y, C++) is found through the positional phrase
    # of its letter runs in the word index and then checked verbatim by the LIKE above.
    trigram_words = [w.text for w in words if w.no_space and len(w.text) >= 3]
    word_match = f"{fts.WORD_TABLE} MATCH " + q.param("words", " ".join(phrases))
    if trigram_words:
        driver = max(trigram_words, key=len)
        q.where.append(f"{fts.TRIGRAM_TABLE} MATCH " + q.param("tri", _trigram_expr(driver)))
        if phrases:
            q.where.append(word_match)
            return (
                f"{fts.TRIGRAM_TABLE} CROSS JOIN messages m ON m.id = {fts.TRIGRAM_TABLE}.rowid"
                f" CROSS JOIN {fts.WORD_TABLE} ON {fts.WORD_TABLE}.rowid = m.id",
                f"bm25({fts.WORD_TABLE})",
            )
        return (
            f"{fts.TRIGRAM_TABLE} CROSS JOIN messages m ON m.id = {fts.TRIGRAM_TABLE}.rowid",
            f"bm25({fts.TRIGRAM_TABLE})",
        )
    if phrases:
        q.where.append(word_match)
        return (
            f"{fts.WORD_TABLE} CROSS JOIN messages m ON m.id = {fts.WORD_TABLE}.rowid",
            f"bm25({fts.WORD_TABLE})",
        )
    if any(w.no_space for w in words):
        # 1–2 character CJK words only: scan the CJK messages (the side table), newest first.
        return f"{fts.TRIGRAM_ROWS} r CROSS JOIN messages m ON m.id = r.id", "0.0"
    if literals:
        return "messages m", "0.0"  # punctuation-only words (`-->`): a newest-first scan
    return None


def _session_range(conn: apsw.Connection, session_id: str) -> tuple[int, int, int] | None:
    row = conn.execute("SELECT id FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    span = conn.execute("SELECT min(id), max(id) FROM messages WHERE sid = ?", (row[0],)).fetchone()
    if span is None or span[0] is None:
        return None
    return int(row[0]), int(span[0]), int(span[1])


def _validate_fts(conn: apsw.Connection, query: str) -> None:
    """Parse an FTS5 query against the index; malformed input becomes QueryError."""
    try:
        conn.execute(
            f"SELECT 1 FROM {fts.WORD_TABLE} WHERE {fts.WORD_TABLE} MATCH ? AND rowid = 0",
            (query,),
        ).fetchall()
    except apsw.SQLError as e:
        # Only the user's text varies in this statement, so an SQL error here is theirs.
        reason = str(e).removeprefix("SQLError: ").removeprefix("fts5: ")
        if reason.endswith('near ""'):
            reason = "the query ends too early (an operator or parenthesis lacks its operand)"
        raise QueryError(
            f"malformed search query {query[:80]!r}: {reason} — check quotes, parentheses and "
            "operators, or use mode='plain' to search for the words literally"
        ) from None


def search(
    engine: Any,
    query: str,
    *,
    session_id: str | None = None,
    source: str | None = None,
    role: str | None = None,
    since: float | None = None,
    until: float | None = None,
    context: int = 0,
    limit: int = 20,
    offset: int = 0,
    mode: str = "plain",
    markers: tuple[str, str] = ("[", "]"),
) -> list[Hit]:
    """Ranked hits for ``query`` (see docs/search.md for the rules); never a driver error."""
    _check_args(context, limit, offset, mode, markers)
    text = normalize_query(query)
    words = split_words(text) if mode == "plain" else fts_terms(text)
    if limit == 0 or (mode == "plain" and not words) or (mode == "fts" and not text.strip()):
        return []
    q = _Query()
    with engine.read() as conn:
        session = None
        if session_id is not None:
            session = _session_range(conn, session_id)
            if session is None:
                return []
        if mode == "fts":
            _validate_fts(conn, text)
            q.where.append(f"{fts.WORD_TABLE} MATCH " + q.param("words", text))
            plan: tuple[str, str] | None = (
                f"{fts.WORD_TABLE} CROSS JOIN messages m ON m.id = {fts.WORD_TABLE}.rowid",
                f"bm25({fts.WORD_TABLE})",
            )
        else:
            plan = _plain_sql(words, q)
        if plan is None:
            return []
        source_sql, score = plan
        first = source_sql.split()
        driver = (
            "m.id"
            if source_sql == "messages m"
            else "r.id"
            if first[0] == fts.TRIGRAM_ROWS
            else first[0] + ".rowid"
        )
        _filters(q, driver, session, source, role, since, until)
        window = max(RANK_WINDOW, offset + limit)
        sql = (
            f"SELECT * FROM (SELECT {_COLS}, {score} AS score FROM {source_sql}"
            " CROSS JOIN sessions s ON s.id = m.sid"
            f" WHERE {' AND '.join(q.where) or '1'}"
            f" ORDER BY {driver} DESC LIMIT {q.param('window', window)})"
            f" ORDER BY score, created_at DESC, id DESC"
            f" LIMIT {q.param('limit', limit)} OFFSET {q.param('offset', offset)}"
        )
        rows = conn.execute(sql, q.params).fetchall()
    if not rows:
        return []
    around: dict[int, tuple[list[Message], list[Message]]] = {}
    if context:
        around = _context(engine, rows, context)
    light = Highlighter(words, markers)
    hits = []
    for row in rows:
        before, after = around.get(row[0], ([], []))
        hits.append(
            Hit(
                message=_message(row),
                snippet=light.snippet(row[4]),
                score=-float(row[9]),
                before=tuple(before),
                after=tuple(after),
            )
        )
    return hits


def _context(
    engine: Any, rows: list[Any], context: int
) -> dict[int, tuple[list[Message], list[Message]]]:
    """Neighbours by seq in the hit's own session (sid), in one separate short read."""
    wanted = json.dumps([[r[0], r[8], r[2]] for r in rows])
    out: dict[int, tuple[list[Message], list[Message]]] = {r[0]: ([], []) for r in rows}
    with engine.read() as conn:
        found = conn.execute(
            f"SELECT h.value ->> 0, h.value ->> 2, {_COLS} FROM json_each(?) h"
            " CROSS JOIN messages m ON m.sid = h.value ->> 1"
            " AND m.seq BETWEEN (h.value ->> 2) - ? AND (h.value ->> 2) + ?"
            " AND m.seq != h.value ->> 2"
            " CROSS JOIN sessions s ON s.id = m.sid ORDER BY m.seq",
            (wanted, context, context),
        ).fetchall()
    for hit_id, hit_seq, *row in found:
        before, after = out[hit_id]
        (before if row[2] < hit_seq else after).append(_message(row))
    return out


__all__ = ["MAX_CONTEXT", "RANK_WINDOW", "search"]
