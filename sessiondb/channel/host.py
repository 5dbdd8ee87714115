"""The host end: sole writer of inbound.db; reads outbound.db and the heartbeat; sweeps."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import apsw

from ..errors import InvalidInput
from .files import (
    ChannelDB,
    channel_folder,
    check_header,
    header,
    wait_until,
)
from .heartbeat import heartbeat_bytes, parse_heartbeat
from .protocol import (
    ACK_STATES,
    INBOUND_ADDED,
    INBOUND_FILE,
    INBOUND_KINDS,
    INBOUND_SCHEMA,
    MAX_ATTEMPT,
    MAX_CONTENT_BYTES,
    MAX_KEY_CHARS,
    MAX_RUN_ID_CHARS,
    OUTBOUND_FILE,
    OUTBOUND_KINDS,
    OUTBOUND_SCHEMA,
    ChannelKeyConflict,
    ChannelStatus,
    NotAChannel,
    Reply,
    SweepReport,
    check_content,
    check_key,
    check_kind,
    check_limit,
    check_timeout,
    next_seq,
    wire_choice,
    wire_int,
    wire_seq,
    wire_text,
    wire_time,
)

_DURABILITY = {"normal": "NORMAL", "full": "FULL"}
_ACK_STATES = frozenset(ACK_STATES)


def _boot_id() -> str:
    """What makes two monotonic readings comparable: the same boot of the same machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read(64).strip()
    except OSError:
        # No boot id (not Linux): the boot's wall-clock time, to 10 s. A clock step changes it,
        # which only makes the heartbeat count as just seen (never as stale).
        return f"booted-at-{round(time.time() - time.monotonic(), -1):.0f}"


@dataclass(frozen=True)
class _Snapshot:
    """Host and agent views joined at one moment, for status() and sweep()."""

    alive: bool
    age: float | None
    run_id: str | None
    pid: int | None
    open: list[tuple[int, int]]  # (seq, current attempt)
    outcome: dict[int, tuple[str, str | None]]  # seq -> (completed|failed, error), agent's acks
    claims: dict[tuple[int, int], str]  # (seq, attempt) -> run_id of a processing claim
    host_failed: list[int]
    host_completed: int


def _positive(name: str, value: object, *, integer: bool = False) -> float:
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or value <= 0:
        raise InvalidInput(f"{name} must be a positive {'int' if integer else 'number'}")
    return float(value)


