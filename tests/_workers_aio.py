"""Worker functions for multi-process async store tests (importable by spawned children)."""

from __future__ import annotations

import random

import anyio

import sessiondb


def aio_append_worker(
    path: str, worker: int, tasks: int, n: int, backend: str, barrier: object
) -> None:
    """One process, ``tasks`` concurrent tasks, each appending ``n`` keyed messages to a shared
    session and its own; about one append in four is cancelled at a random moment and retried
    with its key until it returns (each key must end up stored exactly once)."""

    async def task(store: sessiondb.aio.AsyncSessionStore, t: int) -> None:
        rng = random.Random(worker * 1000 + t)
        for i in range(n):
            sid = f"shared-{i % 3}" if i % 2 == 0 else f"own-{worker}-{t}"
            key = f"{worker}:{t}:{i}"
            while True:
                deadline = rng.uniform(0, 0.005) if rng.random() < 0.25 else float("inf")
                with anyio.move_on_after(deadline):
                    await store.append(sid, "user", f"w{worker} t{t} m{i}", key=key)
                    break

    async def main() -> None:
        async with sessiondb.aio.open(path) as store:
            await anyio.to_thread.run_sync(barrier.wait)  # type: ignore[attr-defined]
            async with anyio.create_task_group() as tg:
                for t in range(tasks):
                    tg.start_soon(task, store, t)

    anyio.run(main, backend=backend)
