"""An in-process test client for app-server applications.

Owns: ``TestClient``, which drives the real worker protocol
(``workers.http_protocol.HttpProtocol``) over an in-memory transport: the
request is encoded to bytes, parsed by the same parser, handled by the same
code, and the response bytes are parsed back. No socket: a ``file()`` body
is read in a worker thread, as over TLS (``workers/sendfile.py``), so the
loop is never blocked and conditional and Range requests behave as served.

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
import json as _json
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httptools
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, TextMessage

from app_server.channels.hub import ChannelHub
from app_server.channels.runtime import close_channels, open_channels
from app_server.exceptions import WebSocketClosed
from app_server.framework.datastructures import Headers
from app_server.settings.model import HttpLimits, LogSettings, Settings, WebSocketLimits
from app_server.status import CloseCode
from app_server.workers.entry import build_state, loop_factory
from app_server.workers.http_protocol import HttpProtocol
from app_server.workers.server import tick_interval
from app_server.workers.state import ServerState

ABNORMAL = CloseCode.ABNORMAL_CLOSURE


class TestResponse:
    __test__ = False  # not a pytest test class

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.status_code = status
        self.headers = Headers(headers)
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status} {len(self.body)} bytes>"


class MemoryTransport(asyncio.Transport):
    """An ``asyncio.Transport`` that keeps what is written in memory."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        super().__init__()
        self.buffer = bytearray()
        self.closed = False
        self.eof_written = False
        self.reading = True
        self._peer = peer
        self._protocol: asyncio.BaseProtocol | None = None
        self.changed = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.buffer += data
        self.changed.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.changed.set()

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)  # written, not yet read by the test client

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True
        self.changed.set()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self._peer, "sockname": ("testserver", 80)}.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]  # set before use


class _ResponseReader:
    def __init__(self, head_only: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False
        self.status = 0
        self.head_only = head_only

    def on_headers_complete(self) -> None:
        if not self.complete:
            self.status = self.parser.get_status_code()
        # A response to HEAD carries the GET's Content-Length but no body.
        if self.head_only:
            self.complete = True

    # Only the first response counts; later pipelined ones are ignored.
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class TestClient:
    """Synchronous client; use as a context manager to run start/stop hooks once."""

    __test__ = False

    def __init__(
        self, app: Any, *, limits: HttpLimits | None = None, timeout_s: float = 30.0,
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
        reader = _ResponseReader(head_only=raw[:5] == b"HEAD ")
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
            reader = _ResponseReader(head_only=False)
            reader.parser.feed_data(head + b"\r\n\r\n" + rest)
            while not reader.complete and not transport.closed:
                await ws.wait_for_change()
                reader.parser.feed_data(bytes(transport.buffer))
                del transport.buffer[:]
            protocol.connection_lost(None)
            raise WebSocketRejected(TestResponse(status, response_headers, bytes(reader.body)))
        ws.handshake_done(Headers(response_headers), rest)
        return ws


class WebSocketRejected(Exception):
    """The server answered the WebSocket handshake with an HTTP response."""

    def __init__(self, response: TestResponse) -> None:
        super().__init__(f"WebSocket handshake rejected with {response.status}")
        self.response = response


class TestWebSocket:
    """The client end of an in-memory WebSocket (frames are real, masked frames)."""

    __test__ = False

    def __init__(self, client: TestClient, transport: MemoryTransport) -> None:
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
            transport.get_protocol().data_received(data)  # type: ignore[attr-defined]

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
            raise WebSocketClosed(self.close_code or ABNORMAL, self.close_reason)
        self._outgoing += self._conn.send(Message(data=data))  # type: ignore[abstract]
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
        raise WebSocketClosed(self.close_code or ABNORMAL, self.close_reason)

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
            self.close_code = ABNORMAL

    def __enter__(self) -> TestWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.close_code is None:
            self.close()


def encode_request(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | str = b"",
    json: Any = None,
    params: Mapping[str, Any] | None = None,
) -> bytes:
    all_headers = {"host": "testserver"}
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    if json is not None:
        body = _json.dumps(json).encode()
        all_headers.setdefault("content-type", "application/json")
    data = body.encode() if isinstance(body, str) else body
    if data or method in ("POST", "PUT", "PATCH"):
        all_headers["content-length"] = str(len(data))
    target = path + ("?" + urlencode(params, doseq=True) if params else "")
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
