"""Liveness: a silent agent with a fresh heartbeat is never swept; a previous run's heartbeat never
condemns the new run; a dead agent's work is re-offered once its heartbeat has stood still for
``stale_after`` on the host's own clock (docs/channel.md, "Clocks").

These must pass on a loaded machine: no upper bound on how long anything takes, only bounded
waits for events; where a live agent must be judged alive, the margin (stale_after) is derived
from the heartbeat gaps this test observes, so a loaded machine widens it instead of failing.

test_channel_tz.py runs this file again under TZ=Asia/Tokyo and TZ=America/Los_Angeles: all
times are UTC epoch seconds, so nothing here may depend on the local zone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from sessiondb.channel import AgentEnd, HostEnd
from sessiondb.channel.heartbeat import read_heartbeat, write_heartbeat
from tests import _workers_channel as w
from tests.channel._margins import WAIT, margin

SPAWN = mp.get_context("spawn")
BEAT = 0.1


def inbound_row(folder: Path, seq: int) -> tuple[Any, ...]:
    conn = apsw.Connection(str(folder / "inbound.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return tuple(
            conn.execute(
                "SELECT attempt, state, created_at FROM messages WHERE seq = ?", (seq,)
            ).fetchall()[0]
        )
    finally:
        conn.close()


def watch_alive(host: HostEnd, seconds: float) -> int:
    """Sweep and look for ``seconds``: the live run is never judged dead nor swept."""
    looks = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        report = host.sweep()
        assert report.reoffered == () and report.failed == ()
        st = host.status()
        assert st.alive, f"heartbeat unchanged for {st.heartbeat_age} s"
        looks += 1
        time.sleep(0.05)
    return looks


def test_silent_agent_with_fresh_heartbeat_is_never_swept(tmp_path: Path) -> None:
    folder = tmp_path / "chan"
    host = HostEnd(folder, backoff=0.01)
    seq = host.send("long tool call")
    out, stop = SPAWN.Queue(), SPAWN.Event()
    p = SPAWN.Process(target=w.slow_agent, args=(str(folder), stop, BEAT, out))
    p.start()
    try:
        event, claimed, run_id = out.get(timeout=WAIT)
        assert (event, claimed) == ("claimed", seq)
        host.stale_after = margin(folder, BEAT)  # measured while the agent is busy in Python
        # Silent (no reply, no ack) for 2.5 x stale_after: alive and processing throughout.
        looks = watch_alive(host, 2.5 * host.stale_after)
        st = host.status()
        assert st.run_id == run_id and seq in st.processing
        stop.set()
        assert out.get(timeout=WAIT)[0] == "replied"
    finally:
        stop.set()
        p.join(WAIT)
    assert p.exitcode == 0 and looks > 5
    host.sweep()
    st = host.status()
    assert st.completed == 1 and st.failed == ()
    assert inbound_row(folder, seq)[:1] == (1,)  # offered once: never re-offered
    assert st.alive is False  # closed cleanly: its last beat says stopped


def test_heartbeat_of_a_previous_run_never_condemns_the_new_one(tmp_path: Path) -> None:
    folder = tmp_path / "chan"
    host = HostEnd(folder, backoff=0.01)
    old_seq = host.send("claimed by the previous run")
    # The previous run claimed a message, then died; its heartbeat file stays behind.
    previous = AgentEnd(folder, run_id="previous-run")
    assert [m.seq for m in previous.receive()] == [old_seq]
    write_heartbeat(
        folder,
        {"run_id": "previous-run", "pid": 999_999, "started_at": 1.0, "beat_at": time.time()},
    )
    new_seq = host.send("for the new run")
    agent = AgentEnd(folder, heartbeat_every=BEAT)
    try:
        st = host.status()
        assert st.alive and st.run_id == agent.run_id
        got = agent.receive(timeout=WAIT)
        assert [m.seq for m in got] == [new_seq]
        host.stale_after = margin(folder, BEAT)
        # Sweeping for longer than stale_after: only the previous run's claim is re-offered.
        reoffered: list[int] = []
        end = time.monotonic() + 2 * host.stale_after
        while time.monotonic() < end:
            reoffered.extend(host.sweep().reoffered)
            assert host.status().alive
            time.sleep(0.05)
        assert reoffered == [old_seq]
        assert new_seq in host.status().processing
        again = agent.receive(timeout=WAIT)
        assert [(m.seq, m.attempt) for m in again] == [(old_seq, 2)]
        for m in (*got, *again):
            agent.reply("ok", in_reply_to=m.seq)
    finally:
        agent.close()
    st = host.status()
    assert st.completed == 2 and st.failed == ()


def test_old_heartbeat_file_stands_still_until_stale_and_a_new_run_is_alive_at_once(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "chan"
    stale_after = 1.0
    host = HostEnd(folder, stale_after=stale_after)
    write_heartbeat(folder, {"run_id": "yesterday", "pid": 1, "beat_at": time.time() - 86_400})
    # Its timestamp is the agent's clock, never compared with ours: on a first look it is
    # just seen; it is dead once it has stood still for stale_after of the host's time.
    first = time.monotonic()
    st = host.status()
    assert st.alive and st.heartbeat_age == 0.0
    deadline = first + WAIT
    while host.status().alive and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not host.status().alive
    assert time.monotonic() - first >= stale_after  # never before it stood still that long
    # Another HostEnd (the CLI) shares what the first saw: no new grace period.
    assert HostEnd(folder, stale_after=stale_after).status().alive is False
    with AgentEnd(folder, heartbeat_every=BEAT) as agent:
        st = host.status()
        assert st.alive and st.run_id == agent.run_id
        assert st.heartbeat_age is not None and st.heartbeat_age <= stale_after
        host.stale_after = margin(folder, BEAT)
        watch_alive(host, 2 * host.stale_after)  # the thread keeps it fresh


def test_dead_agent_is_detected_after_stale_after_and_its_work_reoffered(tmp_path: Path) -> None:
    folder = tmp_path / "chan"
    stale_after = 1.0
    backoff = 0.3
    host = HostEnd(folder, stale_after=stale_after, backoff=backoff, max_backoff=backoff)
    seq = host.send("in flight when the agent dies")
    out = SPAWN.Queue()
    p = SPAWN.Process(target=w.claim_and_hang, args=(str(folder), BEAT, out))
    p.start()
    claimed, run_id = out.get(timeout=WAIT)
    assert claimed == seq
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(WAIT)
    killed_at = time.monotonic()  # the host has not looked yet: it first sees the last beat later
    hb = read_heartbeat(folder)
    assert hb is not None and hb["run_id"] == run_id
    reoffered_at = None
    deadline = killed_at + WAIT
    while time.monotonic() < deadline:
        if host.sweep().reoffered == (seq,):
            reoffered_at = time.monotonic()
            break
        st = host.status()  # alive is judged from the heartbeat's age at that same reading
        assert st.heartbeat_age is not None
        assert st.alive == (st.heartbeat_age <= stale_after)
        assert st.heartbeat_age <= time.monotonic() - killed_at  # counted from the host's look
        time.sleep(0.02)
    assert reoffered_at is not None, "the dead agent's message was never re-offered"
    assert reoffered_at - killed_at >= stale_after  # not before the heartbeat stood still
    attempt, state, created_at = inbound_row(folder, seq)
    assert (attempt, state) == (2, "open")
    assert abs(created_at - time.time()) < 86_400  # UTC epoch seconds whatever TZ says
    with AgentEnd(folder, heartbeat_every=BEAT) as agent:
        # The backoff runs on the agent's clock from its first look at the re-offer.
        looked = time.monotonic()
        assert agent.receive() == []
        got = agent.receive(timeout=WAIT)
        assert time.monotonic() - looked >= backoff
        assert [(m.seq, m.attempt) for m in got] == [(seq, 2)]
        agent.reply("recovered", in_reply_to=seq)
    assert host.status().completed == 1


def test_clean_stop_releases_claims_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "chan"
    host = HostEnd(folder, stale_after=60, backoff=0.01)
    seq = host.send("x")
    agent = AgentEnd(folder, heartbeat_every=BEAT)
    agent.receive()
    assert host.sweep().reoffered == ()
    agent.close()  # writes a "stopped" beat: no need to wait 60 s
    hb = read_heartbeat(folder)
    assert hb is not None and hb["stopped"] is True
    assert host.status().alive is False
    assert host.sweep().reoffered == (seq,)


@pytest.mark.parametrize("zone", [os.environ.get("TZ", "unset")])
def test_timestamps_are_utc_epoch(tmp_path: Path, zone: str) -> None:
    folder = tmp_path / "chan"
    host = HostEnd(folder)
    with AgentEnd(folder, heartbeat_every=BEAT) as agent:
        before = time.time()
        seq = host.send("when?")
        (m,) = agent.receive()
        r = agent.reply("now", in_reply_to=seq)
        after = time.time()
        (reply,) = host.replies()
        assert reply.seq == r
        for t in (m.created_at, reply.created_at):
            assert before - 1 <= t <= after + 1, zone
        hb = read_heartbeat(folder)
        assert hb is not None and before - 1 <= hb["beat_at"] <= time.time() + 1
        st = host.status()
        assert st.alive and st.heartbeat_age is not None and st.heartbeat_age >= 0
