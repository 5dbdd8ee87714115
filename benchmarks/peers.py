"""One small adapter per system under test, all with the same interface.

Each adapter is used the way that system's own users use it, with its default settings:

- ``sessiondb``: ``sessiondb.open(path)`` and ``store.append``.
- ``hermes``: hermes-agent's ``hermes_state.SessionDB(db_path)``; ``create_session`` once (its
  messages table has a foreign key to sessions), then ``append_message`` per turn.
- ``openai-agents``: ``agents.memory.SQLiteSession(session_id, db_path)``; ``add_items`` is a
  coroutine, so each call runs on one event loop kept for the life of the worker process (as in an
  agent process, whose loop outlives a single turn), via ``loop.run_until_complete``.
- ``langchain``: langchain-community's ``SQLChatMessageHistory(session_id, connection=
  "sqlite:///...")`` and ``add_message`` (sync mode, SQLAlchemy's default engine).
- ``ceiling``: one bare apsw connection running the same statements as sessiondb's append, one
  transaction per message; no admission queue, no Python layers in between.

Interface: ``open(folder)`` in the worker process, ``prepare(session_id)`` before the start
barrier, ``append(session_id, role, content) -> None``, ``contents(session_id)`` (stored contents
in stored order, for read-back verification), ``count(session_id)``, ``close()``. Peers are
imported lazily so that a missing peer only skips that system.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from pathlib import Path
from typing import Any

SYSTEMS = ("sessiondb", "hermes", "openai-agents", "langchain")
CEILING = "ceiling"


class Adapter:
    """Uniform facade over one system; one instance per worker process."""

    name = "abstract"

    def open(self, folder: Path) -> None:
        raise NotImplementedError

    def prepare(self, session_id: str) -> None:
        """Whatever the system's users do once per session before its first turn."""

    def append(self, session_id: str, role: str, content: str) -> None:
        raise NotImplementedError

    def contents(self, session_id: str) -> list[str]:
        raise NotImplementedError

    def count(self, session_id: str) -> int:
        return len(self.contents(session_id))

    def close(self) -> None:
        raise NotImplementedError


def durability() -> str:
    """sessiondb's ``durability`` (and the ceiling's ``synchronous``) for this run:
    ``--durability`` of benchmarks/contention.py, passed to its workers in the environment."""
    return os.environ.get("SESSIONDB_BENCH_DURABILITY", "normal")


class SessiondbAdapter(Adapter):
    name = "sessiondb"

    def open(self, folder: Path) -> None:
        import sessiondb

        self.store: Any = sessiondb.open(folder / "sessions.db", durability=durability())

    def prepare(self, session_id: str) -> None:
        self.store.ensure_session(session_id, source="bench")

    def append(self, session_id: str, role: str, content: str) -> None:
        self.store.append(session_id, role, content)

    def contents(self, session_id: str) -> list[str]:
        return [m.content for m in self.store.messages(session_id)]

    def count(self, session_id: str) -> int:
        return int(self.store.count(session_id))

    def close(self) -> None:
        self.store.close()


class HermesAdapter(Adapter):
    name = "hermes"

    def open(self, folder: Path) -> None:
        hermes_state = importlib.import_module("hermes_state")
        self.db: Any = hermes_state.SessionDB(db_path=folder / "state.db")

    def prepare(self, session_id: str) -> None:
        # hermes' create_session is an upsert, so every worker of a shared session may call it.
        self.db.create_session(session_id, source="cli")

    def append(self, session_id: str, role: str, content: str) -> None:
        self.db.append_message(session_id, role, content)

    def contents(self, session_id: str) -> list[str]:
        return [str(m["content"]) for m in self.db.get_messages(session_id)]

    def count(self, session_id: str) -> int:
        return int(self.db.message_count(session_id))

    def close(self) -> None:
        self.db.close()


