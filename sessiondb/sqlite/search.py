"""Search over the FTS5 index (see fts.py): query translation, ranking, snippets, context.

This module executes a :class:`~sessiondb.core.search.SearchRequest` (``Backend.search``); the
rules of what matches, the advanced grammar, snippets and context are the core's
(:mod:`sessiondb.core.query`, :mod:`sessiondb.core.search`). Read discipline (docs/design.md
rule 6): the ranked query is one short read transaction that returns plain rows.

Plan of a plain query (words from :mod:`sessiondb.core.query`):

* token words, and the letter/digit runs of literal words as phrases (``foo.bar`` -> ``"foo
  bar"``), form an AND expression over the word index, which ranks by bm25;
* every literal word is also required verbatim: ``content LIKE '%foo.bar%'`` (ASCII
  case-insensitive), checked on the candidate rows;
* candidates come from the trigram index (which holds only messages with CJK-like text) when
  the query has such a word of >= 3 characters, else from the word index, else from the
  trigrams a two-character CJK word (``東京``) starts (fts_v3.py); a query of one-character
  CJK words scans the CJK messages (``messages_tri_rows``) newest first, and one made only of
  punctuation (``-->``) scans the messages newest first.

Ranking (``_ranked_rows``): the newest :data:`RANK_WINDOW` matches (after filters) are ranked
by BM25 — ``sessiondb_rank`` (rank.py) for plain queries, FTS5's ``bm25()`` for fts ones — ties
most recently stored first: ranking every match of a word present in half a million messages
would cost seconds, and agents mostly look for recent work. When candidates need their row
checked (verbatim words, filters), the window is the matches among the
newest :data:`CANDIDATE_BUDGET` candidates; if it holds fewer hits than asked for, older matches
follow newest first, so a search never misses a match because of the budget. A session-scoped
query reads only the session's id range.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import apsw

from ..core.query import Expr, Not, Or, Term, Word
from ..core.search import SearchRequest
from ..models import Message
from . import fts, fts_v3, rank, termcheck
from .engine import Engine
from .rows import message_of

RANK_WINDOW = 500
# Candidates examined before ranking when each needs its row checked (module docstring).
# Equal to rank.DF_SAMPLE, so that the frequency lookup of a one-phrase query also yields the
# id of its CANDIDATE_BUDGET-th newest candidate.
CANDIDATE_BUDGET = rank.DF_SAMPLE
# Beyond this many phrases (a pasted paragraph) every word weighs the same in the rank.
MAX_WEIGHTED_PHRASES = 32
# A two-character CJK word followed by more different characters than this is scanned for.
MAX_PAIR_TERMS = 500
NEWEST_FIRST = "0.0"  # the score of plans that cannot rank (substring scans): ties, by recency
# A candidate row checked for the words left out of an AND (row joined, text searched, then
# ranked from its text) costs about as much as FTS5 stepping over this many doclist entries
# (_checked_words); None: never. Calibrated on the search benchmark's multi-word queries: at
# 1 000 000 messages on a loaded machine 1 000 made a third of the queries it changed up to 2.8x
# slower and 10 000 made every one faster; re-measured on a quiet machine at 1 000 000 and
# 5 000 000 messages, 3 000 beat both (runs' p99 16-17 vs 23-24 ms, and 29 vs 39-42 ms), same
# results (docs/benchmarks.md, "An AND's common words checked on the row", "5 000 000 messages").
CHECKED_CANDIDATE_COST: float | None = 3000.0
_TRIGRAMS_PER_WORD = 12  # enough to be selective; LIKE re-checks the whole word anyway
_COLS = "m.id, s.session_id, m.seq, m.role, m.content, m.key, m.meta, m.created_at, m.sid"


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _contains(text: str, q: _Query, name: str) -> str:
    """SQL true when the message holds ``text`` (bound as ``name``), ASCII letters in any case.

    Without ASCII letters LIKE's case folding does nothing, and instr() is ~25 % cheaper per
    candidate (CJK words scan thousands of them).
    """
    if any("a" <= c <= "z" or "A" <= c <= "Z" for c in text):
        return f"m.content LIKE {q.param(name, _like(text))} ESCAPE '\\'"
    return f"instr(m.content, {q.param(name, text)}) > 0"


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


class _Query:
    """Parameters of one search, shared by its statements."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def param(self, name: str, value: Any) -> str:
        self.params[name] = value
        return f":{name}"


