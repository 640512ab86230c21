"""One WebSocket served by an ASGI application (ASGI www spec, WebSocket part).

Owns: ``run_websocket``, which runs the app on a ``websocket`` scope and
translates its messages to the worker's WebSocket connection (the object
``handle_websocket`` is given), using only its public surface: ``accept``,
``reject``, ``send``, ``receive``, ``close`` and the close code and reason it
reports. Every limit of SPEC §2.6 (max size → 1009, queue backpressure,
ping interval and timeout, deflate with capped inflate) is the connection's,
so an ASGI app gets them unchanged.

The denial-response extension: before accepting, the app may answer with
``websocket.http.response.start`` and ``.body`` messages; the body is
collected and written as a real HTTP response in place of the handshake.
An app that closes before accepting (or returns without accepting) gets the
403 the spec asks for; one that fails before accepting, a 500; after, a
1011 close. The app is never left waiting: once the connection is closed,
``receive()`` gives ``websocket.disconnect`` with the peer's code and
``send()`` raises ``ClientDisconnected``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app_server.asgi.http import AsgiResponse, ClientDisconnected, header_lines
from app_server.exceptions import WebSocketClosed
from app_server.workers.app_contract import HTTPResponse

error_log = logging.getLogger("app_server.error")

Message = dict[str, Any]

CONNECT: Message = {"type": "websocket.connect"}
NORMAL = 1000
INTERNAL_ERROR = 1011
ABNORMAL = 1006


class AsgiWebSocket:
    """The receive/send pair of one ASGI WebSocket, over the worker's connection."""

    __slots__ = (
        "channel",
        "scope",
        "label_of",
        "connected",
        "accepted",
        "finished",
        "denial_status",
        "denial_block",
        "denial_body",
        "path",
        "on_accept",
    )

    def __init__(
        self, channel: Any, scope: Message, path: str, label_of: Callable[[Message], str | None]
    ) -> None:
        self.channel = channel
        self.scope = scope
        self.label_of = label_of
        self.path = path
        self.connected = False  # websocket.connect was given
        self.accepted = False
        self.finished = False  # refused, or closed by the app
        self.denial_status = 0
        self.denial_block = b""
        self.denial_body: list[bytes] = []
        self.on_accept: asyncio.Future[None] | None = None

    async def _accepted_or_closed(self) -> None:
        loop = asyncio.get_running_loop()
        if self.on_accept is None:
            self.on_accept = loop.create_future()
        closed = loop.create_task(self.channel.wait_closed())
        try:
            await asyncio.wait((self.on_accept, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()

    def _wake_on_accept(self) -> None:
        waiter = self.on_accept
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _disconnect(self) -> Message:
        channel = self.channel
        lifecycle = channel.lifecycle
        code = lifecycle.code if lifecycle.code is not None else ABNORMAL
        return {"type": "websocket.disconnect", "code": code, "reason": lifecycle.reason}

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return CONNECT
        if not self.accepted:
            if self.finished:
                return self._disconnect()
            # Nothing arrives before the handshake is answered. An app may
            # already be receiving in a task of its own (Quart does) while
            # another accepts: wait for the accept, or for the end.
            await self._accepted_or_closed()
            if not self.accepted:
                return self._disconnect()
        try:
            data = await self.channel.receive()
        except WebSocketClosed as exc:
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if data.__class__ is str:
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        channel = self.channel
        if kind == "websocket.send":
            if not self.accepted or self.finished:
                raise ClientDisconnected("the WebSocket is not open")
            text = message.get("text")
            data = text if text is not None else message.get("bytes")
            if data is None:
                raise ValueError("websocket.send needs 'text' or 'bytes'")
            try:
                await channel.send(data)
            except WebSocketClosed as exc:
                raise ClientDisconnected(f"WebSocket closed ({exc.code})") from exc
        elif kind == "websocket.accept":
            if self.accepted or self.finished:
                raise RuntimeError("websocket.accept after the handshake was answered")
            if channel.lifecycle.closed:
                raise ClientDisconnected("the client left before the handshake was answered")
            label = self.label_of(self.scope)
            if label is not None:
                channel.route_label = label
            headers = [
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                for k, v in message.get("headers", ())
            ]
            channel.accept(message.get("subprotocol"), headers)
            self.accepted = True
            self._wake_on_accept()
        elif kind == "websocket.close":
            if self.finished:
                raise ClientDisconnected("the WebSocket is closed")
            self.finished = True
            if not self.accepted:
                channel.reject(HTTPResponse("Forbidden", 403))
                self._wake_on_accept()
                return
            await channel.close(
                int(message.get("code") or NORMAL), str(message.get("reason") or "")
            )
        elif kind == "websocket.http.response.start":
            if self.accepted or self.finished or self.denial_status:
                raise RuntimeError("websocket.http.response.start after the handshake")
            self.denial_status = int(message["status"])
            self.denial_block, _ = header_lines(message.get("headers", ()))
        elif kind == "websocket.http.response.body":
            if not self.denial_status or self.finished:
                raise RuntimeError("websocket.http.response.body without its start")
            self.denial_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self.finished = True
                channel.reject(
                    AsgiResponse(self.denial_status, self.denial_block, b"".join(self.denial_body))
                )
                self._wake_on_accept()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket")

    async def run(self, app: Any) -> None:
        channel = self.channel
        try:
            await app(self.scope, self.receive, self.send)
        except Exception as exc:  # noqa: BLE001  logged once; the connection ends cleanly
            if isinstance(exc, ClientDisconnected):
                pass  # the app let our own signal through: nothing to report
            elif self.accepted and channel.lifecycle.code is not None:
                # Raised once the connection was over (Starlette's
                # WebSocketDisconnect from receive_text): nothing was lost.
                error_log.info(
                    "ASGI application ended WebSocket %s with %s: %s",
                    self.path,
                    type(exc).__name__,
                    exc,
                )
            else:
                error_log.error("ASGI application raised on WebSocket %s", self.path, exc_info=exc)
            if not self.accepted and not self.finished:
                self.finished = True
                channel.reject(HTTPResponse("Internal Server Error", 500))
            elif self.accepted and not self.finished:
                self.finished = True
                await channel.close(INTERNAL_ERROR, "")
            return
        if not self.accepted and not self.finished:
            # Returned without answering the handshake: refused (spec: 403).
            self.finished = True
            channel.reject(HTTPResponse("Forbidden", 403))
        elif self.accepted and not self.finished:
            self.finished = True
            await channel.close(NORMAL, "")
