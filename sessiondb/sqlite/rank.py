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

import math
from typing import Any, NamedTuple

import apsw

FUNCTION = "sessiondb_rank"
K1 = 1.2
B = 0.75
# Matches counted exactly per phrase; a phrase with more has its frequency extrapolated from the
# id of its DF_SAMPLE-th newest match (matches spread over message ids about evenly). Counting
# newest-first rowids costs ~0.4 us each: 1 000 is ~0.4 ms per phrase.
DF_SAMPLE = 1000
#: Prefix of the last argument that adds another table's rows and tokens to the corpus.
CORPUS = "corpus:"


def _rank(api: apsw.FTS5ExtensionApi, *doc_freqs: Any) -> float:
    state = api.aux_data  # per query: computed on the first row
    if state is None:
        rows, size = api.row_count, api.column_total_size(-1)
        if doc_freqs and isinstance(doc_freqs[-1], str):
            # The rest of the corpus, in a table of its own: the deferred index's backlog for
            # the index, the index for the backlog (search.py, docs/adr/0016), as
            # CORPUS + "rows tokens" after the frequencies.
            more_rows, more_size = doc_freqs[-1].removeprefix(CORPUS).split()
            rows, size = rows + int(more_rows), size + int(more_size)
            doc_freqs = doc_freqs[:-1]
        average = size / rows if rows else 1.0
        idf = []
        for i in range(api.phrase_count):
            df = float(doc_freqs[i]) if i < len(doc_freqs) else 1.0
            if df < 0:  # an estimate, as the share of the rows that match
                df = -df * rows
            df = min(max(df, 0.0), float(rows))
            idf.append(max(1e-6, math.log((rows - df + 0.5) / (df + 0.5))))
        state = api.aux_data = (tuple(idf), average or 1.0)
    idf, average = state
    norm = K1 * (1 - B + B * api.column_size(-1) / average)
    score = 0.0
    for phrase, weight in enumerate(idf):
        tf = len(api.phrase_column_offsets(phrase, 0))
        if tf:
            score += weight * tf * (K1 + 1) / (tf + norm)
    return -score  # FTS5's convention, as bm25(): lower is better


def totals(conn: apsw.Connection, table: str) -> tuple[int, int]:
    """Rows and tokens of FTS5 table ``table`` (one column), from its averages record (id 1 of
    ``<table>_data``: the row count, then each column's token total, as SQLite varints)."""
    blob = conn.execute(f"SELECT block FROM {table}_data WHERE id = 1").get
    if not isinstance(blob, bytes) or not blob:
        return 0, 0
    rows, at = varint(blob, 0)
    tokens, _ = varint(blob, at)
    return rows, tokens


def varint(data: bytes, at: int) -> tuple[int, int]:
    """The SQLite varint at ``data[at:]`` and the offset after it (7 bits a byte, big-endian;
    the ninth byte carries 8)."""
    value = 0
    for _ in range(8):
        byte = data[at]
        at += 1
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at
    return (value << 8) | data[at], at + 1


def register(conn: apsw.Connection) -> None:
    """Make ``sessiondb_rank(table, df1, df2, ...)`` available on ``conn``."""
    conn.register_fts5_function(FUNCTION, _rank)


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


__all__ = ["DF_SAMPLE", "FUNCTION", "Freq", "doc_freq", "register", "totals", "varint"]
