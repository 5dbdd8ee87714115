"""Search on PostgreSQL: the core's rules (sessiondb.core.query, docs/search.md) over a
client-built word index, ranked by BM25 computed from that index.

The index: ``messages.tsv``, a tsvector of the folded letter/digit runs of each message's
bounded prefix (sessiondb.core.terms), built by the same code that folds the query's words —
PostgreSQL's own parser failed 7 of 14 plain-mode rule probes and pg_trgm alone 3 (docs/postgres.md,
evidence 5). GIN-indexed. Messages holding text of a script without spaces (``cjk``) have a partial
index, and a partial trigram index when pg_trgm is installed.

The plan of a search, in three short statements of one read transaction:

1. **Candidates, fenced**: the ids of the newest :data:`CANDIDATE_BUDGET` messages that the
   indexes can find (the word query as a ``tsquery``: words AND-ed, a punctuated word as the
   phrase of its runs; CJK-like words through ``cjk`` and the trigram index), in a statement of
   their own, so that no plan can walk the primary key backwards filtering every row (22 of 40
   rare-word searches hit a 10 s timeout that way, docs/postgres.md, evidence 6); ``ORDER BY id +
   0`` keeps the planner off that path inside the statement too. Never in a CTE, never prepared
   (connection.py): the words must reach the planner (834 ms vs 9.9 ms measured).
2. **Matches**: the candidates whose row passes the checks — every literal word verbatim
   (ASCII letters in any case, as SQLite's ``LIKE``), session, source, role and time — newest
   first, at most ``max(RANK_WINDOW, need)``, each with the positions of the query's terms and
   its number of words. BM25 is computed here from those (k1 = 1.2, b = 0.75, document
   frequencies counted in the index, IDF floor 1e-6: SQLite's ``bm25()``, sessiondb/sqlite/
   rank.py), best first, ties newest first. If the budget was used up and fewer than ``need``
   matched, older matches follow newest first, as on SQLite — looked for in growing windows of
   ids (:func:`_older`), never by one statement that could sort every match of a word.
3. **Rows**: the ``need`` messages chosen, with their sessions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg

from ..core.query import And, Expr, Not, Or, Term, Word
from ..core.search import SearchRequest
from ..core.terms import MAX_WORD_BYTES, query_terms
from ..models import Message
from .connection import Connections
from .rows import MESSAGE_COLUMNS, message_of

RANK_WINDOW = 500  # as sessiondb/sqlite/search.py
CANDIDATE_BUDGET = 1000  # as sessiondb/sqlite/search.py (rank.DF_SAMPLE)
MAX_WEIGHTED_PHRASES = 32  # beyond: every phrase weighs the same (a pasted paragraph)
#: Matches counted exactly per phrase for its document frequency (_stats).
DF_EXACT = 1000
#: A word ANALYZE puts in more than this many times DF_EXACT messages is not counted (_stats).
DF_SURE = 4
K1 = 1.2
B = 0.75
#: The most rows a newest-first walk reads looking for the candidates (_walk); the walk
#: reads WALK_MARGIN times the rows its estimated density needs; the index's way fetching
#: scattered rows is taken to cost RANDOM_READ times a walked row.
WALK_ROWS = 20_000
WALK_MARGIN = 1.25
#: Ids in the first window older matches are looked for in (_older); each next one is 4x wider.
OLDER_WINDOW = 4096
RANDOM_READ = 3.0
#: Past this many rows (planner's estimate) the average length is sampled, not summed.
EXACT_STATS_ROWS = 5_000
STATS_SAMPLE_ROWS = 5_000
STATS_TTL = 60.0

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER = str.maketrans(_UPPER, _UPPER.lower())


@dataclass(frozen=True)
class Phrase:
    """Terms matched at consecutive positions; the last one a prefix when ``prefix``."""

    terms: tuple[str, ...]
    prefix: bool = False

    def tsquery(self) -> str:
        parts = [_lexeme(t) for t in self.terms]
        if self.prefix:
            parts[-1] += ":*"
        return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"


def _lexeme(term: str) -> str:
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class _Plan:
    fence: list[str] = field(default_factory=list)  # conditions the indexes answer
    checks: list[str] = field(default_factory=list)  # conditions needing the row
    params: dict[str, Any] = field(default_factory=dict)
    phrases: list[Phrase] = field(default_factory=list)  # ranked by BM25 (none: newest first)

    def param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s"


class _NoMatch(Exception):
    """A term no index entry can hold: nothing matches."""


def _phrase(tokens: Sequence[str], prefix: bool = False) -> Phrase | None:
    terms = query_terms(list(tokens))
    if not terms:
        return None
    if any(len(t.encode("utf-8")) > MAX_WORD_BYTES for t in terms):
        raise _NoMatch
    return Phrase(tuple(terms), prefix)


def _literal_check(plan: _Plan, texts: list[str]) -> None:
    """Every text must occur in the message, ASCII letters in any case (SQLite's LIKE).

    As a regular expression that spells each ASCII letter both ways (``[aA]``): ``translate``
    folding the content first cost ~0.5 ms per 1 KB message (523 ms for 1 000 rows, against
    28 ms for the expression and 4 ms for ``strpos``: docs/postgres.md, "Search"). A text
    without ASCII letters is matched as it is, with ``strpos``."""
    if not texts:
        return
    if len(texts) <= MAX_WEIGHTED_PHRASES:
        for text in texts:
            if any(c in _UPPER or c in _UPPER.lower() for c in text):
                plan.checks.append(f"m.content ~ {plan.param(_ascii_any_case(text))}")
            else:
                plan.checks.append(f"strpos(m.content, {plan.param(text)}) > 0")
        return
    # A pasted paragraph of punctuated words: one array parameter, not hundreds of conditions.
    patterns = [_ascii_any_case(t) for t in texts]
    plan.checks.append(
        f"NOT EXISTS (SELECT 1 FROM unnest({plan.param(patterns)}::text[]) l(t) WHERE"
        " m.content !~ l.t)"
    )


def _ascii_any_case(text: str) -> str:
    """A regular expression (PostgreSQL's) matching ``text`` with ASCII letters in any case.
    ASCII punctuation is escaped (a backslash before a non-alphanumeric character is that
    character); other characters stand for themselves — no metacharacter is outside ASCII."""
    out = []
    for c in text:
        if c in _UPPER or c in _UPPER.lower():
            out.append(f"[{c.lower()}{c.upper()}]")
        elif c.isascii() and not c.isalnum():
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _plain(plan: _Plan, words: Sequence[Word]) -> None:
    for w in words:
        if w.tokens:
            p = _phrase(w.tokens)
            if p is not None:
                plan.phrases.append(p)
    if plan.phrases:
        q = " & ".join(p.tsquery() for p in plan.phrases)
        plan.fence.append(f"m.tsv @@ {plan.param(q)}::tsquery")
    no_space = [w.text for w in words if w.no_space]
    if no_space:
        plan.fence.append("m.cjk")
        longest = max(no_space, key=len)
        if len(longest) >= 3:  # the trigram index (when pg_trgm is installed) answers this
            op = "ILIKE" if any(c in _UPPER or c in _UPPER.lower() for c in longest) else "LIKE"
            plan.fence.append(f"m.content {op} {plan.param(_like(longest))}")
    _literal_check(plan, [w.text for w in words if w.literal])


def tsquery_of(expr: Expr, phrases: list[Phrase]) -> str:
    """The advanced grammar's parsed query as a tsquery over the word index (``phrases``
    collects its positive terms, for ranking). A group's negations become ``& !``."""
    if isinstance(expr, Term):
        p = _phrase(expr.tokens, expr.prefix)
        if p is None:
            raise _NoMatch
        phrases.append(p)
        return p.tsquery()
    if isinstance(expr, Or):
        return "(" + " | ".join(tsquery_of(x, phrases) for x in expr.items) + ")"
    if isinstance(expr, Not):  # pragma: no cover - the parser refuses a negation on its own
        raise ValueError("a negation needs something to subtract from")
    assert isinstance(expr, And)
    positives = [tsquery_of(x, phrases) for x in expr.items if not isinstance(x, Not)]
    out = "(" + " & ".join(positives) + ")"
    for x in expr.items:
        if isinstance(x, Not):
            with suppress(_NoMatch):  # excluding what cannot occur excludes nothing
                out = f"({out} & !{tsquery_of(x.item, [])})"
    return out


def _filters(plan: _Plan, ref: int | None, req: SearchRequest) -> None:
    if ref is not None:
        plan.fence.append(f"m.sid = {plan.param(ref)}")
    if req.source is not None:
        plan.checks.append(f"s.source = {plan.param(req.source)}")
    if req.role is not None:
        plan.checks.append(f"m.role = {plan.param(req.role)}")
    if req.since is not None:
        plan.checks.append(f"m.created_at >= {plan.param(float(req.since))}")
    if req.until is not None:
        plan.checks.append(f"m.created_at < {plan.param(float(req.until))}")


def _size(
    conn: psycopg.Connection[Any], cache: dict[str, tuple[float, Any]]
) -> tuple[float, float]:
    """Messages in the index and their average length in words: counted while the store is
    small (then both backends rank alike), estimated beyond :data:`EXACT_STATS_ROWS` — from the
    planner's row count and a sample — and then kept for :data:`STATS_TTL` seconds."""
    kept = cache.get("search.size")
    if kept is not None and time.monotonic() - kept[0] < STATS_TTL:
        return cast("tuple[float, float]", kept[1])
    est = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'messages'::regclass").fetchone()
    rows_est = float(est[0]) if est and est[0] is not None else -1.0
    if rows_est < EXACT_STATS_ROWS:
        row = conn.execute("SELECT count(*), coalesce(sum(nterms), 0) FROM messages").fetchone()
        assert row is not None
        rows, total = float(row[0]), float(row[1])
        return rows, (total / rows if rows else 1.0) or 1.0
    pct = min(100.0, 100.0 * STATS_SAMPLE_ROWS / rows_est)
    row = conn.execute(
        "SELECT avg(nterms) FROM messages TABLESAMPLE SYSTEM (%s)", (pct,)
    ).fetchone()
    average = float(row[0]) if row and row[0] is not None else 1.0
    cache["search.size"] = (time.monotonic(), (rows_est, average or 1.0))
    return rows_est, average or 1.0


def _stats(
    conn: psycopg.Connection[Any],
    phrases: Sequence[Phrase],
    cache: dict[str, tuple[float, Any]],
) -> tuple[float, float, list[float]]:
    """Rows in the index, their average length, and each phrase's document frequency.

    Frequencies are counted exactly up to :data:`DF_EXACT` matches, as on SQLite (rank.py's
    DF_SAMPLE): then both backends rank alike (tests/postgres/test_search_parity.py). A phrase
    matching more is a common word: its share comes from the planner's statistics of the
    column (``pg_stats.most_common_elems``) when ANALYZE has seen it, else it counts as
    :data:`DF_EXACT` matches — counting a word in half of a million messages would cost more
    than the rest of the search.
    """
    rows, average = _size(conn, cache)
    if not phrases or len(phrases) > MAX_WEIGHTED_PHRASES:
        return rows, average or 1.0, [1.0] * len(phrases)
    # A word ANALYZE saw in many times DF_EXACT messages would be counted only to learn that
    # it is past DF_EXACT (up to 500 ms for three of them at 100 000 messages, counting
    # through their long posting lists: docs/postgres.md, "Search"); its share is taken at once.
    common = _common_shares(conn, cache)
    df: list[float | None] = [None] * len(phrases)
    for i, p in enumerate(phrases):
        share = common.get(p.terms[0]) if len(p.terms) == 1 and not p.prefix else None
        if share is not None and share * rows > DF_SURE * DF_EXACT:
            df[i] = share * rows
    todo = [i for i, d in enumerate(df) if d is None]
    if todo:
        counts = ", ".join(
            "(SELECT count(*) FROM (SELECT 1 FROM messages WHERE tsv @@ %s::tsquery LIMIT %s) x)"
            for _ in todo
        )
        args: list[Any] = []
        for i in todo:
            args += [phrases[i].tsquery(), DF_EXACT + 1]
        found = conn.execute(f"SELECT {counts}", args).fetchone()
        assert found is not None
        for i, x in zip(todo, found, strict=True):
            df[i] = float(x)
    out = [float(d or 0.0) for d in df]
    for i, p in enumerate(phrases):
        if out[i] > DF_EXACT and len(p.terms) == 1 and not p.prefix:
            share = common.get(p.terms[0])
            if share is not None:
                out[i] = max(out[i], share * rows)
    return rows, average or 1.0, out


def _common_shares(
    conn: psycopg.Connection[Any], cache: dict[str, tuple[float, Any]]
) -> dict[str, float]:
    """The share of messages holding each of the column's most common words (ANALYZE's),
    kept for :data:`STATS_TTL` seconds."""
    kept = cache.get("search.common")
    if kept is not None and time.monotonic() - kept[0] < STATS_TTL:
        return cast("dict[str, float]", kept[1])
    row = conn.execute(
        "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats"
        " WHERE schemaname = current_schema() AND tablename = 'messages' AND attname = 'tsv'"
    ).fetchone()
    shares: dict[str, float] = {}
    if row is not None and row[0] is not None and row[1] is not None:
        shares = {str(w): float(f) for w, f in zip(row[0], row[1], strict=False)}
    cache["search.common"] = (time.monotonic(), shares)
    return shares


def _tf(phrase: Phrase, positions: dict[str, list[int]]) -> int:
    """Occurrences of the phrase: its terms at consecutive positions."""

    def at(term: str, last: bool) -> set[int]:
        if last and phrase.prefix:
            out: set[int] = set()
            for lexeme, pos in positions.items():
                if lexeme.startswith(term):
                    out.update(pos)
            return out
        return set(positions.get(term, ()))

    terms = phrase.terms
    starts = at(terms[0], len(terms) == 1)
    for i in range(1, len(terms)):
        nxt = at(terms[i], i == len(terms) - 1)
        starts = {p for p in starts if p + i in nxt}
    return len(starts)


def _bm25(
    phrases: Sequence[Phrase],
    idf: Sequence[float],
    average: float,
    length: int,
    positions: dict[str, list[int]],
) -> float:
    norm = K1 * (1 - B + B * length / average)
    score = 0.0
    for phrase, weight in zip(phrases, idf, strict=True):
        tf = _tf(phrase, positions)
        if tf:
            score += weight * tf * (K1 + 1) / (tf + norm)
    return score


def _term_positions(plan: _Plan) -> str:
    """SQL of the query terms' positions in a match ``w``, for BM25 (NULL: nothing to rank).

    Exact terms: ``setweight`` marks them (a binary search per term) and ``ts_filter`` keeps
    them — a few µs per message; an ``unnest`` of the whole tsvector cost ~37 µs each (500
    per search). Prefix terms need the unnest: any lexeme may start with them.
    """
    if not plan.phrases:
        return "NULL"
    lexemes = sorted({t for p in plan.phrases for t in p.terms})
    prefixes = sorted({p.terms[-1] for p in plan.phrases if p.prefix})
    lex = plan.param(lexemes)
    if not prefixes:
        return f"ts_filter(setweight(w.tsv, 'A', {lex}::text[]), '{{a}}')::text"
    pre = plan.param(prefixes)
    return (
        "(SELECT string_agg(quote_literal(u.lexeme) || ':' || array_to_string(u.positions, ','),"
        f" ' ') FROM unnest(w.tsv) u WHERE u.lexeme = ANY({lex}::text[])"
        f" OR u.lexeme ^@ ANY({pre}::text[]))"
    )


def _positions(found: str | None) -> dict[str, list[int]]:
    """Positions by term, from a tsvector's text (``'term':3A,17A 'other':5A``); terms hold
    only letters, digits and marks (core/terms.py), so no quote or space is inside one."""
    out: dict[str, list[int]] = {}
    for entry in (found or "").split():
        lexeme, _, pos = entry.rpartition(":")
        out[lexeme.strip("'")] = [int(p.rstrip("ABCD")) for p in pos.split(",") if p]
    return out


def execute(conns: Connections, req: SearchRequest) -> list[tuple[Message, float]]:
    """The best ``req.need`` matches, best first, with scores (higher is better)."""
    plan = _Plan()
    try:
        if req.expr is not None:
            q = tsquery_of(req.expr, plan.phrases)
            plan.fence.append(f"m.tsv @@ {plan.param(q)}::tsquery")
        else:
            _plain(plan, req.words)
    except _NoMatch:
        return []
    if not plan.fence and not plan.checks:
        return []
    with conns.read() as conn:
        ref = None
        if req.session_id is not None:
            found = conn.execute(
                "SELECT id FROM sessions WHERE session_id = %s", (req.session_id,)
            ).fetchone()
            if found is None:
                return []
            ref = int(found[0])
        _filters(plan, ref, req)
        return _run(conn, plan, req.need, conns.cache)


def _density(df: Sequence[float], rows: float) -> float:
    """The share of messages an AND of phrases matches, taking them as independent."""
    share = 1.0
    for d in df:
        share *= min(1.0, max(d, 0.0) / max(rows, 1.0))
    return share


def _walk(
    conn: psycopg.Connection[Any],
    plan: _Plan,
    fence: str,
    budget: str,
    density: float,
    total: float,
) -> list[int] | None:
    """The candidates by a bounded newest-first walk, when the words are common enough that
    the newest messages hold them (else None: the index's way).

    AND-ed common words have long posting lists whose intersection is dense: the index's way
    fetched and sorted tens of thousands of matches to keep the newest 1 000 (p99 244 ms at
    100 000 messages; a parallel scan of the whole table in EXPLAIN: docs/postgres.md,
    "Search"). Reading the newest rows in id order finds them after a few thousand rows. The
    walk reads ``WALK_MARGIN * budget / density`` rows, taken only when that is at most
    :data:`WALK_ROWS` and at most :data:`RANDOM_READ` times the rows the index's way would
    fetch (its reads are scattered, the walk's are not); it is kept
    only if it found the whole budget — then it holds exactly the newest matches, every newer
    row having been read — else the index's way runs as before (the walk's cost is bounded).
    An unbounded walk is the trap of docs/postgres.md, evidence 6 (10 s for rare words).
    """
    if density <= 0:
        return None
    walk = math.ceil(WALK_MARGIN * CANDIDATE_BUDGET / density)
    if walk > min(WALK_ROWS, RANDOM_READ * density * total):
        return None
    found = [
        int(r[0])
        for r in conn.execute(
            f"SELECT m.id FROM (SELECT id, tsv FROM messages ORDER BY id DESC"
            f" LIMIT {plan.param(walk)}) m WHERE {fence} ORDER BY m.id DESC LIMIT {budget}",
            plan.params,
        ).fetchall()
    ]
    return found if len(found) == CANDIDATE_BUDGET else None


def _older(
    conn: psycopg.Connection[Any],
    plan: _Plan,
    fence: str,
    checks: str,
    wanted: str,
    floor: int,
    rest: int,
) -> list[tuple[Any, ...]]:
    """The newest ``rest`` matches older than ``floor`` (the budget's oldest candidate), newest
    first: when the budget is used up and fewer than ``need`` of its candidates pass the checks.

    Window by window of ids below ``floor``, newest first — :data:`OLDER_WINDOW` ids, then 4x
    wider each time — each window one statement with the fence and the checks, stopping once
    ``rest`` are found: what one statement over every older row gives, bounded by the window.
    One statement let the planner sort all of the word's matches to keep the newest few: a
    literal word (``Lorver++``) rarer than its index word (``lorver``, in 38 % of the messages)
    took 2.5 s at 1 000 000 messages (a parallel scan of the table, docs/benchmarks.md,
    "1 000 000 messages"); a window of a common word holds the matches near the top, a rare
    word's window is a bitmap of its few index entries. tests/postgres/test_search_plan.py."""
    row = conn.execute("SELECT min(id) FROM messages").fetchone()
    lowest = int(row[0]) if row and row[0] is not None else floor
    out: list[tuple[Any, ...]] = []
    width = OLDER_WINDOW
    while len(out) < rest and floor > lowest:
        low = max(floor - width, lowest)
        out += conn.execute(
            f"SELECT w.id, w.nterms, {wanted} FROM (SELECT m.id, m.nterms, m.tsv FROM messages m"
            f" JOIN sessions s ON s.id = m.sid WHERE {fence} AND {checks}"
            f" AND m.id < {plan.param(floor)} AND m.id >= {plan.param(low)}"
            f" ORDER BY m.id DESC LIMIT {plan.param(rest - len(out))}) w ORDER BY w.id DESC",
            plan.params,
        ).fetchall()
        floor, width = low, width * 4
    return out


def _run(
    conn: psycopg.Connection[Any],
    plan: _Plan,
    need: int,
    cache: dict[str, tuple[float, Any]],
) -> list[tuple[Message, float]]:
    fence = " AND ".join(plan.fence) or "true"
    checks = " AND ".join(plan.checks) or "true"
    idf: list[float] = []
    df: list[float] = []
    rows = average = 1.0
    if plan.phrases:
        rows, average, df = _stats(conn, plan.phrases, cache)
        idf = [
            max(1e-6, math.log((rows - d + 0.5) / (d + 0.5)))
            for d in (min(max(x, 0.0), rows) for x in df)
        ]
    budget = plan.param(CANDIDATE_BUDGET)
    candidates = None
    if len(plan.fence) == 1 and plan.phrases:
        candidates = _walk(conn, plan, fence, budget, _density(df, rows), rows)
    if candidates is None:  # + 0: the primary key cannot serve the order (evidence 6)
        candidates = [
            int(r[0])
            for r in conn.execute(
                f"SELECT m.id FROM messages m WHERE {fence} ORDER BY m.id + 0 DESC LIMIT {budget}",
                plan.params,
            ).fetchall()
        ]
    if not candidates:
        return []
    wanted = _term_positions(plan)
    ids = plan.param(candidates)
    window = plan.param(max(RANK_WINDOW, need))
    matches = conn.execute(
        f"SELECT w.id, w.nterms, {wanted} FROM (SELECT m.id, m.nterms, m.tsv FROM messages m"
        f" JOIN sessions s ON s.id = m.sid WHERE m.id = ANY({ids}::bigint[]) AND {checks}"
        f" ORDER BY m.id DESC LIMIT {window}) w ORDER BY w.id DESC",
        plan.params,
    ).fetchall()
    scored: list[tuple[int, float]]
    if plan.phrases:
        scored = [
            (int(i), _bm25(plan.phrases, idf, average, int(n), _positions(pos)))
            for i, n, pos in matches
        ]
        scored.sort(key=lambda x: (-x[1], -x[0]))
    else:
        scored = [(int(i), 0.0) for i, _, _ in matches]
    scored = scored[:need]
    if len(scored) < need and len(candidates) == CANDIDATE_BUDGET:
        older = _older(conn, plan, fence, checks, wanted, candidates[-1], need - len(scored))
        if plan.phrases:
            scored += [
                (int(i), _bm25(plan.phrases, idf, average, int(n), _positions(pos)))
                for i, n, pos in older
            ]
        else:
            scored += [(int(i), 0.0) for i, _, _ in older]
    if not scored:
        return []
    chosen = conn.execute(
        f"SELECT m.id, {MESSAGE_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.sid"
        " WHERE m.id = ANY(%s::bigint[])",
        ([i for i, _ in scored],),
    ).fetchall()
    by_id = {int(r[0]): message_of(r[1:]) for r in chosen}
    return [(by_id[i], score) for i, score in scored if i in by_id]


__all__ = ["CANDIDATE_BUDGET", "RANK_WINDOW", "execute", "tsquery_of"]
