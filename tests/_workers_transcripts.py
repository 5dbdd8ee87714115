"""Worker functions for multi-process transcript tests (importable under spawn)."""

from __future__ import annotations

import sessiondb


def reconcile(db: str, session_id: str, legacy: str, start: object) -> int:
    """Wait for the start signal, reconcile, return the number of messages seen."""
    start.wait(10)  # type: ignore[attr-defined]
    with sessiondb.open(db) as store:
        return len(store.transcript(session_id, legacy_jsonl=legacy))
