"""The Store verbs whose work lives in other modules (search, transcripts, leases, doctor).

Kept apart from store.py (sessions and messages) so each file holds one responsibility; these are
thin delegations, backend-neutral where the work is (transcript.py, lease, doctor.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from ..models import HealthReport, Hit, ImportReport, Message
from . import search as _search
from .engine import Engine

if TYPE_CHECKING:
    from ..lease import Lease


class StoreFacets:
    """Mixed into SQLiteStore, which provides ``_ensure_ready()`` and the message verbs."""

    def _ensure_ready(self) -> Engine:
        raise TypeError("StoreFacets is a mixin of SQLiteStore")

    def _as_store(self) -> Any:
        # The transcript functions take any object with the public Store API: this one has it.
        return self

    # -- leases ------------------------------------------------------------------------------

    def lease(self, name: str, owner: str, ttl: float = 300.0) -> Lease:
        """A lease on ``name`` for session ``owner`` kept in this database (for workers that
        share the store, perhaps on several machines); same API as ``sessiondb.lease``."""
        from ..lease import store_lease

        return store_lease(self, name, owner, ttl)

    # -- transcripts (backend-neutral code in sessiondb.transcript) ----------------------------

    def import_jsonl(
        self,
        path: str | os.PathLike[str],
        *,
        session_id: str | None = None,
        source: str = "import",
        strict: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImportReport:
        """Import a JSONL transcript; idempotent (see :func:`sessiondb.transcript.import_jsonl`)."""
        from .. import transcript

        return transcript.import_jsonl(
            self._as_store(),
            path,
            session_id=session_id,
            source=source,
            strict=strict,
            progress=progress,
        )

    def export_jsonl(self, session_id: str, dest: str | os.PathLike[str] | IO[bytes]) -> int:
        """Export a session in sessiondb's JSONL format; returns the number of messages."""
        from .. import transcript

        return transcript.export_jsonl(self._as_store(), session_id, dest)

    def transcript(
        self, session_id: str, *, legacy_jsonl: str | os.PathLike[str] | None = None
    ) -> list[Message]:
        """Complete history; backfills what ``legacy_jsonl`` holds and the store lacks."""
        from .. import transcript

        return transcript.transcript(self._as_store(), session_id, legacy_jsonl=legacy_jsonl)

    # -- search ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        source: str | None = None,
        role: str | None = None,
        since: float | None = None,
        until: float | None = None,
        context: int = 0,
        limit: int = 20,
        offset: int = 0,
        mode: str = "plain",
        markers: tuple[str, str] = ("[", "]"),
    ) -> list[Hit]:
        """Messages matching ``query``, best first (bm25, then newest).

        ``mode="plain"`` takes any text and matches its words literally; ``mode="fts"`` takes
        FTS5 syntax and raises ``QueryError`` when it is malformed. Each hit has a snippet with
        matches between ``markers`` and up to ``context`` neighbours from the same session.
        Rules: docs/search.md.
        """
        return _search.search(
            self._ensure_ready(),
            query,
            session_id=session_id,
            source=source,
            role=role,
            since=since,
            until=until,
            context=context,
            limit=limit,
            offset=offset,
            mode=mode,
            markers=markers,
        )

    def check(self, *, full: bool = False) -> HealthReport:
        """Health of the store (what `sessiondb doctor` prints); see docs/doctor.md."""
        from .. import doctor

        return doctor.check(self, full)
