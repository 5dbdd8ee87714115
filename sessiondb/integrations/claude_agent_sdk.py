"""The Claude Agent SDK's ``SessionStore`` on a sessiondb store.

::

    from claude_agent_sdk import ClaudeAgentOptions, query
    from sessiondb.integrations.claude_agent_sdk import SessionDBSessionStore

    options = ClaudeAgentOptions(session_store=SessionDBSessionStore("state.db"))

Each transcript (a ``SessionKey``: project, session, optional subagent ``subpath``) is one
sessiondb session, id ``cc:<hash of the project key>:<session id>[/<subpath>]`` (the project
key itself is kept in the session's meta): one project's sessions are one range of ids, listed
without a scan. Each entry is one message, read the way ``sessiondb import`` reads a Claude Code
transcript (``sessiondb.core.formats.ClaudeCodeFormat``: role, text, content blocks, usage and
model, so ``search`` and ``stats`` see mirrored sessions like imported ones) with the entry
itself, as given, in ``meta["entry"]``; ``load`` returns those in seq order.

An entry's ``uuid`` is its idempotency key — ``claude:<uuid>``, the importer's key — so the SDK's
re-sent batches (it retries a failed ``append`` up to 3 times, and a timed-out one may have
landed) never double an entry, and a batch is stored whole or not at all. Entries whose
``sessionId`` is another session's (a resumed or forked transcript carries its parent's
records) record that lineage in the session's meta (``resumed_from``) in the same transaction.
``list_session_summaries`` keeps the SDK's folded summary in the session's meta, folded and
written with a conditional append (``expect_last``), so racing appenders never lose a fold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from claude_agent_sdk._internal.session_summary import fold_session_summary

from ..core import formats
from ..errors import KeyConflict, StaleSession
from ..models import Message
from ._common import StoreLike, async_store

SOURCE = "claude-agent-sdk"
_PARSER = formats.ClaudeCodeFormat()
#: Conditional appends tried before giving up on folding a summary (each loser re-reads).
_FOLD_TRIES = 20


def _project(project_key: str) -> str:
    return "cc:" + hashlib.sha256(project_key.encode()).hexdigest()[:16] + ":"


def session_id_of(key: Mapping[str, Any]) -> str:
    """The sessiondb session id of a ``SessionKey``."""
    sub = key.get("subpath")
    return _project(str(key["project_key"])) + str(key["session_id"]) + (f"/{sub}" if sub else "")


def _row(entry: Mapping[str, Any]) -> dict[str, Any]:
    raw = json.dumps(entry, ensure_ascii=False).encode()
    try:
        parsed = _PARSER.parse(dict(entry), 0, raw)
    except formats.LineError:
        parsed = None
    kind = entry.get("type")
    row: dict[str, Any] = {"role": kind if isinstance(kind, str) and kind else "entry"}
    meta: dict[str, Any] = {}
    if isinstance(parsed, formats.Record):
        # No created_at from the entry's timestamp: the session's updated_at must be the storage
        # write time, the SDK's mtime (the entry keeps its own timestamp in meta["entry"]).
        row.update(role=parsed.role, content=parsed.content)
        meta.update(parsed.meta or {})
    elif isinstance(parsed, formats.Title):
        row["content"] = parsed.text
    else:
        row["content"] = ""
    meta["entry"] = dict(entry)
    row["meta"] = meta
    uuid = entry.get("uuid")
    if isinstance(uuid, str) and uuid:
        row["key"] = f"claude:{uuid}"
    return row


class SessionDBSessionStore:
    """A Claude Agent SDK ``SessionStore`` kept in a sessiondb store (``store``: an async store,
    a sync store, or a path/URL opened here)."""

    def __init__(self, store: StoreLike, *, source: str = SOURCE) -> None:
        self._owned = isinstance(store, str) or hasattr(store, "__fspath__")
        self._store = async_store(store)
        self._source = source
        # Per transcript this process wrote: its last seq and summary as of that write. The next
        # append tries them with expect_last (one round trip); another writer in between makes
        # it StaleSession, and the session is read again.
        self._known: dict[str, tuple[int, Any]] = {}

    async def append(self, key: Mapping[str, Any], entries: list[Any]) -> None:
        if not entries:
            return
        sid = session_id_of(key)
        if sid not in self._known:
            await self._store.ensure_session(
                sid, source=self._source, meta={"claude": {k: key[k] for k in sorted(key)}}
            )
        rows = [_row(e) for e in entries]
        lineage = _parent(entries, key["session_id"])
        if key.get("subpath"):
            await self._append(sid, rows, lineage)
            self._known.setdefault(sid, (0, None))
        else:
            await self._append_folding(sid, key, entries, rows, lineage)

    async def _append(
        self,
        sid: str,
        rows: list[dict[str, Any]],
        patch: dict[str, Any] | None,
        expect_last: int | None = None,
    ) -> list[Message]:
        try:
            return await self._store.append_many(
                sid, rows, expect_last=expect_last, session_meta=patch
            )
        except KeyConflict:
            # An entry re-sent changed, or one uuid twice in a batch: the SDK asks for
            # "ignore duplicate", so the first one stored stays.
            return await self._store.append_many(
                sid, await self._unstored(sid, rows), expect_last=expect_last, session_meta=patch
            )

    async def _unstored(self, sid: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out, seen = [], set()
        for row in rows:
            k = row.get("key")
            if k is not None:
                if k in seen or await self._store.message(sid, k) is not None:
                    continue
                seen.add(k)
            out.append(row)
        return out

    async def _append_folding(
        self,
        sid: str,
        key: Mapping[str, Any],
        entries: list[Any],
        rows: list[dict[str, Any]],
        lineage: dict[str, Any] | None,
    ) -> None:
        known = self._known.get(sid)
        for _ in range(_FOLD_TRIES):
            if known is None:
                session = await self._store.get_session(sid)
                prev = (session.meta or {}).get("summary") if session is not None else None
                known = (0 if session is None else session.message_count, prev)
            last, prev = known
            folded = dict(fold_session_summary(prev, dict(key), entries))
            patch = {**(lineage or {}), "summary": folded}
            try:
                stored = await self._append(sid, rows, patch, expect_last=last)
            except StaleSession:
                known = None  # another writer appended meanwhile: fold again onto its summary
                continue
            top = max((m.seq for m in stored), default=last)
            # The patch landed only with fresh entries (a batch all re-sent changes nothing).
            self._known[sid] = (top, folded) if top > last else (last, prev)
            return
        self._known.pop(sid, None)
        await self._append(sid, rows, lineage)  # never lose the entries for the summary's sake

    async def load(self, key: Mapping[str, Any]) -> list[Any] | None:
        sid = session_id_of(key)
        found = await self._store.messages(sid)
        if not found and await self._store.get_session(sid) is None:
            return None
        return [(m.meta or {}).get("entry") for m in found]

    async def list_sessions(self, project_key: str) -> list[dict[str, Any]]:
        return [
            {"session_id": name, "mtime": int(s.updated_at * 1000)}
            for name, s in await self._main_sessions(project_key)
        ]

    async def list_session_summaries(self, project_key: str) -> list[dict[str, Any]]:
        out = []
        for _, s in await self._main_sessions(project_key):
            summary = (s.meta or {}).get("summary")
            if isinstance(summary, dict):
                # The storage write time, the clock list_sessions uses (the SDK's rule).
                out.append({**summary, "mtime": int(s.updated_at * 1000)})
        return out

    async def _main_sessions(self, project_key: str) -> list[tuple[str, Any]]:
        prefix = _project(project_key)
        out = []
        for sid in await self._ids(prefix):
            name = sid[len(prefix) :]
            if "/" in name:
                continue
            s = await self._store.get_session(sid)
            if s is not None:
                out.append((name, s))
        return out

    async def _ids(self, prefix: str) -> list[str]:
        """Session ids starting with ``prefix``: one range of the id order."""
        out: list[str] = []
        after = prefix
        while True:
            page = await self._store.session_ids(after=after, limit=500)
            inside = [s for s in page if s.startswith(prefix)]
            out += inside
            if len(inside) < len(page) or len(page) < 500:
                return out
            after = page[-1]

    async def delete(self, key: Mapping[str, Any]) -> None:
        sid = session_id_of(key)
        self._known = {k: v for k, v in self._known.items() if not k.startswith(sid)}
        if not key.get("subpath"):
            for sub in await self._ids(sid + "/"):
                await self._store.delete_session(sub)
        await self._store.delete_session(sid)

    async def list_subkeys(self, key: Mapping[str, Any]) -> list[str]:
        prefix = session_id_of({"project_key": key["project_key"], "session_id": key["session_id"]})
        return [s[len(prefix) + 1 :] for s in await self._ids(prefix + "/")]

    async def aclose(self) -> None:
        """Close the store if it was opened here from a path."""
        if self._owned:
            await self._store.close()


def _parent(entries: Sequence[Any], session_id: str) -> dict[str, Any] | None:
    """``{"resumed_from": id}`` when entries name another session (a resumed transcript)."""
    for e in entries:
        other = e.get("sessionId") if isinstance(e, Mapping) else None
        if isinstance(other, str) and other and other != session_id:
            return {"resumed_from": other}
    return None


__all__ = ["SOURCE", "SessionDBSessionStore", "session_id_of"]
