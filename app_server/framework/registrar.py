"""What ``App`` and ``Blueprint`` share: the registration decorators.

Owns: the options ``route()`` and ``websocket()`` accept (an unknown keyword
is a ``TypeError`` naming it and the nearest valid one, as Python's own
message does, rather than a typo silently dropped), the method-token check,
and ``Registrar``, the base class that derives the verb shortcuts
(``get``...), ``add_route``, ``websocket_route``, ``add_websocket_route``,
middleware and exception decorators from a subclass's ``route()``,
``websocket()`` and its own middleware lists and ``ExceptionHandlers``.
What recording means (a route added now to the app, or replayed onto each
app a blueprint is mounted on) is the subclass's business.

Rule: imports only ``framework.handlers`` and ``framework.errors``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from app_server.framework.errors import ERROR_FORMATS, ExceptionHandlers
from app_server.framework.handlers import ensure_async
from app_server.status import CloseCode

F = TypeVar("F", bound=Callable[..., Any])

ROUTE_OPTIONS = frozenset(
    {
        "name",
        "host",
        "strict_slashes",
        "version",
        "version_prefix",
        "stream",
        "apply",
        "error_format",
    }
)
WEBSOCKET_DEFAULTS: dict[str, Any] = {
    "subprotocols": None,
    "apply": None,
    "error_format": None,
    "auto_accept": True,
    "value_type": None,
    "receive_type": None,
    "send_type": None,
    "caught_close_codes": (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY),
}
WEBSOCKET_OPTIONS = frozenset(
    {"name", "host", "strict_slashes", "version", "version_prefix", *WEBSOCKET_DEFAULTS}
)
# Positional parameters, offered as suggestions too ("method" → "methods").
ROUTE_PARAMETERS = ("uri", "methods")
WEBSOCKET_PARAMETERS = ("uri",)

# RFC 9110 §5.6.2: token = 1*tchar.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def check_options(
    function: str,
    given: Mapping[str, Any],
    allowed: frozenset[str],
    parameters: tuple[str, ...] = (),
) -> None:
    """Raise ``TypeError`` for keywords ``function`` does not take, as Python
    would; the nearest of ``allowed`` and its named ``parameters`` is offered."""
    unknown = sorted(set(given) - allowed)
    if not unknown:
        return
    if len(unknown) > 1:
        names = ", ".join(repr(name) for name in unknown)
        raise TypeError(f"{function}() got unexpected keyword arguments {names}")
    name = unknown[0]
    close = difflib.get_close_matches(name, sorted({*allowed, *parameters}), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise TypeError(f"{function}() got an unexpected keyword argument {name!r}{hint}")


def check_error_format(value: object) -> None:
    if value is not None and value not in ERROR_FORMATS:
        raise ValueError(
            f"error_format must be one of {', '.join(map(repr, ERROR_FORMATS))} or None, "
            f"got {value!r}"
        )


def check_methods(methods: str | Iterable[str]) -> list[str]:
    """The route's methods, upper-cased as Sanic does; any RFC 9110 token is one."""
    given = [methods] if isinstance(methods, str) else list(methods)
    if not given:
        raise ValueError("methods must name at least one HTTP method")
    for method in given:
        if not isinstance(method, str) or not method or not _TCHAR.issuperset(method):
            raise ValueError(f"invalid HTTP method {method!r}: expected an RFC 9110 token")
    return [method.upper() for method in given]


class Registrar:
    """The decorators of ``App`` and ``Blueprint``, built on ``route``/``websocket``."""

    request_middleware: list[Callable[..., Any]]
    response_middleware: list[Callable[..., Any]]
    exception_handlers: ExceptionHandlers

    def route(
        self, uri: str, methods: Iterable[str] = ("GET",), **options: Any
    ) -> Callable[[F], F]:
        raise NotImplementedError

    def websocket(self, uri: str, **options: Any) -> Callable[[F], F]:
        raise NotImplementedError

    def _check_open(self, what: str) -> None:
        """Raise when registering ``what`` can no longer take effect."""

    # -- routes ------------------------------------------------------------

    def add_route(
        self, handler: F, uri: str, methods: Iterable[str] = ("GET",), **options: Any
    ) -> F:
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

    def ws(self, uri: str, **options: Any) -> Callable[[F], F]:
        return self.websocket(uri, **options)

    def websocket_route(self, uri: str, **options: Any) -> Callable[[F], F]:
        """``websocket`` with Bocadillo's defaults (text in, text out)."""
        if options.get("value_type") is None:
            options.setdefault("receive_type", "text")
            options.setdefault("send_type", "text")
        return self.websocket(uri, **options)

    def add_websocket_route(self, handler: F, uri: str, **options: Any) -> F:
        return self.websocket(uri, **options)(handler)

    # -- middleware and exception handlers ---------------------------------

    def middleware(self, kind: str | Callable[..., Any] = "request") -> Any:
        if callable(kind):
            self._check_open("add middleware")
            self.request_middleware.append(ensure_async(kind))
            return kind
        if kind not in ("request", "response"):
            raise ValueError(f"middleware kind must be 'request' or 'response', got {kind!r}")
        chain = self.request_middleware if kind == "request" else self.response_middleware

        def register(fn: F) -> F:
            self._check_open("add middleware")
            chain.append(ensure_async(fn))
            return fn

        return register

    def on_request(self, fn: F) -> F:
        return self.middleware("request")(fn)  # type: ignore[no-any-return]  # decorator

    def on_response(self, fn: F) -> F:
        return self.middleware("response")(fn)  # type: ignore[no-any-return]  # decorator

    def exception(self, *exceptions: type[BaseException]) -> Callable[[F], F]:
        if not exceptions:
            raise TypeError("exception() needs at least one exception class")

        def register(fn: F) -> F:
            self.exception_handlers.add(exceptions, ensure_async(fn))
            return fn

        return register
