"""Child processes of integrations/tests/: writers going through a framework's own interface."""

from __future__ import annotations

import os
from typing import Any

import anyio


def openai_writer(
    path: str,
    session_id: str,
    tag: str,
    batches: int,
    size: int,
    key_by_id: bool = False,
    acks: Any = None,
) -> None:
    """Add ``batches`` batches of ``size`` items to one session; report each acked batch."""
    from sessiondb.integrations.openai_agents import SessionDBSession

    async def run() -> None:
        session = SessionDBSession(session_id, path, key_by_id=key_by_id)
        for b in range(batches):
            await session.add_items(openai_batch(tag, b, size))
            if acks is not None:
                acks.send(b)
        await session.aclose()

    anyio.run(run)


def openai_batch(tag: str, b: int, size: int) -> list[dict[str, Any]]:
    return [
        {"id": f"{tag}-{b}-{j}", "type": "message", "role": "user", "content": f"{tag} {b} {j}"}
        for j in range(size)
    ]


def claude_writer(
    path: str, session_id: str, tag: str, batches: int, size: int, acks: Any = None
) -> None:
    """Append ``batches`` batches of ``size`` entries to one transcript; report each acked one."""
    from sessiondb.integrations.claude_agent_sdk import SessionDBSessionStore

    async def run() -> None:
        store = SessionDBSessionStore(path)
        for b in range(batches):
            await store.append(claude_key(session_id), claude_batch(tag, b, size))
            if acks is not None:
                acks.send(b)
        await store.aclose()

    anyio.run(run)


def claude_key(session_id: str) -> dict[str, str]:
    return {"project_key": "proj", "session_id": session_id}


def claude_batch(tag: str, b: int, size: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "user",
            "uuid": f"{tag}-{b}-{j}",
            "sessionId": "s",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "message": {"role": "user", "content": f"{tag} {b} {j} pid {os.getpid()}"},
        }
        for j in range(size)
    ]


def langgraph_checkpoint(thread_id: str, ns: str, i: int) -> tuple[Any, Any, Any]:
    """Step ``i`` of a thread: the config to put it under, the checkpoint, its new versions."""
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint = empty_checkpoint()
    checkpoint["id"] = f"{i:08d}"
    checkpoint["channel_values"] = {"n": i}
    checkpoint["channel_versions"] = {"n": i + 1}
    parent = f"{i - 1:08d}" if i else None
    conf = {"thread_id": thread_id, "checkpoint_ns": ns}
    if parent:
        conf["checkpoint_id"] = parent
    return {"configurable": conf}, checkpoint, {"n": i + 1}


def langgraph_writer(path: str, thread_id: str, ns: str, steps: int, acks: Any = None) -> None:
    """Put ``steps`` checkpoints (each with one pending write) on one thread namespace."""
    from sessiondb.integrations.langgraph import SessionDBSaver

    saver = SessionDBSaver(path)
    for i in range(steps):
        config, checkpoint, versions = langgraph_checkpoint(thread_id, ns, i)
        saved = saver.put(config, checkpoint, {"step": i}, versions)
        saver.put_writes(saved, [("n", i)], f"task-{i}")
        if acks is not None:
            acks.send(i)


def langgraph_writer_or_pruner(path: str, role: str, steps: int) -> None:
    """Thread "t": put ``steps`` checkpoints (``role="write"``), or prune it to its latest
    checkpoint ``steps`` times meanwhile (``role="prune"``)."""
    import time

    from sessiondb.integrations.langgraph import SessionDBSaver

    if role == "write":
        langgraph_writer(path, "t", "", steps)
        return
    from sessiondb import StaleSession

    saver = SessionDBSaver(path)
    pruned = 0
    for _ in range(steps):
        try:
            saver.prune(["t"], strategy="keep_latest")
            pruned += 1
        except StaleSession:
            pass  # the writer won every one of the bounded attempts: nothing removed, go on
        time.sleep(0.005)
    if pruned == 0:
        raise SystemExit("no prune got between the writer's checkpoints")


def adk_event(author: str, i: int, delta: dict[str, Any] | None = None) -> Any:
    from google.adk.events.event import Event, EventActions
    from google.genai import types

    return Event(
        id=f"{author}-{i}",
        invocation_id=f"inv-{author}-{i}",
        author=author,
        content=types.Content(role="user", parts=[types.Part(text=f"{author} says {i}")]),
        actions=EventActions(state_delta=delta or {}),
        timestamp=1_700_000_000 + i,  # a re-sent event is the same event
    )


def adk_delta(author: str, i: int) -> dict[str, Any]:
    """Event ``i``'s state delta in all three scopes (session, user, app)."""
    return {f"last_{author}": i, f"user:last_{author}": i, f"app:last_{author}": i}


def adk_role(path: str, role: str, author: str, events: int) -> None:
    """A writer that starts once the reader reads (``<path>.reading`` exists), or the reader."""
    import os
    import time

    if role == "writer":
        deadline = time.monotonic() + 120  # bounded: the reader may have failed to start
        while not os.path.exists(path + ".reading") and time.monotonic() < deadline:
            time.sleep(0.01)
        adk_writer(path, author, events)
    else:
        adk_reader(path, author, events)


def adk_reader(path: str, author: str, events: int) -> None:
    """Read app/u/s until ``author``'s last event is there; each read takes the events first
    and the state after, so the app: and user: state can never be behind the newest event it
    saw — unless an event was committed without its state (exit 1 then)."""
    from sessiondb.integrations.adk import SessionDBSessionService

    async def run() -> None:
        service = SessionDBSessionService(path)
        newest = -1
        while newest < events - 1:
            session = await service.get_session(app_name="app", user_id="u", session_id="s")
            open(path + ".reading", "a").close()  # the writer waits for it
            assert session is not None
            mine = [int(e.id.rsplit("-", 1)[1]) for e in session.events if e.author == author]
            newest = max(mine, default=-1)
            for scope in ("user:", "app:"):
                seen = session.state.get(f"{scope}last_{author}", -1)
                if seen < newest:
                    raise SystemExit(f"{scope} state {seen} behind event {newest}")

    anyio.run(run)


def adk_writer(path: str, author: str, events: int, acks: Any = None) -> None:
    """Append ``events`` events to app/u/s through the service, re-reading the session when
    another writer made this one's copy stale (what an ADK app does on that error)."""
    from sessiondb.integrations.adk import SessionDBSessionService

    async def run() -> None:
        service = SessionDBSessionService(path)
        session = await service.get_session(app_name="app", user_id="u", session_id="s")
        for i in range(events):
            while True:
                try:
                    await service.append_event(session, adk_event(author, i, adk_delta(author, i)))
                    break
                except ValueError:
                    session = await service.get_session(app_name="app", user_id="u", session_id="s")
            if acks is not None:
                acks.send(i)

    anyio.run(run)
