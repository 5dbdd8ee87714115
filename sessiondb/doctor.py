"""The doctor, for any backend: ``diagnose`` a store (even one that cannot be opened), ``repair``
it, and the stable JSON shape of a report (docs/doctor.md).

The checks themselves belong to each backend (``sessiondb.sqlite.doctor``); this module picks the
backend from the location, as :func:`sessiondb.open` does, so the CLI and other callers speak to
the contract only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import UnsupportedStorage
from .models import HealthReport, RepairResult

_URL_SCHEMES = ("postgresql://", "postgres://")


def _file(location: str | os.PathLike[str]) -> Path:
    if isinstance(location, str) and location.startswith(_URL_SCHEMES):
        raise UnsupportedStorage("this sessiondb has no PostgreSQL backend yet")
    return Path(os.fspath(location)).expanduser().absolute()


def diagnose(location: str | os.PathLike[str], *, full: bool = False) -> HealthReport:
    """Every check on the store at ``location``; never raises for a broken store."""
    from .sqlite.doctor.checks import diagnose as sqlite_diagnose

    return sqlite_diagnose(_file(location), full=full)


def repair(location: str | os.PathLike[str]) -> RepairResult:
    """Repair the store at ``location`` (docs/doctor.md): ``StoreBusy`` while other processes
    use it; a damaged original is copied aside first and never modified."""
    from .sqlite.doctor.repair import repair as sqlite_repair

    return sqlite_repair(_file(location))


def report_to_dict(report: HealthReport) -> dict[str, Any]:
    """The stable ``--json`` shape, documented in docs/doctor.md."""
    return {
        "format": 1,
        "path": report.path,
        "status": report.status,
        "exit_code": report.exit_code,
        "checks": [
            {"name": c.name, "status": c.status, "detail": c.detail, "hint": c.hint, "data": c.data}
            for c in report.checks
        ],
    }


__all__ = ["RepairResult", "diagnose", "repair", "report_to_dict"]
