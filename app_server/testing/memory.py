"""The in-memory side of the test client: transport, request bytes, response parsing.

Owns: ``MemoryTransport`` (an ``asyncio.Transport`` that keeps what is
written), ``encode_request`` (a request as the bytes a client sends),
``ResponseReader`` (httptools' response parser collecting the first
response) and ``TestResponse``.
"""

from __future__ import annotations

import asyncio
import json as _json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httptools

from app_server.framework.datastructures import Headers


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
        if self._protocol is None:
            raise RuntimeError("MemoryTransport: no protocol attached yet")
        return self._protocol

    def feed(self, data: bytes) -> None:
        """Hand ``data`` to the protocol attached now, as the loop does on a read
        (after an upgrade that is the WebSocket protocol, not the HTTP one)."""
        protocol = self.get_protocol()
        if not isinstance(protocol, asyncio.Protocol):
            raise RuntimeError(f"MemoryTransport: {protocol!r} is not a streaming protocol")
        protocol.data_received(data)


class ResponseReader:
    """The first response in the bytes fed to ``parser``; HEAD answers have no body."""

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
