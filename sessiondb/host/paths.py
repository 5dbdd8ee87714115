"""Where sessiondb keeps its files, and how it creates them privately (0600 files, 0700 folders).

Doctrine 11: databases, lock and lease files hold conversation data or name processes, so they are
never world- or group-readable, whatever the caller's umask.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DB_FILE_NAME = "sessions.db"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def data_dir() -> Path:
    """The platform data folder for sessiondb (not created here)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "sessiondb"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", str(Path.home()))) / "sessiondb"
    return _xdg("XDG_DATA_HOME", ".local/share") / "sessiondb"


def state_dir() -> Path:
    """The platform state folder for sessiondb (not created here)."""
    if sys.platform in ("darwin", "win32"):
        return data_dir() / "state"
    return _xdg("XDG_STATE_HOME", ".local/state") / "sessiondb"


def default_db_path() -> Path:
    """``$SESSIONDB_PATH``, else ``sessions.db`` in the platform data folder."""
    env = os.environ.get("SESSIONDB_PATH")
    if env:
        return Path(env).expanduser()
    return data_dir() / DB_FILE_NAME


def runtime_dir() -> Path:
    """Private runtime folder for leases: ``$SESSIONDB_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/sessiondb``, else the platform state folder's ``runtime``."""
    env = os.environ.get("SESSIONDB_RUNTIME_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "sessiondb"
    return state_dir() / "runtime"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if missing; a folder this call creates is 0700."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
    return path


def create_private_file(path: Path) -> None:
    """Create ``path`` as an empty 0600 file if it does not exist (never truncates)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with 0600 for a file this call creates, close-on-exec always."""
    return os.open(path, flags | os.O_CLOEXEC, 0o600)
