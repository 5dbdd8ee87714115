from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import sessiondb

# Backends the conformance suite runs against. PostgreSQL joins this list when it lands.
BACKENDS = ["sqlite"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "sessions.db"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, db_path: Path) -> Iterator[sessiondb.SQLiteStore]:
    s = sessiondb.open(db_path)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the user's real data or runtime folders from a test.
    monkeypatch.setenv("SESSIONDB_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("SESSIONDB_PATH", raising=False)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
