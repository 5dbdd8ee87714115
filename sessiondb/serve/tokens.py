"""Tokens per session, counted in the background and kept up to date incrementally.

The contract's usage rollup (``store.stats``) is per day, source and model, not per session, so
the viewer counts a session's tokens from its messages' ``meta["usage"]`` itself, the way the
rollup does (docs/transcripts.md, "Usage": each ``response_id`` once, at its largest). A worker
thread reads each session page by page (each page its own short read) and afterwards only the
messages after the last one it counted; a changed ``revision`` (a removed message) starts that
session again. Pages never wait for it: they show what is counted, or nothing yet.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..core.contract import Store
from ..models import Session

PAGE = 500
_KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def usage_total(meta: Any) -> tuple[str | None, int]:
    """(response id, tokens) of one message's usage; (None, 0) without usage."""
    usage = meta.get("usage") if isinstance(meta, dict) else None
    if not isinstance(usage, dict):
        return None, 0
    total = 0
    for k in _KINDS:
        v = usage.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            total += v
    rid = meta.get("response_id")
    return (rid if isinstance(rid, str) else None), total


@dataclass
class _Count:
    revision: int
    last: int = 0
    loose: int = 0  # tokens of messages without a response id
    responses: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.loose + sum(self.responses.values())


class SessionTokens:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts: dict[str, _Count] = {}
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.stop = threading.Event()

    def get(self, s: Session) -> int | None:
        """The session's tokens when counted up to its last message, else None (and counting
        is queued)."""
        with self._lock:
            c = self._counts.get(s.session_id)
            if c is not None and c.revision == s.revision and c.last == s.message_count:
                return c.total
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
        s = self.store.get_session(sid)
        if s is None:
            with self._lock:
                self._counts.pop(sid, None)
            return
        with self._lock:
            c = self._counts.get(sid)
        if c is None or c.revision != s.revision:
            c = _Count(s.revision)
        while not self.stop.is_set():
            rows = self.store.messages(sid, after=c.last, limit=PAGE)
            for m in rows:
                rid, n = usage_total(m.meta)
                if rid is None:
                    c.loose += n
                elif n > c.responses.get(rid, 0):
                    c.responses[rid] = n
            if rows:
                c.last = rows[-1].seq
            if len(rows) < PAGE:
                break
        again = self.store.get_session(sid)
        if again is None or again.revision != c.revision:
            return  # a message was removed meanwhile: the next page view counts again
        with self._lock:
            self._counts[sid] = c


__all__ = ["SessionTokens", "usage_total"]
