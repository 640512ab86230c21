"""An in-process test client for app-server applications.

Owns: ``TestClient``, which drives the real worker protocol
(``workers.http_protocol.HttpProtocol``) over an in-memory transport: the
request is encoded to bytes, parsed by the same parser, handled by the same
code, and the response bytes are parsed back. No socket, no thread.

    from app_server.testing import TestClient

    def test_hello():
        with TestClient(app) as client:
            response = client.get("/hello/world")
            assert response.status == 200
            assert response.json() == {"hello": "world"}
"""

from __future__ import annotations

import asyncio
import json as _json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httptools

from app_server.framework.datastructures import Headers
from app_server.settings.model import HttpLimits, LogSettings, Settings
from app_server.workers.entry import build_state, loop_factory
from app_server.workers.http_protocol import HttpProtocol
from app_server.workers.server import tick_interval
from app_server.workers.state import ServerState


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
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.peer = peer
        self._settings = Settings(http=limits or HttpLimits(), log=LogSettings(access_log=False))
        self._runner: asyncio.Runner | None = None
        self._state: ServerState | None = None
        self._entered = False

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

    async def _exchange(self, raw: bytes) -> TestResponse:
        state = self._state
        assert state is not None  # noqa: S101  set by _boot
        loop = asyncio.get_running_loop()
        state.tick(loop.time())
        transport = MemoryTransport(self.peer)
        protocol = HttpProtocol(state, loop)
        protocol.connection_made(transport)
        protocol.data_received(raw)
        reader = _ResponseReader(head_only=raw[:5] == b"HEAD ")
        fed = 0
        tick_s = tick_interval(state)
        try:
            while True:
                if len(transport.buffer) > fed:
                    reader.parser.feed_data(bytes(transport.buffer[fed:]))
                    fed = len(transport.buffer)
                if reader.complete or transport.closed:
                    break
                transport.changed.clear()
                try:
                    await asyncio.wait_for(transport.changed.wait(), tick_s)
                except TimeoutError:
                    # Stand in for the server's ticker so deadlines fire.
                    state.tick(loop.time())
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
