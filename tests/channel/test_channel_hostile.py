"""The channel folder is hostile ground (docs/channel.md, "What each side trusts"): whoever shares
it can replace any file there. The host never follows a symlink there, never opens anything but a
regular file, never runs the other side's views or triggers, range-checks every seq and size it
reads, and never waits without a bound. Each test plays the other side doing one of these."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from sessiondb.channel import AgentEnd, HostEnd, NotAChannel
from sessiondb.channel.heartbeat import write_heartbeat

HANG = 60.0  # what "did not return" means here: these calls take milliseconds


def bounded(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a thread; fail the test if it has not returned after HANG seconds (the
    thread stays blocked: a FIFO open or an endless query cannot be interrupted)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG)
    if t.is_alive():
        pytest.fail(f"{call} was still blocked after {HANG:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sql(path: Path, *statements: str) -> None:
    """Change a channel file the way a hostile peer can: with a plain SQLite connection."""
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")  # a peer is bound by nothing
        for s in statements:
            conn.execute(s)
    finally:
        conn.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "chan"


def started(folder: Path) -> HostEnd:
    """A channel with one message answered, so both files and the heartbeat exist."""
    host = HostEnd(folder, stale_after=60)
    seq = host.send("hello")
    with AgentEnd(folder) as agent:
        agent.heartbeat()
        agent.receive()
        agent.reply("hi", in_reply_to=seq)
    return host


# -- symlinks ------------------------------------------------------------------------------------


def test_a_symlinked_lock_file_is_never_followed(folder: Path, tmp_path: Path) -> None:
    host = started(folder)
    victim = tmp_path / "host-file-the-agent-wants"
    (folder / "inbound.db.lock").unlink(missing_ok=True)
    os.symlink(victim, folder / "inbound.db.lock")
    seq = HostEnd(folder).send("after the symlink")
    assert seq > 2 and not victim.exists()
    assert os.path.islink(folder / "inbound.db.lock")
    host.close()


def test_inbound_symlinked_to_another_channels_inbox_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    HostEnd(other).send("the other channel's message")
    before = digest(other / "inbound.db")
    started(folder).close()
    os.rename(folder / "inbound.db", folder / "inbound.db.aside")
    os.symlink(other / "inbound.db", folder / "inbound.db")
    with pytest.raises(NotAChannel, match="symbolic link"):
        HostEnd(folder).send("for this channel only")
    assert digest(other / "inbound.db") == before


def test_inbound_replaced_under_a_running_host_is_refused(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    HostEnd(other).send("the other channel's message")
    before = digest(other / "inbound.db")
    host = started(folder)  # holds its writer connection open
    os.rename(folder / "inbound.db", folder / "inbound.db.aside")
    os.symlink(other / "inbound.db", folder / "inbound.db")
    with pytest.raises(NotAChannel, match="replaced"):
        host.send("for this channel only")
    assert digest(other / "inbound.db") == before
    seqs = [
        r[0]
        for r in apsw.Connection(str(folder / "inbound.db.aside")).execute(
            "SELECT seq FROM messages"
        )
    ]
    assert seqs == [2]  # nothing was written where no agent would ever read it


def test_inbound_symlinked_to_a_missing_host_path_creates_nothing(
    folder: Path, tmp_path: Path
) -> None:
    folder.mkdir()
    victim = tmp_path / "not-there-yet"
    os.symlink(victim, folder / "inbound.db")
    with pytest.raises(NotAChannel, match="symbolic link"):
        HostEnd(folder)
    assert not victim.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["inbound.db"]


def test_a_symlinked_journal_is_never_followed(folder: Path, tmp_path: Path) -> None:
    host = started(folder)
    victim = tmp_path / "journal-target"
    os.symlink(victim, folder / "inbound.db-journal")
    with pytest.raises(NotAChannel, match="symbolic link"):
        host.send("x")
    assert not victim.exists()


# -- FIFOs, devices, huge files ------------------------------------------------------------------


def test_a_fifo_heartbeat_never_blocks(folder: Path) -> None:
    host = started(folder)
    (folder / "heartbeat").unlink()
    os.mkfifo(folder / "heartbeat")
    st = bounded(host.status)
    assert (st.alive, st.heartbeat_age, st.run_id) == (False, None, None)
    assert bounded(host.sweep).alive is False
    assert bounded(lambda: host.send("still works")) > 2
    assert [r.content for r in bounded(host.replies)] == ["hi"]


@pytest.mark.parametrize("name", ["outbound.db", "outbound.db-journal"])
def test_a_fifo_outbound_never_blocks(folder: Path, name: str) -> None:
    host = started(folder)
    (folder / name).unlink(missing_ok=True)
    os.mkfifo(folder / name)
    calls: list[Callable[[], object]] = [host.status, host.replies, host.sweep]
    if name == "outbound.db":
        calls.append(lambda: HostEnd(folder))
    for call in calls:
        with pytest.raises(NotAChannel, match="FIFO"):
            bounded(call)


def test_a_fifo_inbound_never_blocks_the_agent(folder: Path) -> None:
    started(folder).close()
    os.rename(folder / "inbound.db", folder / "inbound.db.aside")
    os.mkfifo(folder / "inbound.db")
    with pytest.raises(NotAChannel, match="FIFO"):
        bounded(lambda: AgentEnd(folder))


def test_a_heartbeat_pointing_at_dev_zero_is_no_heartbeat(folder: Path) -> None:
    host = started(folder)
    (folder / "heartbeat").unlink()
    os.symlink("/dev/zero", folder / "heartbeat")
    st = bounded(host.status)
    assert (st.alive, st.heartbeat_age) == (False, None)


def test_a_huge_heartbeat_is_not_read_whole(folder: Path) -> None:
    host = started(folder)
    write_heartbeat(folder, {"run_id": "r", "beat_at": time.time(), "pad": " " * 10_000_000})
    st = bounded(host.status)
    assert (st.alive, st.heartbeat_age, st.run_id) == (False, None, None)


# -- the other side's schema: no view or trigger ever runs ---------------------------------------


def test_an_endless_recursive_view_is_never_queried(folder: Path) -> None:
    host = started(folder)
    sql(
        folder / "outbound.db",
        "DROP TABLE replies",
        "CREATE VIEW replies(seq, in_reply_to, kind, content, key, final, created_at) AS "
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 2 FROM r) "
        "SELECT n, NULL, 'event', 'x', NULL, 0, 0.0 FROM r WHERE n < 0",
    )
    with pytest.raises(NotAChannel, match="schema"):
        bounded(host.replies)
    with pytest.raises(NotAChannel, match="schema"):
        bounded(host.status)


def test_a_trigger_planted_in_the_hosts_own_file_never_runs(folder: Path) -> None:
    host = started(folder)
    sql(
        folder / "inbound.db",
        "CREATE TABLE loot(content TEXT)",
        "CREATE TRIGGER steal AFTER INSERT ON messages "
        "BEGIN INSERT INTO loot VALUES (new.content); END",
    )
    with pytest.raises(NotAChannel, match="schema"):
        host.send("a secret")
    rows = apsw.Connection(str(folder / "inbound.db")).execute("SELECT * FROM loot").fetchall()
    assert rows == []


def test_a_table_of_another_shape_is_refused(folder: Path) -> None:
    host = started(folder)
    sql(
        folder / "outbound.db",
        "DROP TABLE replies",
        "CREATE TABLE replies(seq, in_reply_to, kind, content, key, final, created_at)",
    )
    with pytest.raises(NotAChannel, match="schema"):
        host.replies()


# -- seqs, counts and sizes are range-checked ----------------------------------------------------

BIG = 2**63 - 1


REPLY = "INSERT INTO replies(seq, in_reply_to, kind, content, created_at) VALUES "
ACK = "INSERT INTO acks VALUES "
MESSAGE = "INSERT INTO messages(seq, kind, content, created_at, offer_at) VALUES "


@pytest.mark.parametrize(
    ("file", "statement", "call"),
    [
        ("outbound.db", f"{REPLY} ({BIG}, NULL, 'event', 'x', 0)", "replies"),
        ("outbound.db", f"{REPLY} (100, NULL, 'event', 'x', 0)", "replies"),  # even: host parity
        ("outbound.db", f"{REPLY} (101, NULL, 'bogus', 'x', 0)", "replies"),
        ("outbound.db", f"{REPLY} (101, NULL, 'event', x'00', 0)", "replies"),
        ("outbound.db", f"{REPLY} (101, {BIG - 1}, 'event', 'x', 0)", "replies"),
        ("outbound.db", f"{REPLY} (101, NULL, 'event', 'x', 'soon')", "replies"),
        ("outbound.db", f"{ACK} ({BIG - 1}, 1, 'completed', 'r', 1, NULL, 0)", "status"),
        ("outbound.db", f"{ACK} (2, {BIG}, 'processing', 'r', 1, NULL, 0)", "status"),
        ("outbound.db", f"{ACK} (4, 1, 'done', 'r', 1, NULL, 0)", "status"),
        ("inbound.db", f"{MESSAGE} ({BIG - 1}, 'message', 'x', 0, 0)", "send"),
    ],
)  # fmt: skip
def test_out_of_range_values_are_protocol_errors(
    folder: Path, file: str, statement: str, call: str
) -> None:
    host = started(folder)
    sql(folder / file, statement)
    calls: dict[str, Callable[[], object]] = {
        "replies": host.replies,
        "status": host.status,
        "send": lambda: host.send("next"),
    }
    with pytest.raises(NotAChannel, match="breaks the channel protocol"):
        calls[call]()


def test_a_huge_seq_never_breaks_later_sends(folder: Path) -> None:
    host = started(folder)
    sql(
        folder / "outbound.db",
        f"INSERT INTO replies(seq, kind, content, created_at) VALUES ({BIG}, 'event', 'x', 0)",
    )
    with pytest.raises(NotAChannel, match=r"1\.\.2\^62"):
        host.replies()
    seq = host.send("still fine")  # no OverflowError, then or later
    assert seq % 2 == 0 and seq < 2**62
    assert host.send("and again") == seq + 2


def test_a_value_larger_than_the_protocol_allows_is_not_read(folder: Path) -> None:
    host = started(folder)
    sql(
        folder / "outbound.db",
        "INSERT INTO replies(seq, kind, content, created_at) "
        "VALUES (1001, 'event', hex(zeroblob(9 * 1024 * 1024)), 0)",  # 18 MiB of text
    )
    with pytest.raises(NotAChannel, match="larger than the channel protocol allows"):
        host.replies()
    assert [r.content for r in host.replies(limit=1)] == ["hi"]
