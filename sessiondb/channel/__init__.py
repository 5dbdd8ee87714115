"""Host ↔ sandboxed-agent messaging through two single-writer SQLite files in a shared folder.

``inbound.db`` is written only by the host end, ``outbound.db`` only by the agent side, and the
agent run keeps a ``heartbeat`` file fresh. See docs/channel.md for the protocol.
"""

from __future__ import annotations

from .agent import AgentEnd
from .host import HostEnd
from .protocol import (
    MAX_CONTENT_BYTES,
    ChannelError,
    ChannelKeyConflict,
    ChannelStatus,
    Inbound,
    NotAChannel,
    Reply,
    SweepReport,
)

__all__ = [
    "MAX_CONTENT_BYTES",
    "AgentEnd",
    "ChannelError",
    "ChannelKeyConflict",
    "ChannelStatus",
    "HostEnd",
    "Inbound",
    "NotAChannel",
    "Reply",
    "SweepReport",
]