@dataclass
class _Plan:
    """Where the candidates of a search come from and what each must satisfy.

    ``source`` (FROM clause) yields candidate ids as ``driver`` and is constrained by ``match``
    alone; ``joined`` adds the message row ``m`` (and any other index) so that ``checks`` —
    conditions needing the row: verbatim words, filters — can be applied.
    """

    source: str
    driver: str
    joined: str
    score: str
    match: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    few: bool = False  # known to have fewer than CANDIDATE_BUDGET candidates
    floor: int | None = None  # known id of the CANDIDATE_BUDGET-th newest candidate
    split: _Split | None = None  # the AND with its common words checked on the row


@dataclass
class _Split:
    """A word-index AND with its commonest words checked on each candidate row (_checked_words):
    ``match`` the MATCH of the words kept, ``score`` the rank of the whole AND (None where the
    row lacks a checked word), ``holds`` the check of an ASCII row's text, None for any other
    (termcheck.py). Used where nothing else needs the row (_ranked_rows)."""

    match: str
    score: str
    holds: str


class _Freqs:
    """Document frequencies of word-index phrases, looked up once per search (rank.doc_freq)."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self.top_id = int(conn.execute("SELECT max(id) FROM messages").get or 0)
        self.seen: dict[str, rank.Freq] = {}

    def __call__(self, phrase: str) -> rank.Freq:
        if phrase not in self.seen:
            self.seen[phrase] = rank.doc_freq(self.conn, fts.WORD_TABLE, phrase, self.top_id)
        return self.seen[phrase]


def _literal_phrase(word: Word, freqs: _Freqs) -> str:
    """The word-index phrase that finds a punctuated word's candidates (LIKE then checks it).

    Two or fewer letter runs (``foo.bar``) make the phrase. A longer word (a path, a URL) keeps
    only its adjacent pair of runs with the fewest matches: the phrase of every run would make
    FTS5 step through ``usr`` and ``local`` in a third of a million messages for each candidate.
    """
    tokens = word.tokens
    if len(tokens) > 2 and len(tokens) <= MAX_WEIGHTED_PHRASES:
        df = [freqs(_quote(t)).rows for t in tokens]
        best = min(range(len(tokens) - 1), key=lambda i: df[i] + df[i + 1])
        tokens = tokens[best : best + 2]
    return _quote(" ".join(tokens))


def _word_score(phrases: list[str], freqs: _Freqs, q: _Query, plan: _Plan) -> list[rank.Freq]:
    """Set the plan's score (sessiondb_rank over the word index) and what frequencies tell."""
    w = fts.WORD_TABLE
    if len(phrases) > MAX_WEIGHTED_PHRASES:
        plan.score = f"{rank.FUNCTION}({w})"  # a pasted paragraph: its words weigh the same
        return []
    found = [freqs(p) for p in phrases]
    plan.score = (
        f"{rank.FUNCTION}({w}"
        + "".join(", " + q.param(f"df{i}", f.rank_arg) for i, f in enumerate(found))
        + ")"
    )
    # An AND matches at most what its rarest phrase matches: counted exactly, it bounds the scan.
    plan.few = any(f.exact and f.rows < CANDIDATE_BUDGET for f in found)
    if len(found) == 1 and plan.source == w and CANDIDATE_BUDGET == rank.DF_SAMPLE:
        plan.floor = found[0].oldest  # the lookup walked the same newest candidates
    return found


def _checked_words(tokens: list[str | None], found: list[rank.Freq], rows: int) -> list[bool]:
    """Which words of an AND to check on each candidate row instead of matching them.

    FTS5 intersects an AND by stepping every phrase's doclist through the rowids between
    matches, so a word found in most messages costs a step per message it is in, however few
    the AND's matches (a run of four words with 12 matches in 43 ms at 417 000 messages, where
    its two rarest words alone take 0.8 ms: docs/benchmarks.md). Checking a word on the row
    costs CHECKED_CANDIDATE_COST steps per candidate instead. Words sorted rarest first, the
    cheapest split keeps the k rarest in the MATCH (the rarest always; words termcheck cannot
    count always) and checks the rest, the candidates estimated as independent shares of the
    rows. ``tokens`` holds each word's checkable token, or None.
    """
    if CHECKED_CANDIDATE_COST is None or len(found) < 2 or not any(tokens) or rows <= 0:
        return [False] * len(found)
    order = sorted(range(len(found)), key=lambda i: (found[i].rows, i))
    best_cost, best_k = float("inf"), len(order)
    walked, candidates = 0.0, float(rows)
    for k in range(1, len(order) + 1):
        i = order[k - 1]
        walked += found[i].rows
        candidates *= min(1.0, found[i].rows / rows)
        rest = [j for j in order[k:] if tokens[j] is not None]
        forced = sum(found[j].rows for j in order[k:] if tokens[j] is None)
        cost = walked + forced + (candidates * CHECKED_CANDIDATE_COST if rest else 0.0)
        if cost < best_cost:
            best_cost, best_k = cost, k
    checked = [False] * len(found)
    for j in order[best_k:]:
        checked[j] = tokens[j] is not None
    return checked


