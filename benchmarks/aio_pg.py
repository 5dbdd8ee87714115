"""The async store on PostgreSQL: its worker threads against the sync store and the driver's own
ceiling, in one run (docs/adr/0014-native-async-postgres.md).

T tasks (64) each append M turns (deterministic 200-2000-byte contents, task t to session
``s<t mod 16>``: four tasks share each session, as agents of one conversation do), one call per
turn; then each task reads the newest 20 messages of its session R times. Each system on a fresh
schema of the local server, systems interleaved within a round:

- ``ceiling``: no sessiondb — psycopg's ``AsyncConnectionPool`` (4 connections) and one
  autocommit ``INSERT`` per turn into a bare table (one ``SELECT … LIMIT 20`` per read): what
  asyncio, the driver and the server cost without a store's transaction, key or search index.
- ``sync-1-thread``: ``sessiondb.open(url)`` called turn after turn in one thread.
- ``sync-T-threads-p8``: the sync store shared by T threads, on a pool of 8 connections (a
  connection per thread would take 64 of the shared server's 100).
- ``workers-w<N>``: ``sessiondb.aio.open(url, workers=N)`` — the sync store in the async
  store's N worker threads (a connection each).

The natively async path ADR 0014 weighed (verbs in greenlets awaiting psycopg's AsyncConnection,
``native-p<N>``) was measured by this benchmark at commit e1d7212 and not kept.

Per system: appends/s and reads/s (median of the rounds), per-call latency p50/p99/max (all calls
of all rounds), and for the event-loop systems how late a ticker sleeping 1 ms wakes up (p99,
max): the loop must stay free while the calls wait for the server. Ratios against the sync store
come from the same run. Then what one awaited call costs, one task alone (sequential short
reads), through the workers against the sync call.

    python -m benchmarks.aio_pg [--quick] [--tasks 64] [--per-task 50] [--reads 20] [--rounds 5]

PostgreSQL: ``$SESSIONDB_BENCH_PG`` (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio

from benchmarks.aio import Run, _drive
from benchmarks.common import latency_summary, machine_facts, turn, write_json
from benchmarks.postgres import BASE, drop_pg, new_pg_store

SESSIONS = 16
LAST = 20


class Figures:
    """One system's appends and reads in one round."""

    def __init__(self) -> None:
        self.appends = Run()
        self.reads = Run()


def _sid(t: int) -> str:
    return f"s{t % SESSIONS}"


# -- systems -----------------------------------------------------------------------------------


def ceiling(url: str, turns: list[list[str]], reads: int) -> Figures:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from sessiondb.postgres.backend import split_schema

    base, schema = split_schema(url)
    table = f"{schema}.ceiling"  # a schema name made by benchmarks/postgres.py, never input
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id bigserial PRIMARY KEY, sid text NOT NULL,"
            " role text NOT NULL, content text NOT NULL, created_at float8 NOT NULL)"
        )
        conn.execute(f"CREATE INDEX ON {table} (sid, id)")
    out = Figures()

    async def main() -> None:
        async with AsyncConnectionPool(
            base, min_size=4, max_size=4, kwargs={"autocommit": True, "prepare_threshold": None}
        ) as pool:

            async def append(sid: str, text: str) -> None:
                async with pool.connection() as conn:
                    await conn.execute(
                        f"INSERT INTO {table} (sid, role, content, created_at)"
                        " VALUES (%s, 'user', %s, %s)",
                        (sid, text, time.time()),
                    )

            async def read(sid: str, text: str) -> None:
                async with pool.connection() as conn:
                    cur = await conn.execute(
                        f"SELECT role, content FROM {table} WHERE sid = %s ORDER BY id DESC"
                        " LIMIT %s",
                        (sid, LAST),
                    )
                    await cur.fetchall()

            await _drive(_mapped(append), turns, out.appends)
            await _drive(_mapped(read), _reading(turns, reads), out.reads)
            out.appends.connections = out.reads.connections = pool.get_stats()["pool_size"]

    anyio.run(main, backend="asyncio")
    return out


