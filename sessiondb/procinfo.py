"""Facts about processes on this host, read from /proc (Linux); None where they cannot be known.

Used to name the process holding a lock, and to tell a dead lease holder from a live one: a pid
alone is not an identity, since pids are reused, so a holder is (pid, process start time).
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return socket.gethostname()


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
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    end = data.rfind(b")")
    if end < 0:
        return None
    fields = data[end + 2 :].split()
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


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (after the parenthesised command name), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
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
