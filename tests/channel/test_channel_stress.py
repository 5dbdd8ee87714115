"""Real processes on one channel: kill -9 while messages flow; three agent-side writers at once."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import apsw
import pytest

from sessiondb.channel import HostEnd
from sessiondb.channel.heartbeat import read_heartbeat
from tests import _workers_channel as w

SPAWN = mp.get_context("spawn")

KILLS = 50
MESSAGES = 500
SEED = 20261122
WRITERS = 3
WRITE_SECONDS = 10.0


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = apsw.Connection(str(path))  # read-write: recovers a hot journal like a writer would
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def start_agent(folder: Path, seed: int) -> mp.process.BaseProcess:
    p = SPAWN.Process(target=w.crashy_agent, args=(str(folder), seed), daemon=True)
    p.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # ready once its heartbeat names it
        hb = read_heartbeat(folder)
        if hb is not None and hb.get("pid") == p.pid:
            return p
        assert p.is_alive(), "agent process exited early"
        time.sleep(0.01)
    raise AssertionError("agent never started its heartbeat")


@pytest.mark.crash
def test_kill9_agent_while_messages_flow(tmp_path: Path) -> None:
    folder = tmp_path / "chan"
    rng = random.Random(SEED)
    # stale_after is long on purpose: a restarted agent's new run id is what frees the dead
    # run's claims here, not the heartbeat's age (that is test_channel_liveness's job).
    host = HostEnd(folder, stale_after=30, max_tries=6, backoff=0.005, max_backoff=0.02)
    sent: dict[int, str] = {}
    per_cycle = MESSAGES // KILLS
    for cycle in range(KILLS):
        for i in range(cycle * per_cycle, (cycle + 1) * per_cycle):
            sent[host.send(f"m{i}", key=f"m{i}")] = f"m{i}"
        agent = start_agent(folder, SEED + cycle)
        host.sweep()  # the previous run was replaced: its claims are re-offered
        time.sleep(rng.uniform(0.0, 0.25))
        assert agent.pid is not None
        os.kill(agent.pid, signal.SIGKILL)
        agent.join(10)
    assert len(sent) == MESSAGES

    agent = start_agent(folder, SEED + KILLS)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            host.sweep()
            st = host.status()
            if st.pending == 0 and not st.processing:
                break
            time.sleep(0.05)
    finally:
        assert agent.pid is not None
        os.kill(agent.pid, signal.SIGKILL)
        agent.join(10)

    st = host.status()
    assert st.pending == 0 and st.processing == ()
    assert st.completed + len(st.failed) == MESSAGES
    assert st.completed > MESSAGES // 2  # most messages do get through 50 crashes

    out = folder / "outbound.db"
    outcomes = dict(query(out, "SELECT in_seq, state FROM acks WHERE state != 'processing'"))
    finals = Counter(r[0] for r in query(out, "SELECT in_reply_to FROM replies WHERE final = 1"))
    progress = Counter(
        r[0] for r in query(out, "SELECT in_reply_to FROM replies WHERE kind = 'progress'")
    )
    final_text = dict(query(out, "SELECT in_reply_to, content FROM replies WHERE final = 1"))
    failed = set(st.failed)
    for seq, content in sent.items():
        if seq in failed:
            assert outcomes.get(seq) is None and finals[seq] == 0, seq
        else:
            assert outcomes.get(seq) == "completed", seq
            assert finals[seq] == 1, f"seq {seq}: {finals[seq]} final replies"
            assert final_text[seq] == "re:" + content
        assert progress[seq] <= 1, f"seq {seq}: interim reply duplicated"

    seen = host.replies()
    seqs = [r.seq for r in seen]
    assert seqs == sorted(set(seqs)) and all(s % 2 == 1 for s in seqs)
    assert all(s % 2 == 0 for s in sent)
    for name in ("inbound.db", "outbound.db"):
        assert query(folder / name, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.stress
def test_three_agent_side_writers_never_collide(tmp_path: Path) -> None:
    folder = tmp_path / "chan"
    # The tail reads while three writers commit flat out: a rollback-journal reader waits for a
    # gap between their transactions, which on a loaded machine can take seconds. What this test
    # checks is order and completeness, not that wait: bound it generously.
    host = HostEnd(folder, busy_timeout=60)
    host.send("start")
    out = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=w.reply_writer, args=(str(folder), i, WRITE_SECONDS, out))
        for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    # The host tails with a cursor while they write: a reply committed behind the cursor
    # (a seq allocated outside the writer's transaction) would be missed here.
    tailed: list[int] = []
    results: dict[int, list[int]] = {}
    deadline = time.monotonic() + WRITE_SECONDS + 60
    while len(results) < WRITERS and time.monotonic() < deadline:
        batch = host.replies(after=tailed[-1] if tailed else 0, timeout=0.2)
        tailed.extend(r.seq for r in batch)
        while not out.empty():
            wid, seqs = out.get()
            results[wid] = seqs
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    tailed.extend(r.seq for r in host.replies(after=tailed[-1] if tailed else 0))

    everything = [s for seqs in results.values() for s in seqs]
    assert len(results) == WRITERS and all(results.values())
    assert len(everything) == len(set(everything))  # no seq handed out twice
    assert tailed == sorted(everything)  # every reply seen, in order, none skipped
    rows = query(folder / "outbound.db", "SELECT seq, content FROM replies ORDER BY seq")
    assert [r[0] for r in rows] == tailed
    by_writer: dict[str, list[int]] = {}
    for seq, content in rows:
        wid, n = str(content).split(":")
        by_writer.setdefault(wid, []).append(int(n))
        assert isinstance(seq, int) and seq % 2 == 1
    for wid, ns in by_writer.items():
        assert ns == list(range(len(results[int(wid)]))), f"writer {wid} lost or reordered"
    assert query(folder / "outbound.db", "PRAGMA integrity_check") == [("ok",)]


def test_agent_side_processes_creating_outbound_at_once(tmp_path: Path) -> None:
    """Several agent-side processes opening a channel whose outbound.db does not exist yet: one
    creates it, the others must see a channel file, never 'another application's database'."""
    for attempt in range(6):
        folder = tmp_path / f"chan{attempt}"
        HostEnd(folder).send("hello")
        barrier = SPAWN.Barrier(4)
        procs = [
            SPAWN.Process(target=w.open_agent_at_once, args=(str(folder), i, barrier))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], f"attempt {attempt}"
