"""Tokens per session for the sessions list, asked of the store in the background.

The count is the usage rollup's (``store.stats(session_id=…)``, docs/adr/0007-usage-rollup.md:
each response once, at its largest): the rule lives in the backends, not here. A worker thread
asks for the sessions a page shows and keeps each answer with the session's ``message_count``
and ``revision``; a page shows what is known for the session as it is now, or nothing yet, and
never waits for the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..core.contract import Store
from ..models import Session


class SessionTokens:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts: dict[str, tuple[int, int, int]] = {}  # id: (revision, last seq, tokens)
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.stop = threading.Event()

    def get(self, s: Session) -> int | None:
        """The session's tokens when counted at its current state, else None (and counting
        is queued)."""
        with self._lock:
            known = self._counts.get(s.session_id)
            if known is not None and known[:2] == (s.revision, s.message_count):
                return known[2]
            self._queue[s.session_id] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sessiondb-serve-tokens", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return None

    def _run(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                sid = next(iter(self._queue), None)
                if sid is not None:
                    del self._queue[sid]
            if sid is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._count(sid)
            except Exception:  # a store error: counted again when a page asks
                with self._lock:
                    self._counts.pop(sid, None)

    def _count(self, sid: str) -> None:
        before = self.store.get_session(sid)
        if before is None:
            with self._lock:
                self._counts.pop(sid, None)
            return
        total = self.store.stats(session_id=sid).tokens.total
        after = self.store.get_session(sid)
        if after is None or (after.revision, after.message_count) != (
            before.revision,
            before.message_count,
        ):
            return  # written meanwhile: the next page view counts again
        with self._lock:
            self._counts[sid] = (before.revision, before.message_count, total)


__all__ = ["SessionTokens"]