def _plain_plan(conn: apsw.Connection, words: list[Word], q: _Query) -> _Plan | None:
    """The plan of a plain query (module docstring); None when nothing can match."""
    freqs = _Freqs(conn)
    phrases = [
        _literal_phrase(w, freqs) if w.literal else _quote(w.text) for w in words if w.tokens
    ]
    literals = [w.text for w in words if w.literal]
    checks = []
    if 0 < len(literals) <= MAX_WEIGHTED_PHRASES:
        # Inline: a correlated json_each below costs ~10 us per candidate row.
        checks += [_contains(text, q, f"lit{i}") for i, text in enumerate(literals)]
    elif literals:
        # One JSON parameter instead of N ANDed LIKEs: a 10 000-character query may hold
        # thousands of words, beyond SQLite's expression depth limit.
        checks.append(
            "NOT EXISTS (SELECT 1 FROM json_each("
            + q.param("likes", json.dumps([_like(t) for t in literals]))
            + ") j WHERE m.content NOT LIKE j.value ESCAPE '\\')"
        )
    w, t = fts.WORD_TABLE, fts.TRIGRAM_TABLE
    word_match = f"{w} MATCH " + q.param("words", " ".join(phrases))
    # The trigram index holds only messages with CJK-like text; it drives for such words of >= 3
    # characters. Every other literal (foo.bar, x:y, C++) is found through the positional phrase
    # of its letter runs in the word index and then checked verbatim by the LIKE above.
    trigram_words = [x.text for x in words if x.no_space and len(x.text) >= 3]
    if trigram_words:
        driver = max(trigram_words, key=len)
        tri_match = f"{t} MATCH " + q.param("tri", _trigram_expr(driver))
        joined = f"{t} CROSS JOIN messages m ON m.id = {t}.rowid"
        if phrases:
            plan = _Plan(
                t,
                f"{t}.rowid",
                f"{joined} CROSS JOIN {w} ON {w}.rowid = m.id",
                "",
                [tri_match],
                [word_match, *checks],
            )
            _word_score(phrases, freqs, q, plan)
            plan.few = False  # the trigram index drives: word counts bound nothing
            return plan
        return _Plan(t, f"{t}.rowid", joined, f"bm25({t})", [tri_match], checks)
    if phrases:
        joined = f"{w} CROSS JOIN messages m ON m.id = {w}.rowid"
        plan = _Plan(w, f"{w}.rowid", joined, "", [word_match], checks)
        found = _word_score(phrases, freqs, q, plan)
        tokens = [
            x.text.lower() if not x.literal and termcheck.checkable(x.text) else None
            for x in words
            if x.tokens
        ]
        checked = _checked_words(tokens, found, freqs.top_id) if found else []
        if any(checked):
            kept = [p for p, c in zip(phrases, checked, strict=True) if not c]
            spec = json.dumps([t if c else None for t, c in zip(tokens, checked, strict=True)])
            needles = " ".join(t for t, c in zip(tokens, checked, strict=True) if c and t)
            plan.split = _Split(
                f"{w} MATCH " + q.param("kept", " ".join(kept)),
                f"{rank.CHECKED}({w}, {q.param('checked', spec)}"
                + "".join(f", :df{i}" for i in range(len(found)))
                + ")",
                f"{termcheck.HOLDS}(CAST(m.content AS BLOB), {q.param('needles', needles)})",
            )
        return plan
    pair = next((x.text for x in words if x.no_space and len(x.text) == 2), None)
    terms = _trigrams_starting(conn, pair) if pair is not None else None
    if terms is not None:
        if not terms:
            return None  # no trigram starts with it: no message holds it
        tri_match = f"{t} MATCH " + q.param("tri", " OR ".join(_quote(x) for x in terms))
        joined = f"{t} CROSS JOIN messages m ON m.id = {t}.rowid"
        return _Plan(t, f"{t}.rowid", joined, NEWEST_FIRST, [tri_match], checks)
    if any(x.no_space for x in words):
        # 1 character CJK words, or a common or cased pair: scan the CJK messages newest first.
        r = fts.TRIGRAM_ROWS
        return _Plan(
            f"{r} r",
            "r.id",
            f"{r} r CROSS JOIN messages m ON m.id = r.id",
            NEWEST_FIRST,
            [],
            checks,
        )
    if literals:
        return _Plan("messages m", "m.id", "messages m", NEWEST_FIRST, [], checks)  # `-->`: a scan
    return None


