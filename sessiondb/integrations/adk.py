"""Google ADK's ``BaseSessionService`` on a sessiondb store.

::

    from google.adk.runners import Runner
    from sessiondb.integrations.adk import SessionDBSessionService

    service = SessionDBSessionService("state.db")
    runner = Runner(agent=agent, app_name="app", session_service=service)

An ADK session is a sessiondb session (``adk:<len>:<app>:<len>:<user>:<session id>``: one app's
and one user's sessions are each one range of ids) and each event one message (its author the
role, its text the content, the event itself in ``meta["event"]``, its ``id`` the key: an event
re-sent is stored once). State is the session's meta, one top-level key ``s:<name>`` per state
key (the value wrapped in a list, since ADK's None is a value and a patch's None removes a key):
an event's session-scoped ``state_delta`` is a ``session_meta`` patch of its own append, so the
event and its state change commit together. ``app:`` and ``user:`` state live in the meta of
one session per app (``…/``) and per user, patched by the same append (``other_meta``): an
event and all of its state delta commit together or not at all
(docs/adr/0009-framework-primitives.md; integrations/tests/test_google_adk.py kills writers).

Stale writers: a session read through this service remembers the seq it ended at, and
``append_event`` is a conditional append on it (``expect_last``): a session object that another
writer has moved past raises ``ValueError`` naming it stale, as ADK's own services do, and
nothing is written. A session object this service did not produce falls back to ADK's check of
``last_update_time``.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.events.event import Event
from google.adk.sessions import _session_util
from google.adk.sessions.base_session_service import (
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session
from google.adk.sessions.state import State

from ..errors import SessionExists, StaleSession
from ._common import StoreLike, async_store

SOURCE = "google-adk"
_STALE = (
    "The last_update_time provided in the session object is earlier than the update_time in "
    "storage. Please check if it is a stale session."
)


def _app(app: str) -> str:
    return f"adk:{len(app)}:{app}"


def _user(app: str, user: str) -> str:
    return f"{_app(app)}:{len(user)}:{user}"


def _sid(app: str, user: str, session_id: str) -> str:
    return f"{_user(app, user)}:{session_id}"


def _patch(delta: dict[str, Any]) -> dict[str, Any]:
    return {f"s:{k}": [v] for k, v in delta.items()}


def _state(meta: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    return {prefix + k[2:]: v[0] for k, v in (meta or {}).items() if k.startswith("s:")}


def _text(event: Event) -> str:
    parts = event.content.parts if event.content and event.content.parts else []
    return "\n".join(p.text for p in parts if getattr(p, "text", None))


class SessionDBSessionService(BaseSessionService):  # type: ignore[misc]
    """An ADK session service kept in a sessiondb store (``store``: an async store, a sync
    store, or a path/URL opened here)."""

    def __init__(self, store: StoreLike) -> None:
        self._store = async_store(store)
        # sessiondb session id -> (last_update_time handed out, seq it ended at)
        self._seen: dict[str, tuple[float, int]] = {}

    async def _shared_state(self, app: str, user: str) -> dict[str, Any]:
        app_row = await self._store.get_session(_app(app) + "/")
        user_row = await self._store.get_session(_user(app, user) + "/")
        return {
            **_state(app_row.meta if app_row else None, State.APP_PREFIX),
            **_state(user_row.meta if user_row else None, State.USER_PREFIX),
        }

    @staticmethod
    def _shared_patches(app: str, user: str, deltas: dict[str, Any]) -> dict[str, Any] | None:
        """The ``app:`` and ``user:`` deltas as patches of their sessions' meta."""
        out = {
            sid: _patch(delta)
            for sid, delta in (
                (_app(app) + "/", deltas["app"]),
                (_user(app, user) + "/", deltas["user"]),
            )
            if delta
        }
        return out or None

    async def _patch_shared(self, app: str, user: str, deltas: dict[str, Any]) -> None:
        # A new session's initial app: and user: state (create_session appends no message).
        for sid, patch in (self._shared_patches(app, user, deltas) or {}).items():
            await self._store.ensure_session(sid, source=SOURCE)
            await self._store.update_session(sid, meta_patch=patch)

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        session_id = (session_id or "").strip() or str(uuid.uuid4())
        sid = _sid(app_name, user_id, session_id)
        deltas = _session_util.extract_state_delta(state)
        meta = {"adk": {"app_name": app_name, "user_id": user_id, "id": session_id}}
        try:
            made = await self._store.create_session(
                sid, source=SOURCE, meta={**meta, **_patch(deltas["session"])}
            )
        except SessionExists:
            raise AlreadyExistsError(f"Session with id {session_id} already exists.") from None
        await self._patch_shared(app_name, user_id, deltas)
        self._seen[sid] = (made.updated_at, 0)
        return Session(
            app_name=app_name,
            user_id=user_id,
            id=session_id,
            state={
                **copy.deepcopy(deltas["session"]),
                **await self._shared_state(app_name, user_id),
            },
            last_update_time=made.updated_at,
        )

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        sid = _sid(app_name, user_id, session_id)
        row = await self._store.get_session(sid)
        if row is None:
            return None
        recent = config.num_recent_events if config else None
        found = (
            await self._store.messages(sid, last=recent)
            if recent
            else await self._store.messages(sid)
        )
        events = [Event.model_validate((m.meta or {})["event"]) for m in found]
        if config and config.after_timestamp:
            events = [e for e in events if e.timestamp >= config.after_timestamp]
        self._seen[sid] = (row.updated_at, row.message_count)
        return Session(
            app_name=app_name,
            user_id=user_id,
            id=session_id,
            state={**_state(row.meta), **await self._shared_state(app_name, user_id)},
            events=events,
            last_update_time=row.updated_at,
        )

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        prefix = _user(app_name, user_id) + ":" if user_id is not None else _app(app_name) + ":"
        out = []
        after = prefix[:-1]
        while True:
            page = await self._store.session_ids(after=after, limit=500)
            for sid in page:
                if not sid.startswith(prefix):
                    if sid > prefix:
                        page = []
                        break
                    continue
                row = await self._store.get_session(sid)
                adk = (row.meta or {}).get("adk") if row is not None else None
                if row is None or not isinstance(adk, dict):
                    continue  # a user's state, not a session
                out.append(
                    Session(
                        app_name=app_name,
                        user_id=adk["user_id"],
                        id=adk["id"],
                        state={
                            **_state(row.meta),
                            **await self._shared_state(app_name, adk["user_id"]),
                        },
                        last_update_time=row.updated_at,
                    )
                )
            if len(page) < 500:
                return ListSessionsResponse(sessions=out)
            after = page[-1]

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        sid = _sid(app_name, user_id, session_id)
        self._seen.pop(sid, None)
        await self._store.delete_session(sid)

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        event = self._trim_temp_delta_state(event)
        sid = _sid(session.app_name, session.user_id, session.id)
        deltas = _session_util.extract_state_delta(
            event.actions.state_delta if event.actions else None
        )
        seen = self._seen.get(sid)
        if seen is not None and seen[0] == session.last_update_time:
            expect = seen[1]
        else:  # a session object from elsewhere: ADK's own check, by time
            row = await self._store.get_session(sid)
            if row is None:
                raise ValueError(f"Session {session.id} not found.")
            if row.updated_at > session.last_update_time:
                raise ValueError(_STALE)
            expect = row.message_count
        try:
            stored = await self._store.append(
                sid,
                event.author or "event",
                _text(event),
                key=event.id or None,
                meta={"event": event.model_dump(mode="json", exclude_none=True)},
                created_at=event.timestamp or time.time(),
                expect_last=expect,
                session_meta=_patch(deltas["session"]) or None,
                other_meta=self._shared_patches(session.app_name, session.user_id, deltas),
            )
        except StaleSession:
            raise ValueError(_STALE) from None
        session.last_update_time = max(session.last_update_time, stored.created_at)
        # A re-sent event (its id already stored) returns its old seq: the session ends later.
        self._seen[sid] = (session.last_update_time, max(expect, stored.seq))
        await super().append_event(session=session, event=event)
        return event


__all__ = ["SOURCE", "SessionDBSessionService"]
