"""A repair killed with SIGKILL at a chosen step (importable by spawned children).

Nothing in the repair knows about this: the child wraps the functions the repair calls and kills
itself just before or just after the call of interest."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

POINTS = (
    "backup",  # halfway through copying the damaged file aside
    "salvage",  # scratch copy made, salvage not started
    "verify",  # the new file written, not yet verified
    "before-wal",  # about to rename the new WAL over the old one
    "after-wal",  # just renamed it
    "before-main",  # about to rename the new main file over the old one
    "after-main",  # just renamed it
    "cleanup",  # about to remove the now redundant WAL
)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def repair_and_die(db: str, point: str) -> None:
    from sessiondb.sqlite.doctor import repair, salvage, workfiles

    real_replace, real_unlink = os.replace, os.unlink

    def which(dest: Any) -> str | None:
        d = os.fspath(dest)
        return "wal" if d == f"{db}-wal" else "main" if d == db else None

    def replace(src: Any, dest: Any) -> None:
        kind = which(dest)
        if point == f"before-{kind}":
            _die()
        real_replace(src, dest)
        if point == f"after-{kind}":
            _die()

    def unlink(p: Any, *args: Any, **kw: Any) -> None:
        if point == "cleanup" and which(p) == "wal":
            _die()
        real_unlink(p, *args, **kw)

    def copy(src: Path, dest: Path) -> None:
        if point == "backup" and dest.name.endswith(".backup"):
            real_copy(src, dest)
            with open(dest, "r+b") as f:  # as if killed halfway through the write
                f.truncate(os.path.getsize(dest) // 2)
            _die()
        real_copy(src, dest)

    def salvage_then(*args: Any, **kw: Any) -> Any:
        if point == "salvage":
            _die()
        return real_salvage(*args, **kw)

    def verify_then(*args: Any, **kw: Any) -> Any:
        if point == "verify":
            _die()
        return real_verify(*args, **kw)

    real_copy = workfiles.copy
    real_salvage = salvage.Salvage.from_copy.__func__  # type: ignore[attr-defined]
    real_verify = repair._verify
    os.replace = replace  # type: ignore[assignment]
    os.unlink = unlink  # type: ignore[assignment]
    workfiles.copy = copy  # type: ignore[assignment]
    repair._verify = verify_then  # type: ignore[assignment]
    salvage.Salvage.from_copy = classmethod(  # type: ignore[method-assign,assignment]
        lambda cls, copy_path: salvage_then(cls, copy_path)
    )
    repair.repair(db)
    raise SystemExit(3)  # the point was never reached
