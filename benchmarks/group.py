"""Group commit: T threads (and 64 asyncio tasks) appending through one store, grouped vs not,
against the one-transaction-per-append ceiling and the peers, in one run.

Each system appends the same T x M turns (deterministic 200-2000-byte contents, thread t to
session ``s<t>``), one call per turn, on a fresh file; systems are interleaved within a round
so that the machine's noise hits each alike, and the rounds are repeated:

- ``ceiling``: one bare apsw connection running sessiondb's append SQL, one transaction per
  append, the T sessions round robin (benchmarks/peers.py, ``CeilingAdapter``).
- ``sessiondb-grouped``: ``sessiondb.open(path)`` shared by T threads (group commit on: the
  default, docs/adr/0011-group-commit.md).
- ``sessiondb-ungrouped``: the same with ``group_commit=False`` — every append its own
  transaction, as before group commit.
- ``hermes``, ``openai-agents``, ``langchain``: each thread its own instance of the peer
  (benchmarks/peers.py), where installed (the bench environment).
- ``aio-grouped`` / ``aio-ungrouped``: 64 asyncio tasks on ``sessiondb.aio.open(path)`` (2
  worker threads), group commit on / off.

Per system: appends/s per round (its ratio to the same round's ceiling, then the median and
the spread of the ratios over the rounds), per-call latency p50/p99/max (all calls of all
rounds), and for sessiondb a read-back after each run: every session's seqs 1..M, gapless, with
each turn exactly once.

    python -m benchmarks.group [--quick] [--threads 16,64] [--per-thread 40] [--rounds 3]
    python -m benchmarks.group --postgres --output group_postgres
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.common import fresh_dir, latency_summary, machine_facts, turn, write_json

Turns = list[list[str]]


class Run:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.seconds = 0.0
        self.errors: dict[str, int] = {}
        self.groups: list[tuple[int, float]] = []  # (requests, seconds in its transaction)


@contextmanager
def timed_groups(run: Run) -> Iterator[None]:
    """Record every group's size and the time its transaction took (BEGIN to COMMIT: a head's
    round, sqlite/combine.py), to tell what a grouped append costs inside the transaction from
    what it waits outside."""
    from sessiondb.core import writes
    from sessiondb.sqlite import combine

    real_round, real_in = combine.Combine._round, writes.append_group_in
    sizes: list[int] = []

    def counted(tx: Any, requests: list[Any]) -> Any:
        sizes.append(len(requests))
        return real_in(tx, requests)

    def timed(self: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        del sizes[:]
        try:
            return real_round(self, *args)
        finally:
            if sizes:
                run.groups.append((sizes[0], time.perf_counter() - t0))

    combine.Combine._round = timed  # type: ignore[method-assign]
    writes.append_group_in = counted  # type: ignore[assignment]
    try:
        yield
    finally:
        combine.Combine._round = real_round  # type: ignore[method-assign]
        writes.append_group_in = real_in  # type: ignore[assignment]


def _turns(threads: int, per_thread: int) -> Turns:
    return [[turn(t, i) for i in range(per_thread)] for t in range(threads)]


def ceiling(path: Path, turns: Turns) -> Run:
    run, adapter = Run(), peers.CeilingAdapter()
    adapter.open(path)
    start = time.perf_counter()
    for i in range(len(turns[0])):
        for t, texts in enumerate(turns):
            t0 = time.perf_counter()
            adapter.append(f"s{t}", "user", texts[i])
            run.latencies.append(time.perf_counter() - t0)
    run.seconds = time.perf_counter() - start
    adapter.close()
    return run


def _threads(append_for: Callable[[int], Callable[[str, str], object]], turns: Turns) -> Run:
    """T threads, thread t appending its turns to ``s<t>`` through ``append_for(t)``; all start
    together (a barrier), the clock runs from the barrier to the last return."""
    run, lock = Run(), threading.Lock()
    barrier = threading.Barrier(len(turns) + 1)
    errors: list[BaseException] = []

    def body(t: int) -> None:
        try:
            append = append_for(t)
        except BaseException as e:  # reported after the run
            errors.append(e)
            barrier.wait()
            return
        mine, failed = [], []
        barrier.wait()
        for text in turns[t]:
            t0 = time.perf_counter()
            try:
                append(f"s{t}", text)
            except Exception as e:  # a peer's "database is locked": counted, not fatal
                failed.append(type(e).__qualname__)
            mine.append(time.perf_counter() - t0)
        with lock:
            run.latencies.extend(mine)
            for name in failed:
                run.errors[name] = run.errors.get(name, 0) + 1

    workers = [threading.Thread(target=body, args=(t,)) for t in range(len(turns))]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    run.seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return run


def sessiondb_threads(grouped: bool) -> Callable[[Path, Turns], Run]:
    def system(path: Path, turns: Turns) -> Run:
        import sessiondb

        run = Run()
        store = sessiondb.open(path / "sessions.db", group_commit=grouped)
        with store, timed_groups(run):
            done = _threads(lambda t: lambda sid, text: store.append(sid, "user", text), turns)
        _verify(path / "sessions.db", turns)
        done.groups = run.groups
        return done

    return system


def postgres_threads(grouped: bool) -> Callable[[Path, Turns], Run]:
    """The sync store on PostgreSQL (a fresh schema per run; benchmarks/postgres.py), shared by
    T threads, group commit on or off: what decides ``Backend.group_writes`` there."""

    def system(path: Path, turns: Turns) -> Run:
        import sessiondb
        from benchmarks.postgres import drop_pg, new_pg_store

        url, schema = new_pg_store()
        try:
            with sessiondb.open(url, group_commit=grouped) as store:
                store.count()  # the schema is made before the clock starts
                run = _threads(lambda t: lambda sid, text: store.append(sid, "user", text), turns)
                for t, texts in enumerate(turns):
                    got = store.messages(f"s{t}")
                    if [m.content for m in got] != texts or [m.seq for m in got] != list(
                        range(1, len(texts) + 1)
                    ):
                        raise AssertionError(
                            f"s{t} does not hold its turns exactly once (errors: {run.errors})"
                        )
            return run
        finally:
            drop_pg(schema)

    return system


def peer_threads(name: str) -> Callable[[Path, Turns], Run]:
    def system(path: Path, turns: Turns) -> Run:
        adapters: list[peers.Adapter] = []
        guard = threading.Lock()

        def append_for(t: int) -> Callable[[str, str], object]:
            adapter = peers.make(name)
            with guard:  # first opens create the file: one at a time (benchmarks/contention.py)
                adapter.open(path)
                adapter.prepare(f"s{t}")
                adapters.append(adapter)
            return lambda sid, text: adapter.append(sid, "user", text)

        try:
            return _threads(append_for, turns)
        finally:
            for a in adapters:
                a.close()

    return system


def aio_tasks(grouped: bool) -> Callable[[Path, Turns], Run]:
    def system(path: Path, turns: Turns) -> Run:
        import anyio

        import sessiondb.aio

        run = Run()

        async def main() -> None:
            async with sessiondb.aio.open(path / "sessions.db", group_commit=grouped) as store:

                async def task(t: int) -> None:
                    for text in turns[t]:
                        t0 = time.perf_counter()
                        await store.append(f"s{t}", "user", text)
                        run.latencies.append(time.perf_counter() - t0)

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for t in range(len(turns)):
                        tg.start_soon(task, t)
                run.seconds = time.perf_counter() - start

        with timed_groups(run):
            anyio.run(main, backend="asyncio")
        _verify(path / "sessions.db", turns)
        return run

    return system


def _verify(db: Path, turns: Turns) -> None:
    """Every turn stored once, in order, seqs 1..M per session (a benchmark that lost or doubled
    appends would be measuring something else)."""
    import sessiondb

    with sessiondb.open(db, readonly=True) as store:
        for t, texts in enumerate(turns):
            got = store.messages(f"s{t}")
            if [m.content for m in got] != texts or [m.seq for m in got] != list(
                range(1, len(texts) + 1)
            ):
                raise AssertionError(f"{db}: session s{t} does not hold its turns exactly once")


def systems(
    threads: int, tasks: int, postgres: bool = False
) -> dict[str, tuple[int, Callable[[Path, Turns], Run]]]:
    """name -> (writers, system)."""
    if postgres:
        return {
            "ceiling": (threads, ceiling),
            "postgres-grouped": (threads, postgres_threads(True)),
            "postgres-per-call": (threads, postgres_threads(False)),
        }
    out: dict[str, tuple[int, Callable[[Path, Turns], Run]]] = {
        "ceiling": (threads, ceiling),
        "sessiondb-grouped": (threads, sessiondb_threads(True)),
        "sessiondb-ungrouped": (threads, sessiondb_threads(False)),
    }
    for name in ("hermes", "openai-agents", "langchain"):
        if peers.available(name) is None:
            out[name] = (threads, peer_threads(name))
    if tasks:
        out[f"ceiling-{tasks}"] = (tasks, ceiling)
        out[f"aio-{tasks}-tasks-grouped"] = (tasks, aio_tasks(True))
        out[f"aio-{tasks}-tasks-ungrouped"] = (tasks, aio_tasks(False))
    return out


def measure(
    threads: int, tasks: int, per_thread: int, rounds: int, postgres: bool = False
) -> dict[str, Any]:
    table = systems(threads, tasks, postgres)
    runs: dict[str, list[Run]] = {name: [] for name in table}
    turns = {n: _turns(n, per_thread) for n in {w for w, _ in table.values()}}
    for r in range(rounds):
        for name, (writers, system) in table.items():
            runs[name].append(system(fresh_dir("group", f"t{threads}-{name}-{r}"), turns[writers]))
    rows: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        writers = table[name][0]
        total = writers * per_thread
        base = runs["ceiling" if writers == threads else f"ceiling-{tasks}"]
        ratios = [(total / x.seconds) / (total / c.seconds) for x, c in zip(rs, base, strict=True)]
        errors: dict[str, int] = {}
        for x in rs:
            for k, c in x.errors.items():
                errors[k] = errors.get(k, 0) + c
        groups = [g for x in rs for g in x.groups]
        if groups:
            grouped = sum(n for n, _ in groups)
        rows[name] = {
            "writers": writers,
            "errors": errors,
            **(
                {
                    "transactions": len(groups),
                    "mean_group": round(grouped / len(groups), 1),
                    "in_transaction_us_per_append": round(
                        sum(t for _, t in groups) / grouped * 1e6
                    ),
                }
                if groups
                else {}
            ),
            "appends_per_s": round(statistics.median(total / x.seconds for x in rs)),
            "vs_ceiling_median": round(statistics.median(ratios), 3),
            "vs_ceiling_rounds": [round(x, 3) for x in ratios],
            "latency": latency_summary(x for run in rs for x in run.latencies),
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", default="16,64")
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--per-thread", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--output", default="group")
    ap.add_argument(
        "--postgres",
        action="store_true",
        help="PostgreSQL ($SESSIONDB_BENCH_PG) grouped vs per call instead (the SQLite ceiling"
        " stays as the yardstick)",
    )
    args, _ = ap.parse_known_args(argv)  # run_all passes every benchmark the same arguments
    per_thread, rounds = (10, 1) if args.quick else (args.per_thread, args.rounds)
    results: dict[str, Any] = {}
    for i, threads in enumerate(int(x) for x in args.threads.split(",")):
        tasks = args.tasks if i == 0 and not args.postgres else 0  # the async rows once
        rows = measure(threads, tasks, per_thread, rounds, args.postgres)
        results[str(threads)] = rows
        for name, row in rows.items():
            lat = row["latency"]
            print(
                f"T={threads:<3} {name:28} {row['appends_per_s']:7d}/s"
                f"  x{row['vs_ceiling_median']:.2f} ceiling {row['vs_ceiling_rounds']}"
                f"  p50 {lat['p50_ms']:.1f} p99 {lat['p99_ms']:.1f} max {lat['max_ms']:.1f} ms"
                f"{'  errors ' + str(row['errors']) if row['errors'] else ''}"
                + (
                    f"  groups {row['transactions']} of {row['mean_group']}"
                    f", {row['in_transaction_us_per_append']} us/append in the transaction"
                    if "transactions" in row
                    else ""
                ),
                flush=True,
            )
    write_json(
        args.output,
        {
            "benchmark": "group",
            "command": "python -m benchmarks.group " + " ".join(argv or []),
            "machine": machine_facts(),
            "per_thread": per_thread,
            "rounds": rounds,
            "threads": results,
        },
    )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
