"""Relevance of a search hit: BM25 with the document frequencies supplied by the caller.

FTS5's built-in ``bm25()`` learns each phrase's document frequency on its first row by running
the phrase over the whole index (``xQueryPhrase``). For a word found in most of a million
messages that is a walk of its entire doclist — 30–45 ms per word measured at 1 000 000
messages, even when only the newest 500 matches are ranked (docs/search.md). ``sessiondb_rank``
takes the frequencies as SQL arguments instead; the search counts them (:func:`doc_freq`)
exactly up to :data:`DF_SAMPLE` matches and estimates beyond that. Term frequencies, document
length and the average length come from FTS5 as ``bm25()`` reads them (k1 = 1.2, b = 0.75,
the IDF floor of 1e-6), so with exact frequencies the score equals ``bm25()``
(tests/sqlite/test_search_index.py checks it).

An estimate is passed as the *share* of the index's rows that match (a negative argument, so
it cannot be mistaken for a count), and turned into a count here, where FTS5 knows the number
of rows: message ids have gaps once messages are deleted, so a count extrapolated over the id
range could exceed the rows that exist — which made ``log`` fail ("math domain error") on any
common word after deletes (tests/sqlite/test_search_index.py::
test_frequencies_stay_within_the_rows_after_deletes).
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import apsw

from . import termcheck

FUNCTION = "sessiondb_rank"
CHECKED = "sessiondb_rank_checked"  # some words checked on the row (_rank_checked)
K1 = 1.2
B = 0.75
# Matches counted exactly per phrase; a phrase with more has its frequency extrapolated from the
# id of its DF_SAMPLE-th newest match (matches spread over message ids about evenly). Counting
# newest-first rowids costs ~0.4 us each: 1 000 is ~0.4 ms per phrase.
DF_SAMPLE = 1000


def _idf(rows: int, doc_freqs: tuple[Any, ...], phrases: int) -> tuple[float, ...]:
    idf = []
    for i in range(phrases):
        df = float(doc_freqs[i]) if i < len(doc_freqs) else 1.0
        if df < 0:  # an estimate, as the share of the rows that match
            df = -df * rows
        df = min(max(df, 0.0), float(rows))
        idf.append(max(1e-6, math.log((rows - df + 0.5) / (df + 0.5))))
    return tuple(idf)


def _average(api: apsw.FTS5ExtensionApi) -> float:
    rows = api.row_count
    return (api.column_total_size(-1) / rows if rows else 1.0) or 1.0


def _rank(api: apsw.FTS5ExtensionApi, *doc_freqs: Any) -> float:
    state = api.aux_data  # per query: computed on the first row
    if state is None:
        state = api.aux_data = (_idf(api.row_count, doc_freqs, api.phrase_count), _average(api))
    idf, average = state
    norm = K1 * (1 - B + B * api.column_size(-1) / average)
    score = 0.0
    for phrase, weight in enumerate(idf):
        tf = len(api.phrase_column_offsets(phrase, 0))
        if tf:
            score += weight * tf * (K1 + 1) / (tf + norm)
    return -score  # FTS5's convention, as bm25(): lower is better


class _Checked:
    """Per-query state of ``sessiondb_rank_checked`` (computed on its first row)."""

    def __init__(self, api: apsw.FTS5ExtensionApi, spec: str, doc_freqs: tuple[Any, ...]) -> None:
        slots = json.loads(spec)
        self.idf = _idf(api.row_count, doc_freqs, len(slots))
        self.average = _average(api)
        # Per query word, in the query's order: the index of its phrase in the MATCH, or the
        # index of its token among the checked ones.
        self.tokens = [t for t in slots if t is not None]
        self.needles = termcheck.needles(self.tokens)
        order: list[tuple[bool, int]] = []
        matched = checked = 0
        for t in slots:
            if t is None:
                order.append((False, matched))
                matched += 1
            else:
                order.append((True, checked))
                checked += 1
        self.order = order
        self.rowid: int | None = None
        self.score: float | None = None


def _rank_checked(api: apsw.FTS5ExtensionApi, *args: Any) -> float | None:
    """``sessiondb_rank`` of a query some of whose words are checked on the row, not matched.

    ``spec`` is a JSON list with one slot per query word, in the query's order: null for a word
    that is a phrase of the MATCH (in the same relative order), or the lower-case token of a
    word left out of the MATCH; ``doc_freqs`` has one frequency per slot. The result is None when
    the row lacks a checked word — it is not a match — and otherwise exactly the ``sessiondb_rank``
    of the query with every word in the MATCH: the same frequencies, term counts (counted as the
    index counts them, termcheck.py) and order of summation. A row's result is kept, so that the
    function called in a WHERE and in the result columns of one statement costs once.
    """
    state = api.aux_data
    if not isinstance(state, _Checked):
        state = api.aux_data = _Checked(api, str(args[0]), args[1:])
    rowid = api.rowid
    if rowid == state.rowid:
        return state.score
    state.rowid = rowid
    state.score = None
    found = termcheck.counts(api, api.column_text(0), state.needles)
    if not all(found):
        return None
    norm = K1 * (1 - B + B * api.column_size(-1) / state.average)
    score = 0.0
    for (is_checked, i), weight in zip(state.order, state.idf, strict=True):
        tf = found[i] if is_checked else len(api.phrase_column_offsets(i, 0))
        if tf:
            score += weight * tf * (K1 + 1) / (tf + norm)
    state.score = result = -score
    return result


def register(conn: apsw.Connection) -> None:
    """Make ``sessiondb_rank(table, df1, df2, ...)``, ``sessiondb_rank_checked(table, spec,
    df1, df2, ...)`` and termcheck's ``sessiondb_holds`` available on ``conn``."""
    conn.register_fts5_function(FUNCTION, _rank)
    conn.register_fts5_function(CHECKED, _rank_checked)
    termcheck.register(conn)


