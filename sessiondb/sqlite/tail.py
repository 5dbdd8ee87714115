"""The search's view of the backlog: messages not indexed yet (deferred.py, docs/adr/0016).

A search that finds a backlog above the cursor builds, in its read transaction, in-memory FTS5
indexes of those messages in the connection's TEMP schema — the same tokenizers
(``fts.WORD_TOKENIZE``, ``fts.TRIGRAM_OPTIONS``), the same rule of what a message puts in them
(``selfindex.statements``: every message in the word index, CJK-like ones also as
``content || U+001F`` in the trigram index) and an fts5vocab table over the trigrams — and runs
the same plan over them (search.py). So a message in the backlog matches exactly when it would
match once indexed (tests/sqlite/test_deferred.py checks it with generated texts and queries).
The backlog is bounded (``deferred.ROWS_BOUND`` ids, ``deferred.BYTES_BOUND`` characters), so
this costs at most that much tokenizing per search. The TEMP tables are external-content ones
over a TEMP copy of the backlog's text, as the store's are over ``messages``; TEMP writes take
no lock on the store's file.
"""

from __future__ import annotations

from typing import NamedTuple

import apsw

from . import fts, fts_v3, rank, selfindex


class Tables(NamedTuple):
    """The tables a search plan reads (search.py): the store's index, or the backlog's."""

    word: str
    trigram: str
    trigram_rows: str
    vocab: str


INDEX = Tables(fts.WORD_TABLE, fts.TRIGRAM_TABLE, fts.TRIGRAM_ROWS, fts_v3.VOCAB)
BACKLOG = Tables(
    "sessiondb_tail_fts", "sessiondb_tail_tri", "sessiondb_tail_tri_rows", "sessiondb_tail_vocab"
)
# External content, as the store's index: the backlog's text (``tri``: the trigram side's,
# ``content || U+001F``, for CJK-like messages only), so that ``bm25()`` and
# ``sessiondb_rank`` read what they read there, and so that ``'delete-all'`` empties an index
# at once (a regular FTS5 table's DELETE left segments that grew with every search).
_SOURCE = "sessiondb_tail_src"
_TRI_SOURCE = "sessiondb_tail_tri_src"

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS temp.{_SOURCE}(id INTEGER PRIMARY KEY, content TEXT, tri TEXT)",
    f"CREATE VIEW IF NOT EXISTS temp.{_TRI_SOURCE} AS SELECT id, tri AS content FROM {_SOURCE}",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{BACKLOG.word} USING fts5(content,"
    f" content='{_SOURCE}', content_rowid='id', tokenize='{fts.WORD_TOKENIZE}')",
    f"CREATE TABLE IF NOT EXISTS temp.{BACKLOG.trigram_rows}(id INTEGER PRIMARY KEY)",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{BACKLOG.trigram} USING fts5(content,"
    f" content='{_TRI_SOURCE}', content_rowid='id', {fts.TRIGRAM_OPTIONS})",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{BACKLOG.vocab}"
    f" USING fts5vocab(temp, {BACKLOG.trigram}, 'row')",
)
_CLEAR = (
    f"INSERT INTO temp.{BACKLOG.word}({BACKLOG.word}) VALUES ('delete-all')",
    f"INSERT INTO temp.{BACKLOG.trigram}({BACKLOG.trigram}) VALUES ('delete-all')",
    f"DELETE FROM temp.{BACKLOG.trigram_rows}",
    f"DELETE FROM temp.{_SOURCE}",
)
_WORDS, _TRI_ROWS, _TRI = selfindex.statements(
    "m.id > ?", BACKLOG.word, BACKLOG.trigram, BACKLOG.trigram_rows
)
_FILL = (
    f"INSERT INTO temp.{_SOURCE}(id, content) SELECT id, content FROM messages WHERE id > ?",
    _WORDS,
    _TRI_ROWS,
    f"UPDATE temp.{_SOURCE} SET tri = content || {fts_v3.SENTINEL}"
    f" WHERE id IN (SELECT id FROM temp.{BACKLOG.trigram_rows}) AND id > ?",
    _TRI,
)


def load(conn: apsw.Connection, done: int) -> bool:
    """Index the messages above cursor ``done`` into the TEMP tables of :data:`BACKLOG` (in the
    search's read transaction); False when there are none (the tables are then not touched)."""
    if conn.execute("SELECT 1 FROM messages WHERE id > ? LIMIT 1", (done,)).fetchone() is None:
        return False
    for statement in _CREATE:
        conn.execute(statement)
    for statement in _CLEAR:
        conn.execute(statement)
    for statement in _FILL:
        conn.execute(statement, (done,))
    return True


def totals(conn: apsw.Connection) -> tuple[int, int]:
    """Rows and tokens of the backlog's word index. Its averages record (rank.totals) is only
    written when the TEMP transaction commits, so they are summed from its per-row sizes
    (``_docsize``: one varint, the token count of the one column), written at each insert."""
    rows = tokens = 0
    for (size,) in conn.execute(f"SELECT sz FROM temp.{BACKLOG.word}_docsize"):
        rows += 1
        tokens += rank.varint(size, 0)[0]
    return rows, tokens


__all__ = ["BACKLOG", "INDEX", "Tables", "load", "totals"]
