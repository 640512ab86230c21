"""One HTTP request served by an ASGI application (ASGI www spec 2.4/2.5).

Owns: ``HttpExchange``, the worker's request object for an ASGI app and the
``receive``/``send`` pair the app talks through, and the response values it
hands back to the worker: ``AsgiResponse`` (a complete body, written in one
``transport.write`` as a native response is) and ``AsgiStream`` (a body the
app's ``send`` calls drive; the worker writes it with its ``FlowControl``, so
a slow client pauses the app's ``send``).

How a request runs: the worker calls ``handle_http``, which starts the app in
its own task and waits for the response to be decided: the first
``http.response.body`` (or ``pathsend``), or the app's end. A single body
with ``more_body`` false becomes an ``AsgiResponse``; anything else an
``AsgiStream`` whose ``send_body`` the worker runs while the app keeps
sending. The body is always read as it arrives (``streams_body``), with the
worker's read backpressure: an unread body pauses the socket.

Disconnects: the worker cancels its request task when the client leaves (or
when ``RESPONSE_TIMEOUT`` passes); that cancellation is the one signal. From
then on ``receive()`` answers ``http.disconnect`` and ``send()`` raises
``ClientDisconnected``, an ``OSError`` (spec 2.4: Starlette stops streaming on
it). If the response had not started, the app's task is cancelled: nothing it
could send would reach anyone.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from app_server.protocols.http.events import RequestHead, RouteMatch
from app_server.workers.app_contract import (
    BodyReader,
    ConnectionInfo,
    FileResponse,
    HTTPResponse,
    ResponseAborted,
    StreamingResponse,
)

error_log = logging.getLogger("app_server.error")

Message = dict[str, Any]
Writer = Callable[[bytes], Awaitable[None]]

DISCONNECT: Message = {"type": "http.disconnect"}
_FORBIDDEN = (b"\r", b"\n", b"\x00")
_NOT_FORWARDED = frozenset((b"content-length", b"transfer-encoding", b"connection"))


class ClientDisconnected(OSError):
    """``send()`` after the client went away (ASGI spec 2.4)."""


class AppFailed(Exception):
    """The ASGI app broke the protocol (a message out of order, a bad header)."""


def header_lines(headers: Any) -> tuple[bytes, int | None]:
    """The app's header pairs as CRLF lines (framing headers left to the
    worker), and the Content-Length the app declared, if any."""
    lines: list[bytes] = []
    length: int | None = None
    for name, value in headers:
        if name.__class__ is not bytes:
            name = bytes(name)
        if value.__class__ is not bytes:
            value = bytes(value)
        low = name.lower()
        if low in _NOT_FORWARDED:
            if low == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise AppFailed(f"invalid Content-Length {value!r}") from None
            continue
        lines.append(name + b": " + value + b"\r\n")
    block = b"".join(lines)
    # One scan of the whole block instead of three per header: every line
    # holds exactly its own CRLF and no NUL, so no name or value can end the
    # head early or add a header of its own (response splitting).
    count = len(lines)
    if block.count(b"\n") != count or block.count(b"\r") != count or b"\x00" in block:
        raise AppFailed(_bad_header(lines))
    return block, length


def _bad_header(lines: list[bytes]) -> str:
    """The error path: name the first header with CR, LF or NUL in it."""
    for line in lines:
        text = line[:-2]
        for bad in _FORBIDDEN:
            if bad in text:
                name = text.split(b":", 1)[0]
                return f"invalid character {bad!r} in response header {name!r}"
    return "invalid response headers"


class AsgiResponse(HTTPResponse):
    """A complete ASGI response: the app's own header lines, precomputed."""

    __slots__ = ("block",)

    def __init__(self, status: int, block: bytes, body: bytes) -> None:
        BaseInit(self, status)
        self.body = body
        self.block = block

    def header_block(self) -> bytes:
        return self.block


class AsgiStream(StreamingResponse):
    """A response body driven by the app's ``send`` calls."""

    __slots__ = ("exchange", "first", "block")

    def __init__(
        self, exchange: HttpExchange, status: int, block: bytes, length: int | None, first: bytes
    ) -> None:
        BaseInit(self, status)
        self.source = None  # type: ignore[assignment]  # the app drives the body
        self.content_length = length
        self._writer = None
        self.exchange = exchange
        self.first = first
        self.block = block

    def header_block(self) -> bytes:
        return self.block

    async def send_body(self, writer: Writer) -> None:
        exchange = self.exchange
        try:
            if self.first:
                await writer(self.first)
                self.first = b""
            await exchange.attach(writer)
        except asyncio.CancelledError:
            exchange.client_gone()
            raise
        except ResponseAborted:
            raise
        except OSError:
            exchange.client_gone()
            raise


