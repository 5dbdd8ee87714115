"""The async store: 64 tasks appending, against the sync store and the ceiling, in one run.

The same T x M turns (deterministic 200-2000-byte contents, task t to session ``s<t>``) are
appended, one call per turn, by each system in turn, each on a fresh file:

- ``ceiling``: one bare apsw connection running sessiondb's append SQL (benchmarks/peers.py).
- ``sync-1-thread``: ``sessiondb.open`` and ``store.append`` in one thread, turn after turn.
- ``sync-T-threads``: the sync store shared by T threads (one per task), a connection each.
- ``idle-loop``: no store at all, T tasks that sleep instead: the ticker's noise floor.
- ``sync-in-loop``: T asyncio tasks calling the *sync* store directly (what the async store
  exists to avoid: each call blocks the event loop).
- ``aio-<loop>-w<N>``: T tasks on ``sessiondb.aio.open(path, workers=N)``.
- ``to_thread-limit<N>``: T asyncio tasks handing each sync append to anyio's shared thread
  pool with a per-store ``CapacityLimiter(N)`` — the design docs/adr/0008-async-store.md weighed.
  ``-busy-pool``: the same while 16 other tasks of the program use that pool too (file I/O, a
  sync client), which spreads the store's calls over more threads, each with its connection;
  ``aio-asyncio-w2-busy-pool`` is the async store in that program.

Per system: appends/s (median of the rounds, systems interleaved within a round), per-call
latency p50/p99/max (all calls of all rounds), the connections the store had opened at the end,
and, for the event-loop systems, how late a ticker task that sleeps 1 ms at a time wakes up (p99
and max lag): the loop must not block while appends run. Ratios against the ceiling and the
sync store come from the same run. Then the appends of 16 tasks while another task imports a
20 000-turn transcript, with 1 and 2 workers (head-of-line blocking), and what one awaited call
costs over the sync call (one task, sequential short reads), through the async store and through
``to_thread``.

    python -m benchmarks.aio [--quick] [--tasks 64] [--per-task 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from benchmarks.common import fresh_dir, latency_summary, machine_facts, turn, write_json

TICK = 0.001


class Run:
    """One system's figures in one round."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.connections: int | None = None
        self.seconds = 0.0


def _turns(tasks: int, per_task: int) -> list[list[str]]:
    return [[turn(t, i) for i in range(per_task)] for t in range(tasks)]


def _connections(store: Any) -> int:
    return len(store.backend.engine._slots)


# -- blocking systems --------------------------------------------------------------------------


def ceiling(path: Path, turns: list[list[str]]) -> Run:
    from benchmarks.peers import CeilingAdapter

    run, adapter = Run(), CeilingAdapter()
    adapter.open(path)
    start = time.perf_counter()
    for i in range(len(turns[0])):
        for t, texts in enumerate(turns):
            t0 = time.perf_counter()
            adapter.append(f"s{t}", "user", texts[i])
            run.latencies.append(time.perf_counter() - t0)
    run.seconds = time.perf_counter() - start
    adapter.close()
    run.connections = 1
    return run


def sync_one_thread(path: Path, turns: list[list[str]]) -> Run:
    import sessiondb

    run = Run()
    with sessiondb.open(path / "sessions.db") as store:
        start = time.perf_counter()
        for i in range(len(turns[0])):
            for t, texts in enumerate(turns):
                t0 = time.perf_counter()
                store.append(f"s{t}", "user", texts[i])
                run.latencies.append(time.perf_counter() - t0)
        run.seconds = time.perf_counter() - start
        run.connections = _connections(store)
    return run


def sync_threads(path: Path, turns: list[list[str]]) -> Run:
    import sessiondb

    run, lock = Run(), threading.Lock()
    with sessiondb.open(path / "sessions.db") as store:

        def task(t: int) -> None:
            mine = []
            for text in turns[t]:
                t0 = time.perf_counter()
                store.append(f"s{t}", "user", text)
                mine.append(time.perf_counter() - t0)
            with lock:
                run.latencies.extend(mine)

        with ThreadPoolExecutor(max_workers=len(turns)) as pool:
            start = time.perf_counter()
            list(pool.map(task, range(len(turns))))
            run.seconds = time.perf_counter() - start
        run.connections = _connections(store)
    return run


