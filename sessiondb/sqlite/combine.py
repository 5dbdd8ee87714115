"""Cross-process combining: the holder of the admission lock commits, in its own transaction,
the appends that writers of other processes hand it (docs/adr/0018-cross-process-combining.md).

A writer (the in-process group's leader, core/group.py) that finds the admission lock taken
connects to the holder's socket instead of queueing behind it, sends its requests and waits
for the answer. The holder — the *head* — listens while it holds the lock, takes what was sent
into its group transaction (core/writes.py ``append_group``: per-request semantics unchanged),
and answers once it has committed. So K processes switch in once per group, not once per append.

The medium: a ``SOCK_SEQPACKET`` Unix socket in the Linux abstract namespace, named after the
lock file's device and inode and the user (nothing on the filesystem: no file to plant a symlink
or FIFO in). Both ends check the other's uid (``SO_PEERCRED``); a request is JSON validated on the
head's side like API input (never pickle); anything malformed is answered "do it yourself".

Exactly once, whatever dies (ADR 0018, tests/sqlite/test_combine.py):

* **the head answers every request it accepted** — with the outcome after COMMIT, or "retry
  yourself" (``R``) when it did not commit it; a connection it never accepted is reset. Either
  way the waiter knows nothing of its requests was written and commits them itself;
* **a head killed (kill -9) after accepting** leaves the waiter a bare end of file: the outcome
  is unknown to it. Each group that holds other processes' requests writes one *ack row* in its
  transaction — the requests' tokens and their seqs — so the waiter, on its own turn (holding
  the admission lock: the head's transaction is over either way), looks its token up: found,
  committed, its messages read back; not found, nothing was written and it commits them itself;
* a head that delivered its answers deletes that group's ack row in its next transaction; rows
  a killed head left are deleted after :data:`ACK_KEEP` seconds.

Where combining is off: no admission lock (a network filesystem, a read-only folder), a
platform without abstract sockets, requests larger than :data:`MAX_MESSAGE` bytes, and the
ungrouped requests of ADR 0011 (they never reach here).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import Error, InvalidInput, KeyConflict, StaleSession
from ..models import Message, new_message
from ..core import append as ap
from ..core import state
from ..core import validate as v
from ..core.writes import PER_REQUEST, Request, append_group

from .rows import MESSAGE_COLUMNS, message_of

if TYPE_CHECKING:
    from .backend import SQLiteBackend, SQLiteTx

#: Largest request or answer handed over (bytes of JSON); larger requests queue as before.
MAX_MESSAGE = 60 * 1024
#: Requests one head takes from other processes per transaction, and transactions per tenure.
MAX_REMOTE = 128
MAX_ROUNDS = int(os.environ.get("XROUNDS", "32"))
RETRY_FOR = float(os.environ.get("XRETRY", "0.05"))
RETRY_SLEEP = float(os.environ.get("XSLEEP", "0.0002"))
TENURE = float(os.environ.get("XTENURE", "1000"))
MINTEN = float(os.environ.get("XMINTEN", "0.01"))
YIELD = bool(os.environ.get("XYIELD", "1") == "1")
LINGER = float(os.environ.get("XLINGER", "0"))
#: Seconds an ack row is kept when its head died before deleting it: a waiter that got no
#: answer looks its token up well within this (its write_timeout); one that would look later
#: gets an error saying the outcome is unknown instead.
ACK_KEEP = 3600.0
#: One in this many tenures deletes ack rows older than ACK_KEEP.
SWEEP_EVERY = 256

_CRED = struct.Struct("3i")
_ON = sys.platform.startswith("linux")

Outcome = list[Message] | BaseException


def _peer_uid(sock: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


class Combine:
    """One store's cross-process combining (module docstring); one per backend and process."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self._backend = backend
        self._uid = os.getuid() if _ON else -1
        self._address: bytes | None = None
        self._acked: list[str] = []  # ack rows of groups answered, deleted next transaction
        self._tenures = 0
        self._tokens: list[str] | None = None

    # -- the entry point (core/group.py's run) ---------------------------------------------------

    def run(self, requests: list[Request]) -> list[Outcome]:
        engine = self._backend.engine
        slot = engine.slot()
        lock = slot.lock
        if lock is None or not _ON:
            return append_group(self._backend, requests)
        if lock.try_turn():
            return self._lead(requests, acquired=True)
        address = self._address_of(lock.fileno())
        body, tokens = _encode_requests(requests)
        if len(body) > MAX_MESSAGE:
            return self._lead(requests, acquired=False)
        # Refused (no head between two tenures) or answered "R": nothing was written; try
        # again for up to RETRY_FOR seconds — taking the lock when it is free — before queueing.
        until = time.monotonic() + RETRY_FOR
        while True:
            try:
                answer = self._hand_over(address, body, requests, engine.write_timeout)
            except _Unknown as e:
                if e.stopped:
                    raise Error(
                        f"{engine.path}: pid {e.pid}, which took this append to commit it with"
                        f" its own, did not answer within {engine.write_timeout:.1f} s"
                        " (stopped?): whether it was stored is unknown — append with a key to"
                        " retry safely"
                    ) from None
                # It ended after taking them: its ack row says what it committed.
                return self._lead(requests, acquired=False, tokens=tokens)
            if answer is not None:
                return answer
            if lock.try_turn():
                return self._lead(requests, acquired=True)
            if time.monotonic() > until:
                self._tokens = tokens
                return self._lead(requests, acquired=False, body=body)
            time.sleep(RETRY_SLEEP)

    # -- the waiter ------------------------------------------------------------------------------

    def _hand_over(
        self, address: bytes, body: bytes, requests: list[Request], timeout: float
    ) -> list[Outcome] | None:
        """Send ``requests`` to the head and return its answer; None: nothing of them was
        written (refused, reset, or answered ``R``) — commit them yourself. Raises
        :class:`_Unknown` when the head ended after accepting them without answering."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                sock.connect(address)
            except OSError:
                return None  # no head listening (or the name is not ours): queue
            pid, uid = _peer_uid(sock)
            if uid != self._uid:
                return None
            sock.settimeout(timeout)
            try:
                sock.send(body)
            except OSError:
                return None  # reset before it was read: nothing written
            try:
                data = sock.recv(MAX_MESSAGE + 1024)
            except (ConnectionResetError, BrokenPipeError):
                return None
            except TimeoutError:
                raise _Unknown(pid, stopped=True) from None
            if not data:
                raise _Unknown(pid, stopped=False)
            if data == b"R":
                return None
            return _decode_answer(data, requests)
        finally:
            sock.close()

    # -- the head --------------------------------------------------------------------------------

    def _lead(
        self,
        own: list[Request],
        *,
        acquired: bool,
        tokens: list[str] | None = None,
        body: bytes | None = None,
    ) -> list[Outcome]:
        engine = self._backend.engine
        if not acquired:
            # While queued, hand the requests to a head every few ms: the queue moves once per
            # tenure, and a writer waiting in it must not wait for many of them.
            answer: list[Outcome] | None = None
            unknown = tokens is not None

            def poll() -> bool:
                nonlocal answer, unknown, tokens
                if body is None or unknown:
                    return False
                try:
                    answer = self._hand_over(self._address or b"", body, own, engine.write_timeout)
                except _Unknown as e:
                    if e.stopped:
                        raise
                    unknown = True
                    tokens = self._tokens
                    return False
                return answer is not None

            held = engine.queue_for_turn(poll if body is not None else None)
            if answer is not None:
                if held:
                    lock = engine.slot().lock
                    assert lock is not None
                    lock.release()
                return answer
        lock = engine.slot().lock
        assert lock is not None
        listener = self._listen(lock.fileno())
        self._tenures += 1
        try:
            start = time.monotonic()
            mine = self._round(own, tokens, listener)
            for _ in range(MAX_ROUNDS - 1):
                if time.monotonic() - start > TENURE:
                    break
                if YIELD and time.monotonic() - start > MINTEN and lock._others_waiting():
                    break
                if listener is None or not _readable(listener):
                    break
                self._round([], None, listener)
            return mine
        finally:
            if listener is not None:
                self._refuse_rest(listener)
                listener.close()
            lock.release()

    def _round(
        self,
        own: list[Request],
        tokens: list[str] | None,
        listener: socket.socket | None,
    ) -> list[Outcome]:
        """One transaction: own requests (after looking up those handed over before), then
        whatever other processes sent; answers sent after COMMIT."""
        remote: list[_Remote] = []
        out: list[Outcome] = []
        known: dict[int, list[Message]] = {}
        try:
            with self._backend.write_held() as tx:
                if self._acked:
                    _forget_acks(tx, self._acked)
                if self._tenures % SWEEP_EVERY == 0:
                    _sweep_acks(tx, time.time() - ACK_KEEP)
                if tokens:
                    known = _look_up(tx, own, tokens)
                todo = [r for i, r in enumerate(own) if i not in known]
                if listener is not None:
                    remote = _accept_all(listener, self._uid)
                theirs = [r for c in remote for r in c.requests]
                outcomes = append_group_in(tx, todo + theirs) if todo or theirs else []
                mine_out, their_out = outcomes[: len(todo)], outcomes[len(todo) :]
                ack = _ack_rows(remote, their_out) if remote else None
                if ack is not None:
                    tx.conn.execute(
                        "INSERT INTO combine_acks(token, at, body) VALUES (?, ?, ?)", ack
                    )
            it = iter(mine_out)
            out = [known[i] if i in known else next(it) for i in range(len(own))]
        except BaseException:
            for c in remote:
                c.answer(b"R")  # rolled back: nothing of theirs was written
            raise
        if ack is not None:
            self._acked = [ack[0]]
        for c, chunk in _split(remote, their_out):
            c.answer(_encode_answer(chunk))
        return out

    def _listen(self, lock_fd: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(self._address_of(lock_fd))
            sock.listen(MAX_REMOTE)
            sock.setblocking(False)
        except OSError:
            sock.close()  # the name is taken (a head that has not closed yet): no combining
            return None
        return sock

    @staticmethod
    def _refuse_rest(listener: socket.socket) -> None:
        """Answer ``R`` to connections still waiting to be accepted (the rest are reset)."""
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                conn.send(b"R")
            conn.close()

    def _address_of(self, lock_fd: int) -> bytes:
        if self._address is None:
            st = os.fstat(lock_fd)
            self._address = b"\0sessiondb-combine-%d-%d-%d" % (self._uid, st.st_dev, st.st_ino)
        return self._address


class _Unknown(Error):
    """The head accepted the requests and ended (or stopped) without answering."""

    def __init__(self, pid: int, stopped: bool) -> None:
        self.pid = pid
        self.stopped = stopped
        super().__init__(f"pid {pid} did not answer")


class _Remote:
    """One accepted connection of another process: its requests, validated."""

    __slots__ = ("conn", "requests", "tokens")

    def __init__(self, conn: socket.socket, requests: list[Request], tokens: list[str]) -> None:
        self.conn = conn
        self.requests = requests
        self.tokens = tokens

    def answer(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(data)
        self.conn.close()


def _readable(listener: socket.socket) -> bool:
    import select

    r, _, _ = select.select([listener], [], [], LINGER)
    return bool(r)


def _accept_all(listener: socket.socket, uid: int) -> list[_Remote]:
    out: list[_Remote] = []
    taken = 0
    while taken < MAX_REMOTE:
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        try:
            _pid, peer = _peer_uid(conn)
            if peer != uid:
                conn.close()
                continue
            data = conn.recv(MAX_MESSAGE + 1, socket.MSG_DONTWAIT)
        except OSError:  # not sent yet (or gone): it retries itself
            with contextlib.suppress(OSError):
                conn.send(b"R")
            conn.close()
            continue
        try:
            requests, tokens = _decode_requests(data)
        except (ValueError, TypeError, InvalidInput, KeyError, IndexError):
            with contextlib.suppress(OSError):
                conn.send(b"R")
            conn.close()
            continue
        out.append(_Remote(conn, requests, tokens))
        taken += len(requests)
    return out


def _split(
    remote: list[_Remote], outcomes: Sequence[Outcome]
) -> list[tuple[_Remote, Sequence[Outcome]]]:
    out, at = [], 0
    for c in remote:
        out.append((c, outcomes[at : at + len(c.requests)]))
        at += len(c.requests)
    return out


def append_group_in(tx: SQLiteTx, requests: list[Request]) -> list[Outcome]:
    from ..core.writes import _Group

    return _Group(tx, requests).run()


# -- the wire: requests and answers as JSON, validated on arrival ---------------------------------


_PREFIX = [secrets.token_hex(8), 0]
_SIMPLE = struct.Struct("<16sHH")
_FRESH = struct.Struct("<qd")


def _token() -> str:
    _PREFIX[1] += 1
    return "%s%016x" % (_PREFIX[0], _PREFIX[1])


def _encode_requests(requests: list[Request]) -> tuple[bytes, list[str]]:
    if len(requests) == 1:
        r = requests[0]
        if (
            len(r.items) == 1
            and r.expect_last is None
            and not r.patch
            and r.items[0].key is None
            and r.items[0].meta is None
            and r.items[0].created_at is None
        ):
            t = _token()
            it = r.items[0]
            sid, role = r.sid.encode(), it.role.encode()
            return (
                b"S"
                + _SIMPLE.pack(bytes.fromhex(t), len(sid), len(role))
                + sid
                + role
                + it.content.encode(),
                [t],
            )
    tokens = [_token() for _ in requests]
    wire = [
        [
            t,
            r.sid,
            [[i.role, i.content, i.key, i.meta, i.created_at] for i in r.items],
            r.expect_last,
            r.patch,
        ]
        for t, r in zip(tokens, requests, strict=True)
    ]
    return b"J" + json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode(), tokens


def _decode_requests(data: bytes) -> tuple[list[Request], list[str]]:
    """Another process's requests, checked like API input (core/validate.py): raises
    ValueError, TypeError, InvalidInput, KeyError or IndexError on anything else."""
    if len(data) > MAX_MESSAGE:
        raise ValueError("too large")
    if data[:1] == b"S":
        raw, ls, lr = _SIMPLE.unpack_from(data, 1)
        at = 1 + _SIMPLE.size
        sid = data[at : at + ls].decode()
        role = data[at + ls : at + ls + lr].decode()
        content = data[at + ls + lr :].decode()
        item = ap.Item.of(role, content, None, None, None)
        return [Request(v.session_id(sid), [item], None, None)], [raw.hex()]
    if data[:1] != b"J":
        raise ValueError("unknown request")
    wire = json.loads(data[1:])
    if not isinstance(wire, list) or not wire:
        raise ValueError("not a list of requests")
    requests, tokens = [], []
    for entry in wire:
        if not isinstance(entry, list) or len(entry) != 5:
            raise ValueError("not a request")
        token, sid, items, last, patch = entry
        if not isinstance(token, str) or len(token) != 32:
            raise ValueError("bad token")
        int(token, 16)
        if not isinstance(items, list) or not items:
            raise ValueError("no items")
        made = []
        for it in items:
            if not isinstance(it, list) or len(it) != 5:
                raise ValueError("not an item")
            role, content, key, meta, at = it
            if meta is not None and not isinstance(meta, str):
                raise ValueError("meta is not text")
            made.append(
                ap.Item.of(role, content, key, None if meta is None else json.loads(meta), at)
            )
        requests.append(
            Request(
                v.session_id(sid),
                made,
                None if last is None else v.non_negative_int(last, "expect_last"),
                state.check(patch),
            )
        )
        tokens.append(token)
    return requests, tokens


def _encode_answer(outcomes: Sequence[Outcome]) -> bytes:
    if len(outcomes) == 1:
        o = outcomes[0]
        if not isinstance(o, BaseException) and len(o) == 1:
            return b"F" + _FRESH.pack(o[0].seq, o[0].created_at)
    wire: list[Any] = []
    for o in outcomes:
        if isinstance(o, BaseException):
            if isinstance(o, PER_REQUEST[0]):  # KeyConflict
                wire.append(["K", o.session_id, o.key, o.seq])
            elif isinstance(o, PER_REQUEST[1]):  # StaleSession
                wire.append(["S", o.session_id, o.expected, o.actual])
            else:  # pragma: no cover - a group fails as a whole (append_group), never per request
                raise TypeError(f"not a per-request failure: {o!r}")
            continue
        wire.append(["m", [[m.seq, m.role, m.content, m.key, m.meta, m.created_at] for m in o]])
    return json.dumps(wire, ensure_ascii=False, separators=(",", ":")).encode()


def _decode_answer(data: bytes, requests: list[Request]) -> list[Outcome]:
    """The head's answer, one outcome per request; a malformed one is an unknown outcome."""
    try:
        if data[:1] == b"F" and len(requests) == 1 and len(requests[0].items) == 1:
            seq, at = _FRESH.unpack_from(data, 1)
            r, it = requests[0], requests[0].items[0]
            return [
                [new_message(r.sid, seq, it.role, it.content, it.key, v.load_meta(it.meta), at)]
            ]
        wire = json.loads(data)
        if not isinstance(wire, list) or len(wire) != len(requests):
            raise ValueError("not one outcome per request")
        out: list[Outcome] = []
        for r, o in zip(requests, wire, strict=True):
            kind = o[0]
            if kind == "m":
                out.append(
                    [
                        new_message(r.sid, int(seq), role, content, key, meta, float(at))
                        for seq, role, content, key, meta, at in o[1]
                    ]
                )
            elif kind == "K":
                out.append(KeyConflict(r.sid, str(o[2]), None if o[3] is None else int(o[3])))
            elif kind == "S":
                out.append(StaleSession(r.sid, int(o[2]), int(o[3])))
            else:
                raise ValueError(f"unknown outcome {kind!r}")
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise Error(
            f"the answer of the process that committed this append could not be read ({e}):"
            " whether it was stored is unknown — append with a key to retry safely"
        ) from e
    return out


