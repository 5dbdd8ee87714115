"""Margins for liveness tests, derived from what the test observes on this machine right now
(a loaded machine widens them instead of failing the test)."""

from __future__ import annotations

import time
from pathlib import Path

from sessiondb.channel.heartbeat import heartbeat_bytes

WAIT = 60.0  # bound of every wait for an event


def margin(folder: Path, beat: float, beats: int = 20) -> float:
    """A stale_after that a live agent beating every ``beat`` seconds meets here right now: ten
    times the longest gap between two heartbeat changes seen over ``beats`` beats, >= 1.5 s."""
    last, since = heartbeat_bytes(folder), time.monotonic()
    gaps: list[float] = []
    deadline = since + WAIT
    while len(gaps) < beats and time.monotonic() < deadline:
        time.sleep(beat / 10)
        now = heartbeat_bytes(folder)
        if now != last:
            t = time.monotonic()
            gaps.append(t - since)
            last, since = now, t
    assert len(gaps) == beats, "the agent stopped beating"
    return max(1.5, 10 * max(gaps))
