"""One WebSocket connection's frames, after the handshake (RFC 6455 §5-7).

Owns: ``Session``, which feeds received bytes to wsproto's post-handshake
``Connection`` and turns what comes out into whole messages and control
events, enforcing ``max_size`` while a message arrives. On a protocol error
it produces the Close frame with the right code (1002, 1007, 1009) that
must precede the TCP close. Sans-IO: bytes in, events and bytes out.

Events are tuples ``(kind, value)`` for speed: ``TEXT`` str, ``BYTES``
bytes, ``PING``/``PONG`` payload bytes, ``CLOSE`` (code, reason) when the
peer closed, ``FAIL`` (code, reason) when the peer broke the protocol.
"""

from __future__ import annotations

from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

from app_server.protocols.websocket.frames import (
    OP_PING,
    OP_PONG,
    BoundedDeflate,
    SizeGuard,
    encode_close,
    encode_frame,
)

TEXT = 1
BYTES = 2
PING = 9
PONG = 10
CLOSE = 8
FAIL = -1

_FAIL_REASONS = {
    1002: "protocol error",
    1007: "invalid frame payload data",
    1009: "message too big",
}
_OPEN = ConnectionState.OPEN


class Session:
    __slots__ = (
        "_conn", "_parts", "deflate", "failed", "close_sent", "close_received", "pending",
    )

    def __init__(self, max_size: int, deflate: BoundedDeflate | None = None) -> None:
        guard = SizeGuard(max_size)
        extensions: list[Any] = [deflate, guard] if deflate is not None else [guard]
        self._conn = Connection(ConnectionType.SERVER, extensions)
        self._parts: list[Any] = []
        self.deflate = deflate
        self.failed = False
        self.close_sent = False
        self.close_received = False
        self.pending = False

    def receive(self, data: bytes, room: int) -> list[tuple[int, Any]]:
        """Feed bytes from the socket; return the events they complete.

        At most ``room`` whole messages are returned; the rest stays parsed
        lazily in wsproto's buffer (``pending`` is then true) until
        ``receive(b"", room)`` is called again with room to spare.
        """
        conn = self._conn
        if self.failed or self.close_received:
            return []
        if data:
            try:
                conn.receive_data(data)
            except LocalProtocolError:
                return []
        out: list[tuple[int, Any]] = []
        self.pending = False
        if room <= 0:
            self.pending = True
            return out
        messages = 0
        for event in conn.events():
            cls = event.__class__
            if cls is TextMessage or cls is BytesMessage:
                if event.message_finished and not self._parts:
                    out.append((TEXT if cls is TextMessage else BYTES, event.data))
                else:
                    self._parts.append(event.data)
                    if not event.message_finished:
                        continue
                    parts, self._parts = self._parts, []
                    joined = "".join(parts) if cls is TextMessage else b"".join(parts)
                    out.append((TEXT if cls is TextMessage else BYTES, joined))
                messages += 1
                if messages >= room:
                    # Stop here; wsproto keeps its place for the next call.
                    self.pending = True
                    break
            elif cls is Ping:
                out.append((PING, event.payload))
            elif cls is Pong:
                out.append((PONG, event.payload))
            elif cls is CloseConnection:
                if conn.state is _OPEN:
                    # wsproto reports a parse failure as a close it did not receive.
                    self.failed = True
                    self._parts = []
                    code = int(event.code)
                    reason = event.reason or ""
                    if not reason or reason == "error in extension":
                        reason = _FAIL_REASONS.get(code, "protocol error")
                    out.append((FAIL, (code, reason)))
                else:
                    self.close_received = True
                    out.append((CLOSE, (int(event.code), event.reason or "")))
                break
        return out

    # -- sending ------------------------------------------------------------

    def encode_message(self, data: str | bytes) -> bytes:
        """Frame bytes for one message (compressed when deflate was negotiated)."""
        return bytes(self._conn.send(Message(data=data)))  # type: ignore[abstract]

    # Control frames are never compressed, so they are framed here: this
    # works in every state, e.g. answering a ping that preceded the peer's Close.
    @staticmethod
    def encode_ping(payload: bytes) -> bytes:
        return encode_frame(OP_PING, payload[:125])

    @staticmethod
    def encode_pong(payload: bytes) -> bytes:
        return encode_frame(OP_PONG, payload[:125])

    def encode_close(self, code: int | None, reason: str = "") -> bytes:
        """Our Close frame (once); empty if one was already sent."""
        if self.close_sent:
            return b""
        self.close_sent = True
        return encode_close(code, reason)

    @property
    def compressed(self) -> bool:
        return self.deflate is not None
