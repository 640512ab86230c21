"""The request object handed to handlers.

Owns: ``Request``, a lazy view over a parsed ``RequestHead`` plus its body.
Nothing is decoded until asked for (headers index, query args, cookies, JSON,
form), so a handler that reads nothing costs nothing. ``ConnectionInfo`` is
the per-connection part (peer, server, scheme, trusted-proxy policy), shared by
every request on that connection.
"""

from __future__ import annotations

import json as _json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from app_server.exceptions import BadRequest
from app_server.framework.datastructures import Headers, QueryArgs, parse_cookies
from app_server.framework.forms import FormError, UploadedFile, parse_form
from app_server.protocols.http.events import RequestHead, RouteMatch, RouteRefusal

if TYPE_CHECKING:
    from app_server.framework.proxy import ForwardedPolicy
    from app_server.framework.routing.router import Route


class BodyReader(Protocol):
    """What a streamed request body needs from the connection."""

    async def read(self) -> bytes | None: ...


class ConnectionInfo:
    __slots__ = ("peer_ip", "peer_port", "server_host", "server_port", "scheme", "forwarded")

    def __init__(
        self,
        peer_ip: str,
        peer_port: int,
        server_host: str,
        server_port: int,
        scheme: str,
        forwarded: ForwardedPolicy | None,
    ) -> None:
        self.peer_ip = peer_ip
        self.peer_port = peer_port
        self.server_host = server_host
        self.server_port = server_port
        self.scheme = scheme
        self.forwarded = forwarded


class RequestStream:
    """An unbuffered request body.

    ``await request.stream.read()`` gives the next chunk (None at the end),
    ``async for chunk in request.stream`` iterates, and
    ``await request.stream()`` reads everything that is left.
    """

    __slots__ = ("_reader",)

    def __init__(self, reader: BodyReader) -> None:
        self._reader = reader

    async def read(self) -> bytes | None:
        return await self._reader.read()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._reader.read()) is not None:
            yield chunk

    def __call__(self) -> Awaitable[bytes]:
        return self._read_all()

    async def _read_all(self) -> bytes:
        parts = []
        while (chunk := await self._reader.read()) is not None:
            parts.append(chunk)
        return b"".join(parts)


class _BufferedReader:
    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    async def read(self) -> bytes | None:
        body, self._body = self._body, None
        return body or None


class Request:
    __slots__ = (
        "_head",
        "_conn",
        "app",
        "body",
        "route",
        "routing",
        "match_info",
        "identity",
        "_stream",
        "_headers",
        "_args",
        "_cookies",
        "_json",
        "_form",
        "_files",
        "_ctx",
        "_id",
        "_ip_scheme",
        "websocket",
    )
    # Set by the App on a WebSocket request only (never on the HTTP path), and
    # only passed through to the handler as its first argument: the request
    # needs nothing of it, so it does not import the WebSocket type.
    websocket: object

    def __init__(self, head: RequestHead, conn: ConnectionInfo, app: Any) -> None:
        self._head = head
        self._conn = conn
        self.app = app
        self.body = b""
        self.route: Route | None = None
        # The app's routing answer (set by ``App.prepare``): what the worker reads.
        self.routing: RouteMatch[Route] | RouteRefusal | None = None
        self.match_info: dict[str, Any] = {}
        self.identity: Any = None
        self._stream: RequestStream | None = None
        self._headers: Headers | None = None
        self._args: QueryArgs | None = None
        self._cookies: dict[str, str] | None = None
        self._json: Any = _UNSET
        self._form: QueryArgs | None = None
        self._files: dict[str, list[UploadedFile]] | None = None
        self._ctx: SimpleNamespace | None = None
        self._id: str | None = None
        self._ip_scheme: tuple[str, str] | None = None

    # -- request line ------------------------------------------------------

    @property
    def method(self) -> str:
        return self._head.method

    @property
    def path(self) -> str:
        return self._head.path

    @property
    def raw_path(self) -> bytes:
        return self._head.raw_path

    @property
    def query_string(self) -> str:
        return self._head.query_string.decode("latin-1")

    @property
    def version(self) -> str:
        return self._head.http_version

    @property
    def head(self) -> RequestHead:
        return self._head

    # -- headers and derived views ----------------------------------------

    @property
    def headers(self) -> Headers:
        h = self._headers
        if h is None:
            h = self._headers = Headers(self._head.headers)
        return h

    @property
    def args(self) -> QueryArgs:
        a = self._args
        if a is None:
            a = self._args = QueryArgs.parse(self._head.query_string)
        return a

    query = args

    @property
    def cookies(self) -> dict[str, str]:
        c = self._cookies
        if c is None:
            c = self._cookies = parse_cookies("; ".join(self.headers.getall("cookie")))
        return c

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "") or ""

    @property
    def host(self) -> str:
        return self._head.host or f"{self._conn.server_host}:{self._conn.server_port}"

    @property
    def ctx(self) -> SimpleNamespace:
        c = self._ctx
        if c is None:
            c = self._ctx = SimpleNamespace()
        return c

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = self.headers.get("x-request-id") or uuid.uuid4().hex
        return self._id

    @property
    def route_values(self) -> dict[str, Any]:
        return self.match_info

    # -- peer --------------------------------------------------------------

    def _resolve_peer(self) -> tuple[str, str]:
        pair = self._ip_scheme
        if pair is None:
            conn = self._conn
            policy = conn.forwarded
            if policy is None:
                pair = (conn.peer_ip, conn.scheme)
            else:
                pair = policy.resolve(conn.peer_ip, conn.scheme, self.headers)
            self._ip_scheme = pair
        return pair

    @property
    def ip(self) -> str:
        return self._resolve_peer()[0]

    @property
    def port(self) -> int:
        return self._conn.peer_port

    @property
    def scheme(self) -> str:
        return self._resolve_peer()[1]

    @property
    def url(self) -> str:
        qs = self._head.query_string
        path = self._head.raw_path.split(b"?", 1)[0].decode("latin-1")
        base = f"{self.scheme}://{self.host}{path}"
        return base + ("?" + qs.decode("latin-1") if qs else "")

    # -- body --------------------------------------------------------------

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def json(self) -> Any:
        value = self._json
        if value is _UNSET:
            if not self.body:
                value = None
            else:
                try:
                    value = _json.loads(self.body)
                except ValueError as exc:
                    raise BadRequest(f"Invalid JSON body: {exc}") from None
            self._json = value
        return value

    def load_json(self, loads: Callable[[bytes], Any] = _json.loads) -> Any:
        try:
            return loads(self.body)
        except ValueError as exc:
            raise BadRequest(f"Invalid JSON body: {exc}") from None

    def _parse_form(self) -> None:
        try:
            self._form, self._files = parse_form(self.body, self.content_type)
        except FormError as exc:
            raise BadRequest(f"Invalid form body: {exc}") from None

    @property
    def form(self) -> QueryArgs:
        if self._form is None:
            self._parse_form()
        return self._form  # type: ignore[return-value]  # set by _parse_form

    @property
    def files(self) -> dict[str, list[UploadedFile]]:
        if self._files is None:
            self._parse_form()
        return self._files  # type: ignore[return-value]  # set by _parse_form

    @property
    def stream(self) -> RequestStream:
        """The body as a stream (the whole buffered body on non-streaming routes)."""
        s = self._stream
        if s is None:
            s = self._stream = RequestStream(_BufferedReader(self.body))
        return s

    def set_stream(self, reader: BodyReader) -> None:
        self._stream = RequestStream(reader)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"


class _Unset:
    __slots__ = ()


_UNSET: Any = _Unset()
