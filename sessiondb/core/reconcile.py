"""Reconcile: a session's complete history, backfilling what an older JSONL transcript holds and
the store lacks (``Store.transcript(session_id, legacy_jsonl=...)``), written once over the
public Store API.

:func:`transcript` backfills in one ``append_many`` (one transaction), only onto the messages it
planned from, and returns the history in conversation order: each backfilled message right after
the one it follows (:data:`BACKFILL_META`).
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

from ..errors import KeyConflict, StaleSession
from ..models import Message
from . import validate
from .formats import MAX_LINE_BYTES, Record
from .reader import read_lines

if TYPE_CHECKING:
    from .contract import Store

#: Meta field recording where a backfilled message belongs in conversation order: it follows the
#: message whose seq is ``after`` (0: before everything).
BACKFILL_META = "sessiondb_backfill"
#: Attempts of a reconcile that lost a race (another process backfilled or appended meanwhile).
_RECONCILE_TRIES = 10


def _anchor(m: Message) -> int | None:
    info = m.meta.get(BACKFILL_META) if m.meta else None
    after = info.get("after") if isinstance(info, dict) else None
    return after if isinstance(after, int) and not isinstance(after, bool) else None


def history_order(messages: list[Message]) -> list[Message]:
    """Messages in conversation order: each backfilled message right after the one it follows.

    Messages appended live keep their seq order; backfilled ones (appended later, so with
    higher seqs) are placed after their anchor. The order is computed from the store alone.
    """
    seqs = {m.seq for m in messages}
    children: dict[int, list[Message]] = defaultdict(list)
    roots: list[Message] = []
    for m in messages:
        a = _anchor(m)
        if a is not None and (a == 0 or (a in seqs and a < m.seq)):
            children[a].append(m)
        else:
            roots.append(m)
    out: list[Message] = []
    stack: list[Message] = list(reversed(roots)) + list(reversed(children.pop(0, [])))
    while stack:
        m = stack.pop()
        out.append(m)
        stack.extend(reversed(children.get(m.seq, [])))
    return out


def _plan_backfill(stored: list[Message], legacy: list[Record]) -> list[dict[str, Any]]:
    """Items for the legacy records the store lacks, anchored after their predecessor.

    Matching: first by key (a record imported or backfilled before carries its derived key),
    then by equal (role, content) as a multiset in order — the n-th legacy occurrence of a
    message matches the n-th unmatched stored one — so equal content never duplicates.
    """
    by_key = {m.key: m for m in stored if m.key is not None}
    matched: list[int | None] = [None] * len(legacy)
    used: set[int] = set()
    for i, rec in enumerate(legacy):
        k = rec.key or rec.alt_key
        m = by_key.get(k) if k is not None else None
        if m is not None and m.seq not in used:
            matched[i] = m.seq
            used.add(m.seq)
    queues: dict[tuple[str, str], deque[int]] = defaultdict(deque)
    for m in stored:
        if m.seq not in used:
            queues[(m.role, m.content)].append(m.seq)
    for i, rec in enumerate(legacy):
        if matched[i] is None:
            q = queues.get((rec.role, rec.content))
            if q:
                matched[i] = q.popleft()
    items: list[dict[str, Any]] = []
    anchor = 0
    for i, rec in enumerate(legacy):
        seq = matched[i]
        if seq is not None:
            anchor = seq
            continue
        meta = dict(rec.meta or {})
        meta[BACKFILL_META] = {"after": anchor}
        # Meta grew: append_many validates these items whole (the message size included).
        item = {"role": rec.role, "content": rec.content, "key": rec.key or rec.alt_key}
        items.append({**item, "meta": meta, "created_at": rec.created_at})
    return items


def transcript(
    store: Store,
    session_id: str,
    *,
    legacy_jsonl: str | os.PathLike[str] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[Message]:
    """The complete history of a session, in conversation order.

    With ``legacy_jsonl``, messages of that older transcript that the store lacks are first
    backfilled in one transaction (idempotently: a second call, or another process doing the
    same at once, adds nothing). Bad lines of the legacy file (e.g. a last line cut short by a
    crash) are skipped.
    """
    validate.session_id(session_id)
    if legacy_jsonl is None:
        return history_order(store.messages(session_id))
    legacy = [
        parsed
        for _, _, parsed in read_lines(legacy_jsonl, max_bytes=max_line_bytes)
        if isinstance(parsed, Record)
    ]
    for attempt in range(_RECONCILE_TRIES):
        stored = store.messages(session_id)
        items = _plan_backfill(stored, legacy)
        if not items:
            return history_order(stored)
        if not stored:
            store.ensure_session(session_id, source="import")
        try:
            # Only onto the messages the plan was made from: a message appended meanwhile (by
            # the agent still writing, or another reconcile) may be one the plan would add again.
            store.append_many(session_id, items, expect_last=stored[-1].seq if stored else 0)
        except (KeyConflict, StaleSession):
            # Another process backfilled the same lines from a different view of the store
            # (other anchors), or appended: re-read, its rows now match by key or content.
            if attempt == _RECONCILE_TRIES - 1:
                raise
            continue
        break
    return history_order(store.messages(session_id))


__all__ = ["BACKFILL_META", "history_order", "transcript"]
