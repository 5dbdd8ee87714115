"""The agent's heartbeat file: written by the agent side, read by the host. Hostile ground like
every file of the folder (docs/channel.md): read as a small regular file or not at all, replaced
by a rename that never follows a symlink."""

from __future__ import annotations

import json
import os
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from . import guard
from .protocol import HEARTBEAT_FILE, MAX_HEARTBEAT_BYTES, NotAChannel


def write_heartbeat(folder: Path, record: dict[str, Any]) -> None:
    """Replace the heartbeat file atomically (write a private temp file, then rename; the
    rename replaces whatever the name holds, a symlink included, without following it)."""
    path = folder / HEARTBEAT_FILE
    tmp = folder / f".{HEARTBEAT_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    data = json.dumps(record, separators=(",", ":")).encode()
    with suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a crash; unlink never follows a symlink
    fd, _ = guard.open_regular(tmp, os.O_WRONLY, create=True)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def heartbeat_bytes(folder: Path) -> bytes | None:
    """The heartbeat file's bytes; None when there is none or it is not a small regular file
    (a FIFO, a symlink to /dev/zero, a huge file: all mean "no heartbeat")."""
    try:
        return guard.read_small(folder / HEARTBEAT_FILE, MAX_HEARTBEAT_BYTES)
    except (OSError, NotAChannel):
        return None


def parse_heartbeat(raw: bytes | None) -> dict[str, Any] | None:
    """The heartbeat record in ``raw``, or None when it is not one."""
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("beat_at"), (int, float)):
        return None
    return record


def read_heartbeat(folder: Path) -> dict[str, Any] | None:
    """The heartbeat record, or None when there is none (or it cannot be parsed)."""
    return parse_heartbeat(heartbeat_bytes(folder))


__all__ = ["heartbeat_bytes", "parse_heartbeat", "read_heartbeat", "write_heartbeat"]
