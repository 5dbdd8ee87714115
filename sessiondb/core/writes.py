"""The append verbs' write transaction: the pure plan of :mod:`.append` carried out through the
backend's primitives (``Store.append`` and ``append_many``, core/store.py) — for one request, or
for a group of requests from several threads that share one transaction (:func:`append_group`,
fed by the combiner of core/group.py; docs/adr/0011-group-commit.md)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import KeyConflict, SessionExists, SessionNotFound, StaleSession
from ..models import Message, new_message
from . import append as ap
from . import state
from . import validate as v
from .contract import Backend, SessionRef, WriteTx
from .group import Combiner

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
    deferred: bool = False,
) -> list[Message]:
    """Store ``items`` (validated; at least one unless ``replace``) in session ``sid`` in one
    write transaction, with ``patch`` of its meta and ``others``' patches of other sessions'
    (core/state.py); ``replace``: after clearing the session, in the same transaction.
    ``deferred``: a bulk import's batch, its search index possibly left to
    ``Backend.finish_index`` (``Backend.write_deferred``, docs/adr/0015-bulk-import.md)."""
    # Nothing to read first (no keys, no expected seq, no patch): the backend's own one-step
    # append, when it has one (ADR 0013, amendment 3); None: it has none, nothing was stored.
    plain = expect_last is None and not patch and not others and not replace
    if plain and items and all(i.key is None for i in items):
        done = backend.append_plain(sid, items, time.time())
        if done is not None:
            return done
    for attempt in CREATION_RACE:
        try:
            with backend.write_deferred() if deferred else backend.write() as tx:
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


@dataclass(frozen=True)
class Request:
    """One ``append``/``append_many`` call, validated, waiting for a group's transaction."""

    sid: str
    items: list[ap.Item]
    expect_last: int | None
    patch: Mapping[str, Any] | None
    #: Patches of other sessions' meta, and ``append_many(replace=True)``: such a request
    #: commits in a transaction of its own (:func:`commit`).
    others: Sequence[tuple[str, Mapping[str, Any]]] = ()
    replace: bool = False


def append_request(
    session_id: str,
    role: str,
    content: str,
    key: str | None,
    meta: Mapping[str, Any] | None,
    created_at: float | datetime | None,
    expect_last: int | None,
    session_meta: Mapping[str, Any] | None,
    other_meta: Mapping[str, Mapping[str, Any]] | None = None,
) -> Request:
    """``append``'s arguments validated (InvalidInput before anything joins a group)."""
    sid = v.session_id(session_id)
    item = ap.Item.of(role, content, key, meta, created_at)
    last = None if expect_last is None else v.non_negative_int(expect_last, "expect_last")
    patch = state.check(session_meta)
    return Request(sid, [item], last, patch, state.check_others(other_meta, sid))


def append_many_request(
    session_id: str,
    items: Iterable[Mapping[str, Any]],
    expect_last: int | None,
    session_meta: Mapping[str, Any] | None,
    other_meta: Mapping[str, Mapping[str, Any]] | None = None,
    replace: object = False,
) -> Request | None:
    """``append_many``'s arguments validated; None when there is nothing to do."""
    sid = v.session_id(session_id)
    prepared = ap.items_of(items)
    last = None if expect_last is None else v.non_negative_int(expect_last, "expect_last")
    patch = state.check(session_meta)
    others = state.check_others(other_meta, sid)
    clear = v.flag(replace, "replace")
    if not prepared and not clear:
        return None
    return Request(sid, prepared, last, patch, others, clear)


#: What a request of a group can fail with alone, everything else of the group going ahead: the
#: failures the plan decides before anything of the request is written.
PER_REQUEST = (KeyConflict, StaleSession)


Group = Combiner[Request, list[Message]]


def combiner(backend: Backend, group_commit: bool | None) -> Group | None:
    """The group commit of a store (core/group.py), or None when its appends commit one by one
    (``group_commit=False``, or None and a backend that prefers so, or a read-only store)."""
    grouped = backend.group_writes if group_commit is None else bool(group_commit)
    if not grouped or backend.readonly:
        return None
    run = backend.combined_group_run()
    return Combiner(
        run if run is not None else (lambda requests: append_group(backend, requests)),
        patience=backend.write_timeout,
        where=backend.location,
    )


def commit(backend: Backend, group: Group | None, request: Request | None) -> list[Message]:
    """Carry out a validated request (None: nothing to do): in the group's next transaction, or
    in one of its own — always for one that patches other sessions or replaces its session's
    messages (its plan touches rows the group's does not track; ADR 0011)."""
    if request is None:
        return []
    r = request
    if group is not None and not r.others and not r.replace:
        return group.call(r, len(r.items))
    return append(backend, r.sid, r.items, r.expect_last, r.patch, r.others, r.replace)


def append_group(backend: Backend, requests: list[Request]) -> list[list[Message] | Exception]:
    """Carry out ``requests`` in one write transaction, as if one after the other in this order:
    each one's messages, or the exception that request alone raised (``KeyConflict``,
    ``StaleSession``: it wrote nothing). Anything else raised fails the whole group, which then
    wrote nothing."""
    for attempt in CREATION_RACE:
        try:
            with backend.write() as tx:
                return append_group_in(tx, requests)
        except SessionExists:
            if attempt == CREATION_RACE[-1]:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def append_group_in(tx: WriteTx, requests: list[Request]) -> list[list[Message] | Exception]:
    """:func:`append_group` inside a transaction the caller holds (sqlite/combine.py)."""
    return _Group(tx, requests).run()