# -- ack rows: which requests of other processes a group committed --------------------------------


def _ack_rows(remote: list[_Remote], outcomes: Sequence[Outcome]) -> tuple[str, float, str] | None:
    body: dict[str, list[Any]] = {}
    at = 0
    for c in remote:
        for token, r in zip(c.tokens, c.requests, strict=True):
            o = outcomes[at]
            at += 1
            if not isinstance(o, BaseException):
                body[token] = [r.sid, [m.seq for m in o]]
    if not body:
        return None
    return secrets.token_hex(16), time.time(), json.dumps(body, separators=(",", ":"))


def _look_up(tx: SQLiteTx, own: list[Request], tokens: list[str]) -> dict[int, list[Message]]:
    """The own requests (by index) that a head committed before it died without answering."""
    wanted = {t: i for i, t in enumerate(tokens)}
    found: dict[int, list[Message]] = {}
    for (body,) in tx.conn.execute("SELECT body FROM combine_acks"):
        try:
            acked = json.loads(body)
        except ValueError:
            continue
        for token, i in wanted.items():
            entry = acked.get(token)
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
                    f"session {sid!r}: this append was committed by pid that then died (seqs "
                    f"{seqs}), and some of those messages were removed since"
                )
            found[i] = [message_of(row) for row in rows]
    return found


def _forget_acks(tx: SQLiteTx, ids: list[str]) -> None:
    tx.conn.execute(
        "DELETE FROM combine_acks WHERE token IN (SELECT value FROM json_each(?))",
        (json.dumps(ids),),
    )
    ids.clear()


def _sweep_acks(tx: SQLiteTx, before: float) -> None:
    tx.conn.execute("DELETE FROM combine_acks WHERE at < ?", (before,))


__all__ = ["ACK_KEEP", "MAX_MESSAGE", "Combine"]
