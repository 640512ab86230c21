"""The seed styles' conversions on top of the WebSocket's core.

Owns: ``to_message`` (what ``send`` puts in a frame: str, bytes, or JSON
text), ``MessageMode``, and ``SeedStyles``, the part of ``WebSocket`` that
converts between the core's str/bytes messages and what each seed API
expects: typed receives (``receive_text``/``_bytes``/``_json``, and
``receive`` typed by the route), Starlette's and BlackSheep's event dicts
(``receive_event``, ``send_event``, ``scope``), and the handshake data under
every seed's name (``query_parameters``/``args``, ``route_values``/
``path_params``, ...).
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from app_server.exceptions import WebSocketClosed
from app_server.status import CloseCode


class MessageMode(StrEnum):
    """The kind of a message (BlackSheep's name)."""

    TEXT = "text"
    BYTES = "bytes"


def _dumps(obj: Any) -> str:
    return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def to_message(data: Any, kind: str | None) -> str | bytes:
    """What ``send`` puts in a frame: str -> text, bytes -> binary, dict/list -> JSON text.

    ``kind`` ("text", "bytes" or "json"; None: by the data's type) forces
    the kind. Channels send an envelope's result through this too.
    """
    if kind is None:
        cls = data.__class__
        if cls is str or cls is bytes:
            # an identity check, not isinstance (subclasses take the slow path)
            return data  # type: ignore[no-any-return]  # reason: narrowed by the class check
        if isinstance(data, bytearray | memoryview):
            return bytes(data)
        if isinstance(data, str):
            return str(data)
        if isinstance(data, dict | list | tuple):
            return _dumps(data)
        raise TypeError(f"cannot send {cls.__name__}: expected str, bytes, dict or list")
    if kind == "text":
        return data.decode() if isinstance(data, bytes | bytearray) else str(data)
    if kind == "json":
        return _dumps(data)
    if kind == "bytes":
        return data.encode() if isinstance(data, str) else bytes(data)
    raise ValueError(f"encoding must be 'text', 'bytes' or 'json', got {kind!r}")


class SeedStyles:
    """Mixed into ``WebSocket``, which provides the core declared below."""

    # No instance layout of its own (WebSocket's __slots__ hold the state),
    # hidden from mypy so that it checks the names WebSocket declares.
    if not TYPE_CHECKING:
        __slots__ = ()

    if TYPE_CHECKING:
        request: Any
        _receive_type: str | None
        _disconnect_seen: bool

        async def recv(self, timeout: float | None = None) -> str | bytes: ...

        async def send(self, data: Any, encoding: str | None = None) -> None: ...

        async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None: ...

        async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None: ...

    # -- handshake data -----------------------------------------------------------

    @property
    def headers(self) -> Any:
        return self.request.headers

    @property
    def url(self) -> str:
        url: str = self.request.url
        return "ws" + url[4:] if url.startswith("http") else url

    @property
    def path(self) -> str:
        path: str = self.request.path
        return path

    @property
    def query_parameters(self) -> Any:
        return self.request.args

    args = query_parameters

    @property
    def route_values(self) -> dict[str, Any]:
        values: dict[str, Any] = self.request.match_info
        return values

    path_params = route_values

    @property
    def ctx(self) -> Any:
        return self.request.ctx

    @property
    def app(self) -> Any:
        return self.request.app

    @property
    def client(self) -> tuple[str, int]:
        return (self.request.ip, self.request.port)

    @property
    def scope(self) -> dict[str, Any]:
        request = self.request
        head = request.head
        conn = request._conn
        scheme = "wss" if request.scheme == "https" else "ws"
        return {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": head.http_version,
            "scheme": scheme,
            "path": request.path,
            "raw_path": head.raw_path.split(b"?", 1)[0],
            "query_string": head.query_string,
            "headers": list(head.headers),
            "client": (request.ip, request.port),
            "server": (conn.server_host, conn.server_port),
            "subprotocols": self.requested_subprotocols,
            "route_values": dict(request.match_info),
        }

    @property
    def requested_subprotocols(self) -> list[str]:
        offered: list[str] = []
        for value in self.request.headers.getall("sec-websocket-protocol"):
            offered.extend(p.strip() for p in value.split(",") if p.strip())
        return offered

    # -- typed receives and event dicts -------------------------------------

    async def receive_text(self) -> str:
        message = await self.recv()
        if message.__class__ is str:
            return message
        try:
            return message.decode()  # type: ignore[union-attr]  # bytes: not a str
        except UnicodeDecodeError:
            raise WebSocketClosed(
                CloseCode.INVALID_FRAME_PAYLOAD_DATA, "binary message is not UTF-8 text"
            ) from None

    async def receive_bytes(self) -> bytes:
        message = await self.recv()
        if message.__class__ is str:
            return message.encode()
        return message  # type: ignore[return-value]  # bytes: not a str

    async def receive_json(self, loads: Callable[[Any], Any] | None = None) -> Any:
        message = await self.recv()
        return (loads or _json.loads)(message)

    async def receive(self) -> Any:
        """Typed by the route's ``receive_type``/``value_type``; else the event dict."""
        kind = self._receive_type
        if kind is None:
            message = await self.recv()
            if message.__class__ is str:
                return {"type": "websocket.receive", "text": message}
            return {"type": "websocket.receive", "bytes": message}
        if kind == "text":
            return await self.receive_text()
        if kind == "json":
            return await self.receive_json()
        return await self.receive_bytes()

    message = receive

    async def receive_event(self) -> dict[str, Any]:
        """The ASGI-style event: a receive, or (once) the disconnect."""
        try:
            message = await self.recv()
        except WebSocketClosed as exc:
            if self._disconnect_seen:
                raise
            self._disconnect_seen = True
            return {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        if message.__class__ is str:
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def send_text(self, data: str) -> None:
        await self.send(str(data), "text")

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        await self.send(data, "bytes")

    async def send_json(self, data: Any, dumps: Callable[[Any], str] | None = None) -> None:
        await self.send((dumps or _dumps)(data), "text")

    async def send_event(self, event: Mapping[str, Any]) -> None:
        """Send an ASGI-style event: ``websocket.send``, ``.accept`` or ``.close``."""
        kind = event.get("type")
        if kind == "websocket.send":
            text = event.get("text")
            if text is not None:
                await self.send(text, "text")
            else:
                await self.send(event.get("bytes") or b"", "bytes")
        elif kind == "websocket.accept":
            await self.accept(event.get("subprotocol"), event.get("headers"))
        elif kind == "websocket.close":
            await self.close(event.get("code", CloseCode.NORMAL_CLOSURE), event.get("reason") or "")
        else:
            raise ValueError(f"unknown WebSocket event type {kind!r}")
