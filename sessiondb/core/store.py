"""The one Store: every public verb written once, over any backend (:mod:`.contract`).

Why this module is long: it is the public API's one implementation — 39 methods, each a
few lines that delegate to other modules of this package (writes, state, prune, stats,
wait); splitting the class would spread one interface over several files without moving any
logic out of it.

Each verb validates its arguments (:mod:`.validate`), plans what is pure (:mod:`.append`,
:mod:`.search`), calls the backend's primitives inside one short transaction, and assembles the
result. Reads of long sessions go page by page, each page its own short read (docs/design.md,
rule 6): nothing holds a snapshot across the caller's code.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from ..errors import InvalidInput, ReadOnlyStore, SessionExists, SessionNotFound
from ..models import HealthReport, Hit, ImportReport, Message, PruneReport, Session, Stats
from . import state, writes
from . import validate as v
from .contract import MISSING, Backend, SessionField, SessionRef, WriteTx

if TYPE_CHECKING:
    from .lease import Holder, Lease

# Search and leases are imported by the verbs that use them: an agent's hook or a one-shot CLI
# command that only appends should not pay for them at start-up.

#: Messages per read transaction when a caller asks for many (rule 6 of docs/design.md).
READ_PAGE = 2000


class SessionStore:
    """A sessiondb store (the :class:`~sessiondb.core.contract.Store` contract) over a backend.

    Get one from :func:`sessiondb.open`; annotate with ``sessiondb.Store``.
    """

    def __init__(self, backend: Backend, *, group_commit: bool | None = None) -> None:
        """``group_commit``: see :func:`sessiondb.open` (docs/adr/0011-group-commit.md)."""
        self._backend = backend
        #: The group commit's queue (None: appends commit one by one); sessiondb.aio uses it.
        self.group = writes.combiner(backend, group_commit)

    # -- the store itself -----------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._backend.location

    @property
    def path(self) -> Path | None:
        return self._backend.path

    @property
    def readonly(self) -> bool:
        return self._backend.readonly

    @property
    def backend(self) -> Backend:
        """The backend (for backend-specific tools and tests; not part of the contract)."""
        return self._backend

    def close(self) -> None:
        if self.group is not None:
            self.group.close(self._backend.write_timeout)
        self._backend.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        ro = ", read-only" if self.readonly else ""
        return f"<sessiondb store {self.location!r}{ro}>"

    # -- sessions -------------------------------------------------------------------------------

    def create_session(
        self,
        session_id: str | None = None,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session:
        """Create a session; ``SessionExists`` if the id is taken. A new id is made when None.
        ``created_at`` keeps an imported session's own time (default: now)."""
        sid = uuid.uuid4().hex if session_id is None else v.session_id(session_id)
        src, ttl, mt = v.source(source), v.optional_text(title, "title", v.MAX_TITLE), v.meta(meta)
        born = v.optional_timestamp(created_at, "created_at")
        with self._backend.write() as tx:
            if tx.session_ref(sid) is not None:
                raise SessionExists(sid)
            tx.insert_session(sid, src, ttl, mt, time.time() if born is None else born)
            return _found(tx.session(sid), sid)

    def ensure_session(
        self,
        session_id: str,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session:
        """Return the session, creating it first if missing (idempotent; never changes one)."""
        sid = v.session_id(session_id)
        src, ttl, mt = v.source(source), v.optional_text(title, "title", v.MAX_TITLE), v.meta(meta)
        born = v.optional_timestamp(created_at, "created_at")
        with self._backend.read() as rtx:
            found = rtx.session(sid)
        if found is not None:
            return found
        for attempt in writes.CREATION_RACE:
            try:
                with self._backend.write() as tx:
                    if tx.session_ref(sid) is None:
                        tx.insert_session(sid, src, ttl, mt, time.time() if born is None else born)
                    return _found(tx.session(sid), sid)
            except SessionExists:
                if attempt == writes.CREATION_RACE[-1]:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get_session(self, session_id: str) -> Session | None:
        sid = v.session_id(session_id)
        with self._backend.read() as tx:
            return tx.session(sid)

    def list_sessions(
        self, *, source: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Session]:
        """Sessions, most recent activity first."""
        lim, off = v.non_negative_int(limit, "limit"), v.non_negative_int(offset, "offset")
        src = None if source is None else v.source(source)
        with self._backend.read() as tx:
            return tx.sessions(src, lim, off)

    def session_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        """Session ids in id order (Unicode code point order), the first ``limit`` after
        ``after``: a walk over every session that sessions changing meanwhile cannot disturb
        (what a backup uses; ``list_sessions`` pages by activity)."""
        start = None if after is None else v.session_id(after)
        lim = v.non_negative_int(limit, "limit")
        with self._backend.read() as tx:
            return tx.session_ids(start, lim)

    def count_sessions(self, *, source: str | None = None) -> int:
        """Sessions in the store, or of one source (what ``list_sessions`` pages through)."""
        src = None if source is None else v.source(source)
        with self._backend.read() as tx:
            return tx.session_count(src)

    def update_session(
        self,
        session_id: str,
        *,
        title: str | None = MISSING,
        meta: Mapping[str, Any] | None = MISSING,
        ended_at: float | datetime | None = MISSING,
        end_reason: str | None = MISSING,
        created_at: float | datetime = MISSING,
        updated_at: float | datetime = MISSING,
        meta_patch: Mapping[str, Any] | None = None,
    ) -> Session:
        """Change a session's fields; those not given are left as they are. ``title``, ``meta``,
        ``ended_at`` and ``end_reason`` may be None (``ended_at=None`` reopens a session).
        The times are there to restore a backup exactly; an agent ends a session with
        ``end_session``. ``meta_patch`` changes only the top-level keys it names, in the same
        transaction (None removes a key; core/state.py), so two writers patching different keys
        both keep theirs. ``SessionNotFound`` if there is no such session."""
        sid = v.session_id(session_id)
        patch = state.check(meta_patch, "meta_patch")
        if patch is not None and meta is not MISSING:
            raise InvalidInput("give meta (the whole meta) or meta_patch (some keys), not both")
        changes: dict[SessionField, object] = {}
        if title is not MISSING:
            changes["title"] = v.optional_text(title, "title", v.MAX_TITLE)
        if meta is not MISSING:
            changes["meta"] = v.meta(meta)
        if ended_at is not MISSING:
            changes["ended_at"] = v.optional_timestamp(ended_at, "ended_at")
        if end_reason is not MISSING:
            changes["end_reason"] = v.optional_text(end_reason, "end_reason", v.MAX_REASON)
        if created_at is not MISSING:
            changes["created_at"] = v.timestamp(created_at, "created_at")
        if updated_at is not MISSING:
            changes["updated_at"] = v.timestamp(updated_at, "updated_at")
        return self._change(sid, changes, patch)

    def end_session(self, session_id: str, reason: str = "ended") -> Session:
        sid = v.session_id(session_id)
        why = v.optional_text(reason, "reason", v.MAX_REASON)
        now = time.time()
        return self._change(sid, {"ended_at": now, "end_reason": why, "updated_at": now})

    def _change(
        self,
        sid: str,
        changes: Mapping[SessionField, object],
        patch: Mapping[str, Any] | None = None,
    ) -> Session:
        with self._backend.write() as tx:
            ref = _ref(tx, sid)
            if patch:
                changes = {**changes, "meta": state.apply(_found(tx.session(sid), sid).meta, patch)}
            if changes:
                tx.update_session(ref, changes)
            return _found(tx.session(sid), sid)

    def delete_session(self, session_id: str) -> bool:
        """Delete a session and its messages; False if there was none.

        The session disappears for readers at once (one transaction); its messages are removed
        afterwards in short batches, so a live writer never waits behind one huge delete.
        """
        sid = v.session_id(session_id)
        with self._backend.write() as tx:
            ref = tx.session_ref(sid)
            if ref is None:
                return False
            tx.delete_session(ref)
        self._backend.purge()
        return True

    # -- messages -------------------------------------------------------------------------------

    def append(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
        expect_last: int | None = None,
        session_meta: Mapping[str, Any] | None = None,
        other_meta: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Message:
        """Append one message (creating the session if missing); ``seq`` is assigned here.

        With ``key``, a retry returns the stored message and writes nothing; the same key with
        different role, content or meta raises ``KeyConflict``. ``created_at`` (epoch seconds
        or a datetime) keeps an imported message's own time; the default is now. With
        ``expect_last=N`` the append happens only if the session's last seq is still N (0: no
        message, or no session yet), else ``StaleSession`` and nothing is written.
        ``session_meta`` patches the session's meta in the same transaction (top-level keys; None
        removes one; core/state.py) — unless the message was already stored (a retry).
        ``other_meta`` (``{session_id: patch}``): other sessions' meta patched (made if missing)
        in the same transaction, on the same terms (state shared by sessions: an ADK app's).
        """
        request = writes.append_request(
            session_id, role, content, key, meta, created_at, expect_last, session_meta, other_meta
        )
        return writes.commit(self._backend, self.group, request)[0]

    def append_many(
        self,
        session_id: str,
        items: Iterable[Mapping[str, Any]],
        *,
        expect_last: int | None = None,
        session_meta: Mapping[str, Any] | None = None,
        other_meta: Mapping[str, Mapping[str, Any]] | None = None,
        replace: bool = False,
    ) -> list[Message]:
        """Append several messages in one transaction: all are stored or none is.

        Each item is a dict with ``role`` and ``content`` and optionally ``key``, ``meta`` and
        ``created_at``; keyed items already stored are returned as stored, so re-sending a whole
        unsaved tail after a failure never duplicates anything. ``expect_last``,
        ``session_meta`` and ``other_meta``: as ``append`` (the patches are applied when any
        item is fresh).

        ``replace=True``: the session is cleared and these appended in one transaction (seqs
        from 1): messages removed from its middle (docs/adr/0009-framework-primitives.md).
        """
        request = writes.append_many_request(
            session_id, items, expect_last, session_meta, other_meta, replace
        )
        stored = writes.commit(self._backend, self.group, request)
        if request is not None and request.replace:
            self._backend.purge()  # the messages it replaced (as clear_session)
        return stored

    def messages(
        self,
        session_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
        last: int | None = None,
    ) -> list[Message]:
        """Messages of a session with ``seq > after``, in seq order (empty if no session).

        ``limit``: at most that many, the first ones; ``last``: the newest that many, without
        reading the rest of the session. ``limit`` and ``last`` do not go together.
        """
        sid = v.session_id(session_id)
        start = v.non_negative_int(after, "after")
        remaining = v.optional_limit(limit)
        newest = v.optional_limit(last, "last")
        if newest is not None:
            if remaining is not None:
                raise InvalidInput("give limit (the first N) or last (the newest N), not both")
            if newest == 0:
                return []
            with self._backend.read() as tx:
                if newest <= READ_PAGE:
                    return tx.messages(sid, start, newest, newest=True)
                # More than a page: find where the newest N begin, then read pages from there.
                start = max(start, tx.message_count(sid) - newest)
            remaining = newest
        out: list[Message] = []
        while remaining is None or remaining > 0:
            page = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            with self._backend.read() as tx:
                rows = tx.messages(sid, start, page)
            out.extend(rows)
            if len(rows) < page:
                break
            start = rows[-1].seq
            if remaining is not None:
                remaining -= len(rows)
        return out

    def message(self, session_id: str, key: str) -> Message | None:
        """The message of a session with this ``key`` (None if there is none): one index
        lookup, never a scan of the session."""
        sid, k = v.session_id(session_id), v.key(key)
        if k is None:
            raise InvalidInput("key must be a string, not None")
        with self._backend.read() as tx:
            ref = tx.session_ref(sid)
            return None if ref is None else tx.messages_by_key(ref, sid, [k]).get(k)

    def fork_session(
        self,
        session_id: str,
        new_session_id: str | None = None,
        *,
        at: int | None = None,
        title: str | None = MISSING,
        meta: Mapping[str, Any] | None = MISSING,
    ) -> Session:
        """A new session holding the messages of ``session_id`` up to seq ``at`` (default: all),
        with their seqs, keys, meta and times, in one transaction. The new session has the
        source, title and meta of the original (``title``/``meta`` replace them) and
        ``meta["forked_from"] = {"session_id": …, "seq": …}``: its lineage. A new id is made
        when ``new_session_id`` is None. ``SessionNotFound``, ``SessionExists``, and
        ``InvalidInput`` when ``at`` is past the session's last seq."""
        from . import fork

        return fork.fork(self._backend, session_id, new_session_id, at, title, meta)

    def pop_message(self, session_id: str) -> Message | None:
        """Remove the newest message and return it (None when the session has none).

        Seqs stay gapless: the next append takes the removed seq again. The session's
        ``revision`` changes, so a reader that tails by seq can tell (docs/design.md,
        "Removing messages").
        """
        sid = v.session_id(session_id)
        with self._backend.write() as tx:
            ref = tx.session_ref(sid)
            if ref is None:
                return None
            return tx.remove_newest(ref, sid, time.time())

    def clear_session(self, session_id: str) -> int:
        """Remove every message of a session, keeping the session; returns how many there were.

        The messages disappear for readers at once; they are deleted afterwards in short
        batches. The next append is seq 1; ``revision`` changes. ``SessionNotFound`` if there
        is no such session.
        """
        sid = v.session_id(session_id)
        with self._backend.write() as tx:
            removed = tx.clear(_ref(tx, sid), time.time())
        if removed:
            self._backend.purge()
        return removed

    def count(self, session_id: str | None = None) -> int:
        """Messages in one session, or in the whole store (0 for an unknown session)."""
        sid = None if session_id is None else v.session_id(session_id)
        with self._backend.read() as tx:
            return tx.totals()[1] if sid is None else tx.message_count(sid)

    def wait_for_messages(
        self,
        session_id: str | None = None,
        *,
        after: int,
        timeout: float,
        revision: int | None = None,
        stop: threading.Event | None = None,
    ) -> bool:
        """Wait until a session's last seq — or, with ``session_id=None``, the store's
        ``count()`` — is no longer ``after``: True as soon as messages were appended (or
        removed), False when ``timeout`` seconds (at most 3600) pass first.

        Take ``after`` from what you read *before* reading the messages you have (the seq of
        the last one; ``count()`` read first for the whole store): then no message committed
        meanwhile is ever slept through. A wake-up costs no polling of the messages: SQLite
        watches its ``data_version``, PostgreSQL listens for the ``NOTIFY`` each append sends
        after its commit, re-checking on a bounded interval in case a notification is lost
        (docs/adr/0017-wait-for-messages.md).

        ``revision``: the session's ``revision`` read with the messages you have (a tailing
        reader's). The wait then also returns when it changed — a ``pop_message`` and an append
        that leave the same last seq are seen too (docs/design.md, "Removing messages").

        ``stop`` (not part of the contract; this implementation's): a ``threading.Event`` that
        ends the wait early, False — how the viewer's shutdown and the async store's
        cancellation end a wait running in a thread.
        """
        from . import wait

        return wait.wait_for_messages(
            self._backend, wait.check(session_id, after, timeout, revision), stop
        )

    # -- transcripts (sessiondb.core.transcript, over this same contract) -------------------------

    def import_jsonl(
        self,
        path: str | os.PathLike[str],
        *,
        session_id: str | None = None,
        source: str = "import",
        strict: bool = False,
        progress: Callable[[int, int], None] | None = None,
        bulk: bool = False,
    ) -> ImportReport:
        """Import a JSONL transcript; idempotent (see :mod:`sessiondb.core.transcript`).
        ``bulk=True``: a large import into a store nobody else is writing, its search index
        built after loading (docs/adr/0015-bulk-import.md)."""
        from . import transcript

        return transcript.import_jsonl(
            self,
            path,
            session_id=session_id,
            source=source,
            strict=strict,
            progress=progress,
            bulk=bulk,
        )

    def export_jsonl(self, session_id: str | None, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """Export a session in sessiondb's JSONL format, or every session when ``session_id``
        is None (a backup: import it into an empty store and export again for the same
        bytes); returns the number of messages."""
        from . import export

        if session_id is None:
            return export.export_all(self, dest)
        return export.export_jsonl(self, session_id, dest)

    def transcript(
        self, session_id: str, *, legacy_jsonl: str | os.PathLike[str] | None = None
    ) -> list[Message]:
        """Complete history; backfills what ``legacy_jsonl`` holds and the store lacks."""
        from . import reconcile

        return reconcile.transcript(self, session_id, legacy_jsonl=legacy_jsonl)

    # -- search ---------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        source: str | None = None,
        role: str | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        context: int = 0,
        limit: int = 20,
        offset: int = 0,
        mode: str = "plain",
        markers: tuple[str, str] = ("[", "]"),
    ) -> list[Hit]:
        """Messages matching ``query``, best first (BM25, then newest).

        ``mode="plain"`` takes any text and matches its words; ``mode="fts"`` takes sessiondb's
        advanced grammar and raises ``QueryError`` when it is malformed. Each hit has a snippet
        with matches between ``markers`` and up to ``context`` neighbours from the same
        session, read in a separate short read. Rules: docs/search.md.
        """
        from . import search as sr

        ctx = sr.check_context(context)
        marks = sr.check_markers(markers)
        req = sr.request(
            query,
            session_id=session_id,
            source=source,
            role=role,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
            mode=mode,
        )
        if req is None:
            return []
        rows = self._backend.search(req)[offset:]
        if not rows:
            return []
        around = None
        if ctx:
            with self._backend.read() as tx:
                around = tx.neighbours([m for m, _ in rows], ctx)
        return sr.assemble(rows, around, req.words, marks)

    # -- leases ---------------------------------------------------------------------------------

    def lease(self, name: str, owner: str, ttl: float = 300.0, *, pid: int | None = None) -> Lease:
        """A lease on ``name`` for session ``owner`` kept in this store (for workers that share
        it, perhaps on several machines); the same API as ``sessiondb.lease.workspace``."""
        from .lease import Lease

        return Lease(self._backend.lease_slot(v.lease_name(name)), owner, ttl, pid=pid)

    def leases(self) -> list[Holder]:
        """Every lease kept in this store, stale ones included, oldest first."""
        return self._backend.leases()

    # -- housekeeping ---------------------------------------------------------------------------

    def stats(
        self,
        *,
        since: float | datetime | date | None = None,
        until: float | datetime | date | None = None,
        source: str | None = None,
        session_id: str | None = None,
    ) -> Stats:
        """Sessions, messages and tokens per UTC day (and by source and model) between
        ``since`` and ``until`` (times or dates, both days included), of the whole store, one
        source or one session, from a rollup kept in each write transaction — never a scan of
        the messages (docs/transcripts.md, "Usage")."""
        from . import stats as st

        first, last = st.period(since, until)
        src = None if source is None else v.source(source)
        sid = None if session_id is None else v.session_id(session_id)
        with self._backend.read() as tx:
            rows, per_day, sessions = tx.activity(first, last, src, sid)
        return st.assemble(rows, per_day, sessions, first, last)

    def prune(
        self,
        *,
        older_than: timedelta | datetime,
        source: str | None = None,
        session_id: str | None = None,
        dry_run: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> PruneReport:
        """Remove whole sessions whose last activity is older than ``older_than`` — an age
        (``timedelta(days=30)``) or a cutoff time (a ``datetime``) — ended or idle, of one
        ``source`` or all, or just ``session_id``; then give the space back to the filesystem.

        Runs in short transactions beside live writers; a session that gets a message while the
        prune runs is kept. ``dry_run`` changes nothing and says what would go and roughly how
        much space. ``progress(phase, done, total)`` is called as it goes. See
        docs/adr/0006-retention.md.
        """
        from . import prune

        return prune.prune(
            self._backend,
            older_than=older_than,
            source=source,
            session_id=session_id,
            dry_run=dry_run,
            progress=progress,
        )

    def compact(self) -> int:
        """Rewrite the whole store to give every free byte back at once (SQLite: ``VACUUM``,
        which also lets a file made before incremental auto-vacuum give space back in steps
        from then on); returns the bytes given back. **Every writer waits until it is done**
        (seconds per GiB): run it when the store is quiet. docs/adr/0006-retention.md."""
        if self.readonly:
            raise ReadOnlyStore(
                f"{self.location}: this store was opened read-only; open it without "
                "readonly=True to compact"
            )
        return self._backend.compact()

    def check(self, *, full: bool = False) -> HealthReport:
        """Health of the store (what `sessiondb doctor` prints); see docs/doctor.md."""
        return self._backend.check(full)

    def info(self) -> dict[str, Any]:
        """Location, counts, and the backend's facts (sizes, modes, versions)."""
        with self._backend.read() as tx:
            sessions, messages = tx.totals()
        return {
            "location": self.location,
            "readonly": self.readonly,
            "sessions": sessions,
            "messages": messages,
            **self._backend.facts(),
            "space": self._backend.space(),
        }


def _ref(tx: WriteTx, sid: str) -> SessionRef:
    ref = tx.session_ref(sid)
    if ref is None:
        raise SessionNotFound(sid)
    return ref


def _found(session: Session | None, sid: str) -> Session:
    if session is None:  # pragma: no cover - read inside the transaction that made or found it
        raise SessionNotFound(sid)
    return session


__all__ = ["READ_PAGE", "SessionStore"]
