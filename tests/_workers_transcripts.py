"""Worker functions for multi-process transcript tests (importable under spawn)."""

from __future__ import annotations

import sessiondb


def reconcile(db: str, session_id: str, legacy: str, start: object) -> int:
    """Wait for the start signal, reconcile, return the number of messages seen."""
    start.wait(10)  # type: ignore[attr-defined]
    with sessiondb.open(db) as store:
        return len(store.transcript(session_id, legacy_jsonl=legacy))


def import_file(db: str, path: str, barrier: object) -> int:
    """Open the store, wait until every importer has, import ``path``; returns how many
    messages this import added."""
    with sessiondb.open(db) as store:
        store.count()  # opened and ready
        barrier.wait(60)  # type: ignore[attr-defined]
        return store.import_jsonl(path).imported


def live_agent(db: str, path: str, turns: int, start: object) -> None:
    """An agent that stores each turn, then appends it to its JSONL log, one after the other."""
    import json
    import time

    start.wait(10)  # type: ignore[attr-defined]
    with sessiondb.open(db) as store, open(path, "ab", buffering=0) as log:
        for i in range(turns):
            role, content = ("user" if i % 2 == 0 else "assistant"), f"turn {i}"
            store.append("s", role, content)
            log.write(json.dumps({"role": role, "content": content}).encode() + b"\n")
            time.sleep(0.001)


def reconcile_until(db: str, legacy: str, done: object, start: object) -> int:
    """Reconcile in a loop until ``done`` is set; returns how many calls were made."""
    start.wait(10)  # type: ignore[attr-defined]
    calls = 0
    with sessiondb.open(db) as store:
        while not done.is_set():  # type: ignore[attr-defined]
            store.transcript("s", legacy_jsonl=legacy)
            calls += 1
        store.transcript("s", legacy_jsonl=legacy)
    return calls + 1


def bulk_import(db: str, path: str, ready: str | None = None) -> int:
    """A bulk import of ``path`` (``ready``: a file created once the store is open)."""
    with sessiondb.open(db) as store:
        store.count()
        if ready is not None:
            open(ready, "w").close()
        return store.import_jsonl(path, bulk=True).imported


def live_appender(db: str, start: object, stop: object, result: object) -> None:
    """Append messages one by one until ``stop`` is set, each searched for right after its
    append returns; puts ``(appended, not found)`` on ``result``."""
    start.wait(30)  # type: ignore[attr-defined]
    appended = missing = 0
    with sessiondb.open(db) as store:
        while not stop.is_set() or appended < 20:  # type: ignore[attr-defined]
            store.append("live", "user", f"liveword{appended} beside a bulk import")
            if not store.search(f"liveword{appended}", session_id="live", limit=5):
                missing += 1
            appended += 1
    result.put((appended, missing))  # type: ignore[attr-defined]
