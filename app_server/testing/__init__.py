"""An in-process test client for app-server applications.

Owns: ``TestClient``, which drives the real worker protocol
(``workers.http_protocol.HttpProtocol``) over an in-memory transport: the
request is encoded to bytes, parsed by the same parser, handled by the same
code, and the response bytes are parsed back. No socket: a ``file()`` body
is read in a worker thread, as over TLS (``workers/sendfile.py``), so the
loop is never blocked and conditional and Range requests behave as served.
The in-memory transport and response parsing are in ``testing.memory``, the
client end of a WebSocket in ``testing.websocket``.

    from app_server.testing import TestClient

    def test_hello():
        with TestClient(app) as client:
            response = client.get("/hello/world")
            assert response.status == 200
            assert response.json() == {"hello": "world"}

WebSockets go through the same worker code (handshake, session, limits):

    def test_echo():
        with TestClient(app) as client, client.websocket_connect("/echo") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"

``receive*`` raises ``WebSocketClosed`` with the server's close code once
the server has closed; a refused handshake raises ``WebSocketRejected``
carrying the HTTP response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from app_server.channels.hub import ChannelHub
from app_server.channels.runtime import close_channels, open_channels
from app_server.framework.datastructures import Headers
from app_server.settings.model import HttpLimits, LogSettings, Settings, WebSocketLimits
from app_server.testing.memory import MemoryTransport, ResponseReader, TestResponse, encode_request
from app_server.testing.websocket import TestWebSocket, WebSocketRejected
from app_server.workers.entry import build_state, loop_factory
from app_server.workers.http_protocol import HttpProtocol
from app_server.workers.server import tick_interval
from app_server.workers.state import ServerState

__all__ = [
    "MemoryTransport",
    "TestClient",
    "TestResponse",
    "TestWebSocket",
    "WebSocketRejected",
    "encode_request",
]


class TestClient:
    """Synchronous client; use as a context manager to run start/stop hooks once."""

    __test__ = False

    def __init__(
        self,
        app: Any,
        *,
        limits: HttpLimits | None = None,
        timeout_s: float = 30.0,
        peer: tuple[str, int] = ("127.0.0.1", 50000),
        websocket: WebSocketLimits | None = None,
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.peer = peer
        self._settings = Settings(
            http=limits or HttpLimits(),
            log=LogSettings(access_log=False),
            websocket=websocket or WebSocketLimits(),
        )
        self._runner: asyncio.Runner | None = None
        self._state: ServerState | None = None
        self._entered = False
        self._channels: ChannelHub | None = None

    def __enter__(self) -> TestClient:
        self._start()
        self._entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._entered = False
        self._stop()

    def _start(self) -> None:
        self._runner = asyncio.Runner(loop_factory=loop_factory())
        self._runner.run(self._boot())

    async def _boot(self) -> None:
        self.app.freeze()
        # Channels run on the in-process backend: one worker, no network.
        self._channels = await open_channels(self.app, "local")
        await self.app.run_hooks("before_server_start")
        self._state = build_state(self.app, self._settings, asyncio.get_running_loop().time())
        await self.app.run_hooks("after_server_start")

    def _stop(self) -> None:
        if self._runner is None:
            return
        try:
            self._runner.run(self._shutdown())
        finally:
            self._runner.close()
            self._runner = None

    async def _shutdown(self) -> None:
        await self.app.run_hooks("before_server_stop")
        await self.app.run_hooks("after_server_stop")
        await close_channels(self.app, self._channels)
        self._channels = None

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str = b"",
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> TestResponse:
        raw = encode_request(method, path, headers=headers, body=body, json=json, params=params)
        return self.send_raw(raw)

    def send_raw(self, raw: bytes) -> TestResponse:
        """Send raw request bytes; return the first response."""
        if not self._entered:
            with self:
                return self.send_raw(raw)
        assert self._runner is not None  # noqa: S101  set by __enter__
        return self._runner.run(asyncio.wait_for(self._exchange(raw), self.timeout_s))

    def _connect(self, raw: bytes) -> tuple[ServerState, MemoryTransport, HttpProtocol]:
        """A new in-memory connection that has received ``raw``."""
        state = self._state
        assert state is not None  # noqa: S101  set by _boot
        loop = asyncio.get_running_loop()
        state.tick(loop.time())
        transport = MemoryTransport(self.peer)
        protocol = HttpProtocol(state, loop)
        protocol.connection_made(transport)
        protocol.data_received(raw)
        return state, transport, protocol

    async def _exchange(self, raw: bytes) -> TestResponse:
        loop = asyncio.get_running_loop()
        state, transport, protocol = self._connect(raw)
        reader = ResponseReader(head_only=raw[:5] == b"HEAD ")
        fed = 0
        tick_s = tick_interval(state)
        next_tick = loop.time() + tick_s
        try:
            while True:
                if len(transport.buffer) > fed:
                    reader.parser.feed_data(bytes(transport.buffer[fed:]))
                    fed = len(transport.buffer)
                if reader.complete or transport.closed:
                    break
                # Stand in for the server's ticker, on its schedule whether or
                # not bytes are flowing, so deadlines fire as they would there.
                now = loop.time()
                if now >= next_tick:
                    state.tick(now)
                    next_tick = now + tick_s
                transport.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(transport.changed.wait(), next_tick - now)
        finally:
            protocol.connection_lost(None)
        if not reader.complete:
            raise ConnectionError("the server closed the connection without a complete response")
        return TestResponse(reader.status, reader.headers, bytes(reader.body))

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("DELETE", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("HEAD", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("OPTIONS", path, **kwargs)

    def websocket_connect(
        self,
        path: str,
        *,
        subprotocols: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> TestWebSocket:
        """Open a WebSocket to ``path``; use the result as a context manager.

        Raises ``WebSocketRejected`` (with ``.response``) when the server
        answers the handshake with an HTTP response instead of upgrading.
        """
        if not self._entered:
            raise RuntimeError("use 'with TestClient(app) as client:' for WebSockets")
        all_headers = {
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-key": base64.b64encode(os.urandom(16)).decode(),
            "sec-websocket-version": "13",
        }
        if subprotocols:
            all_headers["sec-websocket-protocol"] = ", ".join(subprotocols)
        all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
        raw = encode_request("GET", path, headers=all_headers, params=params)
        assert self._runner is not None  # noqa: S101  set by __enter__
        return self._runner.run(asyncio.wait_for(self._ws_open(raw), self.timeout_s))

    async def _ws_open(self, raw: bytes) -> TestWebSocket:
        _, transport, protocol = self._connect(raw)
        ws = TestWebSocket(self, transport)
        while b"\r\n\r\n" not in transport.buffer:
            if transport.closed:
                raise ConnectionError("the server closed the connection during the handshake")
            await ws.wait_for_change()
        head, _, rest = bytes(transport.buffer).partition(b"\r\n\r\n")
        del transport.buffer[:]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        response_headers = [
            (name.strip().lower().encode(), value.strip().encode())
            for name, _, value in (line.partition(":") for line in lines[1:])
        ]
        if status != 101:
            reader = ResponseReader(head_only=False)
            reader.parser.feed_data(head + b"\r\n\r\n" + rest)
            while not reader.complete and not transport.closed:
                await ws.wait_for_change()
                reader.parser.feed_data(bytes(transport.buffer))
                del transport.buffer[:]
            protocol.connection_lost(None)
            raise WebSocketRejected(TestResponse(status, response_headers, bytes(reader.body)))
        ws.handshake_done(Headers(response_headers), rest)
        return ws
