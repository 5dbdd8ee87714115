"""Cross-process combining: the holder of the admission lock commits, in its own transaction,
the appends that writers of other processes hand it (docs/adr/0018-cross-process-combining.md).

A writer (the leader of its process's group commit, core/group.py) that finds the admission lock
taken connects to the holder's socket instead of queueing behind it, sends its requests
(combine_wire.py) and waits for the answer. The holder — the *head* — listens while it holds the
lock, takes what was sent into its group transaction (core/writes.py: per-request semantics as
in one process), and answers after COMMIT. So K processes switch in about once per group, not
once per append, and the group's one commit (one fsync with ``durability="full"``) serves all.

* **The socket**: ``SOCK_SEQPACKET`` in Linux's abstract namespace, named after the user and the
  lock file's device and inode — nothing on the filesystem for anyone to replace. Each end
  checks the other's uid (``SO_PEERCRED``).
* **A tenure**: a head commits its own requests with what was sent, then again while requests
  keep arriving — up to :data:`MAX_ROUNDS` transactions, and no more once a writer waiting in the
  admission queue has flagged itself (host/flock.py, "Barging") and :data:`YIELD_AFTER` passed.
  It then hands the lock and its socket to one of the writers still waiting on it, which is
  the next head (combine_baton.py) — or, when none waits or a writer is flagged in the
  admission queue, answers ``R`` to connections not yet taken, closes its socket and releases
  the lock.
* **A waiter refused** (between two tenures) or answered ``R`` tries again for up to
  :data:`RETRY_FOR`, taking the lock itself if it is free, then queues — and while queued hands
  its requests to whichever head listens every :data:`POLL_EVERY` seconds, leaving the queue
  once answered: a writer in the queue would otherwise wait for whole tenures, not turns (K=64
  fairness 0.04–0.14 without this, docs/benchmarks.md).

Exactly once, whatever dies (tests/sqlite/test_combine.py):

* the head answers every request it took — with its outcome after COMMIT, or ``R`` when the
  transaction did not commit; connections it never took are answered ``R`` or reset. Either way
  the waiter knows nothing of its requests was written, and commits them itself;
* **a head killed (kill -9) after taking requests** leaves its waiters an end of file: each group
  holding other processes' requests writes one *ack row* in its transaction — the requests'
  tokens and seqs (migration 8) — so a waiter that got no answer queues for its own turn
  (the head's transaction is over by then, committed or not) and looks its tokens up: found,
  committed, its messages are read back; not found, nothing was written, it commits them;
* a head that sent its answers deletes that group's ack row in its next transaction; rows left
  by a killed head are deleted after :data:`ACK_KEEP` seconds;
* a head that stops (SIGSTOP) holding requests: its waiters wait their ``write_timeout`` and get
  ``StoreBusy`` saying the outcome is unknown (append with a key to retry safely);
* a head whose backlog is full and takes nobody (stopped, with more writers than
  :data:`MAX_REMOTE` waiting): a writer's connect gives up after :data:`RETRY_FOR` and it
  queues — every wait of a waiter is bounded by the kernel (``SO_SNDTIMEO``, ``SO_RCVTIMEO``);
* a head's process that forks: the child closes its copies of the listening socket and of the
  connections taken (host/inherited.py) — they would keep the address bound with nobody
  answering, and withhold from waiters the end of file of a head killed.

Off: without an admission lock (network filesystems, a read-only folder), off Linux, for
requests larger than ``combine_wire.MAX_REQUEST``, for ``group_commit=False`` stores, and for
the requests that never join a group (ADR 0011).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..core import writes
from ..errors import Error, StoreBusy
from ..host.inherited import not_inherited
from ..models import Message
from . import combine_wire as wire
from . import locks
from .admission import AdmissionLock
from .combine_baton import ANCILLARY, Baton, hand_on
from .combine_wire import Outcome
from .rows import MESSAGE_COLUMNS, message_of

if TYPE_CHECKING:
    from ..core.writes import Request
    from .backend import SQLiteBackend, SQLiteTx
    from .engine import Engine

#: Requests a head takes from other processes per transaction, and transactions per tenure.
MAX_REMOTE = 128
MAX_ROUNDS = 32
#: Seconds after which a head starts no further transaction: its own caller waits that long
#: (K=64: max latency 184–254 ms against 332–741 without, docs/benchmarks.md).
MAX_TENURE = 0.1
#: A head yields to a flagged writer in the admission queue only after this long (seconds):
#: yielding at once halved K=64's rate (docs/benchmarks.md, "Cross-process combining").
YIELD_AFTER = 0.01
#: How long a refused waiter keeps trying to hand over before it queues, and its pause.
RETRY_FOR = 0.05
RETRY_PAUSE = 0.001
#: A queued waiter hands its requests to the head every this many seconds.
POLL_EVERY = 0.002
#: Appends in a row whose hand-over never connected although the lock was taken: the head is
#: out of reach (another network namespace, a name taken by someone else). Such a writer then
#: queues at once (polling on), instead of retrying for RETRY_FOR each time.
UNREACHABLE_AFTER = 3
#: A head listens only if this process found the lock taken within this many seconds.
CONTENDED_FOR = 1.0
#: Seconds an ack row is kept when its head died before deleting it (far beyond any waiter's
#: wait for its own turn).
ACK_KEEP = 3600.0
#: One tenure in this many, of a process that has committed others' requests, deletes ack rows
#: older than ACK_KEEP.
SWEEP_EVERY = 256

ENABLED = sys.platform.startswith("linux")

#: Test hook (tests/_workers_combine.py): called with "listening" when a head has bound its
#: socket, "taken" once its transaction holds other processes' requests, and "committed" right
#: after that transaction's COMMIT.
_HOOK: Callable[[str], None] | None = None


class Combine:
    """One store's cross-process combining in one process (module docstring)."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self._backend = backend
        self._uid = os.getuid()
        self._address: bytes | None = None
        self._lock_id = (-1, -1)  # the lock file's (device, inode): a baton must be of it
        self._acked: list[str] = []  # ack rows of groups answered: deleted next transaction
        self._tenures = 0
        self._misses = 0  # appends in a row that never reached a head (UNREACHABLE_AFTER)
        self._contended = -math.inf  # when this process last found the lock taken
        #: Requests of other processes this one committed as a head, and tenures it handed on
        #: (tests, benchmarks).
        self.served = 0
        self.handed_on = 0

    def run(self, requests: list[Request]) -> list[Outcome]:
        """Commit ``requests`` (core/group.py's batch): one outcome each."""
        engine = self._backend.engine
        lock = engine.slot().lock
        if lock is None or not ENABLED:
            return writes.append_group(self._backend, requests)
        if lock.try_turn():
            # Alone for a while: no socket (5-7 µs per append); anyone arriving is refused,
            # finds the lock free within one append and listens from then on.
            return self._lead(requests, listen=time.monotonic() - self._contended <= CONTENDED_FOR)
        self._contended = time.monotonic()
        body, tokens = wire.encode_requests(requests)
        if len(body) > wire.MAX_REQUEST:
            return self._queue(requests, None, None)
        self._address_of(lock.fileno())
        until = time.monotonic() + (RETRY_FOR if self._misses < UNREACHABLE_AFTER else 0.0)
        reached = False
        while True:
            try:
                answer, connected = self._hand_over(body, requests)
            except _Unanswered:
                return self._queue(requests, None, tokens)
            reached = reached or connected
            if isinstance(answer, Baton):
                self._misses = 0
                return self._lead(requests, baton=answer)
            if answer is not None:
                self._misses = 0
                return answer
            if lock.try_turn():
                self._misses = 0
                return self._lead(requests)
            if time.monotonic() >= until:
                self._misses = 0 if reached else self._misses + 1
                return self._queue(requests, body, tokens)
            time.sleep(RETRY_PAUSE)

    # -- a waiter ---------------------------------------------------------------------------------

    def _hand_over(
        self, body: bytes, requests: list[Request]
    ) -> tuple[list[Outcome] | Baton | None, bool]:
        """Send ``requests`` to the head: (its answer, connected). An answer of None: nothing
        of them was written (no head, reset, or ``R``); a :class:`Baton`: nothing written, and
        this writer is the next head. Raises :class:`_Unanswered` when the head took them and
        ended without answering (the ack rows tell)."""
        assert self._address is not None
        timeout = self._backend.engine.write_timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Every call bounded by the kernel (no poll() before each, as a Python socket
            # timeout adds): a connect to a head whose backlog is full, and the send, give up
            # after RETRY_FOR — nothing was sent; the answer is waited for write_timeout.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(RETRY_FOR))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
            try:
                sock.connect(self._address)
            except OSError:
                return None, False  # no head listening, or its backlog stayed full
            pid, uid = wire.peer(sock)
            if uid != self._uid:
                return None, False  # not ours: never send it anything
            try:
                sock.send(body)
            except OSError:
                return None, True  # not sent (reset, or not taken in time): nothing written
            try:
                data, ancillary, _, _ = sock.recvmsg(
                    wire.MAX_ANSWER + 1, ANCILLARY, socket.MSG_CMSG_CLOEXEC
                )
            except (ConnectionResetError, BrokenPipeError):
                return None, True  # reset before it was taken: nothing written
            except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO ran out (EAGAIN)
                # The peer's pid is the process that bound the socket, which may have handed
                # its tenure on since: name the lock's holder now (sqlite/locks.py).
                with contextlib.suppress(OSError):
                    pid = locks.admission_lock_holder(self._backend.engine.path) or pid
                raise StoreBusy(
                    f"{self._backend.engine.path}: pid {pid}, which took this append to commit"
                    f" it with its own, did not answer within {timeout:.1f} s (stopped?):"
                    " whether it was stored is unknown — append with a key to retry safely",
                    path=str(self._backend.engine.path),
                    holder_pid=pid,
                    waited=timeout,
                ) from None
        finally:
            sock.close()
        if ancillary or data == wire.HEAD:
            assert self._address is not None
            baton = Baton.received(ancillary, self._address, self._lock_id)
            if baton is not None and data == wire.HEAD:
                if _HOOK is not None:
                    _HOOK("handed")
                return baton, True
            if baton is not None:
                baton.close()
            if data == wire.HEAD:
                return None, True  # not ours to use: nothing was written
        if not data:
            raise _Unanswered()
        if data == wire.RETRY:
            return None, True
        if data == wire.READ_BACK:
            raise _Unanswered()  # committed; its ack row stays until read back
        try:
            return wire.decode_answer(data, requests), True
        except wire.MALFORMED as e:
            raise Error(
                f"{self._backend.engine.path}: the answer of pid {pid}, which committed this"
                f" append, could not be read ({e}): whether it was stored is unknown — append"
                " with a key to retry safely"
            ) from e

    def _queue(
        self, requests: list[Request], body: bytes | None, tokens: list[str] | None
    ) -> list[Outcome]:
        """Wait for this writer's own turn and lead; while waiting, hand ``body`` (if any) to
        the head every POLL_EVERY seconds. ``tokens`` without ``body``: a head took the
        requests and did not answer — look them up first."""
        engine = self._backend.engine
        answer: list[Outcome] | Baton | None = None
        unanswered = body is None and tokens is not None

        def poll() -> bool:
            nonlocal answer, unanswered
            if body is None or unanswered:
                return False
            try:
                answer, _ = self._hand_over(body, requests)
            except _Unanswered:
                unanswered = True
                return False
            return answer is not None

        try:
            held = _queue_for_turn(engine, poll if body is not None else None)
        except BaseException:
            if isinstance(answer, Baton):  # handed a tenure as the wait ran out: give it back
                _refuse_rest(answer.listener)
                answer.listener.close()
                answer.release()
            raise
        if isinstance(answer, Baton):
            # Handed the tenure while queued: the lock is the baton's (our grant cannot have
            # come while it is held; _queue_for_turn gave our place up).
            return self._lead(requests, baton=answer)
        if answer is not None:
            if held:
                self._release(engine)
            return answer
        return self._lead(requests, tokens if unanswered else None)

    # -- the head ---------------------------------------------------------------------------------

    def _lead(
        self,
        own: list[Request],
        tokens: list[str] | None = None,
        listen: bool = True,
        baton: Baton | None = None,
    ) -> list[Outcome]:
        """Holding the admission lock (this thread's handle, or a ``baton`` handed on): a
        tenure (module docstring); then the lock is handed on or released."""
        engine = self._backend.engine
        lock: AdmissionLock | Baton | None = baton
        if baton is None:
            lock = engine.slot().lock
            assert lock is not None
            listener = self._listen(lock.fileno()) if listen else None
        else:
            listener = baton.listener
        assert lock is not None
        self._tenures += 1
        if listener is not None and _HOOK is not None:
            _HOOK("listening")
        handed = False
        fresh: AdmissionLock | None = None
        try:
            start = time.monotonic()
            mine = self._round(own, tokens, listener)
            for _ in range(MAX_ROUNDS - 1):
                if listener is None or not _pending(listener):
                    break
                held = time.monotonic() - start
                if held > MAX_TENURE or (held > YIELD_AFTER and lock.others_waiting()):
                    break
                self._round([], None, listener)
            if listener is not None and not lock.others_waiting():
                # Our own handle passes with the lock: queue on a new one from then on (opened
                # first — a failure here must not cost the outcome committed above).
                with contextlib.suppress(OSError):
                    fresh = AdmissionLock(engine.lock_path) if lock is not baton else None
                    handed = hand_on(listener, lock.fileno(), self._uid)
            return mine
        finally:
            if listener is not None:
                if not handed:
                    _refuse_rest(listener)
                listener.close()
            if not handed:
                lock.release()
                if fresh is not None:
                    fresh.close()
            else:
                # The next head holds the lock through our descriptor's open file description:
                # close it without unlocking.
                if fresh is not None:
                    engine.slot().lock = fresh
                lock.close()
            self.handed_on += handed

    def _round(
        self, own: list[Request], tokens: list[str] | None, listener: socket.socket | None
    ) -> list[Outcome]:
        """One transaction: own requests (those a dead head committed looked up first), then
        what other processes sent; their answers after COMMIT."""
        remote: list[_Remote] = []
        found: dict[int, list[Message]] = {}
        ack: tuple[str, float, str] | None = None
        committed = False
        try:
            with self._backend.write_held() as tx:
                if self._acked:
                    _forget_acks(tx, self._acked)
                if self.served and self._tenures % SWEEP_EVERY == 0:
                    tx.conn.execute(
                        "DELETE FROM combine_acks WHERE at < ?", (time.time() - ACK_KEEP,)
                    )
                if tokens:
                    found = _look_up(tx, tokens)
                todo = [r for i, r in enumerate(own) if i not in found] if found else own
                if listener is not None:
                    remote = _take(listener, self._uid)
                theirs = [r for c in remote for r in c.requests]
                batch = todo + theirs if theirs else todo
                outcomes = writes.append_group_in(tx, batch) if batch else []
                ack = _ack_row(remote, outcomes[len(todo) :]) if remote else None
                if ack is not None:
                    tx.conn.execute(
                        "INSERT INTO combine_acks(token, at, body) VALUES (?, ?, ?)", ack
                    )
                if remote and _HOOK is not None:
                    _HOOK("taken")
            committed = True
            self.served += len(theirs)
            if remote and _HOOK is not None:
                _HOOK("committed")
        except BaseException:
            for c in remote:
                # Not committed: nothing of theirs was written. Committed (interrupted after):
                # an end of file sends them to their ack row.
                c.close() if committed else c.answer(wire.RETRY)
            raise
        at, read_back = len(todo), False
        for c in remote:
            data = wire.encode_answer(outcomes[at : at + len(c.requests)])
            read_back = read_back or data == wire.READ_BACK
            c.answer(data)
            at += len(c.requests)
        if ack is not None and not read_back:  # a READ_BACK waiter still needs the row
            self._acked.append(ack[0])
        if not found:
            return outcomes[: len(own)] if remote else outcomes
        mine = iter(outcomes[: len(todo)])
        return [found[i] if i in found else next(mine) for i in range(len(own))]

    def _listen(self, lock_fd: int) -> socket.socket | None:
        # A forked child's copy would keep the address bound, answering nobody (host/inherited.py).
        sock = not_inherited(socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET))
        try:
            sock.bind(self._address_of(lock_fd))
            sock.listen(MAX_REMOTE)
            sock.setblocking(False)
        except OSError:
            sock.close()  # the name is taken (someone else's, or a head not yet closed)
            return None
        return sock

    def _address_of(self, lock_fd: int) -> bytes:
        if self._address is None:
            st = os.fstat(lock_fd)
            self._lock_id = (st.st_dev, st.st_ino)
            self._address = b"\0sessiondb-combine-%d-%d-%d" % (self._uid, st.st_dev, st.st_ino)
        return self._address

    @staticmethod
    def _release(engine: Engine) -> None:
        lock = engine.slot().lock
        if lock is not None:
            lock.release()


