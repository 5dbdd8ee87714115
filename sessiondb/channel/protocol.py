"""The channel's wire format: file names, schemas, kinds, value types, errors and input checks.

Everything both ends must agree on lives here, so that host.py and agent.py only hold behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Error, InvalidInput, KeyConflict

INBOUND_FILE = "inbound.db"
OUTBOUND_FILE = "outbound.db"
HEARTBEAT_FILE = "heartbeat"

# PRAGMA application_id marks a file as a channel file; PRAGMA user_version is the format version.
# Both sit in the 100-byte SQLite header, so they can be checked without opening a connection.
APPLICATION_ID = 0x53444243  # "SDBC"
FORMAT_VERSION = 1

MAX_CONTENT_BYTES = 16 * 1024 * 1024
MAX_KEY_CHARS = 256

INBOUND_KINDS = frozenset({"message", "command", "event"})
OUTBOUND_KINDS = frozenset({"message", "progress", "event", "error"})
ACK_STATES = ("processing", "completed", "failed")

INBOUND_SCHEMA = (
    """CREATE TABLE messages(
        seq INTEGER PRIMARY KEY,              -- even, allocated inside the writer's transaction
        kind TEXT NOT NULL,
        content TEXT NOT NULL,
        key TEXT UNIQUE,                      -- makes send() idempotent
        created_at REAL NOT NULL,             -- UTC epoch seconds
        attempt INTEGER NOT NULL DEFAULT 1,   -- offers made so far (sweep re-offers)
        offer_at REAL NOT NULL,               -- not offered before this time (backoff)
        state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'completed', 'failed')),
        settled_at REAL,
        error TEXT
    )""",
    "CREATE INDEX messages_open ON messages(seq) WHERE state = 'open'",
)

OUTBOUND_SCHEMA = (
    """CREATE TABLE replies(
        seq INTEGER PRIMARY KEY,              -- odd, allocated inside the writer's transaction
        in_reply_to INTEGER,
        kind TEXT NOT NULL,
        content TEXT NOT NULL,
        key TEXT UNIQUE,                      -- makes reply() idempotent
        final INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX replies_in_reply_to ON replies(in_reply_to) WHERE in_reply_to IS NOT NULL",
    """CREATE TABLE acks(
        in_seq INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('processing', 'completed', 'failed')),
        run_id TEXT NOT NULL,
        pid INTEGER NOT NULL,
        error TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (in_seq, attempt)
    ) WITHOUT ROWID""",
    # Exactly-once outcome as a constraint: at most one completed/failed ack per message.
    "CREATE UNIQUE INDEX acks_one_outcome ON acks(in_seq) WHERE state != 'processing'",
)


class ChannelError(Error):
    """A channel-specific failure (the base of the errors below)."""


class NotAChannel(ChannelError, InvalidInput):
    """The folder (or one of its files) is not a sessiondb channel."""


class ChannelKeyConflict(ChannelError, KeyConflict):
    """The same key was sent again with a different kind or content."""

    def __init__(self, path: str, key: str, seq: int) -> None:
        Exception.__init__(
            self,
            f"{path}: key {key!r} is already used by seq {seq} with a different kind or content "
            "— use a new key for a new message",
        )
        self.session_id = path
        self.key = key
        self.seq = seq


@dataclass(frozen=True)
class Inbound:
    """A message from the host, as the agent receives it."""

    seq: int
    kind: str
    content: str
    key: str | None
    created_at: float
    attempt: int  # 1 on first offer; >1 means a previous delivery did not finish


@dataclass(frozen=True)
class Reply:
    """A message from the agent side, as the host reads it."""

    seq: int
    kind: str
    content: str
    in_reply_to: int | None
    created_at: float
    final: bool
    key: str | None


@dataclass(frozen=True)
class ChannelStatus:
    alive: bool
    heartbeat_age: float | None  # seconds since the agent's last beat; None: never beat
    processing: tuple[int, ...]  # claimed by the current attempt, no outcome yet
    failed: tuple[int, ...]
    pending: int  # open, not claimed
    completed: int
    run_id: str | None  # the run named by the heartbeat file
    pid: int | None


@dataclass(frozen=True)
class SweepReport:
    alive: bool
    reoffered: tuple[int, ...]
    failed: tuple[int, ...]
    settled: int  # open messages found completed/failed by the agent and marked so


def check_content(content: object) -> str:
    if not isinstance(content, str):
        raise InvalidInput(f"content must be str, not {type(content).__name__}")
    # Cheap bound first: a str of n code points encodes to at most 4n bytes.
    if len(content) * 4 > MAX_CONTENT_BYTES and (
        len(content) > MAX_CONTENT_BYTES
        or len(content.encode("utf-8", "surrogatepass")) > MAX_CONTENT_BYTES
    ):
        raise InvalidInput(
            f"content is larger than {MAX_CONTENT_BYTES} bytes (16 MiB) — store big payloads in a "
            "file and send its path"
        )
    return content


def check_kind(kind: object, allowed: frozenset[str], side: str) -> str:
    if not isinstance(kind, str) or kind not in allowed:
        raise InvalidInput(f"unknown {side} kind {kind!r}: use one of {', '.join(sorted(allowed))}")
    return kind


def check_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        raise InvalidInput(f"key must be a str of 1-{MAX_KEY_CHARS} characters, got {key!r:.80}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidInput(f"key {key!r:.80} contains a control character")
    return key


def check_inbound_seq(seq: object) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0 or seq % 2:
        raise InvalidInput(f"inbound seq must be a positive even int, got {seq!r}")
    return seq


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise InvalidInput(f"timeout must be None or a number >= 0, got {timeout!r}")
    return float(timeout)


def check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise InvalidInput(f"limit must be a positive int or None, got {limit!r}")
    return limit


def next_seq(highest: int, *, even: bool) -> int:
    """The smallest seq of the wanted parity above ``highest`` (Lamport order across both sides)."""
    nxt = highest + 1
    if (nxt % 2 == 0) != even:
        nxt += 1
    return nxt