class HostEnd:
    """Send to the agent, read its replies, watch its liveness and re-offer what it dropped.

    ``stale_after``: seconds, on this host's monotonic clock, that the heartbeat may stand
    unchanged before the agent run counts as dead (docs/channel.md, "Clocks").
    ``max_tries``: offers of one message before sweep() marks it failed.
    ``backoff``/``max_backoff``: delay before re-offer n is ``backoff * 2**(n-1)``, capped.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        create: bool = True,
        stale_after: float = 30.0,
        max_tries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        durability: str = "normal",
        busy_timeout: float = 10.0,
    ) -> None:
        if durability not in _DURABILITY:
            raise InvalidInput(f"durability must be 'normal' or 'full', got {durability!r}")
        self.stale_after = _positive("stale_after", stale_after)
        self.max_tries = int(_positive("max_tries", max_tries, integer=True))
        self.backoff = _positive("backoff", backoff)
        self.max_backoff = _positive("max_backoff", max_backoff)
        self.folder = channel_folder(folder, create=create)
        inbound = self.folder / INBOUND_FILE
        if not create and header(inbound) is None:
            raise NotAChannel(f"{self.folder} is not a channel folder (no {INBOUND_FILE})")
        self._in = ChannelDB(
            inbound,
            INBOUND_SCHEMA,
            added=INBOUND_ADDED,
            synchronous=_DURABILITY[durability],
            busy_timeout=busy_timeout,
        )
        self._out = ChannelDB(
            self.folder / OUTBOUND_FILE, OUTBOUND_SCHEMA, busy_timeout=busy_timeout
        )
        check_header(self._out.path, header(self._out.path))  # refuse a newer agent side early
        with self._in.own_read():  # creates and initialises inbound.db, or refuses it
            pass
        self._seen = 0  # highest agent seq seen: our next seq is above it (causal order)
        self._boot = _boot_id()
        self._beat: tuple[str, float] | None = None  # (heartbeat digest, monotonic first seen)

    # -- sending -------------------------------------------------------------------------------

    def send(self, content: str, kind: str = "message", key: str | None = None) -> int:
        """Append one message for the agent; returns its (even) seq. Same key: same seq."""
        row = (check_content(content), check_kind(kind, INBOUND_KINDS, "inbound"), check_key(key))
        return self._send([row])[0]

    def send_many(self, items: Iterable[str | Mapping[str, Any]]) -> list[int]:
        """Append several messages in one transaction (all or nothing); items are str or dicts
        with ``content`` and optional ``kind``/``key``."""
        rows: list[tuple[str, str, str | None]] = []
        for item in items:
            if isinstance(item, str):
                rows.append((check_content(item), "message", None))
            elif isinstance(item, Mapping):
                extra = set(item) - {"content", "kind", "key"}
                if extra or "content" not in item:
                    raise InvalidInput(
                        f"send_many item needs 'content' (and only kind/key): {extra}"
                    )
                rows.append(
                    (
                        check_content(item["content"]),
                        check_kind(item.get("kind", "message"), INBOUND_KINDS, "inbound"),
                        check_key(item.get("key")),
                    )
                )
            else:
                raise InvalidInput(f"send_many items are str or dict, not {type(item).__name__}")
        return self._send(rows) if rows else []

    def _send(self, rows: list[tuple[str, str, str | None]]) -> list[int]:
        now = time.time()
        seqs: list[int] = []
        path = self._in.path
        with self._in.write() as conn:
            highest: Any = conn.execute("SELECT max(seq) FROM messages").fetchall()[0][0]
            top = max(
                0 if highest is None else wire_seq(path, "seq", highest, even=True), self._seen
            )
            for content, kind, key in rows:
                if key is not None:
                    found: list[Any] = conn.execute(
                        "SELECT seq, kind, content FROM messages WHERE key = ?", (key,)
                    ).fetchall()
                    if found:
                        seq, old_kind, old_content = found[0]
                        seq = wire_seq(path, "seq", seq, even=True)
                        if (old_kind, old_content) != (kind, content):
                            raise ChannelKeyConflict(str(path), key, seq)
                        seqs.append(seq)
                        continue
                top = next_seq(top, even=True)
                conn.execute(
                    "INSERT INTO messages(seq, kind, content, key, created_at, offer_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (top, kind, content, key, now, now),
                )
                seqs.append(top)
        return seqs

    # -- reading replies -----------------------------------------------------------------------

    def replies(
        self, after: int = 0, timeout: float | None = None, limit: int | None = None
    ) -> list[Reply]:
        """Agent-side messages with seq > ``after``, in seq order; waits up to ``timeout``
        seconds for at least one when there are none (None: do not wait)."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise InvalidInput(f"after must be an int >= 0, got {after!r}")
        wait = check_timeout(timeout)
        lim = check_limit(limit)

        def query(conn: apsw.Connection) -> list[Reply]:
            rows: list[Any] = conn.execute(
                "SELECT seq, kind, content, in_reply_to, created_at, final, key FROM replies "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, -1 if lim is None else lim),
            ).fetchall()
            return [self._reply(r) for r in rows]

        def fetch() -> tuple[list[Reply], float | None]:
            return self._out.read(query) or [], None

        items: list[Reply] = wait_until(fetch, [self._out.path], wait)
        if items:
            self._seen = max(self._seen, items[-1].seq)
        return items

    def _reply(self, r: Any) -> Reply:
        """An outbound row, range-checked: the agent side wrote it (docs/channel.md)."""
        p = self._out.path
        in_reply_to = r[3]
        return Reply(
            seq=wire_seq(p, "reply seq", r[0], even=False),
            kind=wire_choice(p, "reply kind", r[1], OUTBOUND_KINDS),
            content=str(wire_text(p, "reply content", r[2], limit=MAX_CONTENT_BYTES)),
            in_reply_to=None
            if in_reply_to is None
            else wire_seq(p, "in_reply_to", in_reply_to, even=True),
            created_at=wire_time(p, "reply created_at", r[4]),
            final=bool(wire_int(p, "reply final", r[5], 0, 1)),
            key=wire_text(p, "reply key", r[6], limit=MAX_KEY_CHARS, optional=True),
        )

    # -- liveness, status and sweep ------------------------------------------------------------

    def _heartbeat_age(self, raw: bytes) -> float:
        """How long, on this host's monotonic clock, the heartbeat has held these bytes.

        Never the agent's clock against ours (docs/channel.md, "Clocks"): a beat changes the
        bytes (a counter goes up), and a heartbeat stands still from when a host process first
        saw its current bytes. Host processes share that moment through inbound.db, so a new
        one (the CLI) goes on where the last left off; bytes no host process saw before count
        as just seen, so a first look never condemns a run.
        """
        digest = hashlib.sha256(raw).hexdigest()
        now = time.monotonic()
        if self._beat is not None and self._beat[0] == digest:
            return now - self._beat[1]
        seen = now
        with self._in.write() as conn:
            rows: list[Any] = conn.execute(
                "SELECT digest, boot, seen_at FROM heartbeat_seen WHERE id = 1"
            ).fetchall()
            earlier = rows[0] if rows else None
            if (
                earlier is not None
                and (earlier[0], earlier[1]) == (digest, self._boot)
                and isinstance(earlier[2], float)
                and 0.0 <= earlier[2] <= now  # a reading from the future was not ours
            ):
                seen = earlier[2]
            else:
                conn.execute(
                    "INSERT INTO heartbeat_seen(id, digest, boot, seen_at) VALUES (1, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET digest = excluded.digest, "
                    "boot = excluded.boot, seen_at = excluded.seen_at",
                    (digest, self._boot, now),
                )
        self._beat = (digest, seen)
        return now - seen

    def _snapshot(self) -> _Snapshot:
        raw = heartbeat_bytes(self.folder)
        hb = parse_heartbeat(raw)
        alive, age, run_id, pid = False, None, None, None
        if raw is not None and hb is not None:
            age = self._heartbeat_age(raw)
            alive = hb.get("stopped") is not True and age <= self.stale_after
            value = hb.get("run_id")
            run_id = value if isinstance(value, str) and len(value) <= MAX_RUN_ID_CHARS else None
            value = hb.get("pid")
            pid = value if type(value) is int and 0 < value < 2**31 else None
        inbound = self._in.path
        with self._in.own_read() as conn:
            open_rows = [
                (
                    wire_seq(inbound, "seq", r[0], even=True),
                    wire_int(inbound, "attempt", r[1], 1, MAX_ATTEMPT),
                )
                for r in conn.execute(
                    "SELECT seq, attempt FROM messages WHERE state = 'open' ORDER BY seq"
                )
            ]
            host_failed = [
                wire_seq(inbound, "seq", r[0], even=True)
                for r in conn.execute("SELECT seq FROM messages WHERE state = 'failed'")
            ]
            counted: Any = conn.execute(
                "SELECT count(*) FROM messages WHERE state = 'completed'"
            ).fetchall()[0][0]
            host_completed = int(counted)
        low = open_rows[0][0] if open_rows else None

        def query(conn: apsw.Connection) -> tuple[list[Any], list[Any]]:
            acks = (
                conn.execute(
                    "SELECT in_seq, attempt, state, run_id, error FROM acks WHERE in_seq >= ?",
                    (low,),
                ).fetchall()
                if low is not None
                else []
            )
            late = conn.execute(
                "SELECT in_seq, attempt, state, run_id, error FROM acks WHERE state != "
                "'processing' AND in_seq IN (SELECT value FROM json_each(?))",
                (json.dumps(host_failed),),
            ).fetchall()
            return acks, late

        acks, late = self._out.read(query) or ([], [])
        outcome: dict[int, tuple[str, str | None]] = {}
        claims: dict[tuple[int, int], str] = {}
        out = self._out.path
        for row in [*acks, *late]:
            in_seq = wire_seq(out, "ack in_seq", row[0], even=True)
            attempt = wire_int(out, "ack attempt", row[1], 1, MAX_ATTEMPT)
            state = wire_choice(out, "ack state", row[2], _ACK_STATES)
            ack_run = str(wire_text(out, "ack run_id", row[3], limit=MAX_RUN_ID_CHARS))
            error = wire_text(out, "ack error", row[4], limit=MAX_CONTENT_BYTES, optional=True)
            if state == "processing":
                claims[(in_seq, attempt)] = ack_run
            else:
                outcome[in_seq] = (state, error)
        return _Snapshot(
            alive, age, run_id, pid, open_rows, outcome, claims, host_failed, host_completed
        )

    def status(self) -> ChannelStatus:
        """Is the agent alive, how old is its heartbeat, which messages are processing/failed."""
        snap = self._snapshot()
        processing: list[int] = []
        failed: list[int] = []
        pending = 0
        completed = snap.host_completed
        for seq, attempt in snap.open:
            state = snap.outcome.get(seq, (None, None))[0]
            if state == "completed":
                completed += 1
            elif state == "failed":
                failed.append(seq)
            elif (seq, attempt) in snap.claims:
                processing.append(seq)
            else:
                pending += 1
        for seq in snap.host_failed:
            # An agent that completed a message the host gave up on wins: its reply exists.
            if snap.outcome.get(seq, (None, None))[0] == "completed":
                completed += 1
            else:
                failed.append(seq)
        return ChannelStatus(
            alive=snap.alive,
            heartbeat_age=snap.age,
            processing=tuple(processing),
            failed=tuple(sorted(failed)),
            pending=pending,
            completed=completed,
            run_id=snap.run_id,
            pid=snap.pid,
        )

    def sweep(self) -> SweepReport:
        """Record the agent's outcomes in inbound.db; re-offer messages claimed by a run that
        is dead, stopped or replaced (with backoff); mark failed after ``max_tries`` offers.

        A run whose heartbeat is fresh is never swept, however long it stays silent.
        """
        snap = self._snapshot()
        live_run = snap.run_id if snap.alive else None
        settle: list[tuple[int, str, str | None]] = []
        abandoned: list[tuple[int, int, str]] = []
        for seq, attempt in snap.open:
            if seq in snap.outcome:
                settle.append((seq, *snap.outcome[seq]))
            elif (seq, attempt) in snap.claims and snap.claims[(seq, attempt)] != live_run:
                abandoned.append((seq, attempt, snap.claims[(seq, attempt)]))
        for seq in snap.host_failed:
            if snap.outcome.get(seq, (None, None))[0] == "completed":
                settle.append((seq, "completed", None))
        if not settle and not abandoned:
            return SweepReport(snap.alive, (), (), 0)
        now = time.time()
        reoffered: list[int] = []
        failed: list[int] = []
        with self._in.write() as conn:
            for seq, state, error in settle:
                conn.execute(
                    "UPDATE messages SET state = ?, settled_at = ?, error = ? WHERE seq = ?",
                    (state, now, error, seq),
                )
            for seq, attempt, dead_run in abandoned:
                if attempt >= self.max_tries:
                    conn.execute(
                        "UPDATE messages SET state = 'failed', settled_at = ?, error = ? "
                        "WHERE seq = ? AND attempt = ? AND state = 'open'",
                        (
                            now,
                            f"no outcome after {attempt} offers; the last agent run holding it "
                            f"({dead_run}) died, stopped or was replaced",
                            seq,
                            attempt,
                        ),
                    )
                    if conn.changes():
                        failed.append(seq)
                else:
                    delay = min(self.backoff * 2 ** min(attempt - 1, 64), self.max_backoff)
                    # Compare-and-set on attempt: two host processes sweeping re-offer once.
                    # offer_at is for people; the agent waits ``delay`` on its own clock.
                    conn.execute(
                        "UPDATE messages SET attempt = attempt + 1, offer_at = ? "
                        "WHERE seq = ? AND attempt = ? AND state = 'open'",
                        (now + delay, seq, attempt),
                    )
                    if conn.changes():
                        conn.execute(
                            "INSERT OR REPLACE INTO offer_delays(seq, attempt, delay) "
                            "VALUES (?, ?, ?)",
                            (seq, attempt + 1, delay),
                        )
                        reoffered.append(seq)
        return SweepReport(snap.alive, tuple(reoffered), tuple(failed), len(settle))

    def close(self) -> None:
        self._in.close()

    def __enter__(self) -> HostEnd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
