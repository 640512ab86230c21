"""The application object.

Owns: ``App``, which *composes* a router, middleware chains, lifecycle hooks,
error handlers, authentication and ``AppConfig``; its decorators only record
into those parts. It implements what the worker needs from an application
(``freeze``, ``prepare``, ``handle_http``, ``render_error``, ``startup``,
``shutdown``) and freezes itself at startup: from then on every handler's
arguments are resolved by callers built once, and no route can be added.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from app_server.exceptions import HTTPError, ServerError, WebSocketClosed
from app_server.framework.auth import requirement_of
from app_server.framework.blueprints import Blueprint
from app_server.framework.config import AppConfig
from app_server.framework.handlers import bind
from app_server.framework.handlers import ensure_async as _ensure_async
from app_server.framework.request import Request
from app_server.framework.responses import BaseResponse, HTTPResponse, text, to_response
from app_server.framework.routing.router import Route, Router
from app_server.framework.static import static_route
from app_server.framework.websocket import WebSocket, broadcast

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[..., Awaitable[None]]
error_log = logging.getLogger("app_server.error")

HOOK_EVENTS = (
    "before_server_start",
    "after_server_start",
    "before_server_stop",
    "after_server_stop",
)
_WS_DEFAULTS: dict[str, Any] = {
    "subprotocols": None,
    "apply": None,
    "error_format": None,
    "auto_accept": True,
    "value_type": None,
    "receive_type": None,
    "send_type": None,
    "caught_close_codes": (1000, 1001),
}


class AppFrozenError(RuntimeError):
    pass


class App:
    def __init__(self, name: str | None = None, *, config: Mapping[str, Any] | None = None) -> None:
        self.name = name or "app"
        self.config = AppConfig(**(config or {}))
        self.router = Router()
        self.ctx: Any = type("Context", (), {})()
        self.draining = asyncio.Event()
        self.blueprints: dict[str, Blueprint] = {}
        self._request_middleware: list[Callable[..., Any]] = []
        self._response_middleware: list[Callable[..., Any]] = []
        self._hooks: dict[str, list[Hook]] = {event: [] for event in HOOK_EVENTS}
        self._error_handlers: dict[type[BaseException], Callable[..., Any]] = {}
        self._error_handler_cache: dict[type[BaseException], Callable[..., Any] | None] = {}
        self._authenticator: Callable[[Request], Awaitable[Any]] | None = None
        self._frozen = False

    def __repr__(self) -> str:
        return f"<App {self.name!r} routes={len(self.router.routes)}>"

    # -- registration ------------------------------------------------------

    def _check_not_frozen(self, what: str) -> None:
        if self._frozen:
            raise AppFrozenError(f"cannot {what}: the app is already serving")

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
        **_ignored: Any,
    ) -> Callable[[F], F]:
        """Register an HTTP handler; ``stream=True`` hands it the body unbuffered."""
        self._check_not_frozen("add a route")
        given = [methods] if isinstance(methods, str) else methods
        method_list = [_check_method(m) for m in given]

        def register(handler: F) -> F:
            target: Callable[..., Any] = handler
            for decorator in apply or ():
                target = decorator(target)
            self.router.add(
                _versioned(uri, version, version_prefix),
                method_list,
                target,
                name=self._route_name(name, handler),
                host=host,
                strict_slashes=bool(strict_slashes),
                options={"stream": stream},
            )
            return handler

        return register

    def _route_name(self, name: str | None, handler: Callable[..., Any]) -> str:
        if name is not None:
            return name
        base = getattr(handler, "__name__", "handler")
        candidate, n = base, 1
        while candidate in self.router.names:
            n += 1
            candidate = f"{base}_{n}"
        return candidate

    def add_route(self, handler: Callable[..., Any], uri: str, methods: Iterable[str] = ("GET",),
                  **options: Any) -> Callable[..., Any]:
        return self.route(uri, methods, **options)(handler)

    def get(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.route(uri, ("GET",), **options)

    def post(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.route(uri, ("POST",), **options)

    def put(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.route(uri, ("PUT",), **options)

    def patch(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.route(uri, ("PATCH",), **options)

    def delete(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.route(uri, ("DELETE",), **options)

    def head(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.route(uri, ("HEAD",), **options)

    def options(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.route(uri, ("OPTIONS",), **options)

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
        self._check_not_frozen("add a route")
        unknown = set(options) - set(_WS_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown WebSocket route option(s): {', '.join(sorted(unknown))}")
        merged = {**_WS_DEFAULTS, **options}

        def register(handler: F) -> F:
            target: Callable[..., Any] = handler
            for decorator in merged["apply"] or ():
                target = decorator(target)
            self.router.add(
                _versioned(uri, version, version_prefix),
                ("GET",),
                target,
                name=self._route_name(name, handler),
                host=host,
                websocket=True,
                strict_slashes=bool(strict_slashes),
                options=merged,
            )
            return handler

        return register

    ws = websocket

    def websocket_route(self, uri: str, **options: Any) -> Callable[[F], F]:
        """``websocket`` with Bocadillo's defaults (text in, text out)."""
        if options.get("value_type") is None:
            options.setdefault("receive_type", "text")
            options.setdefault("send_type", "text")
        return self.websocket(uri, **options)

    def add_websocket_route(self, handler: Callable[..., Any], uri: str, **options: Any) -> None:
        self.websocket(uri, **options)(handler)

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
        self.route(template, ("GET",), name=name, host=host, strict_slashes=strict_slashes)(
            handler
        )

    def blueprint(self, bp: Blueprint | Iterable[Blueprint]) -> None:
        for item in [bp] if isinstance(bp, Blueprint) else bp:
            if item.name in self.blueprints:
                raise ValueError(f"a blueprint named {item.name!r} is already registered")
            self.blueprints[item.name] = item
            item.register(self)

    def url_for(self, view_name: str, /, **params: Any) -> str:
        return self.router.url_for(view_name, **params)

    # -- middleware, hooks, errors, authentication -------------------------

    def middleware(self, kind: str | Callable[..., Any] = "request") -> Any:
        if callable(kind):
            self._request_middleware.append(_ensure_async(kind))
            return kind
        if kind not in ("request", "response"):
            raise ValueError(f"middleware kind must be 'request' or 'response', got {kind!r}")
        chain = self._request_middleware if kind == "request" else self._response_middleware

        def register(fn: F) -> F:
            self._check_not_frozen("add middleware")
            chain.append(_ensure_async(fn))
            return fn

        return register

    def on_request(self, fn: F) -> F:
        return self.middleware("request")(fn)  # type: ignore[no-any-return]  # decorator

    def on_response(self, fn: F) -> F:
        return self.middleware("response")(fn)  # type: ignore[no-any-return]  # decorator

    def _hook(self, event: str, fn: F) -> F:
        count = len(inspect.signature(fn).parameters)
        wrapped = _ensure_async(fn)
        loop_arg = count >= 2
        self._hooks[event].append(
            (lambda app: wrapped(app, asyncio.get_running_loop())) if loop_arg else wrapped
        )
        return fn

    def before_server_start(self, fn: F) -> F:
        return self._hook("before_server_start", fn)

    def after_server_start(self, fn: F) -> F:
        return self._hook("after_server_start", fn)

    def before_server_stop(self, fn: F) -> F:
        return self._hook("before_server_stop", fn)

    def after_server_stop(self, fn: F) -> F:
        return self._hook("after_server_stop", fn)

    def listener(self, event: str) -> Callable[[F], F]:
        if event not in self._hooks:
            raise ValueError(f"unknown listener event {event!r}: expected one of {HOOK_EVENTS}")
        return lambda fn: self._hook(event, fn)

    def exception(self, *exceptions: type[BaseException]) -> Callable[[F], F]:
        if not exceptions:
            raise TypeError("exception() needs at least one exception class")

        def register(fn: F) -> F:
            for exc_type in exceptions:
                self._error_handlers[exc_type] = _ensure_async(fn)
            self._error_handler_cache.clear()
            return fn

        return register

    def use_authentication(self, handler: Callable[[Request], Awaitable[Any]]) -> None:
        """Register ``async def handler(request) -> identity | None`` for every request."""
        self._authenticator = _ensure_async(handler)

    # -- serving (the worker's contract) -----------------------------------

    def freeze(self) -> None:
        """Resolve every handler's arguments once; no registration after this."""
        if self._frozen:
            return
        for route in self.router.routes:
            if route.websocket:
                caller = bind(route.handler, route.pattern.param_names, _websocket_of)
            else:
                caller = bind(route.handler, route.pattern.param_names)
            route.call = _with_auth(route, caller)
        self._frozen = True

    async def run_hooks(self, event: str) -> None:
        if event == "before_server_stop":
            self.draining.set()
        hooks = self._hooks[event]
        if event in ("before_server_stop", "after_server_stop"):
            hooks = list(reversed(hooks))
        for hook in hooks:
            await hook(self)

    def prepare(self, request: Request) -> Route | HTTPError:
        """Route a request whose head has arrived: its route, or the error to answer."""
        try:
            route, params = self.router.match_http(request.method, request.path, request.host)
        except HTTPError as exc:
            return exc
        request.route = route
        request.match_info = params
        return route

    def prepare_websocket(self, request: Request) -> Route | HTTPError:
        """Route a WebSocket upgrade request: its route, or the error to answer."""
        try:
            route, params = self.router.match_websocket(request.path, request.host)
        except HTTPError as exc:
            return exc
        request.route = route
        request.match_info = params
        return route

    async def handle_websocket(
        self, request: Request, routing: Route | HTTPError, channel: Any
    ) -> None:
        """Run authentication, request middleware and the handler of a WebSocket.

        Never raises for app errors: before the handshake is answered they
        become an HTTP response (or, on an auto-accepting route, a 1011 close
        after accepting); after it, a 1011 close. The connection is closed
        normally (1000) when the handler returns without closing it.
        """
        options = routing.options if routing.__class__ is Route else {}  # type: ignore[union-attr]
        ws = WebSocket(request, channel, options)
        request.websocket = ws
        try:
            if self._authenticator is not None:
                request.identity = await self._authenticator(request)
            if self._request_middleware:
                response = await self._run_request_middleware(request)
                if response is not None:
                    channel.reject(response)
                    return
            if routing.__class__ is not Route:
                raise routing  # type: ignore[misc]  # an HTTPError from prepare_websocket()
            await routing.call(request)  # type: ignore[union-attr]
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
        self, request: Request, ws: WebSocket, channel: Any, exc: Exception,
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
            await ws.ensure_closed(1011, "internal error")
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
            await ws.ensure_closed(1000)
        except WebSocketClosed:
            pass

    async def broadcast(self, websockets: Iterable[WebSocket], message: Any) -> int:
        """Send ``message`` to every open WebSocket in ``websockets``, framed once.

        ``message``: str (text frame), bytes (binary frame), dict or list
        (JSON text). Closed connections are skipped. Returns the number of
        connections written to.
        """
        return await broadcast(websockets, message)

    async def handle_http(self, request: Request, routing: Route | HTTPError) -> BaseResponse:
        """Run authentication, middleware and the handler; never raises for app errors."""
        try:
            response = None
            if self._authenticator is not None:
                request.identity = await self._authenticator(request)
            if self._request_middleware:
                response = await self._run_request_middleware(request)
            if response is None:
                if routing.__class__ is not Route:
                    raise routing  # type: ignore[misc]  # an HTTPError from prepare()
                response = await routing.call(request)  # type: ignore[union-attr, misc]
                if response.__class__ is not HTTPResponse:
                    response = to_response(response)
        except Exception as exc:  # noqa: BLE001  every app error becomes a response
            response = await self.render_error(request, exc)
        if self._response_middleware:
            response = await self._run_response_middleware(request, response)
        return response

    async def _run_request_middleware(self, request: Request) -> BaseResponse | None:
        for mw in self._request_middleware:
            result = await mw(request)
            if result is not None:
                return to_response(result)
        return None

    async def _run_response_middleware(
        self, request: Request, response: BaseResponse
    ) -> BaseResponse:
        for mw in self._response_middleware:
            try:
                result = await mw(request, response)
            except Exception as exc:  # noqa: BLE001
                return await self.render_error(request, exc)
            if result is not None:
                response = to_response(result)
        return response

    def _find_error_handler(self, exc_type: type[BaseException]) -> Callable[..., Any] | None:
        cache = self._error_handler_cache
        if exc_type in cache:
            return cache[exc_type]
        found = None
        for klass in exc_type.__mro__:
            found = self._error_handlers.get(klass)
            if found is not None:
                break
        cache[exc_type] = found
        return found

    async def render_error(self, request: Request | None, exc: BaseException) -> BaseResponse:
        """The response for an exception: a registered handler's, else the default."""
        handler = self._find_error_handler(type(exc))
        if handler is not None:
            try:
                return to_response(await handler(request, exc))
            except Exception as inner:  # noqa: BLE001
                error_log.exception("error handler for %s failed", type(exc).__name__)
                exc = inner
        if isinstance(exc, HTTPError):
            return text(exc.message, exc.status, exc.headers)
        where = f" in {request.method} {request.path}" if request is not None else ""
        error_log.error("unhandled exception%s", where, exc_info=exc)
        if self.config.get("DEBUG"):
            body = "".join(traceback.format_exception(exc))
            return text(body, 500)
        return text(ServerError().message, 500)

    # -- running -----------------------------------------------------------

    def run(
        self,
        host: str | None = None,
        port: int | None = None,
        workers: int | str | None = None,
        **options: Any,
    ) -> int:
        """Serve this app with the same server as the ``app-server`` command.

        Arguments left out fall back to the environment, the config file and
        the defaults (127.0.0.1:8000, one worker), as on the command line.
        """
        from app_server.cli import run_app

        return run_app(self, host=host, port=port, workers=workers, **options)


def _websocket_of(request: Request) -> WebSocket:
    return request.websocket  # type: ignore[no-any-return]


def _versioned(uri: str, version: int | str | None, prefix: str) -> str:
    if not uri.startswith("/"):
        uri = "/" + uri
    if version is None:
        return uri
    return f"{prefix.rstrip('/')}{version}{uri if uri != '/' else ''}" or "/"


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _check_method(method: str) -> str:
    if not method or not _TOKEN.issuperset(method):
        raise ValueError(f"invalid HTTP method {method!r}: expected an RFC 9110 token")
    return method.upper()


def _with_auth(
    route: Route, call: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    requirement = requirement_of(route.handler)
    if requirement is None:
        return call

    def guarded(request: Any) -> Awaitable[Any]:
        requirement.check(request.identity)
        return call(request)

    return guarded
