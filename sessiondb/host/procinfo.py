"""Facts about processes on this host, read from /proc (Linux); None where they cannot be known.

Used to name the process holding a lock, and to tell a dead lease holder from a live one: a pid
alone is not an identity, since pids are reused, so a holder is (pid, process start time).
"""

from __future__ import annotations

import os
from typing import NamedTuple


def hostname() -> str:
    return os.uname().nodename  # what socket.gethostname() returns, without loading socket


def pid_exists(pid: int) -> bool:
    """True if a process with this pid exists on this host (zombies count as existing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start_time: int | None) -> bool | None:
    """Is the process (pid, start_time) still running on this host?

    True/False when it can be proven; None when it cannot be known (no /proc, for instance).
    A pid now used by a process with another start time is the old process being dead.
    """
    if not pid_exists(pid):
        return False
    if start_time is None:
        return True
    now = process_start_time(pid)
    if now is None:
        return None
    return now == start_time


def command_line(pid: int) -> str | None:
    """The command line of ``pid`` as one string, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    parts = [p.decode("utf-8", "replace") for p in raw.split(b"\0") if p]
    return " ".join(parts) if parts else None


# --- file locks (/proc/locks) ----------------------------------------------------------------

PROC_LOCKS = "/proc/locks"


class FileLock(NamedTuple):
    """One line of /proc/locks. ``end`` is None for a lock that runs to end of file. ``pid`` is
    -1 for open-file-description locks (OFDLCK), which belong to no process."""

    pid: int
    kind: str  # POSIX, FLOCK, OFDLCK, LEASE…
    mode: str  # READ, WRITE
    start: int
    end: int | None


class _Entry(NamedTuple):
    lock: FileLock
    major: int
    minor: int
    inode: int


def parse_proc_locks(text: str) -> list[_Entry]:
    """Parse /proc/locks text; blocked waiters (``->`` lines) and odd lines are skipped.

    A line reads ``1: POSIX  ADVISORY  WRITE 3777 fe:00:1474579 0 EOF``: the device is
    ``major:minor`` in hex, the inode in decimal.
    """
    entries: list[_Entry] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->":
            continue
        kind, mode = fields[1], fields[3]
        try:
            pid = int(fields[4])
            major_s, minor_s, inode_s = fields[5].split(":")
            start = int(fields[6])
            end = None if fields[7] == "EOF" else int(fields[7])
            entry = _Entry(
                FileLock(pid, kind, mode, start, end),
                int(major_s, 16),
                int(minor_s, 16),
                int(inode_s),
            )
        except ValueError:
            continue
        entries.append(entry)
    return entries


def _read_proc_locks() -> str | None:
    try:
        with open(PROC_LOCKS, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _pid_has_file_open(pid: int, dev: int, ino: int) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if st.st_dev == dev and st.st_ino == ino:
            return True
    return False


def lock_holders(path: str | os.PathLike[str], proc_locks: str | None = None) -> list[FileLock]:
    """The locks the kernel reports on ``path``'s (device, inode); empty if none or unknown.

    Some filesystems (btrfs subvolumes, overlayfs) report a device in /proc/locks that differs
    from ``stat().st_dev``; a lock on the same inode number is then accepted only if its process
    has this very file open, so an inode number reused on another device is never blamed.
    """
    try:
        st = os.stat(path)
    except OSError:
        return []
    text = _read_proc_locks() if proc_locks is None else proc_locks
    if text is None:
        return []
    exact: list[FileLock] = []
    same_inode: list[FileLock] = []
    for e in parse_proc_locks(text):
        if e.inode != st.st_ino:
            continue
        if e.major == os.major(st.st_dev) and e.minor == os.minor(st.st_dev):
            exact.append(e.lock)
        else:
            same_inode.append(e.lock)
    if not exact:
        exact = [
            lk
            for lk in same_inode
            if lk.pid > 0 and _pid_has_file_open(lk.pid, st.st_dev, st.st_ino)
        ]
    return exact


def covers(lock: FileLock, first: int, last: int) -> bool:
    """Does ``lock`` overlap the byte range [first, last]?"""
    end = lock.end if lock.end is not None else float("inf")
    return lock.start <= last and end >= first


def open_by(path: str | os.PathLike[str]) -> list[int]:
    """Pids of the processes that have ``path`` open (scanning /proc/*/fd), sorted; processes
    whose descriptors cannot be read (other users, exited meanwhile) are skipped."""
    return sorted({pid for pid, _ in _descriptors_of(path)})


def flock_holders(path: str | os.PathLike[str], first: int | None = None) -> list[int]:
    """Pids of the processes holding a descriptor of ``path`` whose open file description holds
    an ``flock`` (the ``lock:`` lines of /proc/PID/fdinfo/FD); ``first``, if given, is looked at
    before scanning every process, and is the only answer when it holds one.

    /proc/locks names the process that *took* an flock, but the lock belongs to the open file
    description and passes with its descriptor — to a child across fork, to another process
    over a socket (sqlite/combine_baton.py) — and stays held after the taker has closed its
    descriptor or died. Processes whose descriptors cannot be read are skipped.
    """
    if first is not None and any(
        _fd_holds_flock(first, fd) for _, fd in _descriptors_of(path, first)
    ):
        return [first]
    return sorted({pid for pid, fd in _descriptors_of(path) if _fd_holds_flock(pid, fd)})


def _fd_holds_flock(pid: int, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
            text = f.read(64 * 1024)
    except OSError:
        return False
    lines = [ln.partition("\t")[2] for ln in text.splitlines() if ln.startswith("lock:")]
    return any(e.lock.kind == "FLOCK" for e in parse_proc_locks("\n".join(lines)))


def _descriptors_of(path: str | os.PathLike[str], pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, fd) of every descriptor of ``path`` in every process (or in ``pid`` alone)."""
    target = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(target)
        ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        ident = None
    if pid is not None:
        entries = [str(pid)]
    else:
        try:
            entries = os.listdir("/proc")
        except OSError:
            return []
    found: list[tuple[int, str]] = []
    for name in entries:
        if not name.isdigit():
            continue
        fd_dir = f"/proc/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link != target:
                continue
            # The link text matches; confirm it is the same file, not one since replaced by a
            # rename (the link would then read "... (deleted)", but be certain).
            if ident is not None:
                try:
                    fst = os.stat(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if (fst.st_dev, fst.st_ino) != ident:
                    continue
            found.append((int(name), fd))
    return found


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (after the parenthesised command name), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 2 :].split()


def process_state(pid: int) -> str | None:
    """One-letter state of ``pid`` (R, S, D, Z, ...) from /proc, or None when unknown.

    A zombie ("Z") has exited and only waits for its parent to reap it: it can hold nothing.
    """
    fields = _stat_fields(pid)
    if not fields:
        return None
    return fields[0].decode("ascii", "replace")


def parent_pid(pid: int) -> int | None:
    """The parent pid of ``pid`` (field 4 of /proc/PID/stat), or None."""
    fields = _stat_fields(pid)
    try:
        return int(fields[1]) if fields else None
    except (IndexError, ValueError):
        return None


def process_name(pid: int) -> str | None:
    """The short command name of ``pid`` (/proc/PID/comm), or None."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode("utf-8", "replace").strip() or None
    except OSError:
        return None
