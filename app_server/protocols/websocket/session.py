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

from codecs import getincrementaldecoder
from typing import Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
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
from app_server.status import CloseCode

TEXT = 1
BYTES = 2
PING = 9
PONG = 10
CLOSE = 8
FAIL = -1

_FAIL_REASONS: dict[int, str] = {
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.INVALID_FRAME_PAYLOAD_DATA: "invalid frame payload data",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
}
_INVALID_TEXT = (CloseCode.INVALID_FRAME_PAYLOAD_DATA, "invalid frame payload data")
_OPEN = ConnectionState.OPEN
# RFC 6455 §7.4.2 leaves 1000-2999 to the registry: 1012 Service Restart,
# 1013 Try Again Later, 1014 Bad Gateway are registered (IANA) and valid to
# receive, but wsproto refuses the ones its enum lacks as "unknown reserved".
_REGISTERED_CLOSE = frozenset(
    {CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER, CloseCode.BAD_GATEWAY}
)
_UTF8 = getincrementaldecoder("utf-8")


def _unmask(mask: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the repeating 4-byte ``mask`` (RFC 6455 §5.3)."""
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


_SMALL_FRAME = 65536  # frames up to this size are assembled here before decoding


class Session:
    """Frames in, events out.

    The common frame (complete, final, masked, text or binary, no reserved
    bits, outside a fragmented message, on a connection without compression)
    is decoded here directly: a header check, an XOR and a UTF-8 decode.
    Everything else (control frames, fragments, compressed or oversized
    messages, anything malformed) is handed to wsproto, which validates it
    and produces the error codes: control frames whole, data frames as their
    bytes arrive (the rest of a frame follows it before anything else), so
    wsproto is at a frame boundary whenever a frame is decoded here.

    Where this departs from wsproto, on purpose: a Close with a registered
    code 1012-1014 is accepted (RFC 6455 §7.4.2 and the IANA registry).
    """

    __slots__ = (
        "_conn",
        "_parts",
        "deflate",
        "failed",
        "close_sent",
        "close_received",
        "pending",
        "max_size",
        "_buf",
        "_pass",
        "_fragmented",
        "_wsp_pending",
        "_direct",
        "_partial",
    )

    def __init__(
        self, max_size: int, deflate: BoundedDeflate | None = None, *, direct: bool = True
    ) -> None:
        """``direct=False`` hands every frame to wsproto (tests compare both paths)."""
        guard = SizeGuard(max_size)
        extensions: list[Any] = [deflate, guard] if deflate is not None else [guard]
        self._conn = Connection(ConnectionType.SERVER, extensions)
        self._parts: list[Any] = []
        self.deflate = deflate
        self.max_size = max_size
        self.failed = False
        self.close_sent = False
        self.close_received = False
        self.pending = False
        self._buf = b""  # bytes of an incomplete frame
        self._pass = 0  # bytes still owed to wsproto for a large frame
        self._fragmented = False  # a fragmented message is in wsproto's hands
        self._wsp_pending = False  # wsproto holds parsed events not yet returned
        self._direct = direct and deflate is None
        # The text frame at the head of _buf is incomplete: (UTF-8 decoder,
        # payload bytes it has checked), so invalid text fails as it arrives.
        self._partial: tuple[Any, int] | None = None

    def receive(self, data: bytes, room: int) -> list[tuple[int, Any]]:
        """Feed bytes from the socket; return the events they complete.

        At most ``room`` whole messages are returned; what follows stays
        buffered (``pending`` is then true) until ``receive(b"", room)`` is
        called again with room to spare.
        """
        out: list[tuple[int, Any]] = []
        self.pending = False
        if self.failed or self.close_received:
            return out
        buf = self._buf + data if self._buf else data
        self._buf = b""
        if self._wsp_pending:
            room = self._wsproto_events(b"", out, room)
            if self._wsproto_holds() or self._stopped():
                self._buf = buf
                self.pending = self._wsproto_holds()
                return out
        pos = 0
        n = len(buf)
        direct = self._direct
        while pos < n:
            if room <= 0:
                self.pending = True
                break
            if self._pass:
                k = min(self._pass, n - pos)
                self._pass -= k
                pos += k
                room = self._wsproto_events(buf[pos - k : pos], out, room)
                if self._stopped():
                    return out
                continue
            if n - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:
                head += 4
            total = head + length
            opcode = b0 & 0x0F
            if (
                (b0 & 0xF0) == 0x80
                and b1 & 0x80
                and (opcode == 1 or opcode == 2)
                and direct
                and not self._fragmented
                and length <= self.max_size
            ):
                if n - pos < total:
                    if total <= _SMALL_FRAME:
                        # Wait for the rest of this frame; text that is
                        # already invalid fails now (RFC 6455 §8.1).
                        if (
                            opcode == 1
                            and n - pos > head
                            and not self._check_partial_text(buf, pos + head, n)
                        ):
                            out.append((FAIL, _INVALID_TEXT))
                            return out
                        break
                else:
                    if self._partial is not None:
                        self._partial = None
                    start = pos + head
                    pos += total
                    payload = _unmask(buf[start - 4 : start], buf[start:pos])
                    if opcode == 1:
                        try:
                            out.append((TEXT, payload.decode()))
                        except UnicodeDecodeError:
                            self.failed = True
                            out.append((FAIL, _INVALID_TEXT))
                            return out
                    else:
                        out.append((BYTES, payload))
                    room -= 1
                    continue
            # Anything else is wsproto's: whole control frames, data frames as
            # they come (wsproto checks a text message's UTF-8 as it arrives).
            if opcode == 8 and n - pos >= total and b0 == 0x88 and 2 <= length <= 125:
                event = self._registered_close(buf, pos + head, pos + total, b1)
                if event is not None:
                    out.append(event)
                    return out
            if n - pos >= total:
                chunk = buf[pos : pos + total]
                pos += total
            elif n - pos < head or (opcode & 0x8 and length <= 125):
                break  # wait for the header, or for a whole control frame
            else:
                chunk = buf[pos:]
                self._pass = total - (n - pos)
                pos = n
            # Only once the frame is handed over (never while waiting for it:
            # the fast path must not take the next frame for a whole message).
            if opcode == 1 or opcode == 2:
                self._fragmented = not b0 & 0x80
            elif opcode == 0 and b0 & 0x80:
                self._fragmented = False
            room = self._wsproto_events(chunk, out, room)
            if self._stopped():
                return out
            if self._wsproto_holds():
                self.pending = True
                break
        if pos < n:
            self._buf = buf[pos:]
        return out

    # The flags below are set inside _wsproto_events; reading them through a
    # method keeps mypy from carrying the caller's earlier narrowing (False)
    # across that call. Only the wsproto path pays the call, not the fast path.
    def _stopped(self) -> bool:
        """wsproto failed the connection or received the peer's Close."""
        return self.failed or self.close_received

    def _wsproto_holds(self) -> bool:
        """wsproto holds parsed events that did not fit in ``room``."""
        return self._wsp_pending

    def _check_partial_text(self, buf: bytes, start: int, end: int) -> bool:
        """Check the payload bytes of an incomplete text frame received so far.

        Only new bytes are decoded (the decoder keeps its place), so a frame
        that arrives in many pieces is still checked once in all.
        """
        partial = self._partial
        decoder, checked = partial if partial is not None else (_UTF8(), 0)
        have = end - start
        if have <= checked:
            return True
        k = checked % 4
        mask = buf[start - 4 : start]
        try:
            decoder.decode(_unmask(mask[k:] + mask[:k], buf[start + checked : end]))
        except UnicodeDecodeError:
            self.failed = True
            self._partial = None
            return False
        self._partial = (decoder, have)
        return True

    def _registered_close(
        self, buf: bytes, start: int, end: int, b1: int
    ) -> tuple[int, Any] | None:
        """A Close with code 1012-1014 (wsproto would refuse it), else None."""
        if not b1 & 0x80:
            return None  # unmasked: wsproto fails it
        payload = _unmask(buf[start - 4 : start], buf[start:end])
        code = int.from_bytes(payload[:2], "big")
        if code not in _REGISTERED_CLOSE:
            return None
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            self.failed = True
            return (FAIL, _INVALID_TEXT)
        self.close_received = True
        self._parts = []
        return (CLOSE, (code, reason))

    def _wsproto_events(self, data: bytes, out: list[tuple[int, Any]], room: int) -> int:
        """Feed wsproto; append its events to ``out``; return the room left."""
        conn = self._conn
        self._wsp_pending = False
        if data:
            try:
                conn.receive_data(data)
            except LocalProtocolError:
                return room
        for event in conn.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                kind = TEXT if isinstance(event, TextMessage) else BYTES
                if event.message_finished and not self._parts:
                    out.append((kind, event.data))
                else:
                    self._parts.append(event.data)
                    if not event.message_finished:
                        continue
                    parts, self._parts = self._parts, []
                    out.append((kind, "".join(parts) if kind == TEXT else b"".join(parts)))
                room -= 1
                if room <= 0:
                    # Stop here; wsproto keeps its place for the next call.
                    self._wsp_pending = True
                    break
            elif isinstance(event, Ping):
                out.append((PING, event.payload))
            elif isinstance(event, Pong):
                out.append((PONG, event.payload))
            elif isinstance(event, CloseConnection):
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
        return room

    # -- sending ------------------------------------------------------------

    def encode_message(self, data: str | bytes) -> bytes:
        """Frame bytes for one message (compressed when deflate was negotiated)."""
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        return bytes(self._conn.send(event))

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
