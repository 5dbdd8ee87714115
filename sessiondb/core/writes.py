"""The append verbs' write transaction: the pure plan of :mod:`.append` carried out through the
backend's primitives (``Store.append`` and ``append_many``, core/store.py)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SessionExists, SessionNotFound, StaleSession
from ..models import Message
from . import append as ap
from . import state
from .contract import Backend, WriteTx

#: Attempts of a verb that creates a session when missing. A backend whose writers of different
#: sessions do not exclude each other (PostgreSQL) reports a concurrent creation of the same new
#: session as SessionExists; the second attempt finds the session (tests/postgres/).
CREATION_RACE = (0, 1)


def append(
    backend: Backend,
    sid: str,
    items: list[ap.Item],
    expect_last: int | None,
    patch: Mapping[str, Any] | None,
    others: Sequence[tuple[str, Mapping[str, Any]]] = (),
    replace: bool = False,
) -> list[Message]:
    """Store ``items`` (validated; at least one unless ``replace``) in session ``sid`` in one
    write transaction, with ``patch`` of its meta and ``others``' patches of other sessions'
    (core/state.py); ``replace``: after clearing the session, in the same transaction."""
    for attempt in CREATION_RACE:
        try:
            with backend.write() as tx:
                return _append(tx, sid, items, expect_last, patch, others, replace)
        except SessionExists:
            if attempt == CREATION_RACE[-1]:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _append(
    tx: WriteTx,
    sid: str,
    items: list[ap.Item],
    expect_last: int | None,
    patch: Mapping[str, Any] | None,
    others: Sequence[tuple[str, Mapping[str, Any]]],
    replace: bool = False,
) -> list[Message]:
    if expect_last is not None:
        last = tx.message_count(sid)
        if last != expect_last:
            raise StaleSession(sid, expect_last, last)
    now = time.time()
    ref = tx.session_ref(sid)
    if replace and ref is not None:
        tx.clear(ref, now)
        ref = tx.session_ref(sid)  # a backend may move the cleared session to a new row
    if not items:  # replace with nothing: cleared, and that is all
        return []
    if ref is None:  # a session made by its first message starts when that message does
        born = items[0].created_at
        ref = tx.insert_session(sid, "unknown", None, None, now if born is None else born)
    keys = ap.stored_keys(items)
    stored = tx.messages_by_key(ref, sid, keys) if keys else {}
    plan = ap.plan(sid, items, stored)
    if patch and plan.fresh:  # a batch already stored had its patch applied with it
        session = tx.session(sid)
        if session is None:  # pragma: no cover - read inside the transaction that made it
            raise SessionNotFound(sid)
        tx.update_session(ref, {"meta": state.apply(session.meta, patch)})
    if others and plan.fresh:  # in session id order (state.check_others): no lock cycle
        for other, other_patch in others:
            _patch_other(tx, other, other_patch, now)
    if len(plan.fresh) == len(items):  # nothing stored or repeated: the common case
        return tx.insert_messages(ref, sid, items, now)
    fresh = [items[i] for i in plan.fresh]
    inserted = tx.insert_messages(ref, sid, fresh, now) if fresh else []
    return plan.result(inserted)


def _patch_other(tx: WriteTx, sid: str, patch: Mapping[str, Any], now: float) -> None:
    ref = tx.session_ref(sid)
    if ref is None:
        tx.insert_session(sid, "unknown", None, state.apply(None, patch), now)
        return
    session = tx.session(sid)
    if session is None:  # pragma: no cover - its row was just found in this transaction
        raise SessionNotFound(sid)
    tx.update_session(ref, {"meta": state.apply(session.meta, patch)})


__all__ = ["CREATION_RACE", "append"]
