"""Handing a tenure on (combine.py; docs/adr/0018-cross-process-combining.md, "Handing the
tenure on"): a head whose tenure is over, with writers still waiting on its socket and nobody
flagged in the admission queue, sends one of them the admission lock's descriptor and the
listening socket (``SCM_RIGHTS``, answer ``H``) instead of releasing the lock and refusing them
all. That writer is the next head: it commits its own requests with what waits on the socket.

An ``flock`` belongs to the open file description the passed descriptor refers to, so the lock
stays held across the hand-over; the socket keeps its backlog, and nobody is refused. Without
it, every tenure's end refused the writers waiting on it, and they retried until one of them
took the lock and listened: at K=64 more hand-overs were refused than answered and heads were
idle about a fifth of the time (docs/benchmarks.md, "Where a combined append's time goes").

The kernel keeps the rules whatever dies: descriptors in flight or held by a killed process
are closed with it; once no process holds one, the lock is free and the socket's waiting
connections are reset — none of them was taken, so each writer commits its requests itself.
What arrives is checked before it is used: exactly two descriptors, the first this store's
lock file (device and inode), the second a socket bound to this store's address; anything else
is closed and the answer counts as "not committed".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct

from ..host.flock import QueuedLock
from ..host.inherited import not_inherited
from . import combine_wire as wire

_FDS = struct.Struct("2i")
#: Ancillary buffer for a waiter's ``recvmsg``: room for the two descriptors of a hand-over.
ANCILLARY = socket.CMSG_SPACE(_FDS.size)


class Baton:
    """The admission lock and the listening socket of a tenure handed on, held by this
    process: the head's lock for that tenure (``fileno``, ``others_waiting``, ``release``)."""

    __slots__ = ("__weakref__", "_fd", "listener")

    def __init__(self, lock_fd: int, listener: socket.socket) -> None:
        self._fd = lock_fd
        self.listener = not_inherited(listener)
        not_inherited(self)  # neither may outlive a fork in the child (host/inherited.py)

    @classmethod
    def received(
        cls, ancillary: list[tuple[int, int, bytes]], address: bytes, lock_id: tuple[int, int]
    ) -> Baton | None:
        """The baton in a ``recvmsg``'s ancillary data, if it is this store's (module
        docstring); every descriptor received is otherwise closed. None: no baton."""
        fds: list[int] = []
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                whole = len(data) - len(data) % 4
                fds.extend(fd for (fd,) in struct.iter_unpack("i", data[:whole]))
        if len(fds) != 2:
            _close_all(fds)
            return None
        lock_fd, sock_fd = fds
        try:
            st = os.fstat(lock_fd)
            listener = socket.socket(fileno=sock_fd)
        except OSError:
            _close_all(fds)
            return None
        try:
            ours = (
                (st.st_dev, st.st_ino) == lock_id
                and listener.type == socket.SOCK_SEQPACKET
                and listener.getsockname() == address
            )
        except OSError:
            ours = False
        if not ours:
            listener.close()
            os.close(lock_fd)
            return None
        listener.setblocking(False)
        return cls(lock_fd, listener)

    def fileno(self) -> int:
        return self._fd

    def others_waiting(self) -> bool:
        return QueuedLock.others_waiting_on(self._fd)

    def release(self) -> None:
        """Unlock (the lock is then free for every process) and close the descriptor."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self.close()

    def close(self) -> None:
        """Close this process's descriptor; the lock stays with whoever else holds one."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def hand_on(listener: socket.socket, lock_fd: int, uid: int) -> bool:
    """Send the lock and ``listener`` to the first writer waiting on it that takes them: True
    then (this process's descriptors still need closing, not unlocking); False when none
    did — the caller still holds the lock and releases it."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return False  # nobody waiting (any more)
        try:
            if wire.peer(conn)[1] != uid:
                continue
            fds = _FDS.pack(lock_fd, listener.fileno())
            conn.sendmsg([wire.HEAD], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            return True
        except OSError:
            continue  # gone: the next one
        finally:
            conn.close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


__all__ = ["ANCILLARY", "Baton", "hand_on"]
