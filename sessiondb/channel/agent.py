"""The agent end: writes outbound.db only (replies and acks); reads inbound.db; heartbeats."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import apsw

from ..errors import InvalidInput
from ..host.procinfo import hostname
from .files import (
    ChannelDB,
    channel_folder,
    check_header,
    header,
    wait_until,
)
from .heartbeat import read_heartbeat, write_heartbeat
from .host import _DURABILITY
from .protocol import (
    ACK_STATES,
    FORMAT_VERSION,
    INBOUND_ADDED,
    INBOUND_FILE,
    INBOUND_KINDS,
    INBOUND_SCHEMA,
    MAX_ATTEMPT,
    MAX_CONTENT_BYTES,
    MAX_KEY_CHARS,
    MAX_OFFER_DELAY,
    MAX_RUN_ID_CHARS,
    OUTBOUND_FILE,
    OUTBOUND_KINDS,
    OUTBOUND_SCHEMA,
    ChannelKeyConflict,
    Inbound,
    NotAChannel,
    check_content,
    check_inbound_seq,
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

_SETTLING_KINDS = frozenset({"message", "error"})


class AgentEnd:
    """Receive the host's messages, ack and reply to them, and keep a heartbeat.

    Several agent-side processes may each hold an AgentEnd on one folder (the agent loop, a
    tool subprocess, a CLI): seqs are allocated inside each writer's transaction. The run that
    heartbeats owns the claims sweep() respects; give helpers its ``run_id`` if they claim.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        run_id: str | None = None,
        heartbeat_every: float | None = None,
        durability: str = "normal",
        busy_timeout: float = 10.0,
    ) -> None:
        if durability not in _DURABILITY:
            raise InvalidInput(f"durability must be 'normal' or 'full', got {durability!r}")
        if run_id is not None and (
            not isinstance(run_id, str) or not 1 <= len(run_id) <= MAX_RUN_ID_CHARS
        ):
            raise InvalidInput(
                f"run_id must be a str of 1-{MAX_RUN_ID_CHARS} characters, got {run_id!r:.80}"
            )
        self.folder = channel_folder(folder, create=False)
        inbound = self.folder / INBOUND_FILE
        if not check_header(inbound, header(inbound)):
            raise NotAChannel(
                f"{self.folder} is not a channel folder (no initialised {INBOUND_FILE}) — "
                "start the host end first"
            )
        self._in = ChannelDB(
            inbound, INBOUND_SCHEMA, added=INBOUND_ADDED, busy_timeout=busy_timeout
        )
        self._out = ChannelDB(
            self.folder / OUTBOUND_FILE,
            OUTBOUND_SCHEMA,
            synchronous=_DURABILITY[durability],
            busy_timeout=busy_timeout,
        )
        with self._out.own_read():  # creates and initialises outbound.db, or refuses it
            pass
        self.run_id = run_id or uuid.uuid4().hex
        self.started_at = time.time()
        self._attempts: dict[int, int] = {}  # seq -> attempt, as last received
        self._floor = 0  # every inbound seq <= floor has an outcome (skip it when receiving)
        self._seen_in = 0  # highest inbound seq seen: our next seq is above it (causal order)
        # (seq, attempt) of a delayed re-offer -> when this process first saw it (monotonic)
        self._first_seen: dict[tuple[int, int], float] = {}
        self._beats = itertools.count(1)  # every beat changes the heartbeat's bytes
        self._beat_stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None
        if heartbeat_every is not None:
            self.start_heartbeat(heartbeat_every)

    # -- receiving -----------------------------------------------------------------------------

    def receive(
        self, limit: int = 10, timeout: float | None = None, *, claim: bool = True
    ) -> list[Inbound]:
        """Up to ``limit`` offered messages with no outcome and no claim for their current
        attempt, in seq order; waits up to ``timeout`` seconds for one (None: do not wait).

        ``claim=True`` acks them "processing" for this run in the same transaction, so two
        receivers never get the same offer and a run that dies counts as a try.
        """
        lim = check_limit(limit) or 10
        wait = check_timeout(timeout)
        items: list[Inbound] = wait_until(lambda: self._fetch(lim, claim), [self._in.path], wait)
        return items

    def _candidates(self, conn: apsw.Connection, floor: int) -> list[tuple[int, int, float]]:
        """Open messages above ``floor``: (seq, attempt, delay), range-checked (the host side
        wrote them). A host of an earlier version writes no delays."""
        path = self._in.path
        if "offer_delays" in self._in.present:
            sql = (
                "SELECT m.seq, m.attempt, d.delay FROM messages m LEFT JOIN offer_delays d "
                "ON d.seq = m.seq AND d.attempt = m.attempt "
                "WHERE m.state = 'open' AND m.seq > ? ORDER BY m.seq"
            )
        else:
            sql = (
                "SELECT seq, attempt, NULL FROM messages WHERE state = 'open' AND seq > ? "
                "ORDER BY seq"
            )
        return [
            (
                wire_seq(path, "seq", r[0], even=True),
                wire_int(path, "attempt", r[1], 1, MAX_ATTEMPT),
                0.0 if r[2] is None else wire_time(path, "delay", r[2], high=MAX_OFFER_DELAY),
            )
            for r in conn.execute(sql, (floor,))
        ]

    def _fetch(self, limit: int, claim: bool) -> tuple[list[Inbound], float | None]:
        floor = self._floor
        candidates: list[tuple[int, int, float]] = (
            self._in.read(lambda c: self._candidates(c, floor)) or []
        )
        if not candidates:
            self._first_seen.clear()
            return [], None
        now = time.time()
        mono = time.monotonic()
        # A re-offer's backoff runs on this side's monotonic clock from when this process first
        # saw that attempt: never the host's timestamp against our clock (docs/channel.md).
        live = {(seq, attempt) for seq, attempt, delay in candidates if delay > 0}
        for gone in set(self._first_seen) - live:
            del self._first_seen[gone]
        chosen: list[tuple[int, int]] = []
        wake_at: float | None = None
        ctx = self._out.write() if claim else self._out.own_read()
        with ctx as conn:
            done: set[int] = set()
            claimed: set[tuple[int, int]] = set()
            for in_seq, attempt, state in conn.execute(
                "SELECT in_seq, attempt, state FROM acks WHERE in_seq >= ?", (candidates[0][0],)
            ):
                if state == "processing":
                    claimed.add((in_seq, attempt))
                else:
                    done.add(in_seq)
            prefix = True
            for seq, attempt, delay in candidates:
                if seq in done:
                    if prefix:
                        floor = seq
                    continue
                prefix = False
                if (seq, attempt) in claimed:
                    continue
                if delay > 0:
                    ready_at = self._first_seen.setdefault((seq, attempt), mono) + delay
                    if ready_at > mono:
                        wake_at = ready_at if wake_at is None else min(wake_at, ready_at)
                        continue
                chosen.append((seq, attempt))
                if len(chosen) == limit:
                    break
            if claim:
                for seq, attempt in chosen:
                    conn.execute(
                        "INSERT INTO acks(in_seq, attempt, state, run_id, pid, at) "
                        "VALUES (?, ?, 'processing', ?, ?, ?)",
                        (seq, attempt, self.run_id, os.getpid(), now),
                    )
        self._floor = floor
        self._seen_in = max(self._seen_in, candidates[-1][0])
        if not chosen:
            return [], wake_at
        attempts = dict(chosen)
        rows: list[Any] = (
            self._in.read(
                lambda c: c.execute(
                    "SELECT seq, kind, content, key, created_at FROM messages "
                    "WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq",
                    (json.dumps(list(attempts)),),
                ).fetchall()
            )
            or []
        )
        path = self._in.path
        out = [
            Inbound(
                seq=r[0],
                kind=wire_choice(path, "kind", r[1], INBOUND_KINDS),
                content=str(wire_text(path, "content", r[2], limit=MAX_CONTENT_BYTES)),
                key=wire_text(path, "key", r[3], limit=MAX_KEY_CHARS, optional=True),
                created_at=wire_time(path, "created_at", r[4]),
                attempt=attempts[r[0]],
            )
            for r in rows
        ]
        self._attempts.update(attempts)
        return out, wake_at

    def _attempt_of(self, seq: int) -> int:
        if seq in self._attempts:
            return self._attempts[seq]
        rows: list[Any] = (
            self._in.read(
                lambda c: c.execute("SELECT attempt FROM messages WHERE seq = ?", (seq,)).fetchall()
            )
            or []
        )
        if not rows:
            raise InvalidInput(f"{self._in.path}: no inbound message with seq {seq}")
        return wire_int(self._in.path, "attempt", rows[0][0], 1, MAX_ATTEMPT)

    # -- acks and replies ----------------------------------------------------------------------

    def ack(self, seq: int, state: str, error: str | None = None) -> bool:
        """Record ``processing`` (claim), ``completed`` or ``failed`` for inbound ``seq``.

        Returns False when it changed nothing: the message already has an outcome, or (for
        processing) another run claimed this attempt. ``failed`` also writes an error reply
        (``error`` as its content), so the host hears why.
        """
        check_inbound_seq(seq)
        if state not in ACK_STATES:
            raise InvalidInput(f"ack state must be one of {', '.join(ACK_STATES)}, got {state!r}")
        if error is not None:
            check_content(error)
        attempt = self._attempt_of(seq)
        now = time.time()
        with self._out.write() as conn:
            if self._outcome_of(conn, seq) is not None:
                return False
            if state == "processing":
                owner = conn.execute(
                    "SELECT run_id FROM acks WHERE in_seq = ? AND attempt = ?", (seq, attempt)
                ).fetchall()
                if owner:
                    return bool(owner[0][0] == self.run_id)
                conn.execute(
                    "INSERT INTO acks(in_seq, attempt, state, run_id, pid, at) "
                    "VALUES (?, ?, 'processing', ?, ?, ?)",
                    (seq, attempt, self.run_id, os.getpid(), now),
                )
                return True
            if state == "failed":
                self._insert_reply(conn, seq, "error", error or "failed", None, True, now)
            self._settle(conn, seq, attempt, state, error, now)
            return True

    def reply(
        self,
        content: str,
        in_reply_to: int | None = None,
        kind: str = "message",
        *,
        key: str | None = None,
        final: bool | None = None,
    ) -> int:
        """Write a message for the host; returns its (odd) seq.

        A ``message`` or ``error`` reply to inbound ``in_reply_to`` is final by default: it
        settles that message (completed/failed) in the same transaction, so a crash can never
        leave a reply without its ack. Pass ``final=False`` for interim replies (give them a
        ``key`` to make them idempotent across redeliveries). A final reply to a message that
        already has its outcome comes from a duplicate delivery: nothing is written and the
        seq of the reply that settled it is returned (0 if it was settled by a bare ack).
        """
        check_content(content)
        check_kind(kind, OUTBOUND_KINDS, "outbound")
        check_key(key)
        if final is not None and not isinstance(final, bool):
            raise InvalidInput(f"final must be a bool or None, got {final!r}")
        attempt = 0
        if in_reply_to is not None:
            check_inbound_seq(in_reply_to)
            attempt = self._attempt_of(in_reply_to)
        settles = in_reply_to is not None and (kind in _SETTLING_KINDS if final is None else final)
        now = time.time()
        with self._out.write() as conn:
            if key is not None:
                found: list[Any] = conn.execute(
                    "SELECT seq, kind, content, in_reply_to FROM replies WHERE key = ?", (key,)
                ).fetchall()
                if found:
                    if tuple(found[0][1:]) != (kind, content, in_reply_to):
                        raise ChannelKeyConflict(str(self._out.path), key, found[0][0])
                    return int(found[0][0])
            if (
                settles
                and in_reply_to is not None
                and self._outcome_of(conn, in_reply_to) is not None
            ):
                winner = conn.execute(
                    "SELECT max(seq) FROM replies WHERE in_reply_to = ? AND final = 1",
                    (in_reply_to,),
                ).fetchall()[0][0]
                return int(winner or 0)
            seq = self._insert_reply(conn, in_reply_to, kind, content, key, settles, now)
            if settles and in_reply_to is not None:
                state = "failed" if kind == "error" else "completed"
                self._settle(
                    conn, in_reply_to, attempt, state, content if state == "failed" else None, now
                )
            return seq

    def _outcome_of(self, conn: apsw.Connection, seq: int) -> str | None:
        rows = conn.execute(
            "SELECT state FROM acks WHERE in_seq = ? AND state != 'processing'", (seq,)
        ).fetchall()
        return str(rows[0][0]) if rows else None

    def _settle(
        self,
        conn: apsw.Connection,
        seq: int,
        attempt: int,
        state: str,
        error: str | None,
        now: float,
    ) -> None:
        conn.execute(
            "INSERT INTO acks(in_seq, attempt, state, run_id, pid, error, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(in_seq, attempt) DO UPDATE SET "
            "state = excluded.state, run_id = excluded.run_id, pid = excluded.pid, "
            "error = excluded.error, at = excluded.at",
            (seq, attempt, state, self.run_id, os.getpid(), error, now),
        )

    def _insert_reply(
        self,
        conn: apsw.Connection,
        in_reply_to: int | None,
        kind: str,
        content: str,
        key: str | None,
        final: bool,
        now: float,
    ) -> int:
        # Allocated inside this write transaction: concurrent agent-side writers never collide.
        highest = conn.execute("SELECT max(seq) FROM replies").fetchall()[0][0]
        top = 0 if highest is None else wire_seq(self._out.path, "seq", highest, even=False)
        seq = next_seq(max(top, self._seen_in, in_reply_to or 0), even=False)
        conn.execute(
            "INSERT INTO replies(seq, in_reply_to, kind, content, key, final, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, in_reply_to, kind, content, key, int(final), now),
        )
        return seq

    # -- heartbeat -----------------------------------------------------------------------------

    def _record(self, *, stopped: bool = False) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": hostname(),
            "started_at": self.started_at,
            "beat_at": time.time(),  # for people: the host judges age by its own clock
            "beat": next(self._beats),
            "stopped": stopped,
        }

    def heartbeat(self) -> None:
        """Tell the host this run is alive (replaces the heartbeat file atomically)."""
        try:
            write_heartbeat(self.folder, self._record())
        except OSError as e:
            raise NotAChannel(
                f"{self.folder}: cannot write the heartbeat ({e.strerror}) — check the folder"
            ) from e

    def start_heartbeat(self, every: float = 5.0) -> None:
        """Beat now and then every ``every`` seconds from a daemon thread, so a run that is busy
        (a long tool call, a slow model) is never taken for dead. Keep ``every`` well below the
        host's ``stale_after``."""
        if isinstance(every, bool) or not isinstance(every, (int, float)) or every <= 0:
            raise InvalidInput(f"heartbeat interval must be a positive number, got {every!r}")
        if self._beat_thread is not None:
            return
        self.heartbeat()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    write_heartbeat(self.folder, self._record())
                except (OSError, NotAChannel):
                    continue  # the mount may blip, a name may be in the way: next beat retries
            # Stopped cleanly: tell the host now (only if the file still names this run).
            current = read_heartbeat(self.folder)
            if current is not None and current.get("run_id") == self.run_id:
                with contextlib.suppress(OSError, NotAChannel):
                    write_heartbeat(self.folder, self._record(stopped=True))

        self._beat_stop = stop
        self._beat_thread = threading.Thread(
            target=beat, name=f"sessiondb-channel-heartbeat-{self.run_id[:8]}", daemon=True
        )
        self._beat_thread.start()

    def stop_heartbeat(self) -> None:
        if self._beat_stop is not None and self._beat_thread is not None:
            self._beat_stop.set()
            self._beat_thread.join()
        self._beat_stop = None
        self._beat_thread = None

    def close(self) -> None:
        self.stop_heartbeat()
        self._out.close()

    def __enter__(self) -> AgentEnd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
