"""The WebSocket object handed to handlers.

Owns: ``WebSocket``, one class that speaks the three seed styles (Sanic's
``send``/``recv``, BlackSheep's and Starlette's ``accept``/``receive_*``/
``send_*`` and event dicts, Bocadillo's typed ``receive``/``send``,
iteration and ``async with``), the lazy auto-accept, the ``Channel`` it
drives, and ``broadcast``, which frames a message once and writes the same
bytes to every open connection. Its states (``state``, ``client_state``,
``server_state``) are read from the connection's ``Lifecycle``, never kept
here; the conversions each seed style expects live in ``websocket_compat``.
The bytes on the wire are the channel's business (the worker's
``WebSocketConnection``); this module only decides what to send and when.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

from app_server.exceptions import InvalidWebSocketStateError, WebSocketClosed
from app_server.framework.responses import text
from app_server.framework.websocket_compat import MessageMode, SeedStyles, _dumps, to_message
from app_server.protocols.websocket.lifecycle import Lifecycle, Phase, WebSocketState
from app_server.status import CloseCode

__all__ = ["Channel", "MessageMode", "WebSocket", "WebSocketState", "broadcast", "to_message"]

_REJECTED = CloseCode.ABNORMAL_CLOSURE
_MESSAGE_TYPES = ("text", "bytes", "json", None)
OPEN = Phase.OPEN


class Channel(Protocol):
    """What a WebSocket needs from the connection that carries it."""

    lifecycle: Lifecycle  # the one state of the connection (read only here)
    subprotocol: str | None
    write_paused: bool

    def accept(self, subprotocol: str | None, headers: Any) -> None: ...

    def reject(self, response: Any) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def send(self, data: str | bytes) -> None: ...

    def encode(self, data: str | bytes) -> bytes: ...

    def plain_frame(self, message: str | bytes) -> bytes: ...

    def send_shared(self, frame: bytes, message: str | bytes) -> bool: ...

    async def drained(self) -> None: ...

    def ping(self, payload: bytes) -> asyncio.Future[float]: ...

    def pong(self, payload: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    async def wait_closed(self) -> None: ...

    def send_channel_frame(self, frame: bytes, message: str | bytes) -> int: ...

    def on_close(self, callback: Callable[[], None]) -> None: ...

    def start_close(self, code: int, reason: str) -> None: ...


class WebSocket(SeedStyles):
    __slots__ = (
        "request",
        "connection",
        "_options",
        "_receive_type",
        "_send_type",
        "_in_context",
        "_closes",
        "_disconnect_seen",
        "__weakref__",
    )

    def __init__(self, request: Any, channel: Channel, options: Mapping[str, Any]) -> None:
        self.request = request
        # The connection that carries this WebSocket (broadcast writes through it).
        self.connection: Channel = channel
        self._options = options
        value_type = options.get("value_type")
        self._receive_type = options.get("receive_type") or value_type
        self._send_type = options.get("send_type") or value_type
        for kind in (self._receive_type, self._send_type):
            if kind not in _MESSAGE_TYPES:
                raise ValueError(f"message type must be 'text', 'bytes' or 'json', got {kind!r}")
        self._in_context = False
        self._closes = 0
        self._disconnect_seen = False

    def __repr__(self) -> str:
        return f"<WebSocket {self.request.path} {self.state.name}>"

    # -- state ---------------------------------------------------------------

    @property
    def state(self) -> WebSocketState:
        """DISCONNECTED once either party has closed."""
        return self.connection.lifecycle.state

    @property
    def client_state(self) -> WebSocketState:
        return self.connection.lifecycle.client_state

    @property
    def server_state(self) -> WebSocketState:
        return self.connection.lifecycle.server_state

    # Sanic's names
    application_state = server_state

    @property
    def open(self) -> bool:
        return self.state is WebSocketState.CONNECTED

    @property
    def closed(self) -> bool:
        return self.state is WebSocketState.DISCONNECTED

    @property
    def close_code(self) -> int | None:
        seen = self.connection.lifecycle.close_seen()
        return seen[0] if seen is not None else None

    @property
    def close_reason(self) -> str:
        seen = self.connection.lifecycle.close_seen()
        return seen[1] if seen is not None else ""

    @property
    def subprotocol(self) -> str | None:
        if self.connection.lifecycle.state is not WebSocketState.CONNECTING:
            return self.connection.subprotocol
        return self._choose_subprotocol()  # what the (lazy) accept will select

    @property
    def accepted(self) -> bool:
        return self.connection.lifecycle.accepted

    @property
    def rejected(self) -> bool:
        return self.connection.lifecycle.rejected

    # -- handshake ---------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        """Complete the handshake (101). Raises ``WebSocketClosed`` after ``reject()``."""
        lifecycle = self.connection.lifecycle
        if lifecycle.rejected:
            raise WebSocketClosed(_REJECTED, "the handshake was rejected")
        if lifecycle.accepted:
            return
        if subprotocol is None:
            subprotocol = self._choose_subprotocol()
        self.connection.accept(subprotocol, headers or ())

    def _choose_subprotocol(self) -> str | None:
        supported = self._options.get("subprotocols")
        if not supported:
            return None
        offered = self.requested_subprotocols
        for name in supported:
            if name in offered:
                return str(name)
        return None

    async def reject(self, status: int = 403) -> None:
        """Answer the handshake with an HTTP response instead of upgrading."""
        channel = self.connection
        if channel.lifecycle.accepted:
            raise InvalidWebSocketStateError("server", self.server_state, WebSocketState.CONNECTING)
        if channel.lifecycle.rejected:
            return
        phrase = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}.get(
            status, "WebSocket connection rejected"
        )
        channel.reject(text(phrase, status))

    def _auto_accept(self) -> None:
        """Accept on first use when the route auto-accepts (called when not OPEN)."""
        channel = self.connection
        if channel.lifecycle.accepted:
            return
        if channel.lifecycle.rejected:
            raise WebSocketClosed(_REJECTED, "the handshake was rejected")
        if self._options.get("auto_accept", True):
            channel.accept(self._choose_subprotocol(), ())
            return
        raise InvalidWebSocketStateError("server", self.state, WebSocketState.CONNECTED)

    async def __aenter__(self) -> WebSocket:
        await self.accept()
        self._in_context = True
        self._closes = 0
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._in_context = False
        if exc is not None and isinstance(exc, WebSocketClosed) and self.catches(exc.code):
            await self.ensure_closed()
            return True
        if exc is None:
            await self.ensure_closed()
        return False

    def catches(self, code: int) -> bool:
        codes = self._options.get(
            "caught_close_codes", (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
        )
        return codes is all or code in codes

    # -- receiving ---------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message (str or bytes); ``WebSocketClosed`` once closed."""
        if self.connection.lifecycle.phase is not OPEN:
            self._auto_accept()
        if timeout is None:
            return await self.connection.receive()
        return await asyncio.wait_for(self.connection.receive(), timeout)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        receive = self.recv if self._receive_type is None else self.receive
        while True:
            try:
                message = await receive()
            except WebSocketClosed:
                return
            yield message

    # -- sending -----------------------------------------------------------

    async def send(self, data: Any, encoding: str | None = None) -> None:
        """str → text frame, bytes → binary frame, dict/list → JSON text.

        ``encoding`` ("text", "bytes" or "json"), else the route's
        ``send_type``, forces the kind.
        """
        payload = to_message(data, encoding or self._send_type)
        channel = self.connection
        if channel.lifecycle.phase is not OPEN:
            self._auto_accept()
        await channel.send(payload)

    # -- control -----------------------------------------------------------

    async def ping(self, data: bytes | str = b"") -> asyncio.Future[float]:
        """Send a ping; ``await`` the returned waiter for the round-trip time (s)."""
        if self.connection.lifecycle.phase is not OPEN:
            self._auto_accept()
        payload = data.encode() if isinstance(data, str) else bytes(data)
        return self.connection.ping(payload)

    async def pong(self, data: bytes | str = b"") -> None:
        if self.connection.lifecycle.phase is not OPEN:
            self._auto_accept()
        self.connection.pong(data.encode() if isinstance(data, str) else bytes(data))

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close with ``code``; before accept, completes the handshake first."""
        channel = self.connection
        if self._in_context:
            self._closes += 1
            if self._closes > 1:
                raise RuntimeError("the WebSocket was already closed in this 'async with' block")
        lifecycle = channel.lifecycle
        if lifecycle.rejected:
            return
        if not lifecycle.accepted:
            channel.accept(self._choose_subprotocol(), ())
        await channel.close(code, reason)

    async def ensure_closed(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close unless already closed; never raises for a closed connection."""
        channel = self.connection
        lifecycle = channel.lifecycle
        if lifecycle.server_state is WebSocketState.DISCONNECTED:
            # Our Close is out (or the handshake was refused): wait for the end.
            phase = lifecycle.phase
            if phase is Phase.CLOSE_SENT or phase is Phase.LINGERING:
                await channel.wait_closed()
            return
        if not lifecycle.accepted:
            channel.accept(self._choose_subprotocol(), ())
        await channel.close(code, reason)

    async def wait_closed(self) -> None:
        await self.connection.wait_closed()

    # -- channels (SPEC §9) --------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        since: int | None = None,
        envelope: Callable[[str, int | None, Any], Any] | None = None,
    ) -> None:
        """Receive every message published to ``topic``, from any worker or host.

        Completes a pending handshake like a first send. ``since``: an offset
        (of a topic with history) to replay what was missed first; raises
        ``ChannelGap`` when the kept history no longer reaches back to it.
        ``envelope(topic, offset, data)`` shapes what is sent (as ``send``
        sends it), called once per worker per message. Returns once the
        subscription is live everywhere. Every topic is left at close.
        """
        hub = self.app.channels.running_hub("subscribe")
        if self.connection.lifecycle.phase is not OPEN:
            self._auto_accept()
        channel = self.connection
        if channel.lifecycle.phase is not OPEN:
            raise WebSocketClosed(self.close_code or _REJECTED, self.close_reason)
        await hub.subscribe_websocket(channel, topic, since, envelope, self._send_type)

    async def unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (nothing happens when not subscribed)."""
        hub = self.app.channels.running_hub("unsubscribe")
        await hub.unsubscribe_websocket(self.connection, topic)


async def broadcast(websockets: Iterable[WebSocket], message: Any) -> int:
    """Send ``message`` to every open connection; return how many got it.

    The frame is encoded once and the same bytes are written to every
    connection (connections that negotiated compression encode their own).
    Closed or not yet accepted connections are skipped without raising.
    Returns after every connection's write buffer is back below its
    high-water mark, so a slow reader paces the broadcaster instead of
    growing memory.
    """
    if isinstance(message, str):
        message = str(message)  # a str subclass (e.g. a StrEnum member) is sent as text
    elif isinstance(message, bytes | bytearray | memoryview):
        message = bytes(message)
    elif isinstance(message, dict | list | tuple):
        message = _dumps(message)
    else:
        raise TypeError(f"cannot broadcast {type(message).__name__}")
    # The frame bytes are the worker's business: the first connection frames
    # the message once (uncompressed) and every connection writes those bytes.
    frame: bytes | None = None
    delivered = 0
    slow: list[Channel] = []
    for ws in list(websockets):
        channel = ws.connection
        if frame is None:
            frame = channel.plain_frame(message)
        if channel.send_shared(frame, message):
            delivered += 1
            if channel.write_paused:
                slow.append(channel)
    if slow:
        await asyncio.gather(*(c.drained() for c in slow), return_exceptions=True)
    return delivered
