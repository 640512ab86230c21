"""The application object.

Owns: ``App``, which *composes* a router, middleware chains, lifecycle hooks,
error handlers, authentication and ``AppConfig``; its decorators (shared with
``Blueprint`` through ``Registrar``) only record into those parts. It
implements what the worker needs from an application
(``workers.app_contract.AppHandler``: ``freeze``, ``run_hooks``, ``prepare``,
``handle_http``, ``prepare_websocket``, ``handle_websocket``) and
freezes itself at startup: from then on every handler's arguments are resolved
by callers built once, each route carries its middleware chains (the app's
plus its blueprint's) and exception-handler scopes, and no route can be added.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any, TypeVar

from app_server.channels.facade import Channels
from app_server.exceptions import HTTPError, WebSocketClosed
from app_server.framework.auth import guarded
from app_server.framework.blueprints import Blueprint
from app_server.framework.config import AppConfig
from app_server.framework.errors import ExceptionHandlers, render_exception
from app_server.framework.handlers import bind
from app_server.framework.handlers import ensure_async as _ensure_async
from app_server.framework.hooks import Hooks
from app_server.framework.middleware import Middleware, run_request_chain, run_response_chain
from app_server.framework.registrar import (
    ROUTE_OPTIONS,
    ROUTE_PARAMETERS,
    WEBSOCKET_DEFAULTS,
    WEBSOCKET_OPTIONS,
    WEBSOCKET_PARAMETERS,
    Registrar,
    check_error_format,
    check_methods,
    check_options,
)
from app_server.framework.request import ConnectionInfo, Request
from app_server.framework.responses import BaseResponse, HTTPResponse, text, to_response
from app_server.framework.routing.router import Route, Router, versioned
from app_server.framework.static import static_route
from app_server.framework.websocket import WebSocket, broadcast
from app_server.protocols.http.events import RequestHead, RouteMatch, RouteRefusal
from app_server.status import CloseCode

F = TypeVar("F", bound=Callable[..., Any])
error_log = logging.getLogger("app_server.error")
_WEBSOCKET_OF = attrgetter("websocket")  # a WebSocket handler's first argument
# Options that place a route rather than describe it: not kept in Route.options.
_ADDRESSING = frozenset({"name", "host", "strict_slashes", "version", "version_prefix"})


class AppFrozenError(RuntimeError):
    pass


class App(Registrar):
    def __init__(self, name: str | None = None, *, config: Mapping[str, Any] | None = None) -> None:
        self.name = name or "app"
        self.config = AppConfig(**(config or {}))
        self.router = Router()
        self.ctx: Any = type("Context", (), {})()
        self.draining = asyncio.Event()
        self.blueprints: dict[str, Blueprint] = {}
        self.request_middleware: list[Callable[..., Any]] = []
        self.response_middleware: list[Callable[..., Any]] = []
        self.exception_handlers = ExceptionHandlers()
        # Frozen copies for requests that matched no route (404/405...).
        self._request_chain: Middleware = ()
        self._response_chain: Middleware = ()
        self._error_scopes = (self.exception_handlers,)
        self._hooks = Hooks()
        self._authenticator: Callable[[Request], Awaitable[Any]] | None = None
        self._frozen = False
        # Publish/subscribe across workers and hosts (SPEC §9); the worker attaches its hub.
        self.channels = Channels()

    def __repr__(self) -> str:
        return f"<App {self.name!r} routes={len(self.router.routes)}>"

    # -- registration ------------------------------------------------------

    def _check_not_frozen(self, what: str) -> None:
        if self._frozen:
            raise AppFrozenError(f"cannot {what}: the app is already serving")

    _check_open = _check_not_frozen

    def route(
        self,
        uri: str,
        methods: Iterable[str] = ("GET",),
        name: str | None = None,
        host: str | None = None,
        strict_slashes: bool | None = None,
        version: int | str | None = None,
        version_prefix: str = "/v",
        stream: bool = False,
        apply: Iterable[Callable[[Any], Any]] | None = None,
        error_format: str | None = None,
        **unknown: Any,
    ) -> Callable[[F], F]:
        """Register an HTTP handler; ``stream=True`` hands it the body unbuffered.

        ``error_format`` ("text", "json" or "html") shapes the body of the
        errors this route's requests end with when no exception handler takes
        them; None keeps plain text.
        """
        check_options("App.route", unknown, ROUTE_OPTIONS, ROUTE_PARAMETERS)
        self._check_not_frozen("add a route")
        method_list = check_methods(methods)
        check_error_format(error_format)
        options = {
            "name": name,
            "host": host,
            "strict_slashes": strict_slashes,
            "version": version,
            "version_prefix": version_prefix,
            "stream": stream,
            "apply": apply,
            "error_format": error_format,
        }
        return lambda handler: self._register(handler, uri, method_list, options)

    def websocket(
        self,
        uri: str,
        host: str | None = None,
        strict_slashes: bool | None = None,
        name: str | None = None,
        version: int | str | None = None,
        version_prefix: str = "/v",
        **options: Any,
    ) -> Callable[[F], F]:
        """Register a WebSocket handler (options as in the specification §2.1)."""
        check_options("App.websocket", options, WEBSOCKET_OPTIONS, WEBSOCKET_PARAMETERS)
        self._check_not_frozen("add a route")
        check_error_format(options.get("error_format"))
        merged = {
            **WEBSOCKET_DEFAULTS,
            **options,
            "name": name,
            "host": host,
            "strict_slashes": strict_slashes,
            "version": version,
            "version_prefix": version_prefix,
        }
        return lambda handler: self._register(handler, uri, None, merged)

    def _register(
        self,
        handler: F,
        uri: str,
        methods: list[str] | None,
        options: dict[str, Any],
        blueprint: Blueprint | None = None,
    ) -> F:
        """Add one route: HTTP with ``methods``, WebSocket when they are None."""
        self._check_not_frozen("add a route")
        target: Callable[..., Any] = handler
        for decorator in options["apply"] or ():
            target = decorator(target)
        if methods is None:
            route_options = {k: v for k, v in options.items() if k not in _ADDRESSING}
        else:
            route_options = {"stream": options["stream"], "error_format": options["error_format"]}
        self.router.add(
            versioned(uri, options["version"], options["version_prefix"]),
            methods or ("GET",),
            target,
            name=self.router.name_for(options["name"], handler),
            host=options["host"],
            websocket=methods is None,
            strict_slashes=bool(options["strict_slashes"]),
            options=route_options,
            blueprint=blueprint,
        )
        return handler

    def static(
        self,
        uri: str,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        host: str | None = None,
        strict_slashes: bool | None = None,
        content_type: str | None = None,
    ) -> None:
        """Serve the files under ``directory`` at ``uri`` (or one file at ``uri``).

        Sanic's name. Files go out as ``file()`` sends them (sendfile, ETag,
        Last-Modified, 304, Range); a path that leaves the directory, by
        ``..``, an escaped ``%2e%2e`` or a symbolic link, is a 404.
        """
        self._check_not_frozen("add a route")
        template, handler = static_route(uri, directory, content_type)
        self.route(template, ("GET",), name=name, host=host, strict_slashes=strict_slashes)(handler)

    def blueprint(self, bp: Blueprint | Iterable[Blueprint]) -> None:
        for item in [bp] if isinstance(bp, Blueprint) else bp:
            if item.name in self.blueprints:
                raise ValueError(f"a blueprint named {item.name!r} is already registered")
            self.blueprints[item.name] = item
            item.register(self)

    def url_for(self, view_name: str, /, **params: Any) -> str:
        return self.router.url_for(view_name, **params)

    # -- hooks, authentication ---------------------------------------------

    def before_server_start(self, fn: F) -> F:
        return self._hooks.add("before_server_start", fn)

    def after_server_start(self, fn: F) -> F:
        return self._hooks.add("after_server_start", fn)

    def before_server_stop(self, fn: F) -> F:
        return self._hooks.add("before_server_stop", fn)

    def after_server_stop(self, fn: F) -> F:
        return self._hooks.add("after_server_stop", fn)

    def listener(self, event: str) -> Callable[[F], F]:
        self._hooks.check_event(event)
        return lambda fn: self._hooks.add(event, fn)

    def use_authentication(self, handler: Callable[[Request], Awaitable[Any]]) -> None:
        """Register ``async def handler(request) -> identity | None`` for every request."""
        self._authenticator = _ensure_async(handler)

    # -- serving (the worker's contract) -----------------------------------

    def freeze(self) -> None:
        """Resolve every handler's arguments once; no registration after this."""
        if self._frozen:
            return
        for route in self.router.routes:
            getter = _WEBSOCKET_OF if route.websocket else None
            caller = bind(route.handler, route.pattern.param_names, getter)
            route.call = guarded(route.handler, caller)
            self._scope_route(route)
        self._request_chain = tuple(self.request_middleware)
        self._response_chain = tuple(self.response_middleware)
        self._frozen = True

    def _scope_route(self, route: Route) -> None:
        """Precompute what runs around ``route``: the app's request middleware,
        then its blueprint's; the blueprint's response middleware, then the
        app's; the blueprint's exception handlers before the app's (Sanic)."""
        bp = route.blueprint
        if bp is None:
            route.request_middleware = tuple(self.request_middleware)
            route.response_middleware = tuple(self.response_middleware)
            route.error_scopes = (self.exception_handlers,)
            return
        route.request_middleware = (*self.request_middleware, *bp.request_middleware)
        route.response_middleware = (*bp.response_middleware, *self.response_middleware)
        route.error_scopes = (bp.exception_handlers, self.exception_handlers)

    async def run_hooks(self, event: str) -> None:
        if event == "before_server_stop":
            self.draining.set()
        await self._hooks.run(event, self)

    def prepare(self, head: RequestHead, conn: ConnectionInfo) -> Request:
        """The request whose head has arrived, routed: ``request.routing`` is
        its route's match, or the refusal carrying the error to answer."""
        request = Request(head, conn, self)
        try:
            route, params = self.router.match_http(head.method, head.path, request.host)
        except HTTPError as exc:
            request.routing = RouteRefusal(exc)
        else:
            request.route, request.match_info, request.routing = route, params, route.match
        return request

    def prepare_websocket(self, head: RequestHead, conn: ConnectionInfo) -> Request:
        """A WebSocket upgrade request, routed as ``prepare`` does."""
        request = Request(head, conn, self)
        try:
            route, params = self.router.match_websocket(head.path, request.host)
        except HTTPError as exc:
            request.routing = RouteRefusal(exc)
        else:
            request.route, request.match_info, request.routing = route, params, route.match
        return request

    async def handle_websocket(self, request: Request, channel: Any) -> None:
        """Run authentication, request middleware and the handler of a WebSocket.

        Never raises for app errors: before the handshake is answered they
        become an HTTP response (or, on an auto-accepting route, a 1011 close
        after accepting); after it, a 1011 close. The connection is closed
        normally (1000) when the handler returns without closing it.
        """
        routing = request.routing
        route = routing.route if isinstance(routing, RouteMatch) else None
        if route is not None:
            options = route.options
            before = route.request_middleware
        else:
            options, before = {}, self._request_chain
        ws = WebSocket(request, channel, options)
        request.websocket = ws
        try:
            if self._authenticator is not None:
                request.identity = await self._authenticator(request)
            if before:
                response = await run_request_chain(before, request)
                if response is not None:
                    channel.reject(response)
                    return
            if isinstance(routing, RouteRefusal):
                raise routing.error  # answered by _websocket_failed, as a handler error is
            await route.call(request)  # type: ignore[union-attr, misc]  # bound by freeze()
        except WebSocketClosed as exc:
            if not channel.rejected and not ws.catches(exc.code):
                error_log.warning(
                    "WebSocket %s closed with code %s (%s)", request.path, exc.code, exc.reason
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  every app error ends the connection cleanly
            await self._websocket_failed(request, ws, channel, exc, options)
            return
        await self._websocket_done(ws, channel, options)

    async def _websocket_failed(
        self,
        request: Request,
        ws: WebSocket,
        channel: Any,
        exc: Exception,
        options: Mapping[str, Any],
    ) -> None:
        if channel.rejected:
            return
        if not channel.accepted:
            if isinstance(exc, HTTPError) or not options.get("auto_accept", True):
                channel.reject(await self.render_error(request, exc))
                return
        error_log.error("unhandled exception in WebSocket %s", request.path, exc_info=exc)
        try:
            await ws.ensure_closed(CloseCode.INTERNAL_ERROR, "internal error")
        except Exception:  # noqa: BLE001  the connection cannot even be closed cleanly
            error_log.exception("closing WebSocket %s failed", request.path)
            channel.abort()

    async def _websocket_done(
        self, ws: WebSocket, channel: Any, options: Mapping[str, Any]
    ) -> None:
        if channel.rejected:
            return
        if not channel.accepted and not options.get("auto_accept", True):
            # The handler neither accepted nor rejected: refuse the upgrade.
            channel.reject(text("WebSocket connection not accepted", 403))
            return
        try:
            await ws.ensure_closed(CloseCode.NORMAL_CLOSURE)
        except WebSocketClosed:
            pass

    async def broadcast(self, websockets: Iterable[WebSocket], message: Any) -> int:
        """Send ``message`` to every open WebSocket in ``websockets``, framed once.

        ``message``: str (text frame), bytes (binary frame), dict or list
        (JSON text). Closed connections are skipped. Returns the number of
        connections written to.
        """
        return await broadcast(websockets, message)

    async def handle_http(self, request: Request) -> BaseResponse:
        """Run authentication, middleware and the handler; never raises for app errors."""
        routing = request.routing
        route = routing.route if routing.__class__ is RouteMatch else None
        if route is not None:
            before = route.request_middleware
            after = route.response_middleware
        else:
            before, after = self._request_chain, self._response_chain
        try:
            response = None
            if self._authenticator is not None:
                request.identity = await self._authenticator(request)
            if before:
                response = await run_request_chain(before, request)
            if response is None:
                if route is None:
                    raise routing.error  # type: ignore[union-attr]  # a RouteRefusal: answered below
                response = await route.call(request)  # type: ignore[misc]  # bound by freeze()
                if response.__class__ is not HTTPResponse:
                    response = to_response(response)
        except Exception as exc:  # noqa: BLE001  every app error becomes a response
            response = await self.render_error(request, exc)
        if after:
            response = await run_response_chain(after, request, response, self.render_error)
        return response

    async def render_error(self, request: Request | None, exc: BaseException) -> BaseResponse:
        """The response for an exception: a handler's (the matched route's
        blueprint first, then the app's), else the default in the route's
        ``error_format``."""
        route = request.route if request is not None else None
        if route is None:
            return await render_exception(
                self._error_scopes, request, exc, None, bool(self.config.get("DEBUG"))
            )
        return await render_exception(
            route.error_scopes or self._error_scopes,
            request,
            exc,
            route.options.get("error_format"),
            bool(self.config.get("DEBUG")),
        )