def _queue_for_turn(engine: Engine, poll: Callable[[], bool] | None) -> bool:
    """Wait in the admission queue until this thread holds the lock (the caller releases it):
    ``StoreBusy`` past ``write_timeout``, as ``Engine.write``. ``poll`` is called every
    POLL_EVERY seconds meanwhile; once it returns True the wait ends: False."""
    slot = engine.slot()
    lock = slot.lock
    start = time.monotonic()
    try:
        if lock is None or lock.acquire(engine.write_timeout, poll=poll, every=POLL_EVERY):
            return True
    finally:
        if lock is not None and lock.spent:  # given up (or poll raised): queue on a new one
            slot.lock = AdmissionLock(engine.lock_path)
    if lock.polled_out:
        return False
    raise engine.busy(start, None)


def _timeval(seconds: float) -> bytes:
    """``struct timeval`` for ``SO_SNDTIMEO`` / ``SO_RCVTIMEO``."""
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


class _Unanswered(Exception):
    """The head took the requests and ended without an answer: their ack rows tell."""


class _Remote:
    """One connection of another process, taken: its requests (validated) and tokens."""

    __slots__ = ("conn", "requests", "tokens")

    def __init__(self, conn: socket.socket, requests: list[Request], tokens: list[str]) -> None:
        self.conn = not_inherited(conn)  # its end of file tells the waiter (host/inherited.py)
        self.requests = requests
        self.tokens = tokens

    def answer(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the waiter is gone: nobody to tell
            self.conn.send(data)
        self.conn.close()

    def close(self) -> None:
        self.conn.close()


def _pending(listener: socket.socket) -> bool:
    ready, _, _ = select.select([listener], [], [], 0)
    return bool(ready)


def _take(listener: socket.socket, uid: int) -> list[_Remote]:
    """The connections waiting to be accepted, with their requests (at most MAX_REMOTE)."""
    out: list[_Remote] = []
    taken = 0
    while taken < MAX_REMOTE:
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        try:
            if wire.peer(conn)[1] != uid:
                conn.close()
                continue
            data = conn.recv(wire.MAX_REQUEST + 1, socket.MSG_DONTWAIT)
            requests, tokens = wire.decode_requests(data)
        except (OSError, *wire.MALFORMED):
            # Not sent yet, gone, or not a request: nothing of it is written.
            with contextlib.suppress(OSError):
                conn.send(wire.RETRY)
            conn.close()
            continue
        out.append(_Remote(conn, requests, tokens))
        taken += len(requests)
    return out


def _refuse_rest(listener: socket.socket) -> None:
    """Answer ``R`` to the connections still waiting to be accepted."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with contextlib.suppress(OSError):
            conn.send(wire.RETRY)
        conn.close()


# -- ack rows: what a group committed for other processes -----------------------------------------


def _ack_row(remote: list[_Remote], outcomes: Sequence[Outcome]) -> tuple[str, float, str] | None:
    body: dict[str, list[object]] = {}
    at = 0
    for c in remote:
        for t, r in zip(c.tokens, c.requests, strict=True):
            o = outcomes[at]
            at += 1
            if not isinstance(o, BaseException):
                body[t] = [r.sid, [m.seq for m in o]]
    if not body:
        return None
    return wire.token(), time.time(), json.dumps(body, separators=(",", ":"))


def _look_up(tx: SQLiteTx, tokens: list[str]) -> dict[int, list[Message]]:
    """The requests (by index in ``tokens``) a head committed before it ended unanswered:
    their messages, read back."""
    wanted = {t: i for i, t in enumerate(tokens)}
    found: dict[int, list[Message]] = {}
    for (body,) in tx.conn.execute("SELECT body FROM combine_acks").fetchall():
        try:
            acked = json.loads(str(body))
        except ValueError:
            continue
        for t, i in wanted.items():
            entry = acked.get(t)
            if entry is None:
                continue
            sid, seqs = entry
            rows = tx.conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.sid"
                " WHERE s.session_id = ? AND m.seq IN (SELECT value FROM json_each(?))"
                " ORDER BY m.seq",
                (sid, json.dumps(seqs)),
            ).fetchall()
            if len(rows) != len(seqs):
                raise Error(
                    f"session {sid!r}: this append was committed as seqs {seqs} by a process"
                    " that ended before answering, and some of them were removed since"
                )
            found[i] = [message_of(row) for row in rows]
    return found


def _forget_acks(tx: SQLiteTx, tokens: list[str]) -> None:
    tx.conn.execute(
        "DELETE FROM combine_acks WHERE token IN (SELECT value FROM json_each(?))",
        (json.dumps(tokens),),
    )
    tokens.clear()


__all__ = ["ACK_KEEP", "ENABLED", "MAX_REMOTE", "MAX_ROUNDS", "Combine"]