class AsgiFile(FileResponse):
    """``http.response.pathsend``: the worker sends the file with sendfile."""

    __slots__ = ("block",)

    def __init__(self, path: str, status: int, block: bytes) -> None:
        FileResponse.__init__(self, path, status, None, "")
        self.content_type = None
        # The app's own validators are the file's (Starlette sends ETag and
        # Last-Modified): the worker's plan_file must use them, not add a
        # second pair. It adds Accept-Ranges itself for a 200 (it serves
        # ranges), so the app's copy would be a duplicate.
        kept: list[bytes] = []
        for line in block.split(b"\r\n"):
            if not line:
                continue
            name, _, value = line.partition(b":")
            low = name.lower()
            if low == b"etag":
                self.etag = value.strip().decode("latin-1")
            elif low == b"last-modified":
                self.last_modified = value.strip().decode("latin-1")
            elif low == b"accept-ranges" and status == 200:
                continue
            kept.append(line + b"\r\n")
        self.block = b"".join(kept)

    def header_block(self) -> bytes:
        return self.block

    def head_block(self, with_content_type: bool) -> bytes:
        return self.block


def BaseInit(response: Any, status: int) -> None:  # noqa: N802  the cheap part of __init__
    response.status = status
    response.headers = {}
    response.content_type = None
    response._cookies = None


