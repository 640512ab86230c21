"""WebSocket frames the server writes, and the inbound message-size budget.

Owns: ``encode_frame`` (server frames are never masked, so a message is
encoded once and the same bytes can go to any number of connections),
``SizeGuard`` (counts each inbound message's bytes as they arrive and stops
at ``max_size``) and ``BoundedDeflate`` (permessage-deflate whose inflation
is capped by the same budget, so a small compressed frame can never expand
past the limit). Sans-IO.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

from app_server.status import CloseCode

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
# Codes that only report how a connection ended (RFC 6455 §7.4.1): never in a frame.
_NEVER_SENT = (CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE)

_NO_RSV = RsvBits(False, False, False)
_SHORT_HEADERS = {
    op: [bytes((0x80 | op, n)) for n in range(126)] for op in (OP_TEXT, OP_BINARY, OP_PONG)
}
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        headers = _SHORT_HEADERS.get(opcode)
        return (headers[n] if headers else bytes((0x80 | opcode, n))) + payload
    if n < 65536:
        return _MEDIUM.pack(0x80 | opcode, 126, n) + payload
    return _LONG.pack(0x80 | opcode, 127, n) + payload


def encode_close(code: int | None, reason: str = "") -> bytes:
    """A Close frame; ``None`` (or 1005/1006, which are never sent) for no code."""
    if code is None or code in _NEVER_SENT:
        return b"\x88\x00"
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return encode_frame(OP_CLOSE, payload)


class SizeGuard(Extension):
    """Counts the bytes of the inbound message (after decompression) as they arrive.

    Registered after permessage-deflate, it sees decompressed data; wsproto
    hands payloads over in the chunks that arrive, so the count is checked
    before anything is assembled.
    """

    name = "app-server-size-guard"

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        self._control = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False

    def frame_inbound_header(
        self, proto: Any, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol():
            self._control = True
            return _NO_RSV
        self._control = False
        if opcode is not Opcode.CONTINUATION:
            self.size = 0
        # A frame that announces more than the budget is refused at once
        # (compressed frames are measured as they inflate instead).
        if not rsv.rsv1 and self.size + payload_length > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return _NO_RSV

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if self._control:
            return data
        self.size += len(data)
        if self.size > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return data

    def frame_inbound_complete(self, proto: Any, fin: bool) -> None:
        # The message is over: a stray CONTINUATION after it starts from zero
        # (and is then refused as the protocol error it is, 1002, not 1009).
        if fin and not self._control:
            self.size = 0


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that never inflates a message past ``max_size``."""

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size
        self._inflated = 0

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None  # noqa: S101 - set in frame_inbound_header
        budget = self.max_size - self._inflated
        try:
            out = decompressor.decompress(data, budget + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self.max_size or decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if not fin:
            return None
        compressed = self._inbound_compressed and self._inbound_is_compressible
        self._inbound_compressed = None
        if not compressed:
            self._inflated = 0
            return None
        tail = self._inflate(b"\x00\x00\xff\xff")
        self._inflated = 0
        if self.client_no_context_takeover:
            self._decompressor = None
        return tail
