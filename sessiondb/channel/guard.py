"""The channel folder is hostile ground: the other side controls it (docs/channel.md, "What each
side trusts"). Every file of the folder is opened here, and nowhere else.

- ``open_regular`` opens a name of the folder only if it is a regular file: never through a
  symlink (``O_NOFOLLOW``; a symlink planted at ``inbound.db`` made the host write into another
  channel's inbox, one at ``inbound.db.lock`` made it create a file of the agent's choosing),
  never blocking on a FIFO (``O_NONBLOCK``: a FIFO at ``heartbeat`` or ``outbound.db`` hung
  ``status``, ``tail`` and ``send`` for ever), never a device, and the descriptor's own ``fstat``
  decides (a check of the name before opening could be raced).
- SQLite opens files by name itself (the database, then ``-journal`` next to it at every
  transaction) and resolves symlinks on the way; a verified check before handing it the name
  leaves a window in which the other side swaps the file. So channel databases go through the
  ``sessiondb-channel`` VFS below: SQLite asks it to open a name and gets a descriptor that
  ``open_regular`` verified; every read and write goes through that very descriptor. Locks are
  SQLite's own byte-range protocol on the same bytes (so either side interoperates with a plain
  SQLite), held as open-file-description locks where the kernel has them: they belong to the
  descriptor, so threads of one process exclude each other and closing another descriptor of
  the file (a header probe) never drops them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any

import apsw

from .protocol import NotAChannel

VFS_NAME = "sessiondb-channel"

_OPEN_EXTRA = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path | str, what: str) -> NotAChannel:
    return NotAChannel(
        f"{path} is {what}, not a regular file — a channel folder holds only regular files and "
        "sessiondb never follows or opens anything else there; whoever shares the folder "
        "replaced it: stop both ends and start a new channel folder"
    )


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path | str, flags: int, *, create: bool = False) -> tuple[int, bool]:
    """Open ``path`` (O_RDONLY or O_RDWR in ``flags``) only if it is a regular file; with
    ``create``, create it (0600) when missing. Returns (descriptor, created).

    Raises FileNotFoundError when it is missing and ``create`` is false, NotAChannel when it is
    anything but a regular file (or keeps changing while we look).
    """
    for _ in range(3):
        try:
            before: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            if not create:
                raise
            before = None
        if before is not None and not stat.S_ISREG(before.st_mode):
            # Refused before open(): opening a device can have effects of its own.
            raise _not_regular(path, _kind(before.st_mode))
        # Create exactly this name (O_EXCL never follows a symlink); a name that appeared
        # meanwhile is looked at again.
        extra = _OPEN_EXTRA | (os.O_CREAT | os.O_EXCL if before is None else 0)
        try:
            fd = os.open(path, flags | extra, 0o600)
        except FileExistsError:
            continue
        except FileNotFoundError:
            if before is not None and create:
                continue  # removed between lstat and open: create it
            raise
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _not_regular(path, "a symbolic link") from e
            raise
        st = os.fstat(fd)
        same = before is None or (st.st_dev, st.st_ino) == (before.st_dev, before.st_ino)
        if stat.S_ISREG(st.st_mode) and same:
            return fd, before is None
        os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, _kind(st.st_mode))
    raise NotAChannel(f"{path} keeps being replaced while it is opened — stop both ends")


def read_small(path: Path | str, limit: int) -> bytes | None:
    """The bytes of a small regular file (None if missing or larger than ``limit``)."""
    try:
        fd, _ = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.pread(fd, limit + 1, 0)
    finally:
        os.close(fd)
    return None if len(data) > limit else data


# -- SQLite's lock protocol (os_unix.c), on the same bytes so a plain SQLite interoperates ------

_PENDING = 0x40000000
_RESERVED = _PENDING + 1
_SHARED_FIRST = _PENDING + 2
_SHARED_SIZE = 510

# Open-file-description locks (Linux >= 3.15) belong to the descriptor; classic POSIX locks
# belong to the process, so elsewhere threads of one process do not exclude each other.
_OFD = hasattr(fcntl, "F_OFD_SETLK") and struct.calcsize("l") == 8
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on 64-bit Linux


def _setlk(fd: int, kind: int, start: int, length: int) -> bool:
    """Set (or clear) a lock without waiting; False when another holder conflicts."""
    try:
        if _OFD:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
        else:
            op = {fcntl.F_RDLCK: fcntl.LOCK_SH, fcntl.F_WRLCK: fcntl.LOCK_EX}.get(kind)
            fcntl.lockf(fd, fcntl.LOCK_UN if op is None else op | fcntl.LOCK_NB, length, start)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _io_error(path: str, doing: str, e: OSError) -> apsw.Error:
    if e.errno == errno.ENOSPC:
        return apsw.FullError(f"{path}: {doing}: {e.strerror}")
    return apsw.IOError(f"{path}: {doing}: {e.strerror}")


class _File:
    """A channel database or journal, on a descriptor ``open_regular`` verified."""

    def __init__(self, path: str, fd: int, *, main: bool, dirsync: bool) -> None:
        self.path = path
        self.fd = fd
        self.main = main
        self.dirsync = dirsync  # a new journal: sync its folder entry at the first sync
        self.level = apsw.SQLITE_LOCK_NONE
        st = os.fstat(fd)
        self.ident = (st.st_dev, st.st_ino)

    def xRead(self, amount: int, offset: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        try:
            while got < amount:
                chunk = os.pread(self.fd, amount - got, offset + got)
                if not chunk:
                    break  # short read: SQLite zero-fills and decides
                parts.append(chunk)
                got += len(chunk)
        except OSError as e:
            raise _io_error(self.path, "reading", e) from e
        return b"".join(parts)

    def xWrite(self, data: Any, offset: int) -> None:
        view = memoryview(data).cast("B")
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as e:
            raise _io_error(self.path, "writing", e) from e

    def xTruncate(self, newsize: int) -> None:
        try:
            os.ftruncate(self.fd, newsize)
        except OSError as e:
            raise _io_error(self.path, "truncating", e) from e

    def xSync(self, flags: int) -> None:
        try:
            if flags & apsw.SQLITE_SYNC_DATAONLY and hasattr(os, "fdatasync"):
                os.fdatasync(self.fd)
            else:
                os.fsync(self.fd)
            if self.dirsync:
                folder = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(folder)
                finally:
                    os.close(folder)
                self.dirsync = False
        except OSError as e:
            raise _io_error(self.path, "syncing", e) from e

    def xFileSize(self) -> int:
        return os.fstat(self.fd).st_size

    def xLock(self, level: int) -> None:
        if not self.main or level <= self.level:
            return
        fd = self.fd
        if self.level == apsw.SQLITE_LOCK_NONE:
            # Every transaction starts here: the name must still be this file. A database
            # renamed away and replaced would take our writes where no reader looks.
            try:
                now = os.lstat(self.path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != self.ident:
                raise NotAChannel(
                    f"{self.path} was removed or replaced by another file while open — "
                    "whoever shares the folder changed it: stop both ends and start a new "
                    "channel folder"
                )
            if not _setlk(fd, fcntl.F_RDLCK, _PENDING, 1):
                raise apsw.BusyError("pending lock held")
            ok = _setlk(fd, fcntl.F_RDLCK, _SHARED_FIRST, _SHARED_SIZE)
            _setlk(fd, fcntl.F_UNLCK, _PENDING, 1)
            if not ok:
                raise apsw.BusyError("exclusive lock held")
            self.level = apsw.SQLITE_LOCK_SHARED
            if level == apsw.SQLITE_LOCK_SHARED:
                return
        if level >= apsw.SQLITE_LOCK_RESERVED and self.level < apsw.SQLITE_LOCK_RESERVED:
            if not _setlk(fd, fcntl.F_WRLCK, _RESERVED, 1):
                raise apsw.BusyError("reserved lock held")
            self.level = apsw.SQLITE_LOCK_RESERVED
        if level == apsw.SQLITE_LOCK_EXCLUSIVE:
            if self.level < apsw.SQLITE_LOCK_PENDING:
                if not _setlk(fd, fcntl.F_WRLCK, _PENDING, 1):
                    raise apsw.BusyError("pending lock held")
                self.level = apsw.SQLITE_LOCK_PENDING
            if not _setlk(fd, fcntl.F_WRLCK, _SHARED_FIRST, _SHARED_SIZE):
                raise apsw.BusyError("readers active")  # stays PENDING: new readers wait
            self.level = apsw.SQLITE_LOCK_EXCLUSIVE

    def xUnlock(self, level: int) -> None:
        if not self.main or level >= self.level:
            return
        fd = self.fd
        if self.level > apsw.SQLITE_LOCK_SHARED:
            if level == apsw.SQLITE_LOCK_SHARED:
                _setlk(fd, fcntl.F_RDLCK, _SHARED_FIRST, _SHARED_SIZE)
            _setlk(fd, fcntl.F_UNLCK, _PENDING, 2)  # pending and reserved
        if level == apsw.SQLITE_LOCK_NONE:
            _setlk(fd, fcntl.F_UNLCK, _SHARED_FIRST, _SHARED_SIZE)
        self.level = level

    def xCheckReservedLock(self) -> bool:
        if self.level > apsw.SQLITE_LOCK_SHARED:
            return True
        if not _setlk(self.fd, fcntl.F_RDLCK, _RESERVED, 1):
            return True  # someone holds it for writing
        _setlk(self.fd, fcntl.F_UNLCK, _RESERVED, 1)
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        return int(apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE)  # what the unix VFS reports

    def xClose(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases this descriptor's locks
            self.fd = -1


_OWN_FILES = (
    apsw.SQLITE_OPEN_MAIN_DB
    | apsw.SQLITE_OPEN_MAIN_JOURNAL
    | apsw.SQLITE_OPEN_WAL
    | apsw.SQLITE_OPEN_SUPER_JOURNAL
)


class _ChannelVFS(apsw.VFS):
    """The default VFS, except that files named in the folder are opened by ``open_regular``
    and that names are taken as given (no symlink resolution)."""

    def __init__(self) -> None:
        super().__init__(VFS_NAME, base="")

    def xOpen(self, name: Any, flags: list[int]) -> Any:
        wanted = flags[0]
        if name is None or not wanted & _OWN_FILES:
            return apsw.VFSFile("", name, flags)  # temporary files: never in the folder
        path = name.filename() if isinstance(name, apsw.URIFilename) else str(name)
        readonly = bool(wanted & apsw.SQLITE_OPEN_READONLY)
        create = bool(wanted & apsw.SQLITE_OPEN_CREATE) and not readonly
        try:
            fd, created = open_regular(path, os.O_RDONLY if readonly else os.O_RDWR, create=create)
        except FileNotFoundError as e:
            raise apsw.CantOpenError(f"{path}: no such file") from e
        except OSError as e:
            raise apsw.CantOpenError(f"{path}: {e.strerror}") from e
        flags[1] = wanted
        main = bool(wanted & apsw.SQLITE_OPEN_MAIN_DB)
        return _File(path, fd, main=main, dirsync=created and not main)

    def xAccess(self, pathname: str, flags: int) -> bool:
        if flags == apsw.SQLITE_ACCESS_EXISTS:
            try:
                st = os.lstat(pathname)
            except FileNotFoundError:
                return False
            # As the unix VFS says, but without following a link: anything that is not a
            # regular file "exists", so SQLite tries to open it and open_regular refuses it.
            return not stat.S_ISREG(st.st_mode) or st.st_size > 0
        return bool(super().xAccess(pathname, flags))

    def xFullPathname(self, name: str) -> str:
        return os.path.abspath(name)


_vfs: _ChannelVFS | None = None
_vfs_lock = threading.Lock()


def vfs_name() -> str:
    """Register the channel VFS in this process (once) and return its name."""
    global _vfs
    with _vfs_lock:
        if _vfs is None:
            _vfs = _ChannelVFS()
    return VFS_NAME
