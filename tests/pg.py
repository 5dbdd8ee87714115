"""The local PostgreSQL server for the tests: started when it is down, a fresh schema per test.

Tests that need it call :func:`server`; without a reachable server they skip, except under
``CI=true`` where they fail loudly (issue 16: the PostgreSQL tests must not vanish from CI).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from urllib.parse import quote

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


def url_for(schema: str) -> str:
    assert _SCHEMA.fullmatch(schema)
    sep = "&" if "?" in BASE_URL else "?"
    return f"{BASE_URL}{sep}options={quote('-c search_path=' + schema)}"


def new_url() -> str:
    return url_for(new_schema())


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
