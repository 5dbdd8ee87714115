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
