"""One request on its way through an HTTP connection.

Owns: ``Cycle`` (the prepared request, its buffered body parts or its
streamed body, and when it started), ``StreamedBody`` (the unbuffered body
of a ``stream=True`` route, with read backpressure), and
``connection_info`` (what the transport says about the peer and the
listener, read once per connection).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from app_server.workers.app_contract import ConnectionInfo, ForwardedPolicy, PreparedRequest

# A streamed body pauses reading when this many unread bytes are buffered.
STREAM_HIGH_WATER = 256 * 1024


class InputControl(Protocol):
    """The connection's read side, as a streamed body pauses and resumes it."""

    def pause_input(self) -> None: ...

    def resume_input(self) -> None: ...


class Cycle:
    """One request on its way through the connection."""

    __slots__ = ("request", "parts", "complete", "reader", "started", "websocket")

    def __init__(self, request: PreparedRequest, reader: StreamedBody | None) -> None:
        self.request = request
        self.parts: list[bytes] = []
        self.complete = False
        self.reader = reader
        self.started = 0.0
        self.websocket = False

    def take_body(self, chunk: bytes) -> None:
        if self.reader is not None:
            self.reader.feed(chunk)
        else:
            self.parts.append(chunk)

    def end_body(self) -> None:
        self.complete = True
        if self.reader is not None:
            self.reader.end()
        elif self.parts:
            parts = self.parts
            self.request.body = parts[0] if len(parts) == 1 else b"".join(parts)


class StreamedBody:
    """The unbuffered body of a ``stream=True`` route, with read backpressure."""

    __slots__ = ("_input", "_chunks", "_size", "_done", "_waiter")

    def __init__(self, input_control: InputControl) -> None:
        self._input = input_control
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > STREAM_HIGH_WATER:
            self._input.pause_input()
        self._wake()

    def end(self) -> None:
        self._done = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes | None:
        while not self._chunks:
            if self._done:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size <= STREAM_HIGH_WATER:
            self._input.resume_input()
        return chunk


def connection_info(transport: Any, forwarded: ForwardedPolicy | None) -> ConnectionInfo:
    peer = transport.get_extra_info("peername")
    sock = transport.get_extra_info("sockname")
    scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
    if isinstance(peer, tuple):
        peer_ip, peer_port = str(peer[0]), int(peer[1])
    else:
        peer_ip, peer_port = "", 0
    if isinstance(sock, tuple):
        server_host, server_port = str(sock[0]), int(sock[1])
    else:
        server_host, server_port = str(sock or ""), 0
    return ConnectionInfo(peer_ip, peer_port, server_host, server_port, scheme, forwarded)
