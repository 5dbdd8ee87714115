"""Descriptors a child made by ``fork()`` must not keep: closed in it right after the fork.

A forked child holds a copy of each of its parent's descriptors, and a copy keeps what it
refers to alive after the parent has let go of it, or died:

* an admission lock handle (host/flock.py): an ``flock`` belongs to the open file description,
  so a lock the parent held — or was waiting for in a helper thread — stays held while the
  child's copy is open, after the parent is killed too;
* a head's listening socket (sqlite/combine.py, combine_baton.py): the child's copy keeps the
  store's address bound and accepting connections that nobody answers, so no later head can
  listen there and writers that connect wait out their ``write_timeout``;
* a head's connections to its waiters: a waiter learns that its head was killed from the end
  of file, which the child's copy would withhold.

Each such object is registered here while it lives, and ``close()`` is called on each in the
child, which closes the child's copy only (the parent's stays as it is; an ``flock`` is released
only when the last descriptor of its open file description is closed). Not covered: a fork in
the instant between a descriptor's creation and its registration. Test:
tests/sqlite/test_combine.py::test_a_child_forked_during_a_tenure_keeps_neither_lock_nor_socket.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from typing import Protocol, TypeVar


class _Closeable(Protocol):
    def close(self) -> None: ...


_T = TypeVar("_T", bound=_Closeable)
_OPEN: weakref.WeakSet[_Closeable] = weakref.WeakSet()


def not_inherited(obj: _T) -> _T:
    """Register ``obj`` (its ``close()`` closes this process's copy of its descriptor) to be
    closed in every child forked while it lives; returns it."""
    _OPEN.add(obj)
    return obj


def _close_in_child() -> None:
    # The child has one thread: nothing else touches these objects here.
    for obj in list(_OPEN):
        with contextlib.suppress(OSError):
            obj.close()
    _OPEN.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


__all__ = ["not_inherited"]