# -- event-loop systems ------------------------------------------------------------------------

Append = Callable[[str, str], Awaitable[object]]


async def _drive(append: Append, turns: list[list[str]], run: Run) -> None:
    """T tasks appending their turns, and a ticker measuring how late the loop wakes it."""
    done = anyio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await anyio.sleep(TICK)
            run.lags.append(max(0.0, time.perf_counter() - t0 - TICK))

    async def task(t: int) -> None:
        for text in turns[t]:
            t0 = time.perf_counter()
            await append(f"s{t}", text)
            run.latencies.append(time.perf_counter() - t0)

    async with anyio.create_task_group() as outer:
        outer.start_soon(ticker)
        await anyio.sleep(TICK * 5)  # the ticker is running before the first append
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for t in range(len(turns)):
                tg.start_soon(task, t)
        run.seconds = time.perf_counter() - start
        done.set()


def aio_store(backend: str, workers: int) -> Callable[[Path, list[list[str]]], Run]:
    def system(path: Path, turns: list[list[str]]) -> Run:
        import sessiondb.aio

        run = Run()

        async def main() -> None:
            async with sessiondb.aio.open(path / "sessions.db", workers=workers) as store:
                await _drive(lambda sid, text: store.append(sid, "user", text), turns, run)
                run.connections = _connections(store.wrapped)

        anyio.run(main, backend=backend)
        return run

    return system


def aio_busy_pool(workers: int, others: int) -> Callable[[Path, list[list[str]]], Run]:
    """The async store while other tasks use anyio's thread pool (as ``to_thread``'s
    ``others``): its own workers are not that pool, so its connections stay ``workers``."""

    def system(path: Path, turns: list[list[str]]) -> Run:
        import sessiondb.aio

        run = Run()

        async def main() -> None:
            async def other(stop: anyio.Event) -> None:
                while not stop.is_set():
                    await anyio.to_thread.run_sync(time.sleep, 0.001)

            async with sessiondb.aio.open(path / "sessions.db", workers=workers) as store:
                stop = anyio.Event()
                async with anyio.create_task_group() as tg:
                    for _ in range(others):
                        tg.start_soon(other, stop)
                    await _drive(lambda sid, text: store.append(sid, "user", text), turns, run)
                    stop.set()
                run.connections = _connections(store.wrapped)

        anyio.run(main, backend="asyncio")
        return run

    return system


def idle_loop(path: Path, turns: list[list[str]]) -> Run:
    """No store: T tasks that sleep 10 ms per turn instead of appending (about as long as the
    appends take) — the ticker's lag here is the machine's own noise floor (other processes,
    the OS scheduler)."""
    run = Run()

    async def main() -> None:
        async def nothing(sid: str, text: str) -> None:
            await anyio.sleep(0.01)

        await _drive(nothing, turns, run)

    anyio.run(main, backend="asyncio")
    run.connections = 0
    return run


def sync_in_loop(path: Path, turns: list[list[str]]) -> Run:
    import sessiondb

    run = Run()

    async def main() -> None:
        with sessiondb.open(path / "sessions.db") as store:

            async def append(sid: str, text: str) -> None:
                store.append(sid, "user", text)  # blocks the loop for the whole call
                await anyio.sleep(0)

            await _drive(append, turns, run)
            run.connections = _connections(store)

    anyio.run(main, backend="asyncio")
    return run


