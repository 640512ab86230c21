"""The channel relay's wire protocol: what workers and the master say about channels.

Owns: the frame format and the message kinds of the relay socket, a
``SOCK_STREAM`` Unix socket pair made per worker at spawn, separate from
the control channel so that heartbeats never queue behind channel traffic.
A stream rather than ``SOCK_SEQPACKET``: a message may be as large as a
WebSocket message (``WEBSOCKET_MAX_SIZE``, 16 MiB and more) and a replay
larger still, beyond what one datagram of a socket buffer holds.

A frame is ``length (u32) | kind (u8) | request id (u32) | body``, the
length counting everything after itself. Payloads are opaque bytes here
(``channels.payload`` wire bytes): the master never decodes them. Offsets
travel as signed 64-bit integers, -1 meaning None.

    worker -> master                         master -> worker
    HELLO   version, history rules (JSON)    ACK     value (offset, head or count)
    SUB     count, topic (acked: head)       ERR     code, reason (GAP or FAILED)
    UNSUB   topic                            DELIVER offset, topic, payload
    PUB     topic, payload (acked: offset)   REPLAY  (offset, payload)*
    FETCH   since, topic (REPLAY or ERR)     RESYNC  deliveries were dropped: recover
    COUNT   topic (acked: count)

Pure: no I/O. Imports nothing from the package (the master imports it).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from enum import IntEnum

VERSION = 1
HEADER = struct.Struct("!IBI")  # length, kind, request id
LENGTH = struct.Struct("!I")
_BODY_HEAD = HEADER.size - LENGTH.size  # kind and request id, counted by length
MAX_FRAME = 256 * 1048576  # larger is a corrupt stream, not a message
_Q = struct.Struct("!q")
_H = struct.Struct("!H")
_QH = struct.Struct("!qH")
_QI = struct.Struct("!qI")
_BI = struct.Struct("!B")


class RelayError(Exception):
    """A frame that is not one of this protocol's."""


class Op(IntEnum):
    HELLO = 1
    SUB = 2
    UNSUB = 3
    PUB = 4
    FETCH = 5
    COUNT = 6
    ACK = 10
    ERR = 11
    DELIVER = 12
    REPLAY = 13
    RESYNC = 14


class ErrCode(IntEnum):
    GAP = 1  # the kept history does not reach back to ``since``
    FAILED = 2  # a bad request (the reason says which)


def frame(op: Op, rid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(len(body) + _BODY_HEAD, op, rid) + body


# -- bodies --------------------------------------------------------------------------


def hello(rules: Iterable[tuple[str, int, float | None]]) -> bytes:
    return frame(Op.HELLO, 0, _H.pack(VERSION) + json.dumps(list(rules)).encode())


def parse_hello(body: bytes) -> list[tuple[str, int, float | None]]:
    (version,) = _H.unpack_from(body)
    if version != VERSION:
        raise RelayError(f"relay protocol version {version}, expected {VERSION}")
    try:
        rules = json.loads(body[_H.size :])
        return [(str(p), int(s), None if t is None else float(t)) for p, s, t in rules]
    except (ValueError, TypeError) as exc:
        raise RelayError(f"bad HELLO rules: {exc}") from exc


def sub(rid: int, topic: str, count: int) -> bytes:
    return frame(Op.SUB, rid, LENGTH.pack(count) + topic.encode())


def parse_sub(body: bytes) -> tuple[str, int]:
    (count,) = LENGTH.unpack_from(body)
    return body[LENGTH.size :].decode(), count


def topic_only(op: Op, rid: int, topic: str) -> bytes:
    """UNSUB and COUNT."""
    return frame(op, rid, topic.encode())


def pub(rid: int, topic: str, payload: bytes) -> bytes:
    raw = topic.encode()
    return frame(Op.PUB, rid, _H.pack(len(raw)) + raw + payload)


def parse_pub(body: bytes) -> tuple[str, bytes]:
    (n,) = _H.unpack_from(body)
    end = _H.size + n
    return body[_H.size : end].decode(), body[end:]


def fetch(rid: int, topic: str, since: int) -> bytes:
    return frame(Op.FETCH, rid, _Q.pack(since) + topic.encode())


def parse_fetch(body: bytes) -> tuple[str, int]:
    (since,) = _Q.unpack_from(body)
    return body[_Q.size :].decode(), since


def ack(rid: int, value: int | None) -> bytes:
    return frame(Op.ACK, rid, _Q.pack(-1 if value is None else value))


def parse_ack(body: bytes) -> int | None:
    (value,) = _Q.unpack_from(body)
    return None if value < 0 else value


def err(rid: int, code: ErrCode, reason: str) -> bytes:
    return frame(Op.ERR, rid, _BI.pack(code) + reason.encode())


def parse_err(body: bytes) -> tuple[ErrCode, str]:
    return ErrCode(body[0]), body[1:].decode(errors="replace")


def deliver(topic: str, offset: int | None, payload: bytes) -> bytes:
    raw = topic.encode()
    return frame(
        Op.DELIVER, 0, _QH.pack(-1 if offset is None else offset, len(raw)) + raw + payload
    )


def parse_deliver(body: bytes) -> tuple[str, int | None, bytes]:
    offset, n = _QH.unpack_from(body)
    end = _QH.size + n
    return body[_QH.size : end].decode(), None if offset < 0 else offset, body[end:]


def replay(rid: int, items: Iterable[tuple[int, bytes]]) -> bytes:
    parts = [_QI.pack(offset, len(payload)) + payload for offset, payload in items]
    return frame(Op.REPLAY, rid, b"".join(parts))


def parse_replay(body: bytes) -> list[tuple[int, bytes]]:
    items, at, view = [], 0, memoryview(body)
    while at < len(body):
        offset, n = _QI.unpack_from(body, at)
        at += _QI.size
        items.append((offset, bytes(view[at : at + n])))
        at += n
    return items


class FrameReader:
    """Cuts a byte stream into ``(op, rid, body)`` frames (the master's side)."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buffer = self.buffer
        buffer += data
        frames, at, size = [], 0, len(buffer)
        while size - at >= HEADER.size:
            length, op, rid = HEADER.unpack_from(buffer, at)
            if length < _BODY_HEAD or length > MAX_FRAME:
                raise RelayError(f"relay frame of {length} bytes")
            end = at + LENGTH.size + length
            if end > size:
                break
            frames.append((op, rid, bytes(buffer[at + HEADER.size : end])))
            at = end
        if at:
            del buffer[:at]
        return frames
