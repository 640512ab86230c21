"""The route table.

Owns: finding the route for a method, path and host, and ``url_for``.
Static paths are one dict lookup; dynamic routes are grouped by their first
path segment so a lookup scans only the routes that could match. The result
is either a ``(route, params)`` pair or an HTTP error: 404 when nothing has
the path, 405 (with ``Allow``) when the path exists for other methods, 426
when only a WebSocket route has it, and 501 when the method is one no route
registered and RFC 9110 does not define (RFC 9110 §15.6.2: the server does
not support it for any resource), whatever the path. HEAD is served by a GET
route. Methods are case-sensitive tokens (RFC 9110 §9.1): ``get`` is not GET.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlencode

from app_server.exceptions import HTTPError, MethodNotAllowed, NotFound, UpgradeRequired
from app_server.framework.routing.patterns import CompiledPattern, compile_template
from app_server.protocols.http.events import RouteMatch

_NO_PARAMS: dict[str, Any] = {}
# The methods RFC 9110 §9 (and RFC 5789, PATCH) define: a request for one of
# these that no route takes is 404/405, never 501.
STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class Route:
    """One registered handler with everything decided at registration."""

    __slots__ = (
        "template",
        "pattern",
        "methods",
        "handler",
        "name",
        "host",
        "websocket",
        "strict_slashes",
        "options",
        "blueprint",
        "call",
        "request_middleware",
        "response_middleware",
        "error_scopes",
        "match",
    )

    def __init__(
        self,
        pattern: CompiledPattern,
        methods: frozenset[str],
        handler: Callable[..., Any],
        name: str,
        host: str | None,
        websocket: bool,
        strict_slashes: bool,
        options: dict[str, Any],
        blueprint: Any = None,
    ) -> None:
        self.pattern = pattern
        self.template = pattern.template
        self.methods = methods
        self.handler = handler
        self.name = name
        self.host = host
        self.websocket = websocket
        self.strict_slashes = strict_slashes
        self.options = options
        self.blueprint = blueprint  # the Blueprint that registered it, if any
        # Set by the app when it freezes: the bound caller (see handlers.py),
        # the middleware that runs around it (the app's and its blueprint's,
        # in order) and the exception-handler scopes to search, nearest first.
        self.call: Callable[..., Any] | None = None
        self.request_middleware: tuple[Callable[..., Any], ...] = ()
        self.response_middleware: tuple[Callable[..., Any], ...] = ()
        self.error_scopes: tuple[Any, ...] = ()
        # What the app answers the worker for a request that matched this
        # route: built once, so matching allocates nothing for it.
        self.match = RouteMatch(self, self.template, bool(options.get("stream")))

    @property
    def uri(self) -> str:
        return self.template

    def __repr__(self) -> str:
        kind = "websocket" if self.websocket else ",".join(sorted(self.methods))
        return f"<Route {kind} {self.template} name={self.name!r}>"


class _Table:
    """Routes of one host (or of any host) and one kind (HTTP or WebSocket)."""

    __slots__ = ("static", "dynamic", "dynamic_any")

    def __init__(self) -> None:
        self.static: dict[str, dict[str, Route]] = {}
        self.dynamic: dict[str, list[tuple[CompiledPattern, dict[str, Route]]]] = {}
        self.dynamic_any: list[tuple[CompiledPattern, dict[str, Route]]] = []

    def add(self, route: Route, key_methods: Iterable[str]) -> None:
        pattern = route.pattern
        if pattern.is_static:
            for path in _static_keys(pattern.template, route.strict_slashes):
                by_method = self.static.setdefault(path, {})
                _put(by_method, key_methods, route)
            return
        bucket = self._bucket_for(pattern.template)
        for existing, by_method in bucket:
            if existing.template == pattern.template:
                _put(by_method, key_methods, route)
                return
        by_method = {}
        _put(by_method, key_methods, route)
        bucket.append((pattern, by_method))

    def _bucket_for(self, template: str) -> list[tuple[CompiledPattern, dict[str, Route]]]:
        first = _first_segment(template)
        if "{" in first or "<" in first:
            return self.dynamic_any
        return self.dynamic.setdefault(first, [])

    def lookup(self, path: str) -> tuple[dict[str, Route], dict[str, Any]] | None:
        by_method = self.static.get(path)
        if by_method is not None:
            return by_method, _NO_PARAMS
        bucket = self.dynamic.get(_first_segment(path))
        if bucket:
            found = _scan(bucket, path)
            if found is not None:
                return found
        if self.dynamic_any:
            return _scan(self.dynamic_any, path)
        return None


def _scan(
    bucket: list[tuple[CompiledPattern, dict[str, Route]]], path: str
) -> tuple[dict[str, Route], dict[str, Any]] | None:
    for pattern, by_method in bucket:
        params = pattern.match(path)
        if params is not None:
            return by_method, params
    return None


def _put(by_method: dict[str, Route], methods: Iterable[str], route: Route) -> None:
    for method in methods:
        if method in by_method:
            raise ValueError(
                f"route {route.template!r} already has a handler for {method}: "
                f"{by_method[method].name!r}"
            )
        by_method[method] = route


def _static_keys(template: str, strict_slashes: bool) -> tuple[str, ...]:
    if strict_slashes or template == "/":
        return (template,)
    bare = template.rstrip("/")
    return (bare, bare + "/")


def _first_segment(path: str) -> str:
    end = path.find("/", 1)
    return path[1:] if end < 0 else path[1:end]


_WS_KEY = ("GET",)


class Router:
    def __init__(self) -> None:
        self._http: dict[str | None, _Table] = {None: _Table()}
        self._ws: dict[str | None, _Table] = {None: _Table()}
        self._has_hosts = False
        self.routes: list[Route] = []
        self.names: dict[str, Route] = {}
        self._known_methods: set[str] = set(STANDARD_METHODS)

    def add(
        self,
        template: str,
        methods: Iterable[str],
        handler: Callable[..., Any],
        *,
        name: str,
        host: str | None = None,
        websocket: bool = False,
        strict_slashes: bool = False,
        options: dict[str, Any] | None = None,
        blueprint: Any = None,
    ) -> Route:
        pattern = compile_template(template, strict_slashes=strict_slashes)
        method_set = frozenset(methods)
        route = Route(
            pattern,
            method_set,
            handler,
            name,
            host,
            websocket,
            strict_slashes,
            dict(options or {}),
            blueprint,
        )
        if name in self.names:
            raise ValueError(f"a route named {name!r} already exists ({self.names[name]!r})")
        hosts: list[str | None] = (
            [host.lower()]
            if isinstance(host, str)
            else [h.lower() for h in host]
            if host
            else [None]
        )
        tables = self._ws if websocket else self._http
        for h in hosts:
            if h is not None:
                self._has_hosts = True
            tables.setdefault(h, _Table()).add(route, _WS_KEY if websocket else method_set)
        self.routes.append(route)
        self.names[name] = route
        if not websocket:
            self._known_methods.update(method_set)
        return route

    def _tables(self, tables: dict[str | None, _Table], host: str) -> list[_Table]:
        if not self._has_hosts:
            return [tables[None]]
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        specific = tables.get(bare.lower())
        return [specific, tables[None]] if specific is not None else [tables[None]]

    def match_http(self, method: str, path: str, host: str) -> tuple[Route, dict[str, Any]]:
        """The route for an HTTP request, or raise NotFound/MethodNotAllowed/UpgradeRequired."""
        for table in self._tables(self._http, host):
            found = table.lookup(path)
            if found is None:
                continue
            by_method, params = found
            route = by_method.get(method)
            if route is None and method == "HEAD":
                route = by_method.get("GET")
            if route is None:
                self._check_known(method)
                allowed = set(by_method)
                if "GET" in allowed:
                    allowed.add("HEAD")
                raise MethodNotAllowed(f"Method {method} not allowed for {path}", allowed=allowed)
            return route, params
        self._check_known(method)
        for table in self._tables(self._ws, host):
            if table.lookup(path) is not None:
                raise UpgradeRequired("This route only accepts WebSocket connections")
        raise NotFound(f"Requested URL {path} not found")

    def _check_known(self, method: str) -> None:
        # Only on the way to an error, so a matched request pays nothing.
        if method not in self._known_methods:
            raise HTTPError(f"Method {method} not implemented", status=501)

    def match_websocket(self, path: str, host: str) -> tuple[Route, dict[str, Any]]:
        for table in self._tables(self._ws, host):
            found = table.lookup(path)
            if found is not None:
                by_method, params = found
                return by_method["GET"], params
        raise NotFound(f"No WebSocket route for {path}")

    def name_for(self, name: str | None, handler: Callable[..., Any]) -> str:
        """``name``, else the handler's name made unique (``_2``, ``_3``...)."""
        if name is not None:
            return name
        base = getattr(handler, "__name__", "handler")
        candidate, n = base, 1
        while candidate in self.names:
            n += 1
            candidate = f"{base}_{n}"
        return candidate

    def url_for(self, view_name: str, /, **params: Any) -> str:
        """The path of the named route; leftover parameters become the query."""
        name = view_name
        route = self.names.get(name)
        if route is None:
            known = ", ".join(sorted(self.names)) or "none"
            raise KeyError(f"no route named {name!r}; known routes: {known}")
        pattern = route.pattern
        values = {}
        for pname in pattern.param_names:
            if pname not in params:
                raise KeyError(f"url_for({name!r}) needs the parameter {pname!r}")
            values[pname] = quote(str(params.pop(pname)), safe="")
        path = pattern.format.format(**values) if pattern.param_names else pattern.format
        query = {k: v for k, v in params.items() if not k.startswith("_")}
        return path + ("?" + urlencode(query, doseq=True) if query else "")


def versioned(uri: str, version: int | str | None, prefix: str) -> str:
    """``uri`` under its version prefix (``/v2/items``); ``uri`` with a
    leading slash when there is no version."""
    if not uri.startswith("/"):
        uri = "/" + uri
    if version is None:
        return uri
    return f"{prefix.rstrip('/')}{version}{uri if uri != '/' else ''}" or "/"
