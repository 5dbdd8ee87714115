"""Channel semantics in one process: seqs, idempotence, claims, outcomes, sweep, waits."""

from __future__ import annotations

import dataclasses
import json
import stat
import threading
import time
from pathlib import Path

import apsw
import pytest

from sessiondb import KeyConflict
from sessiondb.channel import AgentEnd, ChannelKeyConflict, HostEnd
from sessiondb.channel.heartbeat import write_heartbeat


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "chan"


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def test_round_trip_parity_and_causal_order(folder: Path) -> None:
    host = HostEnd(folder)
    agent = AgentEnd(folder)
    s1 = host.send("hello")
    s2 = host.send("do it", kind="command")
    assert (s1, s2) == (2, 4)
    got = agent.receive(limit=10)
    assert [(m.seq, m.kind, m.content, m.attempt) for m in got] == [
        (2, "message", "hello", 1),
        (4, "command", "do it", 1),
    ]
    r1 = agent.reply("hi", in_reply_to=2)
    assert r1 % 2 == 1 and r1 > 4  # odd, and after every inbound seq the agent has seen
    seen = host.replies()
    assert [(r.seq, r.in_reply_to, r.content, r.final) for r in seen] == [(r1, 2, "hi", True)]
    s3 = host.send("next")
    assert s3 % 2 == 0 and s3 > r1  # the host's next seq is above the replies it has seen
    assert host.replies(after=r1) == []


def test_send_key_is_idempotent_and_conflicts_are_refused(folder: Path) -> None:
    host = HostEnd(folder)
    a = host.send("once", key="k1")
    assert host.send("once", key="k1") == a
    with pytest.raises(ChannelKeyConflict) as info:
        host.send("different", key="k1")
    assert isinstance(info.value, KeyConflict) and info.value.seq == a
    assert rows(folder / "inbound.db", "SELECT seq, content FROM messages") == [(a, "once")]


def test_send_many_is_all_or_nothing(folder: Path) -> None:
    host = HostEnd(folder)
    seqs = host.send_many(["a", {"content": "b", "kind": "event", "key": "kb"}])
    assert seqs == [2, 4]
    with pytest.raises(ValueError):
        host.send_many(["c", {"content": "d", "kind": "nope"}])
    assert rows(folder / "inbound.db", "SELECT count(*) FROM messages") == [(2,)]


def test_receive_claims_so_two_receivers_never_share_an_offer(folder: Path) -> None:
    host = HostEnd(folder)
    host.send_many([f"m{i}" for i in range(6)])
    a, b = AgentEnd(folder, run_id="a"), AgentEnd(folder, run_id="b")
    got_a = a.receive(limit=4)
    got_b = b.receive(limit=4)
    assert [m.seq for m in got_a] == [2, 4, 6, 8]
    assert [m.seq for m in got_b] == [10, 12]
    assert a.receive() == [] and b.receive() == []
    assert host.status().processing == (2, 4, 6, 8, 10, 12)


def test_peek_does_not_claim(folder: Path) -> None:
    host = HostEnd(folder)
    host.send("x")
    agent = AgentEnd(folder)
    assert [m.seq for m in agent.receive(claim=False)] == [2]
    assert [m.seq for m in agent.receive()] == [2]
    assert agent.receive(claim=False) == []


def test_final_reply_settles_once_and_duplicates_are_dropped(folder: Path) -> None:
    host = HostEnd(folder)
    seq = host.send("q")
    agent = AgentEnd(folder)
    agent.receive()
    interim = agent.reply("working", in_reply_to=seq, kind="progress")
    first = agent.reply("answer", in_reply_to=seq)
    assert agent.reply("answer again", in_reply_to=seq) == first  # duplicate delivery
    assert agent.ack(seq, "completed") is False  # already settled
    replies = host.replies()
    assert [(r.seq, r.kind, r.final) for r in replies] == [
        (interim, "progress", False),
        (first, "message", True),
    ]
    st = host.status()
    assert st.completed == 1 and st.processing == () and st.failed == ()


def test_keyed_interim_reply_is_idempotent(folder: Path) -> None:
    host = HostEnd(folder)
    seq = host.send("q")
    agent = AgentEnd(folder)
    a = agent.reply("50%", in_reply_to=seq, kind="progress", key="p")
    assert agent.reply("50%", in_reply_to=seq, kind="progress", key="p") == a
    with pytest.raises(ChannelKeyConflict):
        agent.reply("60%", in_reply_to=seq, kind="progress", key="p")
    assert len(host.replies()) == 1


def test_ack_failed_writes_an_error_reply(folder: Path) -> None:
    host = HostEnd(folder)
    seq = host.send("poison")
    agent = AgentEnd(folder)
    agent.receive()
    assert agent.ack(seq, "failed", error="model refused: rate limit") is True
    assert agent.ack(seq, "failed", error="again") is False
    (r,) = host.replies()
    assert (r.kind, r.content, r.in_reply_to, r.final) == (
        "error",
        "model refused: rate limit",
        seq,
        True,
    )
    assert host.status().failed == (seq,)
    assert host.sweep().settled == 1
    assert rows(folder / "inbound.db", "SELECT state FROM messages") == [("failed",)]


