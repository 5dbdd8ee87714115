"""No decision depends on two machines' clocks agreeing (docs/channel.md, "Clocks"): each side
judges ages and deadlines by its own monotonic clock. The other side runs here under libfaketime
(Debian's `faketime`), which shifts its wall clock and leaves its monotonic clock alone, as a
container or VM with a wrong clock would be."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessiondb.channel import AgentEnd, HostEnd
from tests.channel._margins import WAIT, margin

ROOT = Path(__file__).resolve().parents[2]


def libfaketime() -> Path:
    """Debian's libfaketime (package faketime); outside CI its absence skips these tests."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    found += [p for p in [Path("/usr/lib/faketime/libfaketime.so.1")] if p.exists()]
    if not found:
        message = "libfaketime is missing: `make test` installs it (apt-get install faketime)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found[0]


def faketime_env(**extra: str) -> dict[str, str]:
    """The environment of a process whose wall clock libfaketime shifts (``FAKETIME`` or
    ``FAKETIME_TIMESTAMP_FILE`` in ``extra``). Preloaded directly rather than through the
    ``faketime`` wrapper, so that killing the process kills the agent itself."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "LD_PRELOAD": str(libfaketime()),
        # Only the wall clock is shifted: a wrong clock, not a broken one.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        **extra,
    }


class Worker:
    """A process of tests/_workers_channel.py; its JSON lines arrive on a queue."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "exited"})

    def next(self, event: str) -> dict[str, Any]:
        """The next event of that name (bounded wait); fails if the process exits first."""
        deadline = time.monotonic() + WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.events.get(timeout=left)
            except queue.Empty:
                break
            if got["event"] == event:
                return got
            if got["event"] == "exited":
                assert self.proc.stderr is not None
                pytest.fail(f"worker exited early:\n{self.proc.stderr.read()[-3000:]}")
        pytest.fail(f"no {event!r} event within {WAIT:g} s")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(WAIT)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def agent_under(offset: str, workers: list[Worker], *args: str) -> Worker:
    env = faketime_env(FAKETIME=offset)
    w = Worker([sys.executable, "-m", "tests._workers_channel", *args], env)
    workers.append(w)
    return w


def test_an_agent_clock_a_day_behind_gets_messages_at_once(
    tmp_path: Path, workers: list[Worker]
) -> None:
    folder = tmp_path / "chan"
    host = HostEnd(folder)
    agent = agent_under("-1d", workers, "echo_agent", str(folder), str(WAIT))
    ready = agent.next("ready")
    assert ready["wall"] < time.time() - 43_200  # the agent's clock really is a day behind
    seq = host.send("ping")
    # Before, the agent waited until its own clock passed the host's send time: a day.
    replies = host.replies(timeout=WAIT)
    assert [(r.in_reply_to, r.content) for r in replies] == [(seq, "re:ping")]


def test_an_agent_clock_an_hour_ahead_that_dies_gives_its_work_back(
    tmp_path: Path, workers: list[Worker]
) -> None:
    folder = tmp_path / "chan"
    stale_after = 1.0
    host = HostEnd(folder, stale_after=stale_after, backoff=0.01)
    seq = host.send("claimed, then the agent dies")
    agent = agent_under("+1h", workers, "claiming_agent", str(folder))
    claimed = agent.next("claimed")
    assert claimed["seq"] == seq and claimed["wall"] > time.time() + 1800
    agent.stop()  # kill -9
    # Before, its heartbeat looked fresh until the host's clock caught up: an hour.
    deadline = time.monotonic() + WAIT
    reoffered: tuple[int, ...] = ()
    while not reoffered and time.monotonic() < deadline:
        reoffered = host.sweep().reoffered
        time.sleep(0.05)
    assert reoffered == (seq,)
    with AgentEnd(folder) as again:
        got = again.receive(timeout=WAIT)
        assert [(m.seq, m.attempt) for m in got] == [(seq, 2)]


def test_a_host_clock_jumping_forward_never_condemns_a_live_agent(
    tmp_path: Path, workers: list[Worker]
) -> None:
    folder = tmp_path / "chan"
    HostEnd(folder)
    spec = tmp_path / "faketime-spec"
    spec.write_text("+0\n")
    with AgentEnd(folder, heartbeat_every=0.05) as agent:
        seq = HostEnd(folder).send("a long job")
        assert [m.seq for m in agent.receive(timeout=WAIT)] == [seq]
        stale_after = margin(folder, 0.05)  # the live agent must stay alive here, loaded or not
        env = faketime_env(FAKETIME_TIMESTAMP_FILE=str(spec), FAKETIME_NO_CACHE="1")
        # The host sweeps for 5 x stale_after of its own time after its clock jumped.
        host = Worker(
            [
                sys.executable,
                "-m",
                "tests._workers_channel",
                "sweeping_host",
                str(folder),
                str(stale_after),
                str(5 * stale_after),
            ],
            env,
        )
        workers.append(host)
        first = host.next("swept")
        assert first["alive"] and first["processing"] == [seq]
        spec.write_text("+1h\n")  # the host's clock steps an hour forward
        seen: list[dict[str, Any]] = []
        while (event := host.next("swept"))["jumped"] is False:
            seen.append(event)
        seen.append(event)
        host.next("done")
        while not host.events.empty():
            got = host.events.get()
            if got["event"] == "swept":
                seen.append(got)
        after = [e for e in seen if e["jumped"]]
        assert after and all(e["wall"] > time.time() + 1800 for e in after[:1])
        # Before, the heartbeat's age jumped by an hour: the job was re-offered and ran twice.
        assert [e["reoffered"] for e in seen if e["reoffered"]] == []
        assert all(e["alive"] for e in seen)
        agent.reply("done once", in_reply_to=seq)
    st = HostEnd(folder).status()
    assert st.completed == 1 and st.failed == ()
