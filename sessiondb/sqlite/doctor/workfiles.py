"""The repair's files: byte-exact backups written under a temporary name then renamed, copies
read through SQLite's VFS, a free-space check before anything is written, the leftovers of an
interrupted repair, and the one translation of the repair's OSErrors."""

from __future__ import annotations

import errno
import os
import time
from contextlib import suppress
from pathlib import Path

import apsw

from ...errors import Error, InvalidInput
from ...host.paths import open_private

COPY_CHUNK = 1 << 20
SIDE = ("-wal", "-journal")  # companions that may hold committed data


def os_error(db: Path, e: OSError, doing: str) -> Error:
    """An OSError of the repair as a sessiondb error: which file, what happened, what to do."""
    where = e.filename or db
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return Error(
            f"{db}: the disk is full: could not {doing} ({where}: {e.strerror}) — the database "
            f"was not changed; free space in {db.parent} (a repair needs about four times the "
            "database's size) and run the repair again"
        )
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Error(
            f"{db}: could not {doing} ({where}: {e.strerror}) — the database was not changed; "
            f"the repair writes next to the database: check that {db.parent} is writable by you"
        )
    return Error(
        f"{db}: could not {doing} ({where}: {e.strerror or e}) — the database was not changed; "
        "run `sessiondb doctor` to see its state"
    )


def remove_work_files(folder: Path, prefix: str) -> tuple[int, int]:
    """Remove the regular files (or symlinks, never followed) in ``folder`` whose names start
    with ``prefix``; return how many and their bytes."""
    removed, size = 0, 0
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if e.name.startswith(prefix) and (e.is_symlink() or e.is_file(follow_symlinks=False))
        ]
    for name in names:
        p = folder / name
        with suppress(FileNotFoundError):
            size += p.lstat().st_size
            p.unlink()
            removed += 1
    return removed, size


def clean_leftovers(db: Path) -> str | None:
    """Remove what an interrupted repair left (scratch and new files, temporary copies, a
    backup's WAL whose main copy was never completed); say so."""
    removed, size = remove_work_files(db.parent, f".{db.name}.repair-")
    backup = f"{db.name}.corrupt-"
    with os.scandir(db.parent) as entries:
        present = {e.name for e in entries}
    for name in sorted(present):
        if not (name.startswith(backup) and name.endswith(SIDE)):
            continue
        main = name.removesuffix("-wal").removesuffix("-journal")
        p = db.parent / name
        if main not in present and not p.is_dir():  # a backup's companion whose main copy
            with suppress(FileNotFoundError):  # never completed
                size += p.lstat().st_size
                p.unlink()
                removed += 1
    if not removed:
        return None
    return f"removed {removed} file(s) left by an interrupted repair ({mib(size)})"


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def free_name(folder: Path, base: str) -> Path:
    candidate, n = folder / base, 1
    while any(Path(f"{candidate}{s}").exists() for s in ("", *SIDE)):
        candidate, n = folder / f"{base}-{n}", n + 1
    return candidate


def side_files(db: Path) -> list[tuple[str, Path]]:
    """The damaged file's companions worth keeping: committed data may live in them."""
    found = []
    for suffix in SIDE:
        p = Path(f"{db}{suffix}")
        with suppress(OSError):
            if p.lstat().st_size > 0:
                found.append((suffix, p))
    return found


def copy(src: Path, dest: Path) -> None:
    """Copy ``src`` into a new 0600 file ``dest`` (never overwriting, never through a symlink),
    fsynced. The source is read through SQLite's VFS, never a plain ``open()``: closing that
    would drop the POSIX locks of this process's own connections (docs/design.md rule 2)."""
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_MAIN_DB | apsw.SQLITE_OPEN_NOFOLLOW
    if src.is_symlink():
        raise InvalidInput(f"{src} is a symbolic link: repair does not follow it")
    f = apsw.VFSFile("", str(src), [flags, 0])
    try:
        fd = open_private(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            size, offset = f.xFileSize(), 0
            while offset < size:
                chunk = f.xRead(min(COPY_CHUNK, size - offset), offset)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                offset += len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        f.xClose()


def check_space(db: Path) -> None:
    """Refuse before writing anything when the folder cannot hold what a rebuild writes: the
    backup and the scratch copy of the file and its companions, the new file and its WAL image
    (each at most the size of the damaged file's content). Copying first and failing on a full
    disk would fill the disk for every other process meanwhile — a sparse file claiming a
    terabyte would take all of it (tests/sqlite/test_repair_faults.py::
    test_not_enough_space_is_refused_before_anything_is_written)."""
    size = sum(p.lstat().st_size for _, p in (*side_files(db), ("", db)))
    need = 4 * size
    st = os.statvfs(db.parent)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise Error(
            f"{db}: not enough free space to repair it: a repair writes about {mib(need)} "
            f"(four times the database and its WAL/journal), and {db.parent} has {mib(free)} "
            "free — free space there (or copy the files to a larger disk and repair the copy) "
            "and run the repair again; the database was not changed"
        )


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def backup(db: Path, work: str, stamp: str) -> Path:
    """The byte-for-byte copy of the damaged file and its companions, each complete under its
    final name: written under a temporary name, fsynced, renamed (companions first, so that a
    backup named like a good one always has them)."""
    backup = free_name(db.parent, f"{db.name}.corrupt-{stamp}")
    sources = [*side_files(db), ("", db)]
    copies = [(Path(f"{work}.backup{s}"), Path(f"{backup}{s}"), p) for s, p in sources]
    for tmp, _, src in copies:
        copy(src, tmp)
    for tmp, final, _ in copies:
        os.rename(tmp, final)
    fsync_dir(db.parent)
    return backup


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "COPY_CHUNK",
    "SIDE",
    "backup",
    "check_space",
    "clean_leftovers",
    "copy",
    "free_name",
    "fsync_dir",
    "mib",
    "os_error",
    "remove_work_files",
    "side_files",
    "stamp",
]
