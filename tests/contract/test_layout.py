"""The layout's promises that can be checked by running code: the core loads no database
driver, and ``import sessiondb`` stays cheap (it loads no backend until a store is opened)."""

from __future__ import annotations

import subprocess
import sys

DRIVERS = ("apsw", "psycopg", "sqlite3")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_the_core_loads_no_driver() -> None:
    loaded = _loaded_after(
        "import sessiondb.core.store, sessiondb.core.transcript, sessiondb.core.reconcile,"
        " sessiondb.core.reader, sessiondb.core.export,"
        " sessiondb.core.search,"
        " sessiondb.core.lease, sessiondb.core.contract"
    )
    assert "sessiondb.core.store" in loaded  # the import really happened
    assert not loaded & set(DRIVERS)
    assert not {m for m in loaded if m.startswith(("sessiondb.sqlite", "sessiondb.postgres"))}


def test_import_sessiondb_loads_no_backend_until_a_store_is_opened() -> None:
    loaded = _loaded_after("import sessiondb")
    assert "sessiondb" in loaded and not loaded & set(DRIVERS)
    opened = _loaded_after(
        "import sessiondb, tempfile, os; "
        "sessiondb.open(os.path.join(tempfile.mkdtemp(), 's.db')).close()"
    )
    assert "apsw" in opened and "sessiondb.sqlite.backend" in opened


def test_the_async_api_loads_anyio_only_when_used() -> None:
    assert "anyio" not in _loaded_after("import sessiondb, sessiondb.core.async_contract")
    used = _loaded_after(
        "import sessiondb, anyio, tempfile, os\n"
        "async def main():\n"
        "    async with sessiondb.aio.open(os.path.join(tempfile.mkdtemp(), 's.db')) as s:\n"
        "        await s.count()\n"
        "anyio.run(main)"
    )
    assert {"anyio", "sessiondb.aio"} <= used and "trio" not in used
