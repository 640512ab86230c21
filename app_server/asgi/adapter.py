"""An ASGI 3 application as the worker's ``AppHandler`` (SPEC §10).

Owns: ``AsgiAdapter``: it builds the ``http`` and ``websocket`` scopes
(spec_version 2.4, ``root_path`` prepended to ``path`` and ``raw_path`` as
Uvicorn does, ``client`` None when unknown, ``server`` ``(path, None)`` on a
unix socket, ``state`` copied per request), runs lifespan at the worker's
start and stop hooks, and gives the worker the routing value its metrics
read: one shared label, or the route the app left in ``scope["route"]``
(FastAPI's route object: its ``path``; a string as is), each label's
``RouteMatch`` built once so the per-route series stay a dictionary lookup.

Every request body is streamed (``streams_body``): the app reads it with
``receive()`` as it arrives, and the worker's read backpressure applies. A
request without a body gets a match that streams nothing (no reader to build).
"""

from __future__ import annotations

from typing import Any

from app_server.asgi.http import HttpExchange, Message, connection_scope
from app_server.asgi.lifespan import Lifespan
from app_server.asgi.websocket import AsgiWebSocket
from app_server.protocols.http.events import RequestHead, RouteMatch
from app_server.workers.app_contract import ConnectionInfo, Headers

# Label of every request whose app reports no route (plain Starlette, Django).
SHARED_LABEL = "<asgi>"
# Beyond this many distinct route labels, new ones share SHARED_LABEL: a
# label set the app does not bound must not grow the metrics without end.
MAX_ROUTE_LABELS = 1000

HTTP_EXTENSIONS: Message = {"http.response.pathsend": {}}
WS_EXTENSIONS: Message = {"websocket.http.response": {}}


class AsgiAdapter:
    """Serves an ASGI 3 callable through the worker's ``AppHandler`` contract."""

    __slots__ = ("app", "root_path", "raw_root", "lifespan", "shared", "bodyless", "routes")

    def __init__(self, app: Any, root_path: str = "") -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")
        self.raw_root = self.root_path.encode("utf-8")
        self.lifespan = Lifespan(app)
        self.shared: RouteMatch[Any] = RouteMatch(None, SHARED_LABEL, streams_body=True)
        # A request without a body needs no streamed reader: the worker starts
        # it as soon as the head is complete either way.
        self.bodyless: RouteMatch[Any] = RouteMatch(None, SHARED_LABEL)
        self.routes: dict[str, RouteMatch[Any]] = {}

    # -- lifecycle ------------------------------------------------------------

    def freeze(self) -> None:
        return None

    async def run_hooks(self, event: str) -> None:
        if event == "before_server_start":
            await self.lifespan.startup()
        elif event == "after_server_stop":
            # After the drain: the in-flight requests are done.
            await self.lifespan.shutdown()

    # -- HTTP -------------------------------------------------------------------

    def prepare(self, head: RequestHead, conn: ConnectionInfo) -> HttpExchange:
        client, server = connection_scope(conn)
        scheme = conn.scheme
        policy = conn.forwarded
        if policy is not None and policy.trusts(conn.peer_ip):
            client, scheme = _forwarded(policy, conn, head, client)
        root = self.root_path
        scope: Message = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": head.http_version,
            "method": head.method,
            "scheme": scheme,
            "path": root + head.path if root else head.path,
            "raw_path": self.raw_root + _raw_path(head) if root else _raw_path(head),
            "query_string": head.query_string,
            "root_path": root,
            "headers": head.headers,
            "client": client,
            "server": server,
            "state": self.lifespan.state.copy(),
            "extensions": HTTP_EXTENSIONS,
        }
        has_body = head.chunked or head.content_length
        return HttpExchange(head, scope, self.shared if has_body else self.bodyless)

    async def handle_http(self, request: HttpExchange) -> Any:
        response = await request.run(self.app)
        route = request.scope.get("route")
        if route is not None:
            request.routing = self.route_match(route)
        return response

    def route_match(self, route: object) -> RouteMatch[Any]:
        label = self.label_of_route(route)
        if label is None:
            return self.shared
        match = self.routes.get(label)
        if match is None:
            if len(self.routes) >= MAX_ROUTE_LABELS:
                return self.shared
            match = self.routes[label] = RouteMatch(route, label, streams_body=True)
        return match

    @staticmethod
    def label_of_route(route: object) -> str | None:
        path = route if isinstance(route, str) else getattr(route, "path", None)
        return path if isinstance(path, str) and path else None

    # -- WebSocket --------------------------------------------------------------

    def prepare_websocket(self, head: RequestHead, conn: ConnectionInfo) -> HttpExchange:
        client, server = connection_scope(conn)
        scheme = conn.scheme
        policy = conn.forwarded
        if policy is not None and policy.trusts(conn.peer_ip):
            client, scheme = _forwarded(policy, conn, head, client)
        root = self.root_path
        subprotocols: list[str] = []
        for name, value in head.headers:
            if name == b"sec-websocket-protocol":
                subprotocols.extend(
                    p.strip() for p in value.decode("latin-1").split(",") if p.strip()
                )
        scope: Message = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": head.http_version,
            "scheme": "wss" if scheme in ("https", "wss") else "ws",
            "path": root + head.path if root else head.path,
            "raw_path": self.raw_root + _raw_path(head) if root else _raw_path(head),
            "query_string": head.query_string,
            "root_path": root,
            "headers": head.headers,
            "client": client,
            "server": server,
            "subprotocols": subprotocols,
            "state": self.lifespan.state.copy(),
            "extensions": WS_EXTENSIONS,
        }
        return HttpExchange(head, scope, self.shared)

    async def handle_websocket(self, request: HttpExchange, channel: object) -> None:
        socket = AsgiWebSocket(channel, request.scope, request.head.path, self._ws_label)
        await socket.run(self.app)

    def _ws_label(self, scope: Message) -> str | None:
        route = scope.get("route")
        return None if route is None else self.route_match(route).label


def _raw_path(head: RequestHead) -> bytes:
    """The request target's path, without its query (ASGI ``raw_path``)."""
    raw = head.raw_path
    end = raw.find(b"?")
    return raw if end < 0 else raw[:end]


def _forwarded(
    policy: Any, conn: ConnectionInfo, head: RequestHead, client: Any
) -> tuple[Any, str]:
    """``client`` and ``scheme`` as a trusted proxy's headers give them
    (``--forwarded-allow-ips``), as Uvicorn's ``--proxy-headers`` does."""
    ip, scheme = policy.resolve(conn.peer_ip, conn.scheme, Headers(head.headers))
    if ip != conn.peer_ip:
        client = (ip, 0)
    return client, scheme
