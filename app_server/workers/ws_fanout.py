"""Frames written to many connections: broadcast corking and channel delivery.

Owns: ``FanOut``, the part of ``WebSocketConnection`` that takes frames
encoded once for many connections (``send_shared`` for ``broadcast``,
``send_channel_frame`` for channels), corks them until the end of the event
loop pass (``_flush_corked``) so a fan-out of k messages to n connections
costs n system calls, and closes a subscriber that cannot keep up with 1013.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app_server.protocols.websocket.frames import OP_BINARY, OP_TEXT, encode_frame
from app_server.protocols.websocket.lifecycle import Lifecycle, Phase
from app_server.protocols.websocket.session import Session
from app_server.status import CloseCode

if TYPE_CHECKING:
    import asyncio

    from app_server.settings.model import WebSocketLimits
    from app_server.workers.state import ServerState

OPEN = Phase.OPEN
CORK_BYTES = 65536  # broadcast frames held per connection before writing anyway


class FanOut:
    """Mixed into ``WebSocketConnection``, which holds the attributes below."""

    # No instance layout of its own (the connection's __slots__ hold the
    # state), hidden from mypy, whose slots check would refuse the
    # assignments to attributes the connection declares.
    if not TYPE_CHECKING:
        __slots__ = ()

    if TYPE_CHECKING:
        lifecycle: Lifecycle
        session: Session | None
        state: ServerState
        limits: WebSocketLimits
        loop: asyncio.AbstractEventLoop
        transport: Any
        out: list[bytes] | None
        out_size: int
        sent: int

        def _write(self, data: bytes) -> None: ...

        def start_close(self, code: int, reason: str) -> None: ...

    def plain_frame(self, message: str | bytes) -> bytes:
        """``message`` framed without compression, once for a whole broadcast."""
        if isinstance(message, str):
            return encode_frame(OP_TEXT, message.encode())
        return encode_frame(OP_BINARY, message)

    def send_shared(self, frame: bytes, message: str | bytes) -> bool:
        """Write a frame encoded once for many connections (broadcast); False when closed.

        ``frame`` is ``message`` framed without compression; a connection
        that negotiated compression encodes ``message`` itself.
        """
        if self.lifecycle.phase is not OPEN:
            return False
        session: Session = self.session  # type: ignore[assignment]  # OPEN: accepted
        if session.deflate is not None:
            frame = session.encode_message(message)
        self.cork(frame)
        return True

    def cork(self, frame: bytes) -> None:
        """Queue frame bytes of an OPEN connection until the end of this loop pass.

        Frames broadcast during one pass of the event loop are corked per
        connection and written with one ``transport.write`` at the end of the
        pass (``_flush_corked``): a fan-out of k messages to n connections
        costs n system calls instead of k * n. At most ``CORK_BYTES`` wait;
        beyond that the frames go out at once, so the transport's high-water
        mark (and the slow-reader pacing built on it) still sees them. Every
        other write on the connection flushes the cork first, keeping order.
        """
        self.sent += 1
        out = self.out
        if out is None:
            self.out = [frame]
            self.out_size = len(frame)
            corked = self.state.corked
            if not corked:
                self.loop.call_soon(_flush_corked, corked)
            corked.append(self)
        else:
            out.append(frame)
            self.out_size += len(frame)
            if self.out_size > CORK_BYTES:
                self.flush()

    def send_channel_frame(self, frame: bytes, message: str | bytes) -> int:
        """Write a channel message's frame: 1 written, 0 closed, -1 too slow.

        A connection whose outgoing bytes (transport buffer plus corked
        frames) would pass ``max_send_buffer`` is closed with 1013 (Try Again
        Later, SPEC §9) instead: the publisher and the other subscribers
        never wait for it, and its memory stays bounded. The Close frame
        queues behind what is buffered, so a client that reads on sees it.
        """
        if self.lifecycle.phase is not OPEN:
            return 0
        session: Session = self.session  # type: ignore[assignment]  # OPEN: accepted
        if session.deflate is not None:
            frame = session.encode_message(message)
        pending = self.out_size if self.out else 0
        if (
            self.transport.get_write_buffer_size() + pending + len(frame)
            > self.limits.max_send_buffer
        ):
            self.start_close(CloseCode.TRY_AGAIN_LATER, "slow consumer")
            return -1
        self.cork(frame)
        return 1

    def flush(self) -> None:
        """Write the corked frames now (the connection stays on the flush list)."""
        out = self.out
        if out:
            if self.lifecycle.phase is Phase.CLOSED:
                self.out = []  # the socket is closed: nothing more goes out
                self.out_size = 0
            else:
                self._write(b"")


def _flush_corked(corked: list[FanOut]) -> None:
    """End of the loop pass: write every corked connection's frames at once."""
    conns = corked[:]
    corked.clear()
    for conn in conns:
        conn.flush()
        conn.out = None  # off the list: the next broadcast puts it back
