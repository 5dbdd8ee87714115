"""Bad input: clear sessiondb errors, and nothing written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest

from sessiondb import CorruptDatabase, InvalidInput, UnsupportedStorage
from sessiondb.channel import MAX_CONTENT_BYTES, AgentEnd, HostEnd, NotAChannel


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "chan"


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.fixture
def ends(folder: Path) -> tuple[HostEnd, AgentEnd]:
    host = HostEnd(folder)
    agent = AgentEnd(folder)
    host.send("seed")
    agent.receive()
    return host, agent


def test_oversized_content_is_refused_and_nothing_written(
    folder: Path, ends: tuple[HostEnd, AgentEnd]
) -> None:
    host, agent = ends
    before = fingerprint(folder)
    too_big = "x" * (MAX_CONTENT_BYTES + 1)
    multibyte = "é" * (MAX_CONTENT_BYTES // 2 + 1)  # fewer chars than the limit, more bytes
    for content in (too_big, multibyte):
        with pytest.raises(InvalidInput, match="16 MiB"):
            host.send(content)
        with pytest.raises(InvalidInput, match="16 MiB"):
            agent.reply(content, in_reply_to=2)
        with pytest.raises(InvalidInput, match="16 MiB"):
            agent.ack(2, "failed", error=content)
    with pytest.raises(InvalidInput):
        host.send_many(["fine", too_big])
    assert fingerprint(folder) == before


def test_content_at_the_limit_is_accepted(folder: Path) -> None:
    host = HostEnd(folder)
    seq = host.send("y" * MAX_CONTENT_BYTES)
    (m,) = AgentEnd(folder).receive()
    assert m.seq == seq and len(m.content) == MAX_CONTENT_BYTES


@pytest.mark.parametrize("kind", ["bogus", "", "MESSAGE", None, 3])
def test_unknown_kinds(folder: Path, ends: tuple[HostEnd, AgentEnd], kind: object) -> None:
    host, agent = ends
    before = fingerprint(folder)
    with pytest.raises(InvalidInput, match="kind"):
        host.send("x", kind=kind)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="kind"):
        agent.reply("x", kind=kind)  # type: ignore[arg-type]
    assert fingerprint(folder) == before


def test_kinds_are_per_side(ends: tuple[HostEnd, AgentEnd]) -> None:
    host, agent = ends
    with pytest.raises(InvalidInput):
        host.send("x", kind="error")  # an agent-side kind
    with pytest.raises(InvalidInput):
        agent.reply("x", kind="command")  # a host-side kind


@pytest.mark.parametrize(
    "call",
    [
        lambda h, a: h.send(b"bytes"),
        lambda h, a: h.send("x", key=""),
        lambda h, a: h.send("x", key="a\nb"),
        lambda h, a: h.send("x", key="k" * 257),
        lambda h, a: h.send_many([42]),
        lambda h, a: h.send_many([{"content": "x", "extra": 1}]),
        lambda h, a: h.replies(after=-1),
        lambda h, a: h.replies(timeout=-1),
        lambda h, a: h.replies(limit=0),
        lambda h, a: a.receive(limit=0),
        lambda h, a: a.receive(timeout="soon"),
        lambda h, a: a.ack(3, "completed"),  # odd: an agent seq
        lambda h, a: a.ack(2, "done"),
        lambda h, a: a.ack(1000, "completed"),  # no such message
        lambda h, a: a.reply("x", in_reply_to=1000),
        lambda h, a: a.reply("x", in_reply_to=True),
        lambda h, a: a.reply("x", in_reply_to=2, final="yes"),
    ],
)
def test_bad_arguments(folder: Path, ends: tuple[HostEnd, AgentEnd], call: object) -> None:
    host, agent = ends
    before = fingerprint(folder)
    with pytest.raises(InvalidInput):
        call(host, agent)  # type: ignore[operator]
    assert fingerprint(folder) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stale_after": 0},
        {"max_tries": 0},
        {"max_tries": 1.5},
        {"backoff": -1},
        {"durability": "x"},
    ],
)
def test_bad_host_settings(folder: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        HostEnd(folder, **kwargs)  # type: ignore[arg-type]
    assert not folder.exists()


def test_agent_needs_an_existing_channel(tmp_path: Path) -> None:
    with pytest.raises(NotAChannel, match="no such channel folder"):
        AgentEnd(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotAChannel, match="start the host end first"):
        AgentEnd(empty)
    assert list(empty.iterdir()) == []


def test_host_without_create_does_not_create(tmp_path: Path) -> None:
    with pytest.raises(NotAChannel):
        HostEnd(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_a_file_is_not_a_channel_folder(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("hello")
    for make in (HostEnd, AgentEnd):
        with pytest.raises(NotAChannel, match="not a folder"):
            make(f)
    assert f.read_text() == "hello"


@pytest.mark.parametrize("content", [b"hello, not a database\n", b"x" * 4096])
def test_foreign_inbound_file_is_refused(tmp_path: Path, content: bytes) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "inbound.db").write_bytes(content)
    for make in (HostEnd, AgentEnd):
        with pytest.raises(NotAChannel, match="not a sessiondb channel"):
            make(folder)
    assert (folder / "inbound.db").read_bytes() == content
    assert sorted(p.name for p in folder.iterdir()) == ["inbound.db"]


def test_another_apps_database_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    conn = apsw.Connection(str(folder / "inbound.db"))
    conn.execute("CREATE TABLE notes(x)")
    conn.close()
    before = fingerprint(folder)
    with pytest.raises(NotAChannel, match="other tables"):
        HostEnd(folder)
    assert fingerprint(folder) == before
    conn = apsw.Connection(str(folder / "inbound.db"))
    conn.execute("PRAGMA application_id=1234")
    conn.close()
    with pytest.raises(NotAChannel, match="application_id"):
        HostEnd(folder)


@pytest.mark.parametrize("name", ["inbound.db", "outbound.db"])
def test_a_newer_channel_version_is_refused(folder: Path, name: str) -> None:
    HostEnd(folder).send("x")
    AgentEnd(folder).reply("y")
    conn = apsw.Connection(str(folder / name))
    conn.execute("PRAGMA user_version=2")
    conn.close()
    before = fingerprint(folder)
    for make in (HostEnd, AgentEnd):
        with pytest.raises(UnsupportedStorage, match="upgrade sessiondb"):
            make(folder)
    assert fingerprint(folder) == before


def test_bad_folder_argument() -> None:
    with pytest.raises(InvalidInput):
        HostEnd(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        AgentEnd("")


def test_a_damaged_peer_file_raises_a_sessiondb_error(folder: Path) -> None:
    host = HostEnd(folder)
    agent = AgentEnd(folder)
    for i in range(50):
        agent.reply(f"reply {i} " + "z" * 500)
    agent.close()
    out = folder / "outbound.db"
    data = bytearray(out.read_bytes())
    data[100 : len(data)] = b"\xff" * (len(data) - 100)  # keep the header, wreck every page
    out.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabase, match=r"outbound\.db"):
        host.replies()
    with pytest.raises(CorruptDatabase, match=r"outbound\.db"):
        host.status()
    with pytest.raises(CorruptDatabase) as info:
        host.replies()
    assert "not a store" in str(info.value)  # a channel file is never sent to the store's repair
    assert "doctor --repair" not in str(info.value).replace("do not run `sessiondb doctor", "")


def test_a_full_disk_says_so_on_a_channel_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite reports SQLITE_FULL when a file cannot grow: with max_page_count at the file's
    size the channel sees a real full disk, and must say so (not "corrupt, run the repair")."""
    from sessiondb import Error
    from sessiondb.channel.files import ChannelDB

    host = HostEnd(folder)
    host.send("seed")
    real = ChannelDB._open_writer

    def capped(self: ChannelDB) -> apsw.Connection:
        conn = real(self)
        pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
        conn.execute(f"PRAGMA max_page_count={pages}").fetchall()
        return conn

    monkeypatch.setattr(ChannelDB, "_open_writer", capped)
    full = HostEnd(folder)
    with pytest.raises(Error, match="the disk is full") as info:
        full.send("x" * 200_000)
    assert not isinstance(info.value, CorruptDatabase)
    assert [m.content for m in AgentEnd(folder).receive(limit=10)] == ["seed"]  # nothing written
