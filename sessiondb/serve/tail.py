"""The live tail: server-sent events of a session's new messages.

Each event's id is the message's seq, gapless per session (sessiondb/core/contract.py), so a
browser reconnecting with ``Last-Event-ID`` gets exactly the messages after the last one it
showed: no gap, no duplicate, across a server restart too. A removed newest message
(``pop_message``) changes the session's ``revision`` and its seq is taken again by the next
append (sessiondb/models.py, ``Session.revision``): the stream then sends one ``revision`` event
and ends, and the page reloads what it shows.

Every poll is its own short read (``get_session``, ``messages``): the stream never holds a read
snapshot open between events, so writers' WAL stays bounded however long a tab stays open.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from ..core.contract import Store
from ..models import Message

POLL_SECONDS = 0.1
BATCH = 100
KEEPALIVE_SECONDS = 15.0
RETRY_MS = 1000


def _event(out: BinaryIO, kind: str, data: object, event_id: int | None = None) -> None:
    text = json.dumps(data, ensure_ascii=True)  # one line: no newline can split the event
    head = f"id: {event_id}\n" if event_id is not None else ""
    out.write(f"{head}event: {kind}\ndata: {text}\n\n".encode())
    out.flush()


def stream(
    store: Store,
    session_id: str,
    after: int,
    revision: int | None,
    out: BinaryIO,
    stop: threading.Event,
    html: Callable[[Message], str],
) -> None:
    """Write events to ``out`` until the client goes (an OSError), the session's revision
    changes or the session is deleted, or ``stop`` is set (the server shuts down)."""
    out.write(f"retry: {RETRY_MS}\n\n".encode())
    out.flush()
    last = after
    quiet_since = time.monotonic()
    while not stop.is_set():
        s = store.get_session(session_id)
        if s is None:
            _event(out, "gone", {"session_id": session_id})
            return
        if revision is None:
            revision = s.revision
        if s.revision != revision or s.message_count < last:
            _event(out, "revision", {"revision": s.revision, "count": s.message_count})
            return
        if s.message_count > last:
            batch = store.messages(session_id, after=last, limit=BATCH)
            # The batch came from its own read: if the revision is the same after it, no message
            # was removed in between (revision only grows), so these are the messages after last.
            check = store.get_session(session_id)
            if check is None or check.revision != revision:
                continue
            for m in batch:
                _event(out, "message", {"seq": m.seq, "html": html(m)}, event_id=m.seq)
                last = m.seq
            quiet_since = time.monotonic()
            if len(batch) == BATCH:
                continue
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            out.write(b": keepalive\n\n")  # finds a closed connection
            out.flush()
            quiet_since = time.monotonic()
        stop.wait(POLL_SECONDS)


__all__ = ["stream"]
