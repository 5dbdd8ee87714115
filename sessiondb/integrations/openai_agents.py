"""The OpenAI Agents SDK's ``Session`` (``agents.memory.Session``) on a sessiondb store.

::

    from agents import Agent, Runner
    from sessiondb.integrations.openai_agents import SessionDBSession

    session = SessionDBSession("chat-42", "state.db")
    await Runner.run(agent, "hi", session=session)

Each item is one message: its role is the item's ``role`` (or its ``type``: ``function_call``,
``reasoning`` …), its content the item's text (so ``store.search`` finds it), and the item itself,
exactly as given, in ``meta["item"]``; order is seq. ``add_items`` is one ``append_many``: a
batch is stored whole or not at all, so a writer killed mid-batch leaves nothing to double when
the batch is sent again (tests/integrations/test_openai_agents.py). ``pop_item`` and
``clear_session`` are the store's ``pop_message`` and ``clear_session``; ``get_items(limit=N)``
reads the newest N without reading the rest.

Items carry no stable identity across a retry (the SDK gives model items placeholder ids such as
``__fake_id__`` when the model is not OpenAI's), so items are not keyed by default;
``key_by_id=True`` makes an item's ``id`` its idempotency key, for OpenAI models only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from ..errors import SessionNotFound
from ..models import Message
from ._common import StoreLike, async_store

SOURCE = "openai-agents"


def _text(item: Mapping[str, Any]) -> str:
    """The searchable text of an item: its message text, call arguments or call output."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        return "\n".join(p for p in parts if isinstance(p, str))
    for field in ("arguments", "output"):
        value = item.get(field)
        if isinstance(value, str):
            return value
        if value is not None:
            return json.dumps(value, ensure_ascii=False)
    return ""


def _role(item: Mapping[str, Any]) -> str:
    for field in ("role", "type"):
        value = item.get(field)
        if isinstance(value, str) and value:
            return value
    return "item"


def _item(m: Message) -> Any:
    return (m.meta or {}).get("item")


class SessionDBSession:
    """An OpenAI Agents SDK session kept in a sessiondb store (the SDK's ``Session`` protocol).

    ``store``: an async store, a sync store or a path/URL (opened here; :meth:`close` closes
    what was opened here). ``session_settings``: the SDK's ``SessionSettings`` (or a dict of its
    fields); its ``limit`` is ``get_items``' default.
    """

    def __init__(
        self,
        session_id: str,
        store: StoreLike,
        *,
        session_settings: Any = None,
        key_by_id: bool = False,
        source: str = SOURCE,
    ) -> None:
        self.session_id = session_id
        self._owned = isinstance(store, str) or hasattr(store, "__fspath__")
        self._store = async_store(store)
        self.session_settings = _settings(session_settings)
        self._key_by_id = key_by_id
        self._source = source
        self._made = False

    async def _ensure(self) -> None:
        if not self._made:
            await self._store.ensure_session(self.session_id, source=self._source)
            self._made = True

    async def get_items(self, limit: int | None = None) -> list[Any]:
        if limit is None:
            limit = getattr(self.session_settings, "limit", None)
        if limit is None:
            found = await self._store.messages(self.session_id)
        elif limit <= 0:
            return []
        else:
            found = await self._store.messages(self.session_id, last=limit)
        return [_item(m) for m in found]

    async def add_items(self, items: list[Any]) -> None:
        if not items:
            return
        await self._ensure()
        rows = []
        for item in items:
            row: dict[str, Any] = {
                "role": _role(item),
                "content": _text(item),
                "meta": {"item": item},
            }
            ident = item.get("id") if self._key_by_id else None
            if isinstance(ident, str) and ident:
                row["key"] = ident
            rows.append(row)
        await self._store.append_many(self.session_id, rows)

    async def pop_item(self) -> Any:
        removed = await self._store.pop_message(self.session_id)
        return None if removed is None else _item(removed)

    async def clear_session(self) -> None:
        with contextlib.suppress(SessionNotFound):
            await self._store.clear_session(self.session_id)

    async def aclose(self) -> None:
        """Close the store if this session opened it from a path."""
        if self._owned:
            await self._store.close()


def _settings(value: Any) -> Any:
    """The SDK's ``SessionSettings`` (its own default and coercion rules) for ``value``."""
    from agents.memory.session_settings import SessionSettings, coerce_session_settings

    if value is None:
        return SessionSettings()
    return coerce_session_settings(dict(value) if isinstance(value, Mapping) else value)


__all__ = ["SOURCE", "SessionDBSession"]
