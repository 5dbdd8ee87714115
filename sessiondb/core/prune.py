"""Retention: ``store.prune()`` removes whole sessions idle since a cutoff.

The decisions and their measurements: docs/adr/0006-retention.md.

A session goes when its last activity (``updated_at``: its newest message, its end, or a change
of its fields) is before the cutoff, whether it ended or was left idle. The work is split the
way docs/design.md rule 5 asks, so that a live agent's append never waits long behind it:

1. The candidates are listed page by page, each page its own short read (``stale_sessions``).
2. They are removed a few at a time, each batch one write transaction that first reads every
   session again and leaves any that changed since it was listed (a new message, a pop): a
   session an agent is still writing to is never removed, and the report counts exactly what
   went. Removing a session row is cheap; its messages are then deleted by ``Backend.purge`` in
   batches of about 10 ms each, which a crash leaves for the next open to finish.
3. The backend gives the freed space back to the filesystem in short steps (``reclaim``).

Pure rules (the cutoff, the batches) are functions here, tested in tests/unit/test_prune.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ..errors import InvalidInput, ReadOnlyStore
from ..models import PruneReport, Session
from . import validate as v
from .contract import Backend

#: Candidates read per page.
PAGE = 500
#: A removal batch ends at this many sessions, or once its sessions hold this many messages.
BATCH_SESSIONS = 50
BATCH_MESSAGES = 5000

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: phase "remove" (sessions) or "reclaim" (free pages)."""


def cutoff(older_than: object, now: float) -> float:
    """The cutoff in epoch seconds: ``now`` minus an age (a positive ``timedelta``), or a time
    (a ``datetime``; naive ones are local time, as everywhere in sessiondb) not in the future.
    A bare number is refused: seconds of age or an epoch time? Either reading deletes data."""
    if isinstance(older_than, timedelta):
        if older_than <= timedelta(0):
            raise InvalidInput(f"older_than must be a positive age, not {older_than}")
        return now - older_than.total_seconds()
    if isinstance(older_than, datetime):
        at = v.timestamp(older_than, "older_than")
        if at > now:
            raise InvalidInput(
                f"older_than is {older_than.isoformat()}, in the future: every session would go, "
                "including the ones in use — give a time in the past or an age"
            )
        return at
    raise InvalidInput(
        "older_than must be an age (datetime.timedelta, e.g. timedelta(days=30)) or a cutoff "
        f"time (datetime), not {type(older_than).__name__}"
    )


def stale(session: Session, cutoff_at: float, source: str | None) -> bool:
    """Whether ``session`` is one a prune with this cutoff and source removes."""
    return session.updated_at < cutoff_at and (source is None or session.source == source)


def unchanged(seen: Session, now: Session, cutoff_at: float) -> bool:
    """Whether a session read again in the removal's transaction is still the one selected: no
    message added or removed since (count and revision), still idle past the cutoff."""
    return (
        now.updated_at < cutoff_at
        and now.message_count == seen.message_count
        and now.revision == seen.revision
    )


def batches(
    sessions: Sequence[Session],
    max_sessions: int = BATCH_SESSIONS,
    max_messages: int = BATCH_MESSAGES,
) -> Iterator[list[Session]]:
    """Consecutive groups of at most ``max_sessions``, closed once they hold ``max_messages``
    messages (a giant session is a batch of its own)."""
    group: list[Session] = []
    held = 0
    for s in sessions:
        if group and (len(group) >= max_sessions or held + s.message_count > max_messages):
            yield group
            group, held = [], 0
        group.append(s)
        held += s.message_count
    if group:
        yield group


def candidates(
    backend: Backend, cutoff_at: float, source: str | None, session_id: str | None
) -> list[Session]:
    """The sessions to remove as they are now, in id order, read page by page."""
    if session_id is not None:
        with backend.read() as tx:
            one = tx.session(session_id)
        return [one] if one is not None and stale(one, cutoff_at, source) else []
    out: list[Session] = []
    after: str | None = None
    while True:
        with backend.read() as tx:
            page = tx.stale_sessions(cutoff_at, source, after, PAGE)
        out.extend(page)
        if len(page) < PAGE:
            return out
        after = page[-1].session_id


