"""Writer processes for the live-tail browser test (importable by spawned children)."""

from __future__ import annotations

import random
import time

import sessiondb


def tail_writer(path: str, worker: int, n: int, session_id: str, barrier: object) -> None:
    """Append ``n`` messages to one session, a few milliseconds apart."""
    store = sessiondb.open(path)
    rng = random.Random(worker)
    barrier.wait()  # type: ignore[attr-defined]
    for i in range(n):
        store.append(session_id, "user", f"w{worker} m{i}", key=f"{worker}:{i}")
        time.sleep(rng.uniform(0.005, 0.03))
    store.close()
