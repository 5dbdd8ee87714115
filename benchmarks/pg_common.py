"""The PostgreSQL server the benchmarks use, and the schemas they make there and drop.

``$SESSIONDB_BENCH_PG`` (default postgresql://postgres@127.0.0.1:5432/test); every schema is
named ``bench_<hex>`` here, never from input, and dropped by :func:`drop_pg`.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

BASE = os.environ.get("SESSIONDB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def admin() -> Any:
    import psycopg

    return psycopg.connect(BASE, autocommit=True)


def new_schema() -> str:
    name = "bench_" + secrets.token_hex(6)
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {name}")  # a name made here, never input
    return name


def store_url(schema: str) -> str:
    """sessiondb's URL for a store in *schema*."""
    return f"{BASE}{'&' if '?' in BASE else '?'}schema={schema}"


def new_pg_store() -> tuple[str, str]:
    name = new_schema()
    return store_url(name), name


def drop_pg(name: str) -> None:
    assert name.startswith("bench_") and name[6:].isalnum()
    with admin() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def free_connections() -> int:
    """Connections the server can still hand to ordinary users."""
    with admin() as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for_connections(needed: int, timeout: float = 180.0) -> int:
    """Wait (bounded) until *needed* connections are free; returns how many are free then.
    The server is shared with other work: K=64 writers must not starve it."""
    deadline = time.monotonic() + timeout
    free = free_connections()
    while free < needed and time.monotonic() < deadline:
        time.sleep(2.0)
        free = free_connections()
    return free


class Start:
    """The start line of one case: every writer waits on the barrier, then appends until its
    ``n`` are done or *budget* seconds have passed (what a slow system gets through in the
    budget is what its throughput is measured on; the count is reported)."""

    def __init__(self, barrier: Any, budget: float) -> None:
        self.barrier = barrier
        self.budget = budget

    def wait(self) -> float:
        """Wait for the start; returns the perf_counter() time to stop at."""
        self.barrier.wait()
        return time.perf_counter() + self.budget
