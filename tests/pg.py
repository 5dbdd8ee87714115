"""The local PostgreSQL server for the tests: started when it is down, a fresh schema per test.

Tests that need it call :func:`server`; without a reachable server they skip, except under
``CI=true`` where they fail loudly (the PostgreSQL tests must not vanish from CI).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

BASE_URL = os.environ.get("SESSIONDB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_SCHEMA = re.compile(r"s_[0-9a-f]{16}")
_state: dict[str, object] = {}


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _connect() -> object:
    import psycopg

    return psycopg.connect(BASE_URL, autocommit=True, connect_timeout=3)


def server() -> None:
    """Make sure the server answers (start the local cluster if needed), else skip / fail."""
    if _state.get("ok"):
        return
    reason = _state.get("error")
    if reason is None:
        try:
            import psycopg
        except ImportError as e:
            reason = f"psycopg is not installed ({e})"
        else:
            reason = _reach(psycopg)
        _state["error"] = reason or ""
        _state["ok"] = not reason
    if reason:
        if _ci():
            pytest.fail(f"PostgreSQL is needed under CI=true: {reason}")
        pytest.skip(f"no PostgreSQL server: {reason}")


def _reach(psycopg: object) -> str:
    last = ""
    for attempt in range(2):
        try:
            with _connect() as conn:  # type: ignore[attr-defined]
                # pg_trgm lives in public for every test schema (a schema's own copy would be
                # dropped with it, cascading into the other tests' indexes).
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
            return ""
        except Exception as e:
            last = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if attempt == 0:
                subprocess.run(
                    ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"],
                    capture_output=True,
                    check=False,
                )
                time.sleep(2)
    return last


def new_schema() -> str:
    """A new empty schema; returns its name (s_ + 16 hex digits: made here, never input)."""
    server()
    name = "s_" + secrets.token_hex(8)
    assert _SCHEMA.fullmatch(name)
    with _connect() as conn:  # type: ignore[attr-defined]
        conn.execute(f"CREATE SCHEMA {name}")
    _state.setdefault("schemas", [])
    _state["schemas"].append(name)  # type: ignore[attr-defined]
    return name


def url_for(schema: str, base: str = BASE_URL) -> str:
    """The store URL of a schema: sessiondb's own ``schema=`` parameter, set per transaction
    (SET LOCAL), so the same URL works through pgbouncer in transaction mode."""
    assert _SCHEMA.fullmatch(schema)
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


def new_url(via: str = "postgresql") -> str:
    """A fresh store URL: straight to the server, or through pgbouncer (``via="pgbouncer"``)."""
    schema = new_schema()
    return url_for(schema, pgbouncer() if via == "pgbouncer" else BASE_URL)


def pgbouncer() -> str:
    """The base URL of a pgbouncer in transaction mode in front of the server, started once per
    test run (skip, or fail under CI=true, when pgbouncer is not installed)."""
    server()
    url = _state.get("pgbouncer")
    if isinstance(url, str):
        return url
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(exe):
        if _ci():
            pytest.fail("pgbouncer is needed under CI=true (apt-get install pgbouncer)")
        pytest.skip("pgbouncer is not installed")
    folder = Path(tempfile.mkdtemp(prefix="sessiondb-pgbouncer-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = urlsplit(BASE_URL)
    (folder / "users.txt").write_text('"postgres" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.hostname} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder}/users.txt\n"
        "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 20\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    cmd = [exe, "-d", str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        os.chmod(folder, 0o777)
        for f in folder.iterdir():
            os.chmod(f, 0o644)
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True)
    base = f"postgresql://postgres@127.0.0.1:{port}{target.path}"
    for _ in range(50):
        try:
            import psycopg

            psycopg.connect(base, connect_timeout=2).close()
            break
        except Exception:
            time.sleep(0.1)
    _state["pgbouncer"] = base
    _state["pgbouncer_pidfile"] = str(folder / "pgbouncer.pid")
    return base


def stop_pgbouncer() -> None:
    pidfile = _state.pop("pgbouncer_pidfile", None)
    _state.pop("pgbouncer", None)
    if isinstance(pidfile, str) and os.path.exists(pidfile):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(Path(pidfile).read_text().strip()), signal.SIGTERM)


def made() -> int:
    """How many schemas were made so far (a test's setup notes it)."""
    return len(_state.get("schemas", []))  # type: ignore[arg-type]


def drop_schemas(since: int = 0) -> None:
    """Drop the schemas made since ``made()`` returned ``since`` (a test's or the session's
    teardown; a module-scoped store's schema was made before its tests began)."""
    every: list[str] = _state.get("schemas", [])  # type: ignore[assignment]
    names = every[since:]
    del every[since:]
    if not names:
        return
    with _connect() as conn:  # type: ignore[attr-defined]
        for name in names:  # type: ignore[attr-defined]
            assert _SCHEMA.fullmatch(name)
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
