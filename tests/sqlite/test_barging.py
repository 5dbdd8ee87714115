"""The admission queue's bounded barging (sessiondb/host/flock.py, "Barging"): a writer that
releases the lock and takes it again at once may do so only ``barge_limit`` times in a row
while a writer of another process has waited past ``PATIENCE``; then it goes through the queue.
Alone, it never does. What it buys under 64 processes (fairness, max latency) is measured in
docs/benchmarks.md, "Bounded barging"."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from sessiondb.host import flock
from sessiondb.host.flock import QueuedLock
from tests import _workers_store as w

SPAWN = multiprocessing.get_context("spawn")


def test_a_waiter_past_its_patience_is_seen_from_another_process_until_its_turn(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.lock"
    out = SPAWN.Queue()
    holder = SPAWN.Process(target=w.flag_watcher, args=(str(path), 1.0, out))
    holder.start()
    try:
        assert out.get(timeout=60) == "holding"
        mine = QueuedLock(path, barge_limit=4)
        granted = threading.Event()

        def take() -> None:
            assert mine.acquire(30.0)
            granted.set()
            mine.release()

        waiter = threading.Thread(target=take)
        waiter.start()
        seen, after_turn = out.get(timeout=60)
        waiter.join(30)
        assert granted.is_set()
        mine.close()
    finally:
        holder.join(60)
    assert holder.exitcode == 0
    assert seen is not None, "the holder never saw the waiter"
    assert after_turn is False  # the flag went with the waiter's turn


def test_past_the_limit_a_writer_that_sees_a_waiter_goes_through_the_queue(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.lock"
    ready, done = SPAWN.Event(), SPAWN.Event()
    flagger = SPAWN.Process(target=w.flag_holder, args=(str(path), ready, done))
    flagger.start()
    try:
        assert ready.wait(60)
        lock = QueuedLock(path, barge_limit=2)
        for _ in range(3):  # the first turn, then two taken right after releasing
            assert lock.acquire(5.0)
            lock.release()
        assert lock._helper is None and lock._streak == 2
        assert lock.acquire(5.0)  # a waiter is flagged: through the queue (free: granted)
        assert lock._helper is not None and lock._streak == 0
        lock.release()
        lock.close()
    finally:
        done.set()
        flagger.join(60)
    assert flagger.exitcode == 0


@pytest.mark.parametrize("limit", [1, 4])
def test_alone_a_writer_takes_the_lock_again_without_the_queue(tmp_path: Path, limit: int) -> None:
    lock = QueuedLock(tmp_path / "queue.lock", barge_limit=limit)
    for _ in range(50):
        assert lock.acquire(1.0)
        lock.release()
    assert lock._helper is None  # never waited in the kernel's queue: nobody else was there
    assert lock._streak == 49  # every turn but the first was taken right after releasing
    lock.close()


def test_a_turn_long_after_the_last_release_is_not_barging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flock, "RECENT", 0.0)
    lock = QueuedLock(tmp_path / "queue.lock", barge_limit=1)
    for _ in range(5):
        assert lock.acquire(1.0)
        lock.release()
    assert lock._streak == 0
    lock.close()