def prune(
    backend: Backend,
    *,
    older_than: object,
    source: str | None,
    session_id: str | None,
    dry_run: bool,
    progress: Progress | None = None,
) -> PruneReport:
    at = cutoff(older_than, time.time())
    src = None if source is None else v.source(source)
    sid = None if session_id is None else v.session_id(session_id)
    if not isinstance(dry_run, bool):
        raise InvalidInput(f"dry_run must be True or False, not {dry_run!r}")
    if backend.readonly and not dry_run:
        raise ReadOnlyStore(
            f"{backend.location}: this store was opened read-only; open it without "
            "readonly=True to prune (a dry run only reads)"
        )
    found = candidates(backend, at, src, sid)
    if dry_run:
        sizes = _text_bytes(backend, found)
        return _report(backend, at, found, sum(sizes.values()), dry_run=True)
    removed: list[Session] = []
    kept = text = 0
    for group in batches(found):
        sizes = _text_bytes(backend, group)  # before: unchanged sessions have the same bytes
        took, left = _remove(backend, group, at)
        removed.extend(took)
        text += sum(sizes[s.session_id] for s in took)
        kept += left
        backend.purge()
        if progress is not None:
            progress("remove", len(removed) + kept, len(found))
    report = _report(backend, at, removed, text, dry_run=False, kept=kept)
    # Even when nothing was removed: a prune killed while it gave space back left that work,
    # and the next run finishes it (tests/sqlite/test_prune_crash.py).
    freed = backend.reclaim(_reclaim_progress(progress))
    return replace(report, freed=freed or 0, needs_compact=freed is None)


def _text_bytes(backend: Backend, sessions: Sequence[Session]) -> dict[str, int]:
    """Each session's stored text, one short read per session (docs/design.md rule 6)."""
    sizes: dict[str, int] = {}
    for s in sessions:
        with backend.read() as tx:
            sizes[s.session_id] = tx.message_bytes(s.session_id)
    return sizes


def _remove(backend: Backend, group: list[Session], cutoff_at: float) -> tuple[list[Session], int]:
    """One write transaction: the sessions of ``group`` still unchanged are removed."""
    removed: list[Session] = []
    kept = 0
    with backend.write() as tx:
        for seen in group:
            now = tx.session(seen.session_id)
            ref = tx.session_ref(seen.session_id)
            if now is None or ref is None:
                continue  # deleted meanwhile by someone else: not this prune's to report
            if not unchanged(seen, now, cutoff_at):
                kept += 1
                continue
            tx.delete_session(ref)
            removed.append(seen)
    return removed, kept


def _report(
    backend: Backend,
    cutoff_at: float,
    sessions: list[Session],
    text: int,
    *,
    dry_run: bool,
    kept: int = 0,
) -> PruneReport:
    messages = sum(s.message_count for s in sessions)
    estimate: int | None = 0 if dry_run else None
    if dry_run and messages:
        # Only a dry run estimates: the split is a walk over the whole file (space.py); a real
        # run reports what the file actually shrank by.
        space = backend.space()
        with backend.read() as tx:
            total = tx.totals()[1]
        estimate = None
        if space is not None and total:
            # The messages' share; their search index's share comes back with compact() only
            # (docs/adr/0006-retention.md).
            estimate = round(space["messages"] * min(1.0, messages / total))
    return PruneReport(
        cutoff=cutoff_at,
        dry_run=dry_run,
        sessions=tuple(sessions),
        messages=messages,
        bytes=text,
        estimated_space=estimate,
        kept=kept,
    )


def _reclaim_progress(progress: Progress | None) -> Callable[[int], None] | None:
    if progress is None:
        return None
    first: list[int] = []

    def step(left: int) -> None:
        if not first:
            first.append(left)
        total = max(first[0], left)
        progress("reclaim", total - left, total)

    return step


__all__ = ["BATCH_MESSAGES", "BATCH_SESSIONS", "PAGE", "Progress", "cutoff", "prune"]