def test_ack_processing_reports_a_claim_held_by_another_run(folder: Path) -> None:
    host = HostEnd(folder)
    seq = host.send("x")
    a, b = AgentEnd(folder, run_id="a"), AgentEnd(folder, run_id="b")
    assert a.ack(seq, "processing") is True
    assert a.ack(seq, "processing") is True  # idempotent for the owner
    assert b.ack(seq, "processing") is False
    assert b.receive() == []


def test_sweep_reoffers_with_backoff_then_fails_after_max_tries(folder: Path) -> None:
    host = HostEnd(folder, max_tries=3, backoff=0.05, max_backoff=0.05)
    seq = host.send("crashes the agent")
    attempts = []
    for n in range(3):
        agent = AgentEnd(folder, run_id=f"run{n}")
        agent.heartbeat()  # this run is now current: the previous run's claim is abandoned
        got: list[object] = []
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            host.sweep()
            got = agent.receive(timeout=0.2)  # type: ignore[assignment]
        assert got, f"attempt {n + 1} was never offered"
        attempts.append(got[0].attempt)  # type: ignore[attr-defined]
    assert attempts == [1, 2, 3]
    AgentEnd(folder, run_id="final").heartbeat()
    report = host.sweep()
    assert report.failed == (seq,) and report.reoffered == ()
    assert host.status().failed == (seq,)
    assert AgentEnd(folder).receive() == []
    (error,) = rows(folder / "inbound.db", "SELECT error FROM messages")[0]
    assert "3 offers" in str(error)


def test_completion_by_a_replaced_run_still_counts_once(folder: Path) -> None:
    host = HostEnd(folder, backoff=0.01)
    seq = host.send("x")
    old = AgentEnd(folder, run_id="old")
    old.heartbeat()
    old.receive()
    new = AgentEnd(folder, run_id="new")
    new.heartbeat()
    assert host.sweep().reoffered == (seq,)
    (m,) = new.receive(timeout=30)  # the backoff runs on the agent's clock from its first look
    assert m.attempt == 2
    first = old.reply("late answer", in_reply_to=seq)  # the old run was only slow
    assert new.reply("second answer", in_reply_to=seq) == first
    finals = rows(folder / "outbound.db", "SELECT seq FROM replies WHERE final = 1")
    assert finals == [(first,)]
    assert host.sweep().settled == 1
    assert host.status().completed == 1


def test_waits_wake_on_commit_and_time_out(folder: Path) -> None:
    host = HostEnd(folder)
    agent = AgentEnd(folder)
    t0 = time.monotonic()
    assert agent.receive(timeout=0.2) == []
    assert time.monotonic() - t0 >= 0.2
    threading.Timer(0.1, host.send, args=("late",)).start()
    got = agent.receive(timeout=10)
    assert [m.content for m in got] == ["late"]
    threading.Timer(0.1, agent.reply, args=("back",), kwargs={"in_reply_to": got[0].seq}).start()
    assert [r.content for r in host.replies(timeout=10)] == ["back"]


def test_content_round_trips_exactly(folder: Path) -> None:
    host = HostEnd(folder)
    agent = AgentEnd(folder)
    text = "naïve \x00 NUL, emoji 🙂, CJK 漢字, quotes ' \" and newline\n"
    host.send(text)
    (m,) = agent.receive()
    assert m.content == text
    agent.reply(text, in_reply_to=m.seq)
    assert host.replies()[0].content == text


def test_values_are_frozen_and_timestamps_utc(folder: Path) -> None:
    host = HostEnd(folder)
    agent = AgentEnd(folder)
    host.send("x")
    (m,) = agent.receive()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.seq = 3  # type: ignore[misc]
    assert abs(m.created_at - time.time()) < 60


def test_files_are_private(folder: Path) -> None:
    host = HostEnd(folder)
    agent = AgentEnd(folder)
    agent.heartbeat()
    host.send("x")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("inbound.db", "outbound.db", "heartbeat"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


def test_journal_mode_is_delete_on_both_files(folder: Path) -> None:
    HostEnd(folder)
    AgentEnd(folder)
    for name in ("inbound.db", "outbound.db"):
        assert rows(folder / name, "PRAGMA journal_mode") == [("delete",)]
    assert not list(folder.glob("*-wal")) and not list(folder.glob("*-shm"))


def test_status_without_agent_and_with_unreadable_heartbeat(folder: Path) -> None:
    host = HostEnd(folder)
    st = host.status()
    assert (st.alive, st.heartbeat_age, st.run_id, st.pending) == (False, None, None, 0)
    (folder / "heartbeat").write_text("{not json")
    assert host.status().alive is False
    write_heartbeat(folder, {"run_id": "r", "beat_at": time.time() + 100, "pid": 1})
    st = host.status()  # an agent clock ahead of the host's: age clamps to 0, still alive
    assert st.alive is True and st.heartbeat_age == 0.0
    assert json.loads((folder / "heartbeat").read_text())["run_id"] == "r"
