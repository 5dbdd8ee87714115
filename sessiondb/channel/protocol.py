"""The channel's wire format: file names, schemas, kinds, value types, errors and input checks.

Everything both ends must agree on lives here, so that host.py and agent.py only hold behaviour.
"""

from __future__ import annotations

import math
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
MAX_RUN_ID_CHARS = 128
# Seqs stay below 2^62, so the next seq of either parity above any valid seq still fits SQLite's
# signed 64-bit integer (a peer's seq of 2^63-1 made every later send() raise OverflowError).
MAX_SEQ = 2**62
MAX_ATTEMPT = 2**31 - 1
MAX_OFFER_DELAY = 7 * 86400.0  # seconds; a re-offer waits at most this long
MAX_HEARTBEAT_BYTES = 4096  # the heartbeat is a small JSON object; more is not a heartbeat

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

# Added to inbound.db by hosts of this version (an inbound.db made by an earlier one lacks them
# until such a host opens it for writing; readers accept both).
INBOUND_ADDED = (
    # A re-offer's backoff, as a duration: the agent waits it out on its own monotonic clock
    # from when it first sees that attempt (docs/channel.md, "Clocks").
    """CREATE TABLE offer_delays(
        seq INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        delay REAL NOT NULL,                  -- seconds
        PRIMARY KEY (seq, attempt)
    ) WITHOUT ROWID""",
    # When a host process first saw the heartbeat's current content, on the host's monotonic
    # clock (valid on that boot only): how long the heartbeat has stood still, whichever host
    # process asks (the CLI's one-shot `status --sweep` included).
    """CREATE TABLE heartbeat_seen(
        id INTEGER PRIMARY KEY CHECK (id = 1),
        digest TEXT NOT NULL,                 -- sha256 of the heartbeat file's bytes
        boot TEXT NOT NULL,                   -- the host's boot id
        seen_at REAL NOT NULL                 -- host CLOCK_MONOTONIC, seconds
    )""",
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
    # seconds the heartbeat has stood unchanged, on the host's monotonic clock, since a host
    # process first saw it (docs/channel.md, "Clocks"); None: no heartbeat
    heartbeat_age: float | None
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
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq <= MAX_SEQ or seq % 2:
        raise InvalidInput(f"inbound seq must be an even int in 2..2^62, got {seq!r:.40}")
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
    if nxt > MAX_SEQ:
        raise ChannelError(
            f"the channel's seqs are used up (next would be {nxt}, the limit is 2^62) — start "
            "a new channel folder"
        )
    return nxt


# -- values read from the other side's file (or from one's own file, which the other side can
# reach too): range-checked before use, a violation is a protocol error naming file and value.


def _violation(path: object, what: str, value: object) -> NotAChannel:
    return NotAChannel(
        f"{path}: {what} {value!r:.60} breaks the channel protocol — the file was written by "
        "something other than sessiondb; stop both ends and start a new channel folder"
    )


def wire_seq(path: object, what: str, value: object, *, even: bool | None) -> int:
    """A seq (``even``: host side, False: agent side, None: either) in 1..2^62."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 < value <= MAX_SEQ
        or (even is not None and (value % 2 == 0) != even)
    ):
        side = {True: "an even (host)", False: "an odd (agent)", None: "a"}[even]
        raise _violation(path, f"{what} (expected {side} seq in 1..2^62)", value)
    return value


def wire_int(path: object, what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _violation(path, f"{what} (expected an integer in {low}..{high})", value)
    return value


def wire_time(path: object, what: str, value: object, *, high: float = math.inf) -> float:
    """A finite number (a timestamp for display, or a duration up to ``high``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value > high
    ):
        raise _violation(path, f"{what} (expected a finite number)", value)
    return float(value)


def wire_text(
    path: object, what: str, value: object, *, limit: int, optional: bool = False
) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _violation(path, f"{what} (expected text of at most {limit} characters)", value)
    return value


def wire_choice(path: object, what: str, value: object, allowed: frozenset[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise _violation(path, f"{what} (expected one of {', '.join(sorted(allowed))})", value)
    return value
