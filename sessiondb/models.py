"""Public value types: frozen dataclasses handed out by every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .core.blocks import Block

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Session:
    session_id: str
    source: str
    title: str | None
    meta: dict[str, Any] | None
    created_at: float
    updated_at: float
    ended_at: float | None
    end_reason: str | None
    message_count: int
    # Changes whenever messages are removed (pop_message, clear_session): a reader that tails by
    # seq re-reads when it changes, since a removed seq is taken again by the next append.
    revision: int = 0


@dataclass(frozen=True)
class Message:
    session_id: str
    seq: int
    role: str
    content: str
    key: str | None
    meta: dict[str, Any] | None
    created_at: float

    def blocks(self) -> list[Block]:
        """The message's content blocks — text, thinking, tool calls and results, images — with
        their text filled in from ``content`` (docs/transcripts.md, "Structured messages"); one
        text block for a message stored without any."""
        from .core.blocks import blocks_of

        return blocks_of(self.content, self.meta)


_set = object.__setattr__


def new_message(
    session_id: str,
    seq: int,
    role: str,
    content: str,
    key: str | None,
    meta: dict[str, Any] | None,
    created_at: float,
) -> Message:
    """``Message(...)`` of values the store read or wrote, built the way unpickling builds a
    dataclass: its ``__dict__`` set at once, not one frozen ``__setattr__`` per field (half the
    time: 0.59–0.85 against 1.07–1.73 µs here; every message the store inserts or reads is built
    here). Equal, hash and repr as ``Message(...)``: tests/unit/test_models.py."""
    message = object.__new__(Message)
    _set(
        message,
        "__dict__",
        {
            "session_id": session_id,
            "seq": seq,
            "role": role,
            "content": content,
            "key": key,
            "meta": meta,
            "created_at": created_at,
        },
    )
    return message


@dataclass(frozen=True)
class Hit:
    message: Message
    snippet: str
    score: float
    before: tuple[Message, ...] = ()
    after: tuple[Message, ...] = ()


@dataclass(frozen=True)
class Tokens:
    """Token counts (docs/transcripts.md, "Usage"): input read without the cache, output, input
    read from the cache, input written to the cache."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


@dataclass(frozen=True)
class Usage:
    """One source's and model's share of a day (``model`` None: messages that name none)."""

    source: str
    model: str | None
    sessions: int
    messages: int
    tokens: Tokens


@dataclass(frozen=True)
class DayStats:
    """One UTC day: sessions active that day, messages stored for it (by their ``created_at``),
    tokens, and the same by source and model."""

    day: str  # YYYY-MM-DD, UTC
    sessions: int
    messages: int
    tokens: Tokens
    by: tuple[Usage, ...]


@dataclass(frozen=True)
class Stats:
    """What ``store.stats()`` returns: the days with activity, oldest first, and the period's
    totals (``sessions``: distinct sessions active in it)."""

    since: str | None
    until: str | None
    days: tuple[DayStats, ...]
    sessions: int
    messages: int
    tokens: Tokens


@dataclass(frozen=True)
class BadLine:
    file: str
    line: int
    reason: str


@dataclass(frozen=True)
class ImportReport:
    imported: int
    duplicates: int
    bad_lines: tuple[BadLine, ...] = ()


@dataclass(frozen=True)
class PruneReport:
    """What ``store.prune()`` removed, or with ``dry_run`` would remove (docs/adr/0006).

    ``sessions`` are the sessions removed as they were when selected, in id order; ``messages``
    their messages; ``bytes`` the stored text of those messages (content, key, meta in UTF-8);
    ``estimated_space`` (dry run) the file space of their rows, pro rata by messages, what a
    prune gives back (their search index's share comes back with ``compact()``; None when the
    backend cannot tell); ``kept`` the sessions selected but left because they
    changed meanwhile (a new message). ``freed``: bytes given back to the filesystem (0 for a
    dry run); ``needs_compact``: this store can give space back only by ``compact()`` (a SQLite
    file created before incremental auto-vacuum: docs/adr/0006-retention.md).
    """

    cutoff: float
    dry_run: bool
    sessions: tuple[Session, ...]
    messages: int
    bytes: int
    estimated_space: int | None
    kept: int = 0
    freed: int = 0
    needs_compact: bool = False


@dataclass(frozen=True)
class Check:
    """One line of a health report: what was checked, how it went, and what to do next."""

    name: str
    status: Status
    detail: str
    hint: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthReport:
    path: str
    checks: tuple[Check, ...]

    @property
    def status(self) -> Status:
        states = {c.status for c in self.checks}
        if "fail" in states:
            return "fail"
        if "warn" in states:
            return "warn"
        return "ok"

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "warn": 1, "fail": 2}[self.status]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class RepairResult:
    """What a repair did: its actions, where the damaged original was copied, what it kept."""

    path: str
    actions: tuple[str, ...]
    backup: str | None = None
    sessions: int = 0
    messages: int = 0
    placeholder_sessions: int = 0
    messages_before: int | None = None  # the damaged file's own count, when it was readable
    # messages that plain reads returned before the repair: all are verified to be in the result
    messages_readable_before: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


__all__ = [
    "BadLine",
    "Check",
    "DayStats",
    "HealthReport",
    "Hit",
    "ImportReport",
    "Message",
    "PruneReport",
    "RepairResult",
    "Session",
    "Stats",
    "Status",
    "Tokens",
    "Usage",
]
