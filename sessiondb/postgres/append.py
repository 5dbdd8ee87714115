"""The PostgreSQL append statement and its parameters (docs/postgres.md, "The append: one
statement"): the session row's counter raised and the messages inserted with the seqs it yields,
in ONE statement (``WITH u AS (UPDATE sessions … RETURNING …) INSERT … SELECT … unnest(…) WITH
ORDINALITY``). Measured (docs/postgres.md, evidence 2) at 2.6x the three-round-trip version on one
shared session and 2.1x on 16 sessions; an advisory lock + ``max(seq)+1`` was 0.64x and
SERIALIZABLE with retries 0.43x. Never ``ON CONFLICT DO NOTHING`` on the message insert: the
counter would advance without a row (a gap). Used by tx.py (``PostgresTx.insert_messages``,
``append_plain``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..core.query import is_no_space_char
from ..core.terms import index_terms
from ..models import Message, new_message
from . import rollup
from .text import encode

if TYPE_CHECKING:
    from ..core.append import Item


def _append_sql(one: bool, by_session_id: bool) -> str:
    """The append: one statement (module docstring). ``one``: a single message's values as
    scalars — most appends are one message, and arrays cost the client their element-by-element
    dumping and the server their parsing (docs/benchmarks.md, "The plain append in one
    statement"). ``by_session_id``: the plain append (tx.py ``PostgresTx.append_plain``), which
    has looked nothing up: the session row is found by the session's id — or made, as the
    general path makes a session for its first message (source "unknown", starting when that
    message does) — locked and raised in the statement, which also answers the row's id."""
    n, latest = ("1", "%(at)s") if one else ("%(n)s", "%(latest)s")
    if by_session_id:
        row = (
            "INSERT INTO sessions (session_id, source, created_at, updated_at, message_count)"
            f" VALUES (%(sid)s, 'unknown', %(born)s, {latest}, {n}) ON CONFLICT (session_id)"
            f" DO UPDATE SET message_count = sessions.message_count + {n},"
            f" updated_at = greatest(sessions.updated_at, {latest})"
        )
    else:
        row = (
            f"UPDATE sessions SET message_count = message_count + {n},"
            f" updated_at = greatest(updated_at, {latest}) WHERE id = %(ref)s"
        )
    ref = "u.ref" if by_session_id else "%(ref)s"
    if one:
        seq = "u.base + 1"
        values = (
            " %(role)s, %(content)s, string_to_array(%(nul)s::text, ',')::integer[], %(key)s,"
            " %(meta)s, %(at)s, %(tsv)s::tsvector, %(nterms)s, %(cjk)s,"
            " CASE WHEN %(usage)s THEN coalesce(%(rid)s::text, '#' || (u.base + 1)) END FROM u"
        )
        counts = f"SELECT {ref}, %(a_day)s, %(a_model)s, 1 FROM u"
    else:
        seq = "u.base + i.n"
        values = (
            " i.role, i.content,"
            " CASE WHEN i.nul IS NULL THEN NULL ELSE string_to_array(i.nul, ',')::integer[] END,"
            " i.key, i.meta, i.at, i.tsv::tsvector, i.nterms, i.cjk,"
            " CASE WHEN i.usage THEN coalesce(i.rid, '#' || (u.base + i.n)) END"
            " FROM u, unnest(%(role)s::text[], %(content)s::text[], %(nul)s::text[],"
            " %(key)s::text[], %(meta)s::text[], %(at)s::float8[], %(tsv)s::text[],"
            " %(nterms)s::integer[], %(cjk)s::boolean[], %(usage)s::boolean[], %(rid)s::text[])"
            " WITH ORDINALITY AS i(role, content, nul, key, meta, at, tsv, nterms, cjk, usage,"
            " rid, n)"
        )
        counts = (
            f"SELECT {ref}, d, m, c FROM u, unnest(%(a_day)s::integer[], %(a_model)s::text[],"
            " %(a_count)s::bigint[]) AS a(d, m, c)"
        )
    return (
        f"WITH u AS ({row} RETURNING id AS ref, message_count - {n} AS base),"
        " ins AS (INSERT INTO messages (sid, seq, role, content, content_nul, key, meta,"
        f" created_at, tsv, nterms, cjk, rid) SELECT {ref}, {seq},{values} RETURNING seq),"
        # The usage rollup's message counts ride along (rollup.py): no round trip of their own.
        f" a AS (INSERT INTO activity (sid, day, model, messages) {counts}"
        " ON CONFLICT (sid, day, model) DO UPDATE SET messages = activity.messages"
        " + excluded.messages)"
        # Whether anyone waits for notifications (notify.py): the next commit sends one or not.
        " SELECT seq, EXISTS (SELECT 1 FROM listeners) FROM ins ORDER BY seq"
    )


#: The append statements by (one message, found by session id).
_APPEND = {(one, by): _append_sql(one, by) for one in (False, True) for by in (False, True)}


def tsvector_text(content: str) -> tuple[str, int]:
    """The tsvector literal of a message's indexed prefix (sessiondb.core.terms), and its
    number of words. Terms hold only letters, digits and marks: nothing to escape but quotes,
    doubled anyway."""
    terms, n = index_terms(content)
    parts = []
    for term, positions in terms.items():
        quoted = term.replace("'", "''").replace("\\", "\\\\")
        parts.append(f"'{quoted}':{','.join(map(str, positions[:256]))}")
    return " ".join(parts), n


def _has_no_space(text: str) -> bool:
    return not text.isascii() and any(is_no_space_char(ch) for ch in text)


def messages(
    session_id: str, items: Sequence[Item], times: Sequence[float], base: int
) -> list[Message]:
    """The stored messages, their seqs following ``base``."""
    out = []
    for i, (item, at) in enumerate(zip(items, times, strict=True)):
        meta = None if item.meta is None else json.loads(item.meta)
        seq = base + i + 1
        out.append(new_message(session_id, seq, item.role, item.content, item.key, meta, at))
    return out


def statement(
    row: tuple[str, Any],
    items: Sequence[Item],
    times: Sequence[float],
    found: Sequence[rollup.Facts],
) -> tuple[str, dict[str, Any]]:
    """The append statement for ``items`` (at ``times``, with their rollup ``found``) into the
    session ``row`` = ("ref", its row id) or ("sid", its session id, made starting when the
    first item does if missing), and its parameters."""
    args: dict[str, Any] = {row[0]: row[1]}
    if row[0] == "sid":
        args["born"] = times[0]
    if len(items) == 1:
        item, f = items[0], found[0]
        stored, nul = encode(item.content)
        tsv, n = tsvector_text(item.content)
        args.update(
            role=item.role,
            content=stored,
            nul=None if nul is None else ",".join(map(str, nul)),
            key=item.key,
            meta=item.meta,
            at=times[0],
            tsv=tsv,
            nterms=n,
            cjk=_has_no_space(item.content),
            # A response named by no id is "#<seq>": the statement knows the seq.
            usage=f.rid is not None,
            rid=f.rid if f.shared else None,
            a_day=f.day,
            a_model=f.model,
        )
    else:
        cols: dict[str, list[Any]] = {
            k: [] for k in ("role", "content", "nul", "key", "meta", "tsv", "nterms", "cjk")
        }
        for item in items:
            stored, nul = encode(item.content)
            tsv, n = tsvector_text(item.content)
            cols["role"].append(item.role)
            cols["content"].append(stored)
            cols["nul"].append(None if nul is None else ",".join(map(str, nul)))
            cols["key"].append(item.key)
            cols["meta"].append(item.meta)
            cols["tsv"].append(tsv)
            cols["nterms"].append(n)
            cols["cjk"].append(_has_no_space(item.content))
        days, models, counts = rollup.counts(found)
        args.update(
            cols,
            a_day=days,
            a_model=models,
            a_count=counts,
            at=list(times),
            usage=[f.rid is not None for f in found],
            rid=[f.rid if f.shared else None for f in found],
            n=len(items),
            latest=max(times),
        )
    return _APPEND[len(items) == 1, row[0] == "sid"], args


__all__ = ["messages", "statement", "tsvector_text"]
