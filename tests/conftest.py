from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

import sessiondb

# Backends the contract suite (tests/contract/) runs against: each entry makes a fresh, empty
# store location. PostgreSQL: a new schema per test on the local server (tests/pg.py), dropped
# when the test ends; without a server those tests skip, and fail under CI=true.
# "pgbouncer": the same server through pgbouncer in transaction mode (no session state, no
# prepared statements), started by the tests.
BACKENDS = ["sqlite", "postgresql", "pgbouncer"]

# A suite started in the background of a non-interactive shell (`./.ci/run &`) inherits Ctrl-C
# ignored, and so would every command it starts: `sessiondb show -f` and `sessiondb serve`
# would never see the SIGINT their tests stop them with (tests/cli/test_show_follow.py,
# tests/serve/test_http.py). Its default, Python's KeyboardInterrupt, for this process and, as
# a handled signal is reset at exec, for what it starts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def new_location(backend: str, tmp_path: Path) -> str:
    """A location for a fresh store of ``backend`` (for tests that reopen a store)."""
    if backend == "sqlite":
        return str(tmp_path / "store" / "sessions.db")
    if backend in ("postgresql", "pgbouncer"):
        from tests import pg

        return pg.new_url(backend)
    raise ValueError(f"unknown backend {backend!r}")


@pytest.fixture(scope="session", autouse=True)
def _postgres_schemas_left() -> Iterator[None]:
    yield
    from tests import pg

    pg.drop_schemas()  # those of module-scoped stores
    pg.stop_pgbouncer()


@pytest.fixture(autouse=True)
def _postgres_schemas() -> Iterator[None]:
    # Set up before (so torn down after) every store a test opens: drops the test's schemas.
    from tests import pg

    before = pg.made()
    yield
    pg.drop_schemas(before)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "sessions.db"


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The backend a contract test runs on (each test runs on every one: pytest_generate_tests)."""
    return str(request.param)


@pytest.fixture
def location(backend: str, tmp_path: Path) -> str:
    """Where a fresh store of the backend lives."""
    return new_location(backend, tmp_path)


# How the contract suite reaches a store: the sync API, or sessiondb.aio driven through a blocking
# facade (tests/_aio_bridge.py) under each event loop anyio runs. Each test using `store` runs
# once per entry.
APIS = ["sync", "asyncio", "trio"]
# A test using both runs on these pairs, not on all nine: the async store is the same layer over
# every backend (sessiondb/aio), and trio differs from asyncio only in that layer; pgbouncer
# differs from a direct connection only below it. Every backend runs sync, every API on SQLite.
PAIRS = [
    ("sqlite", "sync"),
    ("sqlite", "asyncio"),
    ("sqlite", "trio"),
    ("postgresql", "sync"),
    ("postgresql", "asyncio"),
    ("pgbouncer", "sync"),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    given = {
        name.strip()
        for mark in metafunc.definition.iter_markers("parametrize")
        for name in (mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0])
    }
    uses = {"backend", "api"} & set(metafunc.fixturenames) - given
    if uses == {"backend", "api"}:
        ids = [f"{b}-{a}" for b, a in PAIRS]
        metafunc.parametrize(("backend", "api"), PAIRS, ids=ids, indirect=True)
    elif uses == {"backend"}:
        metafunc.parametrize("backend", BACKENDS, indirect=True)
    elif uses == {"api"}:
        metafunc.parametrize("api", APIS, indirect=True)


@pytest.fixture
def api(request: pytest.FixtureRequest) -> str:
    """The API a contract test reaches its store through (pytest_generate_tests)."""
    return str(request.param)


Opener = Callable[..., AbstractContextManager[sessiondb.Store]]


@pytest.fixture
def open_store(api: str) -> Opener:
    """``sessiondb.open`` through the API under test: ``with open_store(location, **options)
    as store`` (for contract tests that open stores themselves, e.g. read-only)."""
    if api == "sync":
        return sessiondb.open
    from ._aio_bridge import blocking_async_store

    return lambda location, **options: blocking_async_store(api, location, **options)


@pytest.fixture
def store(location: str, open_store: Opener) -> Iterator[sessiondb.Store]:
    with open_store(location) as s:
        yield s


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the user's real data or runtime folders from a test.
    monkeypatch.setenv("SESSIONDB_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.delenv("SESSIONDB_PATH", raising=False)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