def _trigrams_starting(conn: apsw.Connection, pair: str) -> list[str] | None:
    """Trigrams of the index that begin with a two-character word (fts_v3); None: scan instead.

    Every occurrence of the word starts one of them, since each indexed text ends with U+001F.
    A cased pair (``Aの``) is left to the scan: the trigram tokenizer folds case its own way.
    A pair followed by more than MAX_PAIR_TERMS different characters is common: scanning the
    CJK messages newest first finds its matches sooner than an OR of that many trigrams.
    """
    if any(c.lower() != c or c.upper() != c for c in pair):
        return None
    terms = [
        str(r[0])
        for r in conn.execute(
            f"SELECT term FROM {fts_v3.VOCAB} WHERE term >= ? AND term <= ? LIMIT ?",
            (pair, pair + chr(0x10FFFF), MAX_PAIR_TERMS + 1),
        )
    ]
    return None if len(terms) > MAX_PAIR_TERMS else terms


def _filters(
    plan: _Plan,
    q: _Query,
    session: tuple[int, int, int] | None,
    source: str | None,
    role: str | None,
    since: float | None,
    until: float | None,
) -> None:
    if session is not None:
        sid, lo, hi = session
        plan.floor = None  # it was counted over the whole index, not the session's range
        # The id range lets FTS5 read only the session's stretch of every doclist.
        plan.match.append(f"{plan.driver} BETWEEN {q.param('lo', lo)} AND {q.param('hi', hi)}")
        plan.checks.append(f"m.sid = {q.param('sid', sid)}")
    if source is not None:
        plan.checks.append(f"s.source = {q.param('source', source)}")
    if role is not None:
        plan.checks.append(f"m.role = {q.param('role', role)}")
    if since is not None:
        plan.checks.append(f"m.created_at >= {q.param('since', float(since))}")
    if until is not None:
        plan.checks.append(f"m.created_at < {q.param('until', float(until))}")


