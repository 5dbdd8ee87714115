"""File leases: one record per workspace in the private runtime folder.

For a workspace whose resolved real path hashes (sha256) to KEY, the folder holds:

- ``KEY.lock`` — never replaced nor deleted: every acquire/refresh/release holds an exclusive
  ``flock`` on it for the few microseconds it takes to read, judge and replace the record. The
  kernel drops the lock when the process dies, even by kill -9, so a crash never wedges it.
  (Deleting or replacing a lock file lets two processes lock two different inodes — hence
  never deleted.)
- ``KEY.lease`` — the record (JSON, 0600), replaced atomically: written to ``KEY.tmp``, fsynced,
  renamed over. A reader without the lock sees the old record or the new one, never half of one.

A record that cannot be parsed (truncated by a full disk, edited by hand) counts as stale, with a
:class:`LeaseWarning` naming the file: a lease must never lock a user out of their own project.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.lease import Holder, Lease, LeaseWarning
from ..errors import Error, StoreBusy, UnsupportedStorage
from ..host import paths
from ..host.flock import QueuedLock

if TYPE_CHECKING:
    from ..models import Check

LOCK_SUFFIX = ".lock"
LEASE_SUFFIX = ".lease"
TMP_SUFFIX = ".tmp"
# The last fencing token handed out (a decimal number), kept apart from the record so that a
# release, which removes the record, does not reset it.
FENCE_SUFFIX = ".fence"
MAX_RECORD = 64 * 1024
# The critical section is a read and a rename: microseconds. Waiting this long means the lock
# holder is stopped (SIGSTOP, debugger); give up with a named error instead of hanging.
LOCK_TIMEOUT = 10.0


def workspace_key(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(resolved real path, sha256 hex of it): symlinks and ``..`` give the same lease."""
    real = os.path.realpath(os.fspath(path))
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()
    return real, digest


