"""The framework adapters against the frameworks' own stores, in one run: appends and history
loads through each framework's interface at 1 and 16 processes.

- ``openai-agents``: ``SQLiteSession`` (the SDK's own SQLite store) vs ``SessionDBSession``
  (sessiondb.integrations.openai_agents), both through ``add_items`` / ``get_items``.
- ``claude-agent-sdk``: the SDK ships no SQLite store (only ``InMemorySessionStore``, one
  process, and example Postgres/Redis/S3 stores), so ``SessionDBSessionStore`` is measured
  against the sessiondb store it sits on (``append_many`` / ``messages`` of the same rows
  through ``sessiondb.aio``): the adapter's own cost.

- ``langgraph``: ``SqliteSaver`` (langgraph-checkpoint-sqlite, LangGraph's own SQLite saver)
  vs ``SessionDBSaver``, both sync: a step is ``put`` + ``put_writes``, a load is ``list`` of
  the whole thread.

- ``google-adk``: ``SqliteSessionService`` (ADK's own SQLite service) vs
  ``SessionDBSessionService``: an append is ``append_event`` with a state delta, a load
  ``get_session``.

Each of P processes (spawned, started together) writes its own session in one shared file:
``--turns`` calls of one item each (latency per call), then ``--loads`` reads of its whole
history. Per system and P: appends/s over all processes, append and load latency p50/p99/max.
Ratios are sessiondb's figure over the peer's from the same run. Needs the frameworks: run it in
their environments (``make integrations`` makes them)::

    .venv-int-openai-agents/bin/python -m benchmarks.adapters --framework openai-agents
    .venv-int-claude-agent-sdk/bin/python -m benchmarks.adapters --framework claude-agent-sdk
    .venv-int-langgraph/bin/python -m benchmarks.adapters --framework langgraph
    .venv-int-google-adk/bin/python -m benchmarks.adapters --framework google-adk
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from typing import Any

from .common import fresh_dir, latency_summary, machine_facts, turn, write_json

SYSTEMS = {
    "openai-agents": ("openai-sqlite-session", "sessiondb-openai-adapter"),
    "claude-agent-sdk": ("sessiondb-aio-direct", "sessiondb-claude-adapter"),
    "langgraph": ("langgraph-sqlite-saver", "sessiondb-langgraph-saver"),
    "google-adk": ("adk-sqlite-session-service", "sessiondb-adk-service"),
}


async def _run(system: str, path: str, sid: str, turns: int, loads: int, worker: int) -> Any:
    if system == "openai-sqlite-session":
        from agents.memory import SQLiteSession

        s: Any = SQLiteSession(sid, path)
        add = lambda i: s.add_items([{"role": "user", "content": turn(worker, i)}])  # noqa: E731
        load, close = s.get_items, s.close
    elif system == "sessiondb-openai-adapter":
        from sessiondb.integrations.openai_agents import SessionDBSession

        s = SessionDBSession(sid, path)
        add = lambda i: s.add_items([{"role": "user", "content": turn(worker, i)}])  # noqa: E731
        load, close = s.get_items, None
    elif system == "sessiondb-claude-adapter":
        from sessiondb.integrations.claude_agent_sdk import SessionDBSessionStore

        s = SessionDBSessionStore(path)
        key = {"project_key": "bench", "session_id": sid}
        add = lambda i: s.append(key, [_entry(worker, i)])  # noqa: E731
        load, close = (lambda: s.load(key)), None
    elif system in ("langgraph-sqlite-saver", "sessiondb-langgraph-saver"):
        from integrations.workers import langgraph_checkpoint

        if system == "langgraph-sqlite-saver":
            import sqlite3

            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(path, check_same_thread=False, timeout=60)
            s = SqliteSaver(conn)
            s.setup()
        else:
            from sessiondb.integrations.langgraph import SessionDBSaver

            s = SessionDBSaver(path)
        thread = {"configurable": {"thread_id": sid}}

        async def add(i: int) -> None:  # one step: a checkpoint and its pending write
            config, checkpoint, versions = langgraph_checkpoint(sid, "", i)
            checkpoint["channel_values"] = {"n": turn(worker, i)}
            saved = s.put(config, checkpoint, {"step": i}, versions)
            s.put_writes(saved, [("n", i)], f"task-{i}")

        async def load() -> None:  # the thread's whole history
            list(s.list(thread))

        close = None
    elif system in ("adk-sqlite-session-service", "sessiondb-adk-service"):
        from integrations.workers import adk_event

        if system == "adk-sqlite-session-service":
            from google.adk.sessions.sqlite_session_service import SqliteSessionService

            s = SqliteSessionService(path)
        else:
            from sessiondb.integrations.adk import SessionDBSessionService

            s = SessionDBSessionService(path)
        ids = {"app_name": "bench", "user_id": "u", "session_id": sid}
        session = await s.create_session(**ids)

        async def add(i: int) -> None:  # one event with a state change
            await s.append_event(session, adk_event(f"w{worker}", i, {"turn": turn(worker, i)}))

        async def load() -> None:
            await s.get_session(**ids)

        close = None
    else:  # sessiondb-aio-direct: the same rows the Claude adapter writes, without it
        import sessiondb.aio
        from sessiondb.integrations.claude_agent_sdk import _row

        s = await sessiondb.aio.open(path)
        add = lambda i: s.append_many(sid, [_row(_entry(worker, i))])  # noqa: E731
        load, close = (lambda: s.messages(sid)), None
    appends, reads = [], []
    for i in range(turns):
        t = time.perf_counter()
        await add(i)
        appends.append(time.perf_counter() - t)
    for _ in range(loads):
        t = time.perf_counter()
        await load()
        reads.append(time.perf_counter() - t)
    if close is not None:
        close()
    elif hasattr(s, "aclose"):
        await s.aclose()
    return appends, reads


def _entry(worker: int, i: int) -> dict[str, Any]:
    return {
        "type": "user",
        "uuid": f"{worker}-{i}",
        "sessionId": f"s{worker}",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "message": {"role": "user", "content": turn(worker, i)},
    }


def _worker(
    system: str, path: str, worker: int, turns: int, loads: int, start: Any, out: Any
) -> None:
    start.wait()
    t0 = time.perf_counter()
    appends, reads = asyncio.run(_run(system, path, f"s{worker}", turns, loads, worker))
    out.put((appends, reads, sum(appends), time.perf_counter() - t0))


def measure(system: str, procs: int, turns: int, loads: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    path = str(fresh_dir("adapters", system, str(procs)) / "bench.db")
    start, out = ctx.Event(), ctx.Queue()
    ps = [
        ctx.Process(target=_worker, args=(system, path, w, turns, loads, start, out))
        for w in range(procs)
    ]
    for p in ps:
        p.start()
    time.sleep(1.0)  # let every child import before the start signal
    start.set()
    results = [out.get(timeout=600) for _ in ps]
    for p in ps:
        p.join(60)
    appends = sorted(x for r in results for x in r[0])
    reads = sorted(x for r in results for x in r[1])
    busy = max(r[2] for r in results)  # the slowest process's time spent appending
    return {
        "processes": procs,
        "appends_per_s": round(procs * turns / busy, 1),
        "append_latency": latency_summary(appends),
        "load_latency": latency_summary(reads),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--framework", choices=sorted(SYSTEMS), required=True)
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--loads", type=int, default=20)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    peer, ours = SYSTEMS[args.framework]
    rows: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for procs in args.procs:
        for system in (peer, ours):
            rows[f"{system}@{procs}"] = r = measure(system, procs, args.turns, args.loads)
            print(
                system,
                procs,
                r["appends_per_s"],
                "appends/s; load p50 ms",
                r["load_latency"]["p50_ms"],
            )
        a, b = rows[f"{ours}@{procs}"], rows[f"{peer}@{procs}"]
        ratios[str(procs)] = {
            "appends_per_s": round(a["appends_per_s"] / b["appends_per_s"], 2),
            "load_p50": round(_p(a, "load_latency", "p50") / _p(b, "load_latency", "p50"), 2),
            "append_p99": round(_p(a, "append_latency", "p99") / _p(b, "append_latency", "p99"), 2),
        }
    payload = {
        "machine": machine_facts(),
        "framework": args.framework,
        "turns": args.turns,
        "loads": args.loads,
        "systems": rows,
        f"ratios_{ours}_over_{peer}": ratios,
    }
    print(write_json(f"adapters_{args.framework}", payload), ratios)


def _p(row: dict[str, Any], field: str, q: str) -> float:
    summary = row[field]
    return float(next(v for k, v in summary.items() if k.startswith(q)))


if __name__ == "__main__":
    main()
