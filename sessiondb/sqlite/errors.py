"""The one translation of apsw exceptions into sessiondb errors, for the store and the channel.

Each error says what happened to which file and what to do next. The exception classes decide,
never the message text (SQLite's wording changes between releases).
"""

from __future__ import annotations

import os

import apsw

from ..errors import CorruptDatabase, Error, InvalidInput, StoreBusy

# A hot journal that a read-only connection may not roll back (sqlite3.h).
SQLITE_READONLY_ROLLBACK = 776


def translate(
    e: BaseException,
    path: str | os.PathLike[str],
    *,
    doing: str | None = None,
    corrupt_hint: str | None = None,
) -> Error:
    """Map an apsw exception raised on the database ``path`` (while ``doing`` something) to the
    sessiondb error a caller can act on. ``corrupt_hint`` replaces the repair command in a
    ``CorruptDatabase`` for files that the store's repair must not touch (channel files)."""
    if isinstance(e, Error):
        return e
    p = os.fspath(path)
    where = f"{p}: {doing}: " if doing else f"{p}: "
    if isinstance(e, (apsw.CorruptError, apsw.NotADBError)):
        what = f"{doing} failed: " if doing else ""
        return CorruptDatabase(
            p, f"{what}the database is damaged or not a database ({e})", corrupt_hint
        )
    if isinstance(e, (apsw.BusyError, apsw.LockedError)):
        return StoreBusy(
            f"{where}the database is busy ({e}) — retry, or see `sessiondb doctor`", path=p
        )
    if isinstance(e, apsw.ReadOnlyError):
        if getattr(e, "extendedresult", None) == SQLITE_READONLY_ROLLBACK:
            return Error(
                f"{where}a write was interrupted (a crash left its journal, {p}-journal) and must "
                "be rolled back before the file can be read: open the store once for writing "
                "(any sessiondb write command), or run `sessiondb doctor`"
            )
        return Error(f"{where}the database is read-only here ({e}); check the file's permissions")
    if isinstance(e, apsw.FullError):
        return Error(f"{where}the disk is full ({e}); free space and retry")
    if isinstance(e, apsw.CantOpenError):
        return Error(
            f"{where}cannot open the database ({e}); check the path, its permissions, and the "
            "process's limit of open files (ulimit -n)"
        )
    if isinstance(e, apsw.TooBigError):
        return InvalidInput(f"{where}a value is larger than SQLite accepts ({e})")
    if isinstance(e, apsw.IOError):
        return Error(f"{where}I/O error ({e}); check the disk and run `sessiondb doctor`")
    return Error(f"{where}{type(e).__name__}: {e}")


__all__ = ["translate"]
