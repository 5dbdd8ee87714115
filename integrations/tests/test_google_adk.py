"""google-adk publishes no test suite (its sdist holds no tests), so this is ours, from
``BaseSessionService``'s documented contract and what ADK's own SQLite service does — then what
no ADK test does: several processes on one session, a killed writer, a re-sent event."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from conftest import kill_mid_stream, run_all
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.sessions.base_session_service import GetSessionConfig

from integrations.workers import adk_delta, adk_event, adk_role, adk_writer
from sessiondb.integrations.adk import SessionDBSessionService

pytestmark = pytest.mark.anyio

KEY = {"app_name": "app", "user_id": "u", "session_id": "s"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_create_get_list_delete(db: str) -> None:
    svc = SessionDBSessionService(db)
    made = await svc.create_session(app_name="app", user_id="u", session_id="s", state={"a": 1})
    assert (made.id, made.state, made.events) == ("s", {"a": 1}, [])
    with pytest.raises(AlreadyExistsError):
        await svc.create_session(app_name="app", user_id="u", session_id="s")
    other = await svc.create_session(app_name="app", user_id="v")
    assert other.id  # an id was made
    await svc.create_session(app_name="app2", user_id="u", session_id="s")
    got = await svc.get_session(**KEY)
    assert got is not None and got.state == {"a": 1}
    assert await svc.get_session(app_name="app", user_id="u", session_id="nope") is None
    assert [s.id for s in (await svc.list_sessions(app_name="app", user_id="u")).sessions] == ["s"]
    everyone = (await svc.list_sessions(app_name="app")).sessions
    assert sorted((s.user_id, s.id) for s in everyone) == sorted([("u", "s"), ("v", other.id)])
    await svc.delete_session(**KEY)
    assert await svc.get_session(**KEY) is None
    assert await svc.get_session(app_name="app2", user_id="u", session_id="s") is not None


async def test_events_and_the_three_scopes_of_state(db: str) -> None:
    svc = SessionDBSessionService(db)
    s = await svc.create_session(**KEY, state={"app:mode": "x", "user:name": "Ada"})
    delta = {"count": 1, "app:mode": "y", "user:lang": "en", "temp:scratch": 1, "gone": None}
    event = await svc.append_event(s, adk_event("agent", 0, delta))
    assert "temp:scratch" not in event.actions.state_delta
    assert s.state["count"] == 1 and s.state["app:mode"] == "y"
    got = await svc.get_session(**KEY)
    assert got is not None
    assert got.state == {
        "count": 1,
        "gone": None,  # None is a value in ADK's state
        "app:mode": "y",
        "user:name": "Ada",
        "user:lang": "en",
    }
    assert [e.id for e in got.events] == ["agent-0"]
    assert got.events[0].content.parts[0].text == "agent says 0"
    # app state is the app's, user state the user's, in their other sessions too
    other = await svc.create_session(app_name="app", user_id="w")
    assert other.state == {"app:mode": "y"}
    mine = await svc.create_session(app_name="app", user_id="u")
    assert mine.state == {"app:mode": "y", "user:name": "Ada", "user:lang": "en"}


async def test_partial_events_are_not_stored_and_reads_can_be_bounded(db: str) -> None:
    svc = SessionDBSessionService(db)
    s = await svc.create_session(**KEY)
    partial = adk_event("agent", 99)
    partial.partial = True
    await svc.append_event(s, partial)
    for i in range(5):
        await svc.append_event(s, adk_event("agent", i))
    got = await svc.get_session(**KEY, config=GetSessionConfig(num_recent_events=2))
    assert got is not None and [e.id for e in got.events] == ["agent-3", "agent-4"]
    got = await svc.get_session(**KEY, config=GetSessionConfig(after_timestamp=1_700_000_003))
    assert got is not None and [e.id for e in got.events] == ["agent-3", "agent-4"]


async def test_a_stale_session_object_writes_nothing(db: str) -> None:
    svc, other = SessionDBSessionService(db), SessionDBSessionService(db)
    await svc.create_session(**KEY)
    mine = await svc.get_session(**KEY)
    theirs = await other.get_session(**KEY)
    assert mine is not None and theirs is not None
    await other.append_event(theirs, adk_event("them", 0, {"k": "theirs"}))
    with pytest.raises(ValueError, match="stale"):
        await svc.append_event(mine, adk_event("me", 0, {"k": "mine"}))
    got = await svc.get_session(**KEY)
    assert got is not None and [e.id for e in got.events] == ["them-0"]
    assert got.state == {"k": "theirs"}


def _events(db: str) -> list[Any]:
    return _session(db).events


def _session(db: str) -> Any:
    async def read() -> Any:
        got = await SessionDBSessionService(db).get_session(**KEY)
        assert got is not None
        return got

    return anyio.run(read)


def _scopes_follow_the_newest_event(db: str, author: str) -> None:
    """Every scope of the state holds the delta of the newest stored event of ``author``: the
    event and its app: and user: changes committed together (never one without the other)."""
    session = _session(db)
    mine = [e for e in session.events if e.author == author]
    newest = int(mine[-1].id.rsplit("-", 1)[1]) if mine else None
    for scope in ("", "user:", "app:"):
        assert session.state.get(f"{scope}last_{author}") == newest, (scope, newest)


def _create(db: str) -> None:
    async def make() -> None:
        await SessionDBSessionService(db).create_session(**KEY)

    anyio.run(make)


def test_two_processes_append_events_to_one_session(db: str) -> None:
    _create(db)
    run_all(adk_writer, [(db, author, 40) for author in ("a", "b")])
    ids = [e.id for e in _events(db)]
    assert len(ids) == len(set(ids)) == 80
    for author in ("a", "b"):
        assert [i for i in ids if i.startswith(author)] == [f"{author}-{i}" for i in range(40)]
        _scopes_follow_the_newest_event(db, author)


def test_a_reader_never_sees_an_event_without_its_app_and_user_state(db: str) -> None:
    """Another process reads while one writes: the event and its app:/user: delta are one
    transaction, so the shared state is never behind the newest event a read saw."""
    _create(db)
    run_all(adk_role, [(db, "writer", "w", 60), (db, "reader", "w", 60)])
    _scopes_follow_the_newest_event(db, "w")


@pytest.mark.parametrize("seed", [1, 2])
def test_a_killed_writer_and_a_resent_event_double_nothing(db: str, seed: int) -> None:
    _create(db)
    last = kill_mid_stream(adk_writer, (db, "k", 10_000), seed)
    _scopes_follow_the_newest_event(db, "k")  # killed between an event and its state: never

    async def resend() -> None:  # the acked event and the one in flight, sent again
        svc = SessionDBSessionService(db)
        for i in (last, last + 1):
            session = await svc.get_session(**KEY)
            await svc.append_event(session, adk_event("k", i, adk_delta("k", i)))

    anyio.run(resend)
    ids = Counter(e.id for e in _events(db))
    assert set(ids.values()) == {1}
    assert set(ids) == {f"k-{i}" for i in range(last + 2)}
    _scopes_follow_the_newest_event(db, "k")
