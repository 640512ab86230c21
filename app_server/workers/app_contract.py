"""What a worker needs from an application: the one seam to the framework.

Owns: ``AppHandler``, the ``Protocol`` the worker calls, and the names of the
values that cross it. The worker owns this interface; ``framework.app.App``
conforms by structure, and an ASGI adapter can conform the same way (SPEC
§10): build its request object in ``prepare``, translate ``handle_http``'s
call into an ASGI ``http`` scope and answer with these response types.

Rule: this is the only worker module that imports from ``framework``, and
only the value types a request and a response travel in. The routing answer
is ``protocols.http.events.RouteMatch`` or ``RouteRefusal``: a plain value the
worker reads (``streams_body``, ``label``, ``matched``) without knowing the
application's route class.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from app_server.framework.datastructures import Headers
from app_server.framework.proxy import ForwardedPolicy
from app_server.framework.request import BodyReader, ConnectionInfo
from app_server.framework.responses import (
    BaseResponse,
    FileResponse,
    HTTPResponse,
    StreamingResponse,
)
from app_server.framework.static import plan_file
from app_server.protocols.http.events import RequestHead, RouteMatch, RouteRefusal

__all__ = [
    "AppHandler",
    "BaseResponse",
    "BodyReader",
    "ConnectionInfo",
    "FileResponse",
    "ForwardedPolicy",
    "HTTPResponse",
    "Headers",
    "PreparedRequest",
    "ResponseAborted",
    "RouteMatch",
    "RouteRefusal",
    "StreamingResponse",
    "plan_file",
]


class ResponseAborted(ConnectionAbortedError):
    """Raised by a response's ``send_body`` when the application failed after
    the head went out; the app side has logged it: the worker aborts the
    connection without a second report."""


class PreparedRequest(Protocol):
    """A request as the worker handles it, once the app has routed its head."""

    body: bytes

    @property
    def head(self) -> RequestHead: ...

    @property
    def routing(self) -> RouteMatch[Any] | RouteRefusal | None: ...

    def set_stream(self, reader: BodyReader) -> None: ...


RequestT = TypeVar("RequestT", bound=PreparedRequest)


class AppHandler(Protocol[RequestT]):
    """The application, as the worker calls it.

    Lifecycle: ``freeze`` once before serving (no registration after it),
    ``run_hooks`` at each of the four server events
    (``before_server_start`` … ``after_server_stop``).
    HTTP: ``prepare`` when a head arrives (routing only, before the body),
    then ``handle_http`` once the body is there (or streaming, when the
    match says ``streams_body``); it never raises for application errors.
    WebSocket: ``prepare_websocket`` for an upgrade request, then
    ``handle_websocket`` with the connection the handler talks through; the
    app accepts or refuses the handshake through that connection.
    """

    def freeze(self) -> None: ...

    async def run_hooks(self, event: str) -> None: ...

    def prepare(self, head: RequestHead, conn: ConnectionInfo) -> RequestT: ...

    async def handle_http(self, request: RequestT) -> BaseResponse: ...

    def prepare_websocket(self, head: RequestHead, conn: ConnectionInfo) -> RequestT: ...

    async def handle_websocket(self, request: RequestT, channel: object) -> None:
        """``channel`` is the worker's WebSocket connection; the app talks to
        it through the interface it owns (``framework.websocket.Channel``)."""