# Rows of the index counted, in the id range of an estimate's DF_SAMPLE newest matches, to know
# how many messages that range really holds; a wider range is taken as having no gaps.
# Counted on the docsize table (a few bytes per row): 8 000 rows cost ~0.1 ms.
SPAN_COUNTED = 8 * DF_SAMPLE


class Freq(NamedTuple):
    """A phrase's document frequency: ``rows`` matches, exact or estimated; ``share`` the
    estimate as the share of the index's rows that match (None when exact); ``oldest`` the id of
    its DF_SAMPLE-th newest match, if any."""

    rows: float
    exact: bool
    oldest: int | None
    share: float | None = None

    @property
    def rank_arg(self) -> float:
        """What ``sessiondb_rank`` takes for this phrase (module docstring)."""
        return self.rows if self.share is None else -self.share


def doc_freq(conn: apsw.Connection, table: str, phrase: str, top_id: int) -> Freq:
    """Rows of ``table`` matching an FTS5 phrase: exact up to DF_SAMPLE, estimated beyond.

    Beyond DF_SAMPLE matches the share of matching rows is taken from the range of ids of the
    DF_SAMPLE newest matches (``oldest`` .. ``top_id``, the highest rowid in use: ``max(rowid)``
    on an external-content FTS5 table would scan the content) and the rows that range holds.
    """
    count, oldest = conn.execute(
        f"SELECT count(*), min(rowid) FROM (SELECT rowid FROM {table} WHERE {table} MATCH ?"
        " ORDER BY rowid DESC LIMIT ?)",
        (phrase, DF_SAMPLE),
    ).get
    if count < DF_SAMPLE or oldest is None:
        return Freq(float(count), True, None)
    span = max(1, top_id - int(oldest) + 1)
    held = span
    if span <= SPAN_COUNTED:
        held = int(
            conn.execute(
                f"SELECT count(*) FROM {table}_docsize WHERE id BETWEEN ? AND ?",
                (int(oldest), top_id),
            ).get
        )
    share = min(1.0, count / max(1, held))
    return Freq(count * top_id / span, False, int(oldest), share)


__all__ = ["CHECKED", "DF_SAMPLE", "FUNCTION", "Freq", "doc_freq", "register"]
