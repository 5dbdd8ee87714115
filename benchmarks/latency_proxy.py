"""A TCP proxy that delays every chunk by a fixed time in each direction, order kept: the local
PostgreSQL server made to answer like one across a network (benchmarks/aio_pg.py ``--rtt``).

Run in a process of its own (``start(delay)`` returns the port and the process); the delay is
one way, so a round trip gains twice it. It costs CPU per chunk like any proxy: every system of
a run goes through it alike.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import time
from typing import Any

_SPAWN = mp.get_context("spawn")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def later() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(later())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                break
    finally:
        await sender


def _serve(listener: socket.socket, target: tuple[str, int], delay: float) -> None:
    async def main() -> None:
        async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                ur, uw = await asyncio.open_connection(*target)
            except OSError:
                w.close()
                return
            for s in (w.get_extra_info("socket"), uw.get_extra_info("socket")):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.gather(_pipe(r, uw, delay), _pipe(ur, w, delay), return_exceptions=True)

        server = await asyncio.start_server(client, sock=listener)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start(target: tuple[str, int], delay: float) -> tuple[int, Any]:
    """A proxy to ``target`` adding ``delay`` seconds each way: (its port, its process)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    proc = _SPAWN.Process(target=_serve, args=(listener, target, delay), daemon=True)
    proc.start()
    listener.close()
    return port, proc
