"""Sends counted on the client's socket: the data segments the kernel sent on it
(``tcpi_data_segs_out`` of ``tcp_info``, Linux). libpq sets TCP_NODELAY, so each send of a
small buffer is one segment; nothing else writes to that socket."""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

#: Offset of ``tcpi_data_segs_out`` in Linux's ``struct tcp_info`` (include/uapi/linux/tcp.h:
#: 8 one-byte fields, 24 u32, 4 u64, then segs_out, segs_in, notsent_bytes, min_rtt,
#: data_segs_in, data_segs_out).
_DATA_SEGS_OUT = 8 + 24 * 4 + 4 * 8 + 5 * 4


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")


def count(conn: Any, action: Callable[[], object]) -> int:
    """Data segments the client sent on ``conn``'s socket (a psycopg connection over TCP)
    while ``action`` ran."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise OSError("not a TCP connection")

        def segments() -> int:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            if len(info) < _DATA_SEGS_OUT + 4:  # a kernel older than 4.6
                raise OSError("tcp_info has no tcpi_data_segs_out")
            return int(struct.unpack_from("I", info, _DATA_SEGS_OUT)[0])

        before = segments()
        action()
        return segments() - before


__all__ = ["count", "supported"]
