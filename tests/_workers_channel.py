"""Process bodies for the channel tests (spawned: importable, top level, bounded in time)."""

from __future__ import annotations

import random
import time
from typing import Any

from sessiondb.channel import AgentEnd, HostEnd


def crashy_agent(folder: str, seed: int) -> None:
    """An agent loop that is killed from outside at a random moment; never exits by itself.

    Per message: sometimes a keyed interim reply, a short random pause (so kills land
    mid-message), then the final reply, which settles the message in the same transaction.
    """
    rng = random.Random(seed)
    agent = AgentEnd(folder, heartbeat_every=0.05)
    while True:
        for m in agent.receive(limit=rng.randint(1, 5), timeout=0.5):
            if rng.random() < 0.3:
                agent.reply(
                    f"progress:{m.seq}", in_reply_to=m.seq, kind="progress", key=f"p{m.seq}"
                )
            time.sleep(rng.random() * 0.01)
            agent.reply("re:" + m.content, in_reply_to=m.seq)


def reply_writer(folder: str, wid: int, seconds: float, out: Any) -> None:
    """One of several agent-side processes writing outbound.db at once; reports its seqs."""
    agent = AgentEnd(folder, run_id=f"writer-{wid}")
    seqs: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seqs.append(agent.reply(f"{wid}:{len(seqs)}", kind="event"))
    agent.close()
    out.put((wid, seqs))


def slow_agent(folder: str, stop: Any, beat: float, out: Any) -> None:
    """Claims one message, stays silent (a long tool call, busy in Python: the GIL is contended,
    yet its heartbeat thread beats) until ``stop`` is set (bounded: 10 minutes), then replies."""
    agent = AgentEnd(folder, heartbeat_every=beat)
    batch: list[Any] = []
    while not batch:
        batch = agent.receive(limit=1, timeout=5)
    out.put(("claimed", batch[0].seq, agent.run_id))
    deadline = time.monotonic() + 600
    x = 0
    while not stop.is_set() and time.monotonic() < deadline:
        for _ in range(10_000):
            x += 1
    agent.reply("done", in_reply_to=batch[0].seq)
    out.put(("replied", batch[0].seq, agent.run_id))
    agent.close()


def claim_and_hang(folder: str, beat: float, out: Any) -> None:
    """Claims one message and then waits forever (killed by the test)."""
    agent = AgentEnd(folder, heartbeat_every=beat)
    batch: list[Any] = []
    while not batch:
        batch = agent.receive(limit=1, timeout=5)
    out.put((batch[0].seq, agent.run_id))
    time.sleep(3600)


def idle_receiver(folder: str, seconds: float, out: Any) -> None:
    """Waits in receive(timeout=...) with nothing arriving; reports its own CPU time."""
    import os

    agent = AgentEnd(folder)
    before = os.times()
    t0 = time.monotonic()
    got = agent.receive(timeout=seconds)
    wall = time.monotonic() - t0
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    out.put({"got": len(got), "wall": wall, "cpu": cpu})


def open_agent_at_once(folder: str, wid: int, barrier: Any) -> None:
    """Open the agent side of a channel whose outbound.db may not exist yet, all at once."""
    barrier.wait()
    agent = AgentEnd(folder, run_id=f"opener-{wid}")
    agent.close()


# -- processes run under libfaketime (tests/channel/test_channel_clocks.py) ---------------------
# Started as `python -m tests._workers_channel NAME ARGS...`; they report JSON lines on stdout.


def _say(**event: Any) -> None:
    import json
    import sys

    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def echo_agent(folder: str, seconds: str) -> None:
    """Replies "re:<content>" to every message for ``seconds`` (monotonic), heartbeating."""
    agent = AgentEnd(folder, heartbeat_every=0.1)
    _say(event="ready", wall=time.time(), run_id=agent.run_id)
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        for m in agent.receive(timeout=0.5):
            agent.reply("re:" + m.content, in_reply_to=m.seq)
            _say(event="replied", seq=m.seq, attempt=m.attempt)
    agent.close()


def claiming_agent(folder: str) -> None:
    """Claims one message and then heartbeats until killed (bounded: 10 minutes)."""
    agent = AgentEnd(folder, heartbeat_every=0.1)
    batch: list[Any] = []
    deadline = time.monotonic() + 600
    while not batch and time.monotonic() < deadline:
        batch = agent.receive(limit=1, timeout=1)
    _say(event="claimed", seq=batch[0].seq, run_id=agent.run_id, wall=time.time())
    while time.monotonic() < deadline:
        time.sleep(1)


def sweeping_host(folder: str, stale_after: str, window: str) -> None:
    """Sweeps and reports until ``window`` seconds (monotonic) have passed since this process saw
    its wall clock jump forward by more than half an hour (bounded: 10 minutes in all)."""
    host = HostEnd(folder, stale_after=float(stale_after), backoff=0.01)
    start = time.time()
    jumped: float | None = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        report = host.sweep()
        st = host.status()
        mono = time.monotonic()
        if jumped is None and time.time() - start > 1800:
            jumped = mono
        _say(
            event="swept",
            wall=time.time(),
            jumped=jumped is not None,
            alive=st.alive,
            age=st.heartbeat_age,
            reoffered=list(report.reoffered),
            processing=list(st.processing),
        )
        if jumped is not None and mono - jumped > float(window):
            _say(event="done")
            return
        time.sleep(0.05)


if __name__ == "__main__":
    import sys
    import threading

    # libfaketime 0.9.10 breaks clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which
    # time.sleep uses (EINVAL, or a hang when monotonic is faked too); a wait on an Event
    # sleeps the same time through another call it leaves alone.
    time.sleep = lambda seconds: threading.Event().wait(seconds)  # type: ignore[assignment]
    globals()[sys.argv[1]](*sys.argv[2:])