def _ranked_rows(conn: apsw.Connection, plan: _Plan, q: _Query, need: int) -> list[Any]:
    """The first ``need`` hits: the window ranked by score, then older matches newest first.

    Without checks every candidate is a hit: the newest RANK_WINDOW candidates are ranked from
    the index alone and only the best ``need`` are joined to their rows. With checks each
    candidate costs a row fetch (~3 us): ranking considers the matches among the newest
    CANDIDATE_BUDGET candidates; if those hold fewer than ``need`` matches, the scan goes on
    below them, newest first, until it has ``need`` or none remain.
    """
    window = q.param("window", max(RANK_WINDOW, need))
    limit = q.param("need", need)
    order = f"ORDER BY {plan.driver} DESC"
    if not plan.checks:
        source, match, score = plan.source, " AND ".join(plan.match), plan.score
        if plan.split is not None and len(plan.match) == 1:  # no filter: the AND alone
            # The text decides for an ASCII row (holds), the rank function for any other: it
            # is None where a checked word is missing. Both need the row, so they run after
            # the join, and the rank function once per row that gets that far (rank.py).
            sp = plan.split
            source = f"{plan.source} CROSS JOIN messages m ON m.id = {plan.driver}"
            match = f"{sp.match} AND coalesce({sp.holds}, {sp.score} IS NOT NULL)"
            score = sp.score
        return conn.execute(
            f"SELECT {_COLS}, r.score FROM (SELECT id, score FROM"
            f" (SELECT {plan.driver} AS id, {score} AS score FROM {source}"
            f" WHERE {match} {order} LIMIT {window}) ORDER BY score, id DESC LIMIT {limit}) r"
            " CROSS JOIN messages m ON m.id = r.id CROSS JOIN sessions s ON s.id = m.sid"
            " ORDER BY r.score, r.id DESC",
            q.params,
        ).fetchall()

    def select(extra: str) -> str:
        where = " AND ".join([*plan.match, *plan.checks, extra])
        return (
            f"SELECT {_COLS}, {plan.score} AS score FROM {plan.joined}"
            f" CROSS JOIN sessions s ON s.id = m.sid WHERE {where}"
        )

    if plan.score == NEWEST_FIRST:  # nothing to rank: the newest matches are the answer
        return conn.execute(f"{select('1')} {order} LIMIT {limit}", q.params).fetchall()
    floor: tuple[int] | None = None
    if plan.floor is not None:
        floor = (plan.floor,)
    elif not plan.few:
        floor = conn.execute(
            f"SELECT {plan.driver} FROM {plan.source} WHERE {' AND '.join(plan.match) or '1'}"
            f" {order} LIMIT 1 OFFSET {q.param('budget', CANDIDATE_BUDGET)}",
            q.params,
        ).fetchone()

    floor_id = q.param("floor", floor[0] if floor else None)
    above = f"{plan.driver} > {floor_id}" if floor else "1"  # a plain bound reaches FTS5
    rows = conn.execute(
        f"SELECT * FROM ({select(above)} {order} LIMIT {window}) ORDER BY score, id DESC"
        f" LIMIT {limit}",
        q.params,
    ).fetchall()
    if floor is not None and len(rows) < need:
        rest = q.param("rest", need - len(rows))
        rows += conn.execute(
            f"{select(f'{plan.driver} <= {floor_id}')} {order} LIMIT {rest}", q.params
        ).fetchall()
    return rows


def _session_range(conn: apsw.Connection, session_id: str) -> tuple[int, int, int] | None:
    row = conn.execute("SELECT id FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    span = conn.execute("SELECT min(id), max(id) FROM messages WHERE sid = ?", (row[0],)).fetchone()
    if span is None or span[0] is None:
        return None
    return int(row[0]), int(span[0]), int(span[1])


def fts5_expression(expr: Expr) -> str:
    """The advanced grammar's parsed query as an FTS5 MATCH expression over the word index.

    Every term is a quoted phrase of its letter/digit runs (so nothing typed is FTS5 syntax);
    a group's negations become ``(positives) NOT (negation)``, FTS5's binary NOT.
    """
    if isinstance(expr, Term):
        return _quote(" ".join(expr.tokens)) + ("*" if expr.prefix else "")
    if isinstance(expr, Or):
        return "(" + " OR ".join(fts5_expression(x) for x in expr.items) + ")"
    if isinstance(expr, Not):  # pragma: no cover - the parser refuses a negation on its own
        raise ValueError("a negation needs something to subtract from")
    positives = [x for x in expr.items if not isinstance(x, Not)]
    out = "(" + " AND ".join(fts5_expression(x) for x in positives) + ")"
    for x in expr.items:
        if isinstance(x, Not):
            out = f"({out} NOT {fts5_expression(x.item)})"
    return out


def execute(engine: Engine, req: SearchRequest) -> list[tuple[Message, float]]:
    """The best ``req.need`` matches, best first, with scores (higher is better)."""
    q = _Query()
    with engine.read() as conn:
        session = None
        if req.session_id is not None:
            session = _session_range(conn, req.session_id)
            if session is None:
                return []
        plan: _Plan | None
        if req.expr is not None:
            w = fts.WORD_TABLE
            plan = _Plan(
                w,
                f"{w}.rowid",
                f"{w} CROSS JOIN messages m ON m.id = {w}.rowid",
                f"bm25({w})",  # exact IDF: an FTS5 expression has no phrase list to estimate
                [f"{w} MATCH " + q.param("words", fts5_expression(req.expr))],
            )
        else:
            plan = _plain_plan(conn, list(req.words), q)
        if plan is None:
            return []
        _filters(plan, q, session, req.source, req.role, req.since, req.until)
        rows = _ranked_rows(conn, plan, q, req.need)
    # bm25 is lower-is-better and 0.0 for unranked plans: negate, and never hand out -0.0.
    return [(_message(row), 0.0 - float(row[9])) for row in rows]


__all__ = ["RANK_WINDOW", "execute", "fts5_expression"]