class HttpExchange:
    """The worker's request object for an ASGI app, and the app's receive/send."""

    __slots__ = (
        "head",
        "body",
        "routing",
        "scope",
        "reader",
        "decided",
        "status",
        "block",
        "length",
        "started",
        "complete",
        "gone",
        "aborted",
        "body_done",
        "body_given",
        "received",
        "recv_waiter",
        "send_waiter",
        "writer",
        "finished",
        "task",
        "head_only",
    )

    def __init__(self, head: RequestHead, scope: Message, routing: RouteMatch[Any]) -> None:
        self.head = head
        self.body = b""
        self.routing: RouteMatch[Any] = routing
        self.scope = scope
        self.reader: BodyReader | None = None
        self.decided: asyncio.Future[Any] | None = None
        self.status = 0
        self.block = b""
        self.length: int | None = None
        self.started = False
        self.complete = False
        self.gone = False
        self.aborted = False
        # No body announced: the one http.request message needs no read.
        self.body_done = head.content_length in (0, None) and not head.chunked
        self.body_given = False
        self.received = 0
        # receive() waiting for the disconnect and send() waiting for the
        # writer can both be parked at once (Starlette listens while it streams).
        self.recv_waiter: asyncio.Future[None] | None = None
        self.send_waiter: asyncio.Future[None] | None = None
        self.writer: Writer | None = None
        self.finished: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.head_only = head.method == "HEAD"

    def set_stream(self, reader: BodyReader) -> None:
        self.reader = reader

    # -- the worker's side --------------------------------------------------

    async def run(self, app: Any) -> Any:
        """Start the app; the response value once it is decided."""
        loop = asyncio.get_running_loop()
        self.decided = decided = loop.create_future()
        self.task = loop.create_task(self._call(app))
        try:
            return await decided
        except asyncio.CancelledError:
            # The client left or RESPONSE_TIMEOUT passed before the response
            # was decided. The app is told the ASGI way, not cancelled: its
            # receive() answers http.disconnect and its send() raises.
            self.client_gone()
            raise

    async def _call(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self._failed()
            raise
        except BaseException as exc:  # noqa: BLE001  every app error is logged once, here
            if not (self.gone and isinstance(exc, OSError)):
                error_log.error(
                    "ASGI application raised on %s %s",
                    self.head.method,
                    self.head.path,
                    exc_info=exc,
                )
            self._failed()
            return
        if not self.complete and not self.gone:
            error_log.error(
                "ASGI application returned without %s a response to %s %s",
                "completing" if self.started else "sending",
                self.head.method,
                self.head.path,
            )
            self._failed()

    def _failed(self) -> None:
        decided = self.decided
        if decided is not None and not decided.done():
            # Nothing written yet (at most the head was given): a 500.
            decided.set_result(HTTPResponse("Internal Server Error", 500))
            return
        if self.complete:
            return
        self.aborted = True
        finished = self.finished
        if finished is not None and not finished.done():
            finished.set_exception(ResponseAborted("the ASGI application failed"))

    async def attach(self, writer: Writer) -> None:
        """The worker writes the body now: wake the app's send, wait for its end."""
        if self.aborted:
            raise ResponseAborted("the ASGI application failed")
        if self.complete:
            return
        self.finished = finished = asyncio.get_running_loop().create_future()
        self.writer = writer
        waiter = self.send_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await finished

    def client_gone(self) -> None:
        if self.gone:
            return
        self.gone = True
        waiter = self.send_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClientDisconnected("client disconnected"))
        self._wake_receiver()

    def _wake_receiver(self) -> None:
        waiter = self.recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def left_while_waiting(self) -> bool:
        """``gone``, read afresh after an await (the client may have left meanwhile)."""
        return self.gone

    # -- the app's side -----------------------------------------------------

    async def receive(self) -> Message:
        if self.gone or self.complete:
            return DISCONNECT
        if not self.body_done:
            reader = self.reader
            chunk = await reader.read() if reader is not None else None
            if self.left_while_waiting():
                return DISCONNECT
            length = self.head.content_length
            if chunk is None:
                if length is not None and self.received < length:
                    return DISCONNECT  # the body ended early: the connection went
                self.body_done = self.body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            self.received += len(chunk)
            more = length is None or self.received < length
            if not more:
                self.body_done = self.body_given = True
            return {"type": "http.request", "body": chunk, "more_body": more}
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # The body is read: a further receive() waits for the client to leave
        # or the response to end.
        waiter = self.recv_waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self.recv_waiter = None
        return DISCONNECT

    async def send(self, message: Message) -> None:
        if self.gone:
            raise ClientDisconnected("client disconnected")
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started or self.complete:
                raise AppFailed("http.response.body outside a response")
            await self._body(message.get("body", b""), message.get("more_body", False))
        elif kind == "http.response.start":
            if self.started:
                raise AppFailed("http.response.start sent twice")
            self.status = int(message["status"])
            self.block, self.length = header_lines(message.get("headers", ()))
            self.started = True
        elif kind == "http.response.pathsend":
            if not self.started or self.complete:
                raise AppFailed("http.response.pathsend outside a response")
            self._decide(AsgiFile(os.fspath(message["path"]), self.status, self.block))
            self._completed()
        else:
            raise AppFailed(f"unexpected ASGI message {kind!r} on an HTTP connection")

    def _decide(self, response: Any) -> None:
        decided = self.decided
        if decided is not None and not decided.done():
            decided.set_result(response)

    async def _body(self, body: bytes, more: bool) -> None:
        writer = self.writer
        if writer is None:
            decided = self.decided
            first = decided is not None and not decided.done()
            if (
                first
                and not more
                and (not self.head_only or self.length is None or len(body) == self.length)
            ):
                # The common case: one complete body, written with its length
                # (for HEAD, the length of the body a GET would get).
                self._decide(AsgiResponse(self.status, self.block, bytes(body)))
                self._completed()
                return
            if first:
                self._decide(AsgiStream(self, self.status, self.block, self.length, bytes(body)))
                body = b""  # the worker writes it first
            if self.head_only:  # the worker sends no body: discard it
                if not more:
                    self._completed()
                return
            writer = await self._wait_writer()
        if body:
            try:
                await writer(body)
            except OSError as exc:
                self.client_gone()
                raise ClientDisconnected("client disconnected") from exc
        if not more:
            finished = self.finished
            self._completed()
            if finished is not None and not finished.done():
                finished.set_result(None)

    async def _wait_writer(self) -> Writer:
        while self.writer is None:
            waiter = self.send_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter  # raises ClientDisconnected when the client leaves
            finally:
                self.send_waiter = None
        return self.writer

    def _completed(self) -> None:
        self.complete = True
        self._wake_receiver()


def connection_scope(conn: ConnectionInfo) -> tuple[Any, Any]:
    """``client`` and ``server`` of the scope, per connection."""
    client = (conn.peer_ip, conn.peer_port) if conn.peer_ip else None
    server = (
        (conn.server_host, conn.server_port)
        if conn.server_port
        else ((conn.server_host, None) if conn.server_host else None)
    )
    return client, server
