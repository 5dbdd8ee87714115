"""Shared by integrations/tests/: spawned writers and a kill at a seeded random moment."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from collections.abc import Callable
from typing import Any

import pytest

CTX = multiprocessing.get_context("spawn")


def run_all(target: Callable[..., None], arglists: list[tuple[Any, ...]]) -> None:
    """Run one spawned process per argument tuple, all at once; each must exit 0."""
    procs = [CTX.Process(target=target, args=args) for args in arglists]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, f"writer exited with {p.exitcode}"


def kill_mid_stream(target: Callable[..., None], args: tuple[Any, ...], seed: int) -> int:
    """Start a writer that acks each batch on a pipe, kill -9 it after a seeded number of acks
    (so while it is writing the next batch), and return the last batch it acked. A pipe, not a
    multiprocessing.Queue: a Queue's feeder thread may die with the writer holding acks of
    batches already stored, and then more than one batch would be unacknowledged."""
    receiver, sender = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=target, args=(*args, sender))
    proc.start()
    sender.close()
    wanted = random.Random(seed).randint(3, 30)
    last = -1
    try:
        while last < wanted:
            if not receiver.poll(60):
                raise AssertionError("the writer stopped acknowledging")
            last = receiver.recv()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    while receiver.poll(0):  # acks sent before the kill
        try:
            last = receiver.recv()
        except EOFError:
            break
    return last


@pytest.fixture
def db(tmp_path: Any) -> str:
    return str(tmp_path / "state.db")
