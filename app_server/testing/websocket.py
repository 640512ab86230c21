"""The client end of an in-memory WebSocket for ``TestClient``.

Owns: ``TestWebSocket`` (real, masked frames through wsproto, fed straight to
the worker's WebSocket protocol) and ``WebSocketRejected``.
"""

from __future__ import annotations

import asyncio
import json as _json
from typing import Any, Protocol

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

from app_server.exceptions import WebSocketClosed
from app_server.framework.datastructures import Headers
from app_server.status import CloseCode
from app_server.testing.memory import MemoryTransport, TestResponse
from app_server.workers.server import tick_interval
from app_server.workers.state import ServerState


class ClientLoop(Protocol):
    """What a WebSocket needs of its ``TestClient``: the loop it runs on."""

    timeout_s: float
    _state: ServerState | None
    _runner: asyncio.Runner | None


class WebSocketRejected(Exception):
    """The server answered the WebSocket handshake with an HTTP response."""

    def __init__(self, response: TestResponse) -> None:
        super().__init__(f"WebSocket handshake rejected with {response.status}")
        self.response = response


class TestWebSocket:
    """The client end of an in-memory WebSocket (frames are real, masked frames)."""

    __test__ = False

    def __init__(self, client: ClientLoop, transport: MemoryTransport) -> None:
        self._client = client
        self._transport = transport
        self._conn = Connection(ConnectionType.CLIENT)
        self._messages: list[str | bytes] = []
        self._parts: list[Any] = []
        self._outgoing = bytearray()
        self.headers: Headers = Headers([])
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    # -- plumbing ------------------------------------------------------------

    def handshake_done(self, headers: Headers, rest: bytes) -> None:
        self.headers = headers
        self.subprotocol = headers.get("sec-websocket-protocol")
        if rest:
            self._feed(rest)

    async def wait_for_change(self) -> None:
        transport = self._transport
        state = self._client._state
        assert state is not None  # noqa: S101
        transport.changed.clear()
        try:
            await asyncio.wait_for(transport.changed.wait(), tick_interval(state))
        except TimeoutError:
            state.tick(asyncio.get_running_loop().time())

    def _flush(self) -> None:
        transport = self._transport
        if self._outgoing and transport.reading and not transport.closed:
            data, self._outgoing = bytes(self._outgoing), bytearray()
            transport.feed(data)

    def _feed(self, data: bytes) -> None:
        conn = self._conn
        conn.receive_data(data)
        for event in conn.events():
            if isinstance(event, Message):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    joined = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                    self._messages.append(joined)
            elif isinstance(event, Ping):
                self._outgoing += conn.send(event.response())
            elif isinstance(event, CloseConnection):
                if self.close_code is None:
                    self.close_code = int(event.code)
                    self.close_reason = event.reason or ""
                    try:
                        self._outgoing += conn.send(event.response())
                    except Exception:  # noqa: BLE001, S110  already closing
                        pass

    async def _pump(self, done: Any) -> None:
        transport = self._transport
        while True:
            self._flush()
            if transport.buffer:
                data = bytes(transport.buffer)
                del transport.buffer[:]
                self._feed(data)
                self._flush()
            if done() or transport.closed and not transport.buffer:
                return
            await self.wait_for_change()

    def _run(self, done: Any) -> None:
        runner = self._client._runner
        assert runner is not None  # noqa: S101
        runner.run(asyncio.wait_for(self._pump(done), self._client.timeout_s))

    # -- sending -------------------------------------------------------------

    def _send(self, data: str | bytes) -> None:
        if self.close_code is not None or self._transport.closed:
            raise WebSocketClosed(self.close_code or CloseCode.ABNORMAL_CLOSURE, self.close_reason)
        message = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        self._outgoing += self._conn.send(message)
        self._run(lambda: not self._outgoing)

    def send_text(self, data: str) -> None:
        self._send(data)

    def send_bytes(self, data: bytes) -> None:
        self._send(bytes(data))

    def send_json(self, data: Any) -> None:
        self._send(_json.dumps(data))

    # -- receiving -----------------------------------------------------------

    def receive(self) -> str | bytes:
        """The next message; ``WebSocketClosed`` (with the server's code) once closed."""
        self._run(lambda: self._messages or self.close_code is not None)
        if self._messages:
            return self._messages.pop(0)
        raise WebSocketClosed(self.close_code or CloseCode.ABNORMAL_CLOSURE, self.close_reason)

    def receive_text(self) -> str:
        message = self.receive()
        if not isinstance(message, str):
            raise TypeError(f"expected a text message, got {len(message)} bytes")
        return message

    def receive_bytes(self) -> bytes:
        message = self.receive()
        if not isinstance(message, bytes):
            raise TypeError(f"expected a binary message, got text {message!r}")
        return message

    def receive_json(self) -> Any:
        return _json.loads(self.receive())

    # -- closing ---------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close with ``code`` and wait for the server's answer."""
        if self.close_code is None and not self._transport.closed:
            self._outgoing += self._conn.send(CloseConnection(code=code, reason=reason))
            self._run(lambda: self.close_code is not None)
        if self.close_code is None:
            self.close_code = CloseCode.ABNORMAL_CLOSURE

    def __enter__(self) -> TestWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.close_code is None:
            self.close()