def lease_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding file leases (``paths.runtime_dir()`` unless given), created 0700."""
    d = Path(directory) if directory is not None else paths.runtime_dir()
    try:
        paths.ensure_private_dir(d)
    except OSError as e:
        raise UnsupportedStorage(
            f"cannot create the lease folder {d}: {e.strerror} — set SESSIONDB_RUNTIME_DIR "
            "to a private folder you can write"
        ) from e
    return d


def _os_error(path: Path, what: str, e: OSError) -> UnsupportedStorage:
    return UnsupportedStorage(
        f"{path}: cannot {what}: {e.strerror or e} — check the folder's owner and permissions "
        "or set SESSIONDB_RUNTIME_DIR to a private folder you can write"
    )


def read_record(path: Path) -> Holder | None:
    """The record in ``path``; None when missing; None plus a LeaseWarning when unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            _warn(path, "it is a symlink")
            return None
        raise _os_error(path, "read the lease record", e) from e
    try:
        data = os.read(fd, MAX_RECORD + 1)
    except OSError as e:
        raise _os_error(path, "read the lease record", e) from e
    finally:
        os.close(fd)
    try:
        if len(data) > MAX_RECORD:
            raise ValueError(f"larger than {MAX_RECORD} bytes")
        obj = json.loads(data.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return Holder.from_dict(obj)
    except (ValueError, UnicodeDecodeError) as e:
        _warn(path, str(e) or type(e).__name__)
        return None


def _warn(path: Path, reason: str) -> None:
    warnings.warn(
        LeaseWarning(f"{path}: unreadable lease record ({reason}); treating the lease as stale"),
        stacklevel=4,
    )


class _FileSlot:
    def __init__(self, backend: FileBackend) -> None:
        self._b = backend

    def read(self) -> Holder | None:
        return read_record(self._b.lease_path)

    def now(self) -> float:
        return time.time()

    def last_fence(self) -> int:
        try:
            fd = os.open(self._b.fence_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise _os_error(self._b.fence_path, "read the lease's fencing token", e) from e
        try:
            text = os.read(fd, 32)
        finally:
            os.close(fd)
        return int(text) if text.strip().isdigit() else 0

    def _keep_fence(self, fence: int) -> None:
        if fence <= self.last_fence():
            return
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            fd = paths.open_private(self._b.fence_path, flags)
            try:
                os.write(fd, str(fence).encode())
                os.fsync(fd)  # a token must never go back, even after a power loss
            finally:
                os.close(fd)
        except OSError as e:
            raise _os_error(self._b.fence_path, "write the lease's fencing token", e) from e

    def write(self, holder: Holder) -> None:
        b = self._b
        self._keep_fence(holder.fence)
        data = json.dumps(holder.to_dict(), sort_keys=True).encode("utf-8")
        try:
            # A fixed tmp name is safe: only the flock holder writes it.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            fd = paths.open_private(b.tmp_path, flags)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                # fsync before rename: otherwise a crash can leave an empty file under the final
                # name (ext4 delayed allocation). No directory fsync: after a power loss every
                # holder is dead anyway, and an old or missing record is then simply stale.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(b.tmp_path, b.lease_path)
        except OSError as e:
            raise _os_error(b.lease_path, "write the lease record", e) from e

    def clear(self) -> None:
        try:
            os.unlink(self._b.lease_path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _os_error(self._b.lease_path, "remove the lease record", e) from e


class FileBackend:
    """A lease kept in ``directory`` under ``key`` (see the module docstring)."""

    def __init__(self, resource: str, key: str, directory: Path, *, kind: str) -> None:
        self._resource = resource
        self._kind = kind
        self.directory = directory
        self.lock_path = directory / (key + LOCK_SUFFIX)
        self.lease_path = directory / (key + LEASE_SUFFIX)
        self.tmp_path = directory / (key + TMP_SUFFIX)
        self.fence_path = directory / (key + FENCE_SUFFIX)

    @property
    def resource(self) -> str:
        return self._resource

    @property
    def kind(self) -> str:
        return self._kind

    def peek(self) -> Holder | None:
        return read_record(self.lease_path)

    @contextmanager
    def transaction(self) -> Iterator[_FileSlot]:
        lease_dir(self.directory)
        try:
            lock = QueuedLock(self.lock_path)
        except OSError as e:
            raise _os_error(self.lock_path, "open the lease lock file", e) from e
        try:
            try:
                got = lock.acquire(LOCK_TIMEOUT)
            except OSError as e:
                raise _os_error(self.lock_path, "lock the lease lock file", e) from e
            if not got:
                raise StoreBusy(
                    f"{self.lock_path}: lease lock busy for {LOCK_TIMEOUT:.0f} s — a process is "
                    "stuck inside a lease operation (stopped or traced?); find it with "
                    f"`fuser {self.lock_path}`",
                    path=str(self.lock_path),
                    waited=LOCK_TIMEOUT,
                )
            try:
                yield _FileSlot(self)
            finally:
                lock.release()
        finally:
            lock.close()


def workspace(
    path: str | os.PathLike[str],
    session_id: str,
    ttl: float = 300.0,
    *,
    pid: int | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> Lease:
    """A file lease on the workspace at ``path`` for ``session_id``.

    ``pid`` is the process whose life the lease follows (default: the caller, at each call);
    ``directory`` overrides the runtime folder (default ``paths.runtime_dir()``).
    """
    real, key = workspace_key(path)
    d = Path(directory) if directory is not None else paths.runtime_dir()
    backend = FileBackend(real, key, d, kind=f"workspace lease on {real}")
    return Lease(backend, session_id, ttl, pid=pid)


def list_leases(directory: str | os.PathLike[str] | None = None) -> list[Holder]:
    """Every file lease record in the runtime folder, stale ones included, oldest first."""
    d = Path(directory) if directory is not None else paths.runtime_dir()
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise _os_error(d, "list the lease folder", e) from e
    records = [read_record(d / n) for n in names if n.endswith(LEASE_SUFFIX)]
    return sorted((r for r in records if r is not None), key=lambda r: r.acquired_at)


def check_leases(directory: str | os.PathLike[str] | None = None) -> Check:
    """The doctor's line on the workspace leases in the runtime folder (stale ones named)."""
    from ..models import Check

    d = Path(directory) if directory is not None else paths.runtime_dir()
    try:
        holders = list_leases(d)
    except Error as e:  # a lease folder problem must not hide the rest of the report
        return Check("leases", "warn", f"cannot read leases in {d}: {e}", None, {"dir": str(d)})
    now = time.time()
    lines, shown, stale = [], [], 0
    for h in holders:
        alive, is_stale = h.alive(), h.stale(now)
        stale += is_stale
        state = "stale" if is_stale else ("alive" if alive else "on another host")
        lines.append(f"session {h.session_id} (pid {h.pid}, {state})")
        shown.append({**h.to_dict(), "alive": alive, "stale": is_stale})
    data = {"dir": str(d), "leases": shown}
    if not holders:
        return Check("leases", "ok", f"no leases in {d}", None, data)
    detail = f"{len(holders)} lease(s): " + "; ".join(lines[:5])
    hint = "stale leases are taken over by the next acquire" if stale else None
    return Check("leases", "ok", detail, hint, data)