def to_thread(limit: int, others: int = 0) -> Callable[[Path, list[list[str]]], Run]:
    """``others``: tasks of the same program that use anyio's thread pool for something else
    meanwhile (file I/O, a sync client), as an application does."""

    def system(path: Path, turns: list[list[str]]) -> Run:
        import sessiondb

        run = Run()

        async def main() -> None:
            limiter = anyio.CapacityLimiter(limit)
            with sessiondb.open(path / "sessions.db") as store:

                async def append(sid: str, text: str) -> None:
                    call = functools.partial(store.append, sid, "user", text)
                    await anyio.to_thread.run_sync(call, limiter=limiter)

                async def other(stop: anyio.Event) -> None:
                    while not stop.is_set():
                        await anyio.to_thread.run_sync(time.sleep, 0.001)

                stop = anyio.Event()
                async with anyio.create_task_group() as tg:
                    for _ in range(others):
                        tg.start_soon(other, stop)
                    await _drive(append, turns, run)
                    stop.set()
                run.connections = _connections(store)

        anyio.run(main, backend="asyncio")
        return run

    return system


def handoff_cost(path: Path, calls: int) -> dict[str, float]:
    """What one awaited call adds to the sync call: one task, ``calls`` sequential
    ``count(sid)`` (a short read) through each way, microseconds per call (median of 3)."""
    import sessiondb
    import sessiondb.aio

    def per_call(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls * 1e6

    out: dict[str, list[float]] = {}
    with sessiondb.open(path / "sessions.db") as store:
        store.append("s", "user", "x")
        for _ in range(3):
            out.setdefault("sync", []).append(per_call(lambda: store.count("s")))

    async def awaited(backend: str) -> None:
        async with sessiondb.aio.open(path / "sessions.db") as astore:
            limiter = anyio.CapacityLimiter(2)
            sync_store = astore.wrapped
            await astore.count("s")
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(calls):
                    await astore.count("s")
                us = (time.perf_counter() - t0) / calls * 1e6
                out.setdefault(f"aio-{backend}", []).append(us)
                t0 = time.perf_counter()
                for _ in range(calls):
                    await anyio.to_thread.run_sync(sync_store.count, "s", limiter=limiter)
                us = (time.perf_counter() - t0) / calls * 1e6
                out.setdefault(f"to_thread-{backend}", []).append(us)

    anyio.run(awaited, "asyncio", backend="asyncio")
    try:
        import trio  # noqa: F401

        anyio.run(awaited, "trio", backend="trio")
    except ImportError:
        pass
    return {name: round(statistics.median(v), 1) for name, v in out.items()}


def head_of_line(folder: Path, workers: int, messages: int) -> dict[str, Any]:
    """One task imports a transcript of ``messages`` turns (one call, a few seconds) while 16
    tasks append: how long the appends wait, with ``workers`` threads. With one, every append
    waits behind the whole import; with two, only for the import's next short transaction."""
    import sessiondb
    import sessiondb.aio

    source = folder / "big.jsonl"
    if not source.exists():
        with sessiondb.open(folder / "source.db") as store:
            turns = [{"role": "user", "content": turn(0, i)} for i in range(messages)]
            store.append_many("big", turns)
            store.export_jsonl("big", source)
    latencies: list[float] = []
    timing: dict[str, float] = {}

    async def main() -> None:
        async with sessiondb.aio.open(folder / f"w{workers}.db", workers=workers) as store:
            started = anyio.Event()

            async def importer() -> None:
                t0 = time.perf_counter()
                await store.import_jsonl(source, progress=lambda done, total: started.set())
                timing["import_s"] = time.perf_counter() - t0

            async def appender(t: int) -> None:
                for i in range(20):
                    t0 = time.perf_counter()
                    await store.append(f"live-{t}", "user", turn(t, i))
                    latencies.append(time.perf_counter() - t0)

            async with anyio.create_task_group() as tg:
                tg.start_soon(importer)
                await started.wait()
                for t in range(16):
                    tg.start_soon(appender, t)

    anyio.run(main, backend="asyncio")
    return {
        "workers": workers,
        "import_s": round(timing["import_s"], 2),
        "append_latency": latency_summary(latencies),
    }


def systems(tasks: int) -> dict[str, Callable[[Path, list[list[str]]], Run]]:
    out: dict[str, Callable[[Path, list[list[str]]], Run]] = {
        "ceiling": ceiling,
        "idle-loop": idle_loop,
        "sync-1-thread": sync_one_thread,
        f"sync-{tasks}-threads": sync_threads,
        "sync-in-loop": sync_in_loop,
        "aio-asyncio-w1": aio_store("asyncio", 1),
        "aio-asyncio-w2": aio_store("asyncio", 2),
        "aio-asyncio-w4": aio_store("asyncio", 4),
        "to_thread-limit2": to_thread(2),
        "to_thread-limit2-busy-pool": to_thread(2, others=16),
        "aio-asyncio-w2-busy-pool": aio_busy_pool(2, others=16),
    }
    try:
        import trio  # noqa: F401

        out["aio-trio-w2"] = aio_store("trio", 2)
    except ImportError:  # the bench environment may lack trio: that system is skipped
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--per-task", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args, _ = ap.parse_known_args(argv)  # run_all passes every benchmark the same arguments
    per_task, rounds = (10, 1) if args.quick else (args.per_task, args.rounds)
    turns = _turns(args.tasks, per_task)
    table = systems(args.tasks)
    runs: dict[str, list[Run]] = {name: [] for name in table}
    for r in range(rounds):
        for name, system in table.items():  # interleaved: noise hits every system alike
            runs[name].append(system(fresh_dir("aio", f"{name}-{r}"), turns))
    total = args.tasks * per_task
    rows: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        rate = statistics.median(total / run.seconds for run in rs)
        row: dict[str, Any] = {
            "appends_per_s": round(rate),
            "latency": latency_summary(x for run in rs for x in run.latencies),
            "connections": max(run.connections or 0 for run in rs),
        }
        lags = [x for run in rs for x in run.lags]
        if lags:
            row["loop_lag"] = latency_summary(lags)
        rows[name] = row
    base = rows["ceiling"]["appends_per_s"]
    sync1 = rows["sync-1-thread"]["appends_per_s"]
    threads = rows[f"sync-{args.tasks}-threads"]["appends_per_s"]
    for name, row in rows.items():
        if name == "idle-loop":  # appends nothing: only its loop lag means anything
            del row["appends_per_s"], row["latency"], row["connections"]
            continue
        row["vs_ceiling"] = round(row["appends_per_s"] / base, 3)
        row["vs_sync_1_thread"] = round(row["appends_per_s"] / sync1, 3)
        row["vs_sync_threads"] = round(row["appends_per_s"] / threads, 3)
    for name, row in rows.items():
        lag = row.get("loop_lag", {})
        lag_text = f"  loop lag p99 {lag['p99_ms']:.2f} max {lag['max_ms']:.2f} ms" if lag else ""
        if "appends_per_s" not in row:
            print(f"{name:26}{lag_text}", flush=True)
            continue
        print(
            f"{name:26} {row['appends_per_s']:6d}/s  x{row['vs_ceiling']:.2f} ceiling"
            f"  x{row['vs_sync_1_thread']:.2f} sync  p99 {row['latency']['p99_ms']:7.2f} ms"
            f"  conns {row['connections']:2d}{lag_text}",
            flush=True,
        )
    folder = fresh_dir("aio", "head-of-line")
    big = 2000 if args.quick else 20000
    blocking = [head_of_line(folder, w, big) for w in (1, 2)]
    for row in blocking:
        print(f"appends beside an import of {big} turns: {json.dumps(row)}", flush=True)
    handoff = handoff_cost(fresh_dir("aio", "handoff"), 300 if args.quick else 3000)
    print("one call, microseconds:", json.dumps(handoff), flush=True)
    write_json(
        "aio",
        {
            "machine": machine_facts(),
            "call_us": handoff,
            "beside_an_import": blocking,
            "tasks": args.tasks,
            "per_task": per_task,
            "rounds": rounds,
            "systems": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
