"""Health checks of the host around a store's file, whatever the backend: who has it open, the
leases in the runtime folder, the file and folder permissions, and how to name a process."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ..models import Check
from . import paths, procinfo


def describe_process(pid: int) -> str:
    """``pid 123 (python agent.py, running 42 s)`` from what /proc tells."""
    parts = []
    cmd = procinfo.command_line(pid)
    if cmd:
        cmd = " ".join(cmd.split())  # `python -c` scripts carry newlines: one line per check
        parts.append(cmd if len(cmd) <= 80 else cmd[:77] + "...")
    age = process_age(pid)
    if age is not None:
        parts.append(f"running {age:.0f} s")
    return f"pid {pid}" + (f" ({', '.join(parts)})" if parts else "")


def process_age(pid: int) -> float | None:
    start = procinfo.process_start_time(pid)
    if start is None:
        return None
    try:
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start / ticks)


def other_processes(files: Sequence[Path]) -> list[int]:
    """Pids of the other processes that have any of ``files`` open."""
    pids: set[int] = set()
    for p in files:
        pids.update(procinfo.open_by(p))
    pids.discard(os.getpid())
    return sorted(pids)


def check_open_by(files: Sequence[Path]) -> Check:
    """Who else has the store's files open (the database first, then its companions)."""
    others = other_processes(files)
    data = {"pids": others, "commands": {str(p): procinfo.command_line(p) for p in others}}
    if not others:
        return Check("open_by", "ok", "no other process has the file open", None, data)
    return Check(
        "open_by",
        "ok",
        f"{len(others)} other process(es) have it open: "
        + "; ".join(describe_process(p) for p in others[:5]),
        None,
        data,
    )


def check_permissions(files: Sequence[Path]) -> Check:
    """The store's files (the database first) must be private (0600): they hold conversations.
    Its folder must be writable; it must be private only if sessiondb made it (the default data
    folder), since a folder the user made for their database is theirs to set (rule 11)."""
    wide: list[str] = []
    path = files[0]
    folder = path.parent
    for p in files:
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            wide.append(f"{p.name} is {mode:04o}")
    folder_note = ""
    try:
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
            if folder.absolute() == paths.data_dir().absolute():
                wide.append(f"folder {folder} is {mode:04o}")
            else:
                folder_note = f"; folder {mode:04o} (yours to set)"
    except OSError:
        pass
    writable = folder_writable(folder)
    data = {"wider_than_private": wide, "folder_writable": writable}
    if not writable:
        return Check(
            "permissions",
            "fail",
            f"folder {folder} is not writable: SQLite cannot create its journal, WAL or lock "
            "files there, so every write fails",
            f"make it writable (chmod u+w {folder}) or move the database",
            data,
        )
    if wide:
        return Check(
            "permissions",
            "warn",
            "readable by others: " + "; ".join(wide),
            "chmod 600 "
            + " ".join(str(p) for p in files if p.exists())
            + (f" && chmod 700 {folder}" if any(w.startswith("folder") for w in wide) else ""),
            data,
        )
    return Check("permissions", "ok", f"files 0600{folder_note}", None, data)


def folder_writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)
