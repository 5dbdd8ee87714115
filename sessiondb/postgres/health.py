"""Health of a PostgreSQL store (``store.check()``, ``sessiondb doctor postgresql://…``).

What can go wrong on a server rather than in a file (docs/postgres.md, "Health"): the server version
and schema, connections in use against ``max_connections``, invalid indexes (a failed
``CREATE INDEX CONCURRENTLY``), pending GIN pages, dead tuples and the last autovacuum, the
oldest snapshot held and sessions idle inside a transaction (both hold back vacuum), and with
``full=True`` the ``amcheck`` extension's B-tree checks when it is installed. Repairs are the
server's business: backups and point-in-time recovery.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..models import Check, HealthReport, Status
from . import schema
from .connection import Connections

#: A transaction open longer than this (seconds) is reported: it holds back vacuum.
OLD_SNAPSHOT = 300.0
#: Share of max_connections in use beyond which a warning is given.
CONNECTIONS_WARN = 0.8


def _checks(conn: psycopg.Connection[Any], full: bool) -> list[Check]:
    out: list[Check] = []
    version, used, most = conn.execute(
        "SELECT current_setting('server_version'),"
        " (SELECT count(*) FROM pg_stat_activity), current_setting('max_connections')::int"
    ).fetchone() or ("?", 0, 1)
    found = schema.current_version(conn)
    status: Status = "ok"
    if found != schema.LATEST:
        status = "fail" if found > schema.LATEST else "warn"
    out.append(
        Check(
            "schema",
            status,
            f"PostgreSQL {version}, sessiondb schema version {found} (this sessiondb: "
            f"{schema.LATEST})",
            None if status == "ok" else "open the store read-write once to migrate it",
            {"server_version": version, "schema_version": found},
        )
    )
    share = used / max(most, 1)
    out.append(
        Check(
            "connections",
            "warn" if share >= CONNECTIONS_WARN else "ok",
            f"{used} of max_connections {most} in use",
            "use pool=N in long-lived processes, or pgbouncer"
            if share >= CONNECTIONS_WARN
            else None,
            {"in_use": used, "max_connections": most},
        )
    )
    exts = [
        str(r[0])
        for r in conn.execute("SELECT extname FROM pg_extension ORDER BY extname").fetchall()
    ]
    trgm = "pg_trgm" in exts
    out.append(
        Check(
            "extensions",
            "ok" if trgm else "warn",
            "installed: " + ", ".join(exts),
            None
            if trgm
            else "CREATE EXTENSION pg_trgm (CJK words of 3+ characters scan otherwise)",
            {"extensions": exts},
        )
    )
    invalid = [
        str(r[0])
        for r in conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE NOT i.indisvalid AND c.relnamespace = current_schema()::regnamespace"
        ).fetchall()
    ]
    out.append(
        Check(
            "integrity",
            "fail" if invalid else "ok",
            "invalid: " + ", ".join(invalid) if invalid else "all indexes valid",
            "REINDEX INDEX CONCURRENTLY each invalid index" if invalid else None,
            {"invalid": invalid},
        )
    )
    tables = conn.execute(
        "SELECT relname, n_live_tup, n_dead_tup, greatest(last_autovacuum, last_vacuum)"
        " FROM pg_stat_user_tables WHERE schemaname = current_schema()"
        " AND relname IN ('sessions', 'messages') ORDER BY relname"
    ).fetchall()
    dead = {str(r[0]): (int(r[1]), int(r[2]), r[3]) for r in tables}
    bloated = [n for n, (live, d, _) in dead.items() if d > 10_000 and d > live * 0.2]
    out.append(
        Check(
            "vacuum",
            "warn" if bloated else "ok",
            "; ".join(
                f"{n}: {live} live, {d} dead rows, last vacuum {last or 'never'}"
                for n, (live, d, last) in dead.items()
            )
            or "no statistics yet",
            "check autovacuum settings and long transactions" if bloated else None,
            {n: {"live": live, "dead": d} for n, (live, d, _) in dead.items()},
        )
    )
    old = conn.execute(
        "SELECT pid, application_name, state, extract(epoch from now() - xact_start)"
        " FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()"
        " AND datname = current_database() ORDER BY xact_start LIMIT 1"
    ).fetchone()
    idle = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
        " AND datname = current_database()"
    ).fetchone()
    n_idle = int(idle[0]) if idle else 0
    age = float(old[3]) if old is not None and old[3] is not None else 0.0
    long = age > OLD_SNAPSHOT or n_idle > 0
    detail = f"{n_idle} session(s) idle in a transaction"
    if old is not None:
        detail += f"; oldest transaction: pid {old[0]} ({old[1] or '?'}, {old[2]}) for {age:.0f} s"
    out.append(
        Check(
            "transactions",
            "warn" if long else "ok",
            detail,
            "end long or idle-in-transaction sessions: they hold back vacuum" if long else None,
            {"idle_in_transaction": n_idle, "oldest_seconds": age},
        )
    )
    if full:
        out.append(_amcheck(conn, "amcheck" in exts))
    return out


def _amcheck(conn: psycopg.Connection[Any], available: bool) -> Check:
    if not available:
        return Check("amcheck", "warn", "amcheck is not installed", "CREATE EXTENSION amcheck")
    bad = []
    for (name,) in conn.execute(
        "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree'"
        " AND c.relnamespace = current_schema()::regnamespace"
    ).fetchall():
        try:
            conn.execute("SAVEPOINT amcheck")
            conn.execute("SELECT bt_index_check(%s::regclass)", (name,))
            conn.execute("RELEASE SAVEPOINT amcheck")
        except psycopg.Error as e:
            conn.execute("ROLLBACK TO SAVEPOINT amcheck")
            bad.append(f"{name}: {e}")
    return Check(
        "amcheck",
        "fail" if bad else "ok",
        "; ".join(bad) if bad else "B-tree indexes consistent",
        "restore from a backup / point-in-time recovery" if bad else None,
    )


def diagnose(conns: Connections, *, full: bool = False) -> HealthReport:
    with conns.read() as conn:
        checks = _checks(conn, full)
    return HealthReport(conns.where, tuple(checks))


__all__ = ["diagnose"]
