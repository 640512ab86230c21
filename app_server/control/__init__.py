"""The master <-> worker control protocol, shared by both sides.

``messages`` is the vocabulary and its encoding, ``channel`` the sockets
it travels on. Both are re-exported here so a user writes
``control.encode(...)`` and ``control.channel_pair()``.

Rule: imports nothing from the package outside ``control``.
"""

from __future__ import annotations

from app_server.control.channel import (
    MAX_FDS,
    channel_pair,
    close_fds,
    read_ready,
    receive,
    send_adopt,
)
from app_server.control.messages import (
    MAX_PACKET,
    SIZE,
    ControlError,
    Heartbeat,
    Kind,
    Message,
    RecycleReason,
    StopReason,
    decode,
    encode,
    encode_heartbeat,
    encode_stats,
    heartbeat_interval,
    heartbeat_of,
    late_after,
)

__all__ = [
    "MAX_FDS",
    "MAX_PACKET",
    "SIZE",
    "ControlError",
    "Heartbeat",
    "Kind",
    "Message",
    "RecycleReason",
    "StopReason",
    "channel_pair",
    "close_fds",
    "decode",
    "encode",
    "encode_heartbeat",
    "encode_stats",
    "heartbeat_interval",
    "heartbeat_of",
    "late_after",
    "read_ready",
    "receive",
    "send_adopt",
]