def _reading(turns: list[list[str]], reads: int) -> list[list[str]]:
    return [[""] * reads for _ in turns]


def _mapped(call: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """``_drive`` names task t's session ``s<t>``; every system here writes ``s<t mod 16>``."""

    def mapped(sid: str, text: str) -> Any:
        return call(_sid(int(sid[1:])), text)

    return mapped


def sync_one_thread(url: str, turns: list[list[str]], reads: int) -> Figures:
    import sessiondb

    out = Figures()
    with sessiondb.open(url) as store:
        for phase, run, calls in (
            ("append", out.appends, len(turns[0])),
            ("read", out.reads, reads),
        ):
            start = time.perf_counter()
            for i in range(calls):
                for t, texts in enumerate(turns):
                    t0 = time.perf_counter()
                    if phase == "append":
                        store.append(_sid(t), "user", texts[i])
                    else:
                        store.messages(_sid(t), last=LAST)
                    run.latencies.append(time.perf_counter() - t0)
            run.seconds = time.perf_counter() - start
            run.connections = 1
    return out


def sync_threads(url: str, turns: list[list[str]], reads: int) -> Figures:
    import sessiondb

    out, lock = Figures(), threading.Lock()
    with sessiondb.open(url, pool=8) as store:

        def task(t: int, phase: str) -> None:
            mine = []
            for text in turns[t] if phase == "append" else range(reads):
                t0 = time.perf_counter()
                if phase == "append":
                    store.append(_sid(t), "user", str(text))
                else:
                    store.messages(_sid(t), last=LAST)
                mine.append(time.perf_counter() - t0)
            with lock:
                (out.appends if phase == "append" else out.reads).latencies.extend(mine)

        with ThreadPoolExecutor(max_workers=len(turns)) as pool:
            for phase, run in (("append", out.appends), ("read", out.reads)):
                start = time.perf_counter()
                list(pool.map(task, range(len(turns)), [phase] * len(turns)))
                run.seconds = time.perf_counter() - start
                run.connections = 8
    return out


def aio_store(workers: int) -> Callable[[str, list[list[str]], int], Figures]:
    def system(url: str, turns: list[list[str]], reads: int) -> Figures:
        import sessiondb.aio

        out = Figures()

        async def main() -> None:
            async with sessiondb.aio.open(url, workers=workers) as store:

                async def append(sid: str, text: str) -> None:
                    await store.append(sid, "user", text)

                async def read(sid: str, text: str) -> None:
                    await store.messages(sid, last=LAST)

                await _drive(_mapped(append), turns, out.appends)
                await _drive(_mapped(read), _reading(turns, reads), out.reads)
                out.appends.connections = out.reads.connections = workers

        anyio.run(main, backend="asyncio")
        return out

    return system


def call_cost(via: Callable[[str], str], calls: int) -> dict[str, float]:
    """Microseconds per ``count(sid)`` (a short read), one caller alone, sequential: the sync
    call and through the workers (median of 3)."""
    import sessiondb
    import sessiondb.aio

    url, schema = new_pg_store()
    url = via(url)
    out: dict[str, list[float]] = {}
    try:
        with sessiondb.open(url) as store:
            store.append("s", "user", "x")
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(calls):
                    store.count("s")
                out.setdefault("sync", []).append((time.perf_counter() - t0) / calls * 1e6)

        async def awaited() -> None:
            async with sessiondb.aio.open(url) as astore:
                await astore.count("s")
                for _ in range(3):
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        await astore.count("s")
                    us = (time.perf_counter() - t0) / calls * 1e6
                    out.setdefault("workers", []).append(us)

        anyio.run(awaited, backend="asyncio")
    finally:
        drop_pg(schema)
    return {name: round(statistics.median(v), 1) for name, v in out.items()}


def _proxy(rtt_ms: float) -> Callable[[str], str]:
    """How a store URL reaches the server: as it is, or through a proxy adding ``rtt_ms`` to
    every round trip (half each way)."""
    if not rtt_ms:
        return lambda url: url
    from urllib.parse import urlsplit, urlunsplit

    from benchmarks.latency_proxy import start

    parts = urlsplit(BASE)
    port, _ = start((parts.hostname or "127.0.0.1", parts.port or 5432), rtt_ms / 2000)

    def via(url: str) -> str:
        u = urlsplit(url)
        netloc = u.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        return urlunsplit(u._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    return via


def systems(tasks: int) -> dict[str, Callable[[str, list[list[str]], int], Figures]]:
    return {
        "ceiling": ceiling,
        "sync-1-thread": sync_one_thread,
        f"sync-{tasks}-threads-p8": sync_threads,
        "workers-w2": aio_store(2),
        "workers-w4": aio_store(4),
        "workers-w8": aio_store(8),
    }


def _row(rs: list[Run], total: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "per_s": round(statistics.median(total / run.seconds for run in rs)),
        "per_s_spread": [
            round(min(total / r.seconds for r in rs)),
            round(max(total / r.seconds for r in rs)),
        ],
        "latency": latency_summary(x for run in rs for x in run.latencies),
        "connections": max(run.connections or 0 for run in rs),
    }
    lags = [x for run in rs for x in run.lags]
    if lags:
        row["loop_lag"] = latency_summary(lags)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--per-task", type=int, default=50)
    ap.add_argument("--reads", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--rtt",
        type=float,
        default=0.0,
        help="milliseconds added to every round trip (a delaying proxy: a server across a"
        " network; benchmarks/latency_proxy.py)",
    )
    args, _ = ap.parse_known_args(argv)  # run_all passes every benchmark the same arguments
    per_task, reads, rounds = (5, 5, 1) if args.quick else (args.per_task, args.reads, args.rounds)
    turns = [[turn(t, i) for i in range(per_task)] for t in range(args.tasks)]
    table = systems(args.tasks)
    figures: dict[str, list[Figures]] = {name: [] for name in table}
    load: list[float] = []
    via = _proxy(args.rtt)
    for _ in range(rounds):
        for name, system in table.items():  # interleaved: noise hits every system alike
            load.append(os.getloadavg()[0])
            url, schema = new_pg_store()
            try:
                figures[name].append(system(via(url), turns, reads))
            finally:
                drop_pg(schema)
    rows: dict[str, dict[str, Any]] = {}
    for name, fs in figures.items():
        rows[name] = {
            "appends": _row([f.appends for f in fs], args.tasks * per_task),
            "reads": _row([f.reads for f in fs], args.tasks * reads),
        }
    for phase in ("appends", "reads"):
        sync1 = rows["sync-1-thread"][phase]["per_s"]
        workers = rows["workers-w2"][phase]["per_s"]
        for name, row in rows.items():
            r = row[phase]
            r["vs_sync_1_thread"] = round(r["per_s"] / sync1, 3)
            r["vs_workers"] = round(r["per_s"] / workers, 3)
            lag = r.get("loop_lag")
            lag_text = (
                f"  loop lag p99 {lag['p99_ms']:6.2f} max {lag['max_ms']:6.2f} ms" if lag else ""
            )
            print(
                f"{phase:7} {name:18} {r['per_s']:6d}/s {r['per_s_spread']}"
                f"  x{r['vs_sync_1_thread']:.2f} sync  x{r['vs_workers']:.2f} workers"
                f"  p50 {r['latency']['p50_ms']:6.2f}  p99 {r['latency']['p99_ms']:7.2f} ms"
                f"  conns {r['connections']:2d}{lag_text}",
                flush=True,
            )
    cost = call_cost(via, 200 if args.quick else 2000)
    print("one call alone, microseconds:", cost, flush=True)
    name = "aio_pg" + (f"_rtt{args.rtt:g}ms" if args.rtt else "") + ("_quick" if args.quick else "")
    write_json(
        name,
        {
            "machine": machine_facts(),
            "added_rtt_ms": args.rtt,
            "load_1min": {"min": min(load), "median": statistics.median(load), "max": max(load)},
            "tasks": args.tasks,
            "sessions": SESSIONS,
            "per_task": per_task,
            "reads_per_task": reads,
            "rounds": rounds,
            "call_us": cost,
            "systems": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