class OpenAIAgentsAdapter(Adapter):
    name = "openai-agents"

    def open(self, folder: Path) -> None:
        self.path = folder / "agents.db"
        self.loop = asyncio.new_event_loop()
        self.sessions: dict[str, Any] = {}

    def _session(self, session_id: str) -> Any:
        session = self.sessions.get(session_id)
        if session is None:
            memory = importlib.import_module("agents.memory")
            session = memory.SQLiteSession(session_id, db_path=self.path)
            self.sessions[session_id] = session
        return session

    def prepare(self, session_id: str) -> None:
        self._session(session_id)

    def append(self, session_id: str, role: str, content: str) -> None:
        item = {"role": role, "content": content}
        self.loop.run_until_complete(self._session(session_id).add_items([item]))

    def contents(self, session_id: str) -> list[str]:
        items = self.loop.run_until_complete(self._session(session_id).get_items())
        return [str(item["content"]) for item in items]

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        # add_items runs in the loop's default executor thread, whose thread-local connection
        # is released when that thread ends.
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class LangchainAdapter(Adapter):
    name = "langchain"

    def open(self, folder: Path) -> None:
        self.url = f"sqlite:///{folder / 'langchain.db'}"
        self.histories: dict[str, Any] = {}

    def _history(self, session_id: str) -> Any:
        history = self.histories.get(session_id)
        if history is None:
            histories = importlib.import_module("langchain_community.chat_message_histories")
            history = histories.SQLChatMessageHistory(session_id=session_id, connection=self.url)
            self.histories[session_id] = history
        return history

    def prepare(self, session_id: str) -> None:
        self._history(session_id)

    def append(self, session_id: str, role: str, content: str) -> None:
        messages = importlib.import_module("langchain_core.messages")
        message = messages.HumanMessage(content) if role == "user" else messages.AIMessage(content)
        self._history(session_id).add_message(message)

    def contents(self, session_id: str) -> list[str]:
        return [str(m.content) for m in self._history(session_id).messages]

    def close(self) -> None:
        for history in self.histories.values():
            history.engine.dispose()


class CeilingAdapter(Adapter):
    """One bare apsw connection, sessiondb's append statements, one transaction per message.

    Mirrors ``Store.append`` -> ``SQLiteTx.insert_messages`` and ``Engine.write``/``_configure``
    (sessiondb/core/store.py, sqlite/backend.py, engine.py): same pragmas, ``BEGIN IMMEDIATE``,
    look the session up (create it if missing), bump ``message_count`` with ``RETURNING`` to get
    the next seq, insert the message, ``COMMIT``. The schema is created by sessiondb itself, so
    tables, indexes and any triggers are the same; then only this connection touches the file.
    Left out on purpose, so that this stays an upper bound: the flock admission queue, input
    validation, Message objects, and the background PASSIVE checkpoints (autocheckpoint is off
    as in the engine, so the ceiling never checkpoints during a run).
    """

    name = CEILING

    def open(self, folder: Path) -> None:
        import apsw

        import sessiondb
        from sessiondb.sqlite import engine

        path = folder / "sessions.db"
        sessiondb.open(path).close()
        self.conn: Any = apsw.Connection(str(path))
        self.conn.set_busy_timeout(30_000)
        for pragma in (
            "synchronous=FULL" if durability() == "full" else "synchronous=NORMAL",
            "foreign_keys=OFF",
            f"journal_size_limit={engine.JOURNAL_SIZE_LIMIT}",
            "wal_autocheckpoint=0",
        ):
            self.conn.execute(f"PRAGMA {pragma}")
        mode = str(self.conn.execute("PRAGMA journal_mode").get).lower()
        if mode != "wal":
            raise RuntimeError(f"{path}: expected sessiondb to create a WAL file, found {mode}")

    def append(self, session_id: str, role: str, content: str) -> None:
        now = time.time()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            sid = conn.execute("SELECT id FROM sessions WHERE session_id = ?", (session_id,)).get
            if sid is None:
                conn.execute(
                    "INSERT INTO sessions(session_id, source, title, meta, created_at, updated_at)"
                    " VALUES (?, 'unknown', NULL, NULL, ?, ?)",
                    (session_id, now, now),
                )
                sid = conn.last_insert_rowid()
            seq = conn.execute(
                "UPDATE sessions SET message_count = message_count + 1, updated_at = ?"
                " WHERE id = ? RETURNING message_count",
                (now, sid),
            ).get
            conn.execute(
                "INSERT INTO messages(sid, seq, role, content, key, meta, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sid, seq, role, content, None, None, now),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def contents(self, session_id: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT m.content FROM messages m JOIN sessions s ON s.id = m.sid"
            " WHERE s.session_id = ? ORDER BY m.seq",
            (session_id,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        self.conn.close()


_ADAPTERS: dict[str, type[Adapter]] = {
    "sessiondb": SessiondbAdapter,
    "hermes": HermesAdapter,
    "openai-agents": OpenAIAgentsAdapter,
    "langchain": LangchainAdapter,
    CEILING: CeilingAdapter,
}


def make(system: str) -> Adapter:
    """A fresh, unopened adapter for *system*."""
    return _ADAPTERS[system]()


def available(system: str) -> str | None:
    """None if *system* can run in this environment, else the reason it cannot."""
    modules = {
        "sessiondb": "sessiondb.sqlite.backend",
        "hermes": "hermes_state",
        "openai-agents": "agents.memory",
        "langchain": "langchain_community.chat_message_histories",
        CEILING: "sessiondb.sqlite.backend",
    }
    try:
        importlib.import_module(modules[system])
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
