"""Round trips counted from libpq's protocol trace: each time the client, having sent messages,
reads the server's answer is one round trip (in pipeline mode the server answers only at a
Flush or Sync, so messages queued without one never produce an early answer)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from psycopg import pq


def count(conn: Any, action: Callable[[], object]) -> tuple[int, list[str]]:
    """Round trips ``action`` makes on ``conn`` (a psycopg connection), and the trace's lines."""
    with tempfile.TemporaryFile("w+") as f:
        conn.pgconn.trace(f.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            action()
        finally:
            conn.pgconn.untrace()
        f.seek(0)
        lines = [line.rstrip("\n") for line in f if line.strip()]
    trips = 0
    sending = False
    for line in lines:
        side = line.split("\t", 1)[0]
        if side == "F":
            sending = True
        elif side == "B" and sending:
            trips += 1
            sending = False
    return trips, lines


__all__ = ["count"]
