"""The messages of the control channel between the master and one worker.

Owns: the message vocabulary (``Kind``, ``StopReason``, ``RecycleReason``),
its fixed binary encoding (``encode``/``decode``) and the heartbeat timing
(``heartbeat_interval``, ``late_after``) both sides agree on. The socket
side (the pair, descriptor passing, reading) is ``control.channel``.

The channel is a ``SOCK_SEQPACKET`` socket pair made before the fork: each
message is one packet (no framing to get wrong), delivery is reliable and in
order, and when either process dies the other end reads EOF at once, so the
master sees a dead worker and a worker sees a dead master without polling.
Every message is the same 16 bytes: kind, a reason code and one unsigned
value. Worker to master: READY, HEARTBEAT (value: requests and WebSocket
connections served so far; 8 more bytes: the HTTP and WebSocket
connections open now, which ``ctl status`` shows without asking the
worker), RECYCLE (reason: a limit the worker reached).
Master to worker: STOP (reason: why, which decides the WebSocket close code
and whether to drain at all). For metrics, the master sends COLLECT with a
round number (code 1-255) and the worker answers STATS with the same code
(0 when it sends one unasked), whose value is the length of the snapshot
that follows the 16 bytes in the same packet.

When a slot's worker cannot accept (late, dead, not yet ready) the master
sends another worker ADOPT (value: the slot) carrying that slot's listening
sockets as ``SCM_RIGHTS`` file descriptors, and RELEASE (value: the slot) when
the slot's own worker accepts again: in between, the adopter serves the
connections queued on the slot's listeners.

Rule: no imports from the rest of the package.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple


class Kind(IntEnum):
    READY = 1
    HEARTBEAT = 2
    RECYCLE = 3
    STOP = 4
    COLLECT = 5  # master -> worker: send your metrics now
    STATS = 6  # worker -> master: value = payload length, the metrics snapshot follows
    ADOPT = 7  # master -> worker: value = slot; its listeners ride along (SCM_RIGHTS)
    RELEASE = 8  # master -> worker: value = slot; stop accepting from its listeners


class StopReason(IntEnum):
    SHUTDOWN = 1  # the server stops: WebSockets close with 1001 (Going Away)
    RELOAD = 2  # replaced by new code: 1012 (Service Restart), clients reconnect
    RECYCLE = 3  # replaced by a fresh worker (a limit was reached): 1012
    SCALE_DOWN = 4  # one worker fewer: 1012, the others serve the reconnects
    IMMEDIATE = 5  # stop now: no draining (QUIT, or a second TERM/INT)

    @property
    def websocket_close(self) -> tuple[int, str]:
        if self is StopReason.SHUTDOWN:
            return 1001, "server shutting down"
        return 1012, "server restarting"


class RecycleReason(IntEnum):
    MAX_REQUESTS = 1
    MAX_LIFETIME = 2
    MAX_MEMORY = 3
    DRAIN = 4  # asked by an operator (``ctl drain SLOT``)


class Message(NamedTuple):
    kind: Kind
    code: int = 0
    value: int = 0
    payload: bytes = b""


class Heartbeat(NamedTuple):
    """What a HEARTBEAT says besides being alive."""

    requests: int
    http_connections: int
    websockets: int


class ControlError(Exception):
    """A packet that is not a message of this protocol."""


_PACKET = struct.Struct("!BBxxxxxxQ")
SIZE = _PACKET.size
MAX_PACKET = 4 * 1024 * 1024
_KINDS = {int(kind): kind for kind in Kind}
_OPEN = struct.Struct("!II")  # a HEARTBEAT's trailer: HTTP and WebSocket connections open


def encode(kind: Kind, code: int = 0, value: int = 0) -> bytes:
    return _PACKET.pack(kind, code, value)


def encode_stats(payload: bytes, answer: int = 0) -> bytes:
    """``answer``: the COLLECT it answers (its code), 0 when sent unasked."""
    return _PACKET.pack(Kind.STATS, answer, len(payload)) + payload


def encode_heartbeat(requests: int, http_connections: int, websockets: int) -> bytes:
    return _PACKET.pack(Kind.HEARTBEAT, 0, requests) + _OPEN.pack(
        min(http_connections, 0xFFFFFFFF), min(websockets, 0xFFFFFFFF)
    )


def heartbeat_of(message: Message) -> Heartbeat:
    """A decoded HEARTBEAT's counts (an old 16-byte one: no open connections known)."""
    if len(message.payload) == _OPEN.size:
        return Heartbeat(message.value, *_OPEN.unpack(message.payload))
    return Heartbeat(message.value, 0, 0)


def decode(packet: bytes) -> Message:
    if len(packet) < SIZE:
        raise ControlError(f"control packet of {len(packet)} bytes, expected {SIZE}")
    kind, code, value = _PACKET.unpack_from(packet)
    if kind not in _KINDS:
        raise ControlError(f"unknown control message kind {kind}")
    if kind == Kind.STATS:
        if len(packet) != SIZE + value:
            raise ControlError(f"stats packet of {len(packet)} bytes, announced {SIZE + value}")
        return Message(Kind.STATS, code, value, packet[SIZE:])
    if kind == Kind.HEARTBEAT and len(packet) == SIZE + _OPEN.size:
        return Message(Kind.HEARTBEAT, code, value, packet[SIZE:])
    if len(packet) != SIZE:
        raise ControlError(f"control packet of {len(packet)} bytes, expected {SIZE}")
    return Message(_KINDS[kind], code, value)


def heartbeat_interval(timeout_s: float) -> float:
    """Seconds between a worker's heartbeats: a quarter of ``--timeout``, 50 to 250 ms.

    At most 250 ms apart, so that a blocked event loop is noticed within a
    second (``late_after``), however long ``--timeout`` is.
    """
    return max(0.05, min(0.25, timeout_s / 4))


def late_after(timeout_s: float) -> float:
    """Silence after which a ready worker is late: three heartbeats, at most 750 ms.

    A late worker is not killed (``--timeout`` decides that); the master
    only sends its slot's new connections elsewhere until it speaks again.
    Three intervals leave room for a busy loop's delayed timer without the
    slot flapping.
    """
    return min(3 * heartbeat_interval(timeout_s), timeout_s)
