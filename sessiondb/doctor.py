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


def _is_url(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and location.startswith(_URL_SCHEMES)


def _file(location: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(location)).expanduser().absolute()


def diagnose(location: str | os.PathLike[str], *, full: bool = False) -> HealthReport:
    """Every check on the store at ``location``; never raises for a broken store."""
    if _is_url(location):
        return _diagnose_postgres(str(location), full)
    from .sqlite.doctor.checks import diagnose as sqlite_diagnose

    return sqlite_diagnose(_file(location), full=full)


def _diagnose_postgres(url: str, full: bool) -> HealthReport:
    from .errors import Error
    from .models import Check

    try:
        from .postgres.backend import safe_location, split_schema
        from .postgres.connection import Connections
        from .postgres.health import diagnose as pg_diagnose
    except ImportError as e:
        check = Check(
            "server", "fail", f"psycopg is not installed ({e})", "pip install 'sessiondb[postgres]'"
        )
        return HealthReport(url, (check,))
    where = safe_location(url)
    try:
        conninfo, schema = split_schema(url)
        conns = Connections(
            conninfo, where, readonly=True, durability="normal", write_timeout=10.0, schema=schema
        )
    except Error as e:
        return HealthReport(where, (Check("server", "fail", str(e)),))
    try:
        return pg_diagnose(conns, full=full)
    except Error as e:
        hint = "is the server running and the URL right (user, database, search_path)?"
        return HealthReport(where, (Check("server", "fail", str(e), hint),))
    finally:
        conns.close()


def repair(location: str | os.PathLike[str]) -> RepairResult:
    """Repair the store at ``location`` (docs/doctor.md): ``StoreBusy`` while other processes
    use it; a damaged original is copied aside first and never modified."""
    if _is_url(location):
        raise UnsupportedStorage(
            "a PostgreSQL store is repaired by the server's own means: restore a backup or "
            "recover to a point in time (PITR), REINDEX an invalid index; `sessiondb doctor` "
            "says which check failed"
        )
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
