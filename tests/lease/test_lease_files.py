"""What only file leases have: private files, path resolution, the runtime folder, the lock."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import sessiondb
from sessiondb import lease
from sessiondb.errors import StoreBusy
from sessiondb.lease import LeaseWarning, files
from sessiondb.lease.files import FileBackend


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def backend_of(lease_: lease.Lease) -> FileBackend:
    b = lease_._backend
    assert isinstance(b, FileBackend)
    return b


def test_files_are_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    rt = tmp_path / "deep" / "rt"
    a = lease.workspace(tmp_path, "A", directory=rt)
    assert a.acquire()
    b = backend_of(a)
    assert stat.S_IMODE(os.stat(rt).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "deep").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(b.lease_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(b.lock_path).st_mode) == 0o600
    assert a.refresh()
    assert stat.S_IMODE(os.stat(b.lease_path).st_mode) == 0o600
    assert not b.tmp_path.exists()  # renamed over the record


def test_runtime_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONDB_RUNTIME_DIR", str(tmp_path / "rt"))
    a = lease.workspace(tmp_path, "A")
    assert a.acquire()
    assert backend_of(a).lease_path.parent == tmp_path / "rt"
    assert [h.session_id for h in lease.list_leases()] == ["A"]


def test_symlinks_and_dotdot_resolve_to_one_lease(tmp_path: Path) -> None:
    real = tmp_path / "project"
    (real / "src").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    rt = tmp_path / "rt"
    a = lease.workspace(real, "A", directory=rt)
    assert a.acquire()
    for alias in (link, real / "src" / "..", link / "src" / "..", f"{real}/./"):
        other = lease.workspace(alias, "B", directory=rt)
        assert other.resource == str(real)
        assert other.acquire() is False, alias
    assert lease.workspace(real / "src", "B", directory=rt).acquire() is True  # another path


def test_key_is_sha256_of_the_real_path(tmp_path: Path) -> None:
    real, key = lease.workspace_key(tmp_path / "x" / "..")
    assert real == str(tmp_path.resolve())
    assert len(key) == 64 and str(tmp_path) not in key
    b = backend_of(lease.workspace(tmp_path, "A", directory=tmp_path / "rt"))
    assert b.lease_path.name == key + ".lease"


def test_list_leases_shows_each_workspace(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    assert lease.list_leases(rt) == []
    for i in range(3):
        (tmp_path / f"w{i}").mkdir()
        assert lease.workspace(tmp_path / f"w{i}", f"S{i}", directory=rt).acquire()
    got = lease.list_leases(rt)
    assert [(h.resource, h.session_id) for h in got] == [
        (str(tmp_path / f"w{i}"), f"S{i}") for i in range(3)
    ]


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe garbage", b"[1, 2]", b'{"session_id": "X"}', b"x" * 70000],
    ids=["empty", "binary", "list", "missing-fields", "huge"],
)
def test_every_kind_of_damage_is_stale(tmp_path: Path, content: bytes) -> None:
    rt = tmp_path / "rt"
    a = lease.workspace(tmp_path, "A", directory=rt)
    rt.mkdir(mode=0o700)
    backend_of(a).lease_path.write_bytes(content)
    with pytest.warns(LeaseWarning, match=str(backend_of(a).lease_path)):
        assert a.acquire()
    assert a.holder is not None and a.holder.session_id == "A"


def test_symlinked_record_is_not_followed(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    a = lease.workspace(tmp_path, "A", directory=rt)
    rt.mkdir(mode=0o700)
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    backend_of(a).lease_path.symlink_to(target)
    with pytest.warns(LeaseWarning, match="symlink"):
        assert a.acquire()
    assert target.read_text() == "keep me"  # replaced the link, never wrote through it
    assert not backend_of(a).lease_path.is_symlink()


def test_stuck_lock_gives_a_named_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "LOCK_TIMEOUT", 0.2)
    a = lease.workspace(tmp_path, "A", directory=tmp_path / "rt")
    assert a.acquire()
    # flock belongs to an open file description: a second open conflicts even in-process.
    fd = os.open(backend_of(a).lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StoreBusy, match="lease lock busy") as exc:
            lease.workspace(tmp_path, "B", directory=tmp_path / "rt").acquire()
        assert isinstance(exc.value, sessiondb.Error)
    finally:
        os.close(fd)
    assert a.release()


def test_unwritable_folder_is_a_sessiondb_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    rt = tmp_path / "rt"
    rt.mkdir(mode=0o500)
    try:
        with pytest.raises(sessiondb.UnsupportedStorage, match="SESSIONDB_RUNTIME_DIR"):
            lease.workspace(tmp_path, "A", directory=rt).acquire()
    finally:
        rt.chmod(0o700)


def test_pid_follows_the_process_that_calls(tmp_path: Path) -> None:
    """A Lease made without pid= records the caller; with pid= it records that process."""
    rt = tmp_path / "rt"
    a = lease.workspace(tmp_path, "A", directory=rt)
    assert a.acquire()
    assert a.record is not None and a.record.pid == os.getpid()
    assert a.release()
    parent = os.getppid()
    b = lease.workspace(tmp_path, "B", directory=rt, pid=parent)
    assert b.acquire()
    assert b.record is not None and b.record.pid == parent
    assert b.holder is not None  # the parent lives, so the lease is live