class _Session:
    """One session as a group's transaction sees it: its row (None until created), its last
    seq before the group (read only if needed) and what the group adds to it."""

    __slots__ = ("born", "count", "fresh", "patches", "pending", "ref")

    def __init__(self, ref: SessionRef | None) -> None:
        self.ref = ref
        self.count: int | None = None if ref is not None else 0
        self.fresh: list[ap.Item] = []  # to insert, in order: seq = count + index + 1
        self.pending: dict[str, int] = {}  # key -> index in fresh
        self.patches: list[Mapping[str, Any]] = []
        self.born: float | None = None


class _Group:
    """Plan every request against the session rows and what earlier requests of the group
    add, then write each session's fresh messages with one ``insert_messages``."""

    def __init__(self, tx: WriteTx, requests: list[Request]) -> None:
        self.tx = tx
        self.requests = requests
        self.now = time.time()
        self.sessions: dict[str, _Session] = {}

    def run(self) -> list[list[Message] | Exception]:
        tx = self.tx
        # Session rows in one order (PostgreSQL locks each one it looks up: two groups locking
        # the same sessions in different orders could deadlock).
        # One lookup for all of them (WriteTx.session_refs).
        ids = sorted({r.sid for r in self.requests})
        refs = tx.session_refs(ids)
        for sid in ids:
            self.sessions[sid] = _Session(refs.get(sid))
        planned: list[tuple[ap.Plan, int] | Exception] = []
        for r in self.requests:
            try:
                planned.append(self._plan(r))
            except PER_REQUEST as e:
                planned.append(e)
        inserted = self._write()
        out: list[list[Message] | Exception] = []
        for r, p in zip(self.requests, planned, strict=True):
            if isinstance(p, Exception):
                out.append(p)
                continue
            plan, start = p
            made = inserted.get(r.sid, [])[start : start + len(plan.fresh)]
            out.append(made if len(plan.fresh) == len(r.items) else plan.result(made))
        return out

    def _last(self, sid: str, s: _Session) -> int:
        if s.count is None:
            s.count = self.tx.message_count(sid)
        return s.count + len(s.fresh)

    def _plan(self, r: Request) -> tuple[ap.Plan, int]:
        s = self.sessions[r.sid]
        if r.expect_last is not None:
            last = self._last(r.sid, s)
            if last != r.expect_last:
                raise StaleSession(r.sid, r.expect_last, last)
        keys = ap.stored_keys(r.items)
        stored: dict[str, Message] = {}
        if keys:
            if s.ref is not None:
                stored = self.tx.messages_by_key(s.ref, r.sid, keys)
            for k in keys:
                if k in s.pending:  # written by an earlier request of this group
                    stored[k] = self._predicted(r.sid, s, s.pending[k])
        plan = ap.plan(r.sid, r.items, stored)
        # The request succeeds: what it adds becomes part of the session for the next ones.
        start = len(s.fresh)
        for i in plan.fresh:
            item = r.items[i]
            if item.key is not None:
                s.pending[item.key] = len(s.fresh)
            s.fresh.append(item)
        if plan.fresh:
            if s.ref is None and s.born is None:
                # A session made by its first message starts when that message does.
                s.born = r.items[0].created_at
                if s.born is None:
                    s.born = self.now
            if r.patch:  # a batch already stored had its patch applied with it
                s.patches.append(r.patch)
        return plan, start

    def _predicted(self, sid: str, s: _Session, index: int) -> Message:
        """The message the group's insert will store for ``s.fresh[index]``."""
        item = s.fresh[index]
        at = self.now if item.created_at is None else item.created_at
        seq = self._last(sid, s) - len(s.fresh) + index + 1
        return new_message(sid, seq, item.role, item.content, item.key, v.load_meta(item.meta), at)

    def _write(self) -> dict[str, list[Message]]:
        tx = self.tx
        batches: list[tuple[SessionRef, str, list[ap.Item]]] = []
        for sid, s in self.sessions.items():
            if not s.fresh:
                continue
            if s.ref is None:
                assert s.born is not None
                s.ref = tx.insert_session(sid, "unknown", None, None, s.born)
            if s.patches:
                session = tx.session(sid)
                if session is None:  # pragma: no cover - read inside the transaction
                    raise SessionNotFound(sid)
                meta, text = session.meta, None
                for patch in s.patches:
                    text = state.apply(meta, patch)
                    meta = v.load_meta(text)
                tx.update_session(s.ref, {"meta": text})
            batches.append((s.ref, sid, s.fresh))
        if not batches:
            return {}
        if len(batches) == 1:
            ref, sid, items = batches[0]
            return {sid: tx.insert_messages(ref, sid, items, self.now)}
        stored = tx.insert_batches(batches, self.now)
        return {sid: made for (_, sid, _), made in zip(batches, stored, strict=True)}


__all__ = [
    "CREATION_RACE",
    "PER_REQUEST",
    "Group",
    "Request",
    "append",
    "append_group",
    "append_group_in",
    "append_many_request",
    "append_request",
    "combiner",
    "commit",
]
