"""The anchors of benchmarks/postgres.py: other agent frameworks' own PostgreSQL stores, each
doing what it natively does to add one message to a conversation, on the same server.

* ``langgraph``: ``PostgresSaver.put`` (langgraph-checkpoint-postgres, psycopg 3) of a checkpoint
  whose ``messages`` channel holds the whole conversation with one more message — how a graph
  with a message-list state checkpoints. An own thread keeps its state in memory (one ``put``
  per message); on a shared thread each message is ``get_tuple`` (the latest checkpoint) and
  then ``put``, and since nothing serialises writers, concurrent ones drop each other's messages
  (counted: ``messages_in_last_checkpoint``).
* ``openai-agents``: ``SQLAlchemySession.add_items`` (one item) over SQLAlchemy's asyncio engine
  with asyncpg.
* ``google-adk``: ``DatabaseSessionService.append_event`` (one user event) over SQLAlchemy's
  asyncio engine with asyncpg. A session object is a single writer's view: after another
  process appended, ``append_event`` raises ``StaleSessionError``; the writer then re-reads the
  session (``get_session`` with one recent event) and retries, inside the timed append
  (counted: ``stale_retries``).

All three commit with the server's ``synchronous_commit`` (``on`` here): the durability of
sessiondb's ``durability="full"``. Their packages are pinned in
benchmarks/requirements-postgres.txt; each writer function runs in its own process and returns its
per-append latencies.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.pg_common import BASE, admin

TEXT = "retry the deploy with exponential backoff after the gateway timed out " * 4
ANCHORS = (
    "langgraph PostgresSaver",
    "openai-agents SQLAlchemySession",
    "adk DatabaseSessionService",
)
# What each anchor's tables are named (for the row count after a case).
_TABLES = {
    "langgraph PostgresSaver": "checkpoints",
    "openai-agents SQLAlchemySession": "agent_messages",
    "adk DatabaseSessionService": "events",
}


def _psycopg_url(schema: str) -> str:
    return f"{BASE}{'&' if '?' in BASE else '?'}options=-csearch_path%3D{schema}"


def _async_engine(schema: str) -> Any:
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(_asyncpg_url(), **_engine_kwargs(schema))


def _asyncpg_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(BASE).set(drivername="postgresql+asyncpg").render_as_string(False)


def _engine_kwargs(schema: str) -> dict[str, Any]:
    return {"connect_args": {"server_settings": {"search_path": schema}}}


# --- setup in the parent, once per case (tables made before the writers start) ---------------


def prepare(anchor: str, schema: str) -> None:
    if anchor == "langgraph PostgresSaver":
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(_psycopg_url(schema)) as saver:
            saver.setup()
    elif anchor == "openai-agents SQLAlchemySession":
        asyncio.run(_agents_prepare(schema))
    elif anchor == "adk DatabaseSessionService":
        asyncio.run(_adk_prepare(schema))
    else:
        raise ValueError(anchor)


async def _agents_prepare(schema: str) -> None:
    from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

    engine = _async_engine(schema)
    s = SQLAlchemySession("setup", engine=engine, create_tables=True)
    await s.add_items([{"role": "user", "content": "setup"}])
    await engine.dispose()


async def _adk_prepare(schema: str) -> None:
    from google.adk.sessions import DatabaseSessionService

    service = DatabaseSessionService(_asyncpg_url(), **_engine_kwargs(schema))
    await service.create_session(app_name="bench", user_id="u", session_id="shared")
    await service.close()


def stored(anchor: str, schema: str) -> dict[str, int]:
    """Rows the anchor holds after a case (and, for LangGraph, the messages in the newest
    checkpoint of the shared thread): what a reader checks writes against."""
    table = _TABLES[anchor]
    with admin() as conn:
        conn.execute(f"SET search_path TO {schema}")  # a name made by pg_common, never input
        n = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    out = {"rows": int(n[0]) if n else 0}
    if anchor == "langgraph PostgresSaver":
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(_psycopg_url(schema)) as saver:
            cfg = {"configurable": {"thread_id": "shared", "checkpoint_ns": ""}}
            tup = saver.get_tuple(cfg)  # type: ignore[arg-type]
            if tup is not None:
                out["messages_in_last_checkpoint"] = len(
                    tup.checkpoint["channel_values"].get("messages", [])
                )
    return out


# --- the writers (one per process) -----------------------------------------------------------


def write(
    anchor: str, schema: str, worker: int, n: int, shared: bool, start: Any
) -> tuple[list[float], dict[str, int]]:
    if anchor == "langgraph PostgresSaver":
        return _langgraph(schema, worker, n, shared, start)
    if anchor == "openai-agents SQLAlchemySession":
        return asyncio.run(_agents(schema, worker, n, shared, start))
    if anchor == "adk DatabaseSessionService":
        return asyncio.run(_adk(schema, worker, n, shared, start))
    raise ValueError(anchor)


def _langgraph(
    schema: str, worker: int, n: int, shared: bool, start: Any
) -> tuple[list[float], dict[str, int]]:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6
    from langgraph.checkpoint.postgres import PostgresSaver

    thread = "shared" if shared else f"own-{worker}"
    with PostgresSaver.from_conn_string(_psycopg_url(schema)) as saver:
        config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        messages: list[dict[str, str]] = []
        version: Any = None

        def append(text: str) -> None:
            nonlocal config, messages, version
            if shared:  # the thread's newest checkpoint: other writers may have added to it
                tup = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
                if tup is not None:
                    config = tup.config
                    messages = list(tup.checkpoint["channel_values"].get("messages", []))
                    version = tup.checkpoint["channel_versions"].get("messages")
            messages = [*messages, {"role": "user", "content": text}]
            version = saver.get_next_version(version, None)
            ck = empty_checkpoint()
            ck["id"] = str(uuid6(clock_seq=worker))
            ck["channel_values"] = {"messages": messages}
            ck["channel_versions"] = {"messages": version}
            config = saver.put(
                config,
                ck,
                {"source": "loop", "step": len(messages), "parents": {}},
                {"messages": version},
            )

        append("warm-up")
        t_end = start.wait()
        lat = []
        for i in range(n):
            if time.perf_counter() > t_end:  # the case's time budget (Start)
                break
            t0 = time.perf_counter()
            append(f"{worker}/{i} {TEXT}")
            lat.append(time.perf_counter() - t0)
    return lat, {}


async def _agents(
    schema: str, worker: int, n: int, shared: bool, start: Any
) -> tuple[list[float], dict[str, int]]:
    from agents.extensions.memory.sqlalchemy_session import SQLAlchemySession

    engine = _async_engine(schema)
    session = SQLAlchemySession("shared" if shared else f"own-{worker}", engine=engine)
    await session.add_items([{"role": "user", "content": "warm-up"}])
    t_end = start.wait()
    lat = []
    for i in range(n):
        if time.perf_counter() > t_end:  # the case's time budget (Start)
            break
        t0 = time.perf_counter()
        await session.add_items([{"role": "user", "content": f"{worker}/{i} {TEXT}"}])
        lat.append(time.perf_counter() - t0)
    await engine.dispose()
    return lat, {}


async def _adk(
    schema: str, worker: int, n: int, shared: bool, start: Any
) -> tuple[list[float], dict[str, int]]:
    from google.adk.events import Event
    from google.adk.sessions import DatabaseSessionService
    from google.adk.sessions.base_session_service import GetSessionConfig
    from google.genai import types

    service = DatabaseSessionService(_asyncpg_url(), **_engine_kwargs(schema))
    if shared:
        got = await service.get_session(app_name="bench", user_id="u", session_id="shared")
        assert got is not None
        session = got
    else:
        session = await service.create_session(
            app_name="bench", user_id="u", session_id=f"own-{worker}"
        )
    retries = 0

    async def append(text: str) -> None:
        nonlocal session, retries
        event = Event(
            author="user",
            invocation_id=f"{worker}",
            content=types.Content(role="user", parts=[types.Part(text=text)]),
        )
        while True:
            try:
                await service.append_event(session, event)
                return
            except Exception as e:  # StaleSessionError: another process appended
                if type(e).__name__ != "StaleSessionError":
                    raise
                retries += 1
                got = await service.get_session(
                    app_name="bench",
                    user_id="u",
                    session_id=session.id,
                    config=GetSessionConfig(num_recent_events=1),
                )
                assert got is not None
                session = got

    await append("warm-up")
    t_end = start.wait()
    retries = 0
    lat = []
    for i in range(n):
        if time.perf_counter() > t_end:  # the case's time budget (Start)
            break
        t0 = time.perf_counter()
        await append(f"{worker}/{i} {TEXT}")
        lat.append(time.perf_counter() - t0)
    await service.close()
    return lat, {"stale_retries": retries}
