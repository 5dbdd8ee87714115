"""Export, written once over the public Store API: sessiondb's own JSONL format, a header line
per session then its messages, read page by page (each page one short read, rule 6 of
docs/design.md). Importing an export into an empty store and exporting again gives the same
bytes (tests/contract/test_backup.py); the format is in docs/transcripts.md, "Backups"."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import Error, SessionNotFound
from ..host.paths import open_private
from ..models import Message, Session

if TYPE_CHECKING:
    from .contract import Store

#: Messages per read when exporting: one short read transaction each (rule 6).
EXPORT_PAGE = 1000


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def header_of(session: Session) -> dict[str, Any]:
    """A session's export header: every field a restore gives back (``message_count`` follows
    from the messages; ``revision`` counts removals in this store and starts again at 0)."""
    return {
        "sessiondb_export": 1,
        "session_id": session.session_id,
        "source": session.source,
        "title": session.title,
        "meta": session.meta,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "ended_at": session.ended_at,
        "end_reason": session.end_reason,
    }


def message_of(m: Message) -> dict[str, Any]:
    return {
        "session_id": m.session_id,
        "seq": m.seq,
        "role": m.role,
        "content": m.content,
        "key": m.key,
        "meta": m.meta,
        "created_at": m.created_at,
    }


def iter_messages(store: Store, session_id: str) -> Iterator[Message]:
    """All messages of a session, read page by page (each page its own short read)."""
    after = 0
    while True:
        page = store.messages(session_id, after=after, limit=EXPORT_PAGE)
        yield from page
        if len(page) < EXPORT_PAGE:
            return
        after = page[-1].seq


def write_session(store: Store, session: Session, out: IO[bytes]) -> int:
    """Write one session in sessiondb's JSONL format to a binary stream; returns messages."""
    out.write(_dumps(header_of(session)))
    n = 0
    for m in iter_messages(store, session.session_id):
        out.write(_dumps(message_of(m)))
        n += 1
    return n


def export_jsonl(store: Store, session_id: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
    """Export a session to ``dest`` (a path, created 0600, or a binary stream); returns the
    number of messages written. ``SessionNotFound`` if there is no such session."""
    session = store.get_session(session_id)
    if session is None:
        raise SessionNotFound(session_id)
    return write_to(dest, lambda out: write_session(store, session, out))


def write_to(dest: str | os.PathLike[str] | IO[bytes], run: Callable[[IO[bytes]], int]) -> int:
    """Run ``run`` on ``dest``: a binary stream, or a path (created 0600, truncated)."""
    if not isinstance(dest, (str, os.PathLike)):
        return run(dest)
    p = Path(os.fspath(dest))
    try:
        fd = open_private(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as f:
            return run(f)
    except OSError as e:
        raise Error(f"cannot write {p}: {e.strerror or e}") from None


def all_sessions(store: Store) -> Iterator[Session]:
    """Every session, in session-id order, read page by page by id (``store.session_ids``): a
    session changing meanwhile neither moves nor hides another one, as paging by activity would."""
    after: str | None = None
    while True:
        ids = store.session_ids(after=after, limit=EXPORT_PAGE)
        for sid in ids:
            found = store.get_session(sid)
            if found is not None:  # deleted meanwhile
                yield found
        if len(ids) < EXPORT_PAGE:
            return
        after = ids[-1]


def export_all(store: Store, dest: str | os.PathLike[str] | IO[bytes]) -> int:
    """Export every session (a backup: importing it into an empty store and exporting again
    gives the same bytes); returns the number of messages written."""
    return write_to(dest, lambda f: sum(write_session(store, s, f) for s in all_sessions(store)))


__all__ = [
    "EXPORT_PAGE",
    "all_sessions",
    "export_all",
    "export_jsonl",
    "header_of",
    "iter_messages",
    "message_of",
    "write_session",
    "write_to",
]
