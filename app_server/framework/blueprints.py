"""Blueprints: groups of routes mounted onto an app with a prefix.

Owns: ``Blueprint``, which takes the same decorators as ``App`` (through
``Registrar``), checks their options when they are written, and adds its
routes to an app when ``app.blueprint(bp)`` mounts it, with ``url_prefix``,
``version`` and the ``<blueprint>.<handler>`` route name. Its middleware and
exception handlers belong to its own routes only (Sanic's semantics): the app
reads them from each route's ``blueprint`` when it freezes, after the app's
request middleware and before the app's response middleware and exception
handlers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from app_server.framework.errors import ExceptionHandlers
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

F = TypeVar("F", bound=Callable[..., Any])


class MountTarget(Protocol):
    """What a blueprint needs from the app it is mounted on.

    Owned here so that ``blueprints`` does not import ``app`` (which imports
    ``blueprints``): ``framework.app.App`` conforms by structure.
    """

    def _check_not_frozen(self, what: str) -> None: ...

    def _register(
        self,
        handler: F,
        uri: str,
        methods: list[str] | None,
        options: dict[str, Any],
        blueprint: Blueprint | None = None,
    ) -> F: ...

    def static(
        self,
        uri: str,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        host: str | None = None,
        strict_slashes: bool | None = None,
        content_type: str | None = None,
    ) -> None: ...


_Mount = Callable[[MountTarget], None]
_ROUTE_DEFAULTS: dict[str, Any] = {
    "name": None,
    "host": None,
    "strict_slashes": None,
    "version": None,
    "version_prefix": "/v",
    "stream": False,
    "apply": None,
    "error_format": None,
}
_WEBSOCKET_ROUTE_DEFAULTS: dict[str, Any] = {
    "name": None,
    "host": None,
    "strict_slashes": None,
    "version": None,
    "version_prefix": "/v",
    **WEBSOCKET_DEFAULTS,
}


class Blueprint(Registrar):
    def __init__(
        self,
        name: str,
        url_prefix: str | None = None,
        version: int | str | None = None,
        strict_slashes: bool | None = None,
        version_prefix: str = "/v",
        host: str | None = None,
    ) -> None:
        if not name.isidentifier():
            raise ValueError(f"blueprint name {name!r} must be a Python identifier")
        self.name = name
        self.url_prefix = (url_prefix or "").rstrip("/")
        if self.url_prefix and not self.url_prefix.startswith("/"):
            self.url_prefix = "/" + self.url_prefix
        self.version = version
        self.version_prefix = version_prefix
        self.strict_slashes = strict_slashes
        self.host = host
        self.request_middleware: list[Callable[..., Any]] = []
        self.response_middleware: list[Callable[..., Any]] = []
        self.exception_handlers = ExceptionHandlers()
        self._mounts: list[_Mount] = []
        self._apps: list[MountTarget] = []

    def __repr__(self) -> str:
        return f"<Blueprint {self.name!r} url_prefix={self.url_prefix!r}>"

    def _check_open(self, what: str) -> None:
        # Middleware is read when an app freezes: after that it would be ignored.
        for app in self._apps:
            app._check_not_frozen(f"{what} to blueprint {self.name!r}")

    def _placed(
        self,
        uri: str,
        given: dict[str, Any],
        defaults: dict[str, Any],
        handler: Callable[..., Any],
    ) -> tuple[str, dict[str, Any]]:
        """The route's path and options: what the route gave, else this
        blueprint's version/strict_slashes/host, else the defaults."""
        merged = dict(given)
        if merged.get("version") is None and self.version is not None:
            merged["version"] = self.version
            merged.setdefault("version_prefix", self.version_prefix)
        if merged.get("strict_slashes") is None:
            merged["strict_slashes"] = self.strict_slashes
        if merged.get("host") is None:
            merged["host"] = self.host
        merged["name"] = f"{self.name}.{merged.get('name') or handler.__name__}"
        if not uri.startswith("/"):
            uri = "/" + uri
        path = self.url_prefix + uri if uri != "/" or not self.url_prefix else self.url_prefix
        return path, {**defaults, **merged}

    def _record(
        self,
        uri: str,
        methods: list[str] | None,
        given: dict[str, Any],
        defaults: dict[str, Any],
    ) -> Callable[[F], F]:
        def register(handler: F) -> F:
            def mount(app: MountTarget) -> None:
                path, options = self._placed(uri, given, defaults, handler)
                app._register(handler, path, methods, options, blueprint=self)

            self._mounts.append(mount)
            for app in self._apps:  # already mounted: the route joins those apps too
                mount(app)
            return handler

        return register

    # -- routes ------------------------------------------------------------

    def route(
        self, uri: str, methods: Iterable[str] = ("GET",), **options: Any
    ) -> Callable[[F], F]:
        check_options("Blueprint.route", options, ROUTE_OPTIONS, ROUTE_PARAMETERS)
        check_error_format(options.get("error_format"))
        return self._record(uri, check_methods(methods), options, _ROUTE_DEFAULTS)

    def websocket(self, uri: str, **options: Any) -> Callable[[F], F]:
        check_options("Blueprint.websocket", options, WEBSOCKET_OPTIONS, WEBSOCKET_PARAMETERS)
        check_error_format(options.get("error_format"))
        return self._record(uri, None, options, _WEBSOCKET_ROUTE_DEFAULTS)

    def static(self, uri: str, directory: str | os.PathLike[str], **options: Any) -> None:
        """``app.static`` under this blueprint's prefix (and host)."""

        def mount(app: MountTarget) -> None:
            path = self.url_prefix + uri if uri != "/" or not self.url_prefix else self.url_prefix
            merged = dict(options)
            if merged.get("host") is None:
                merged["host"] = self.host
            merged["name"] = f"{self.name}.{merged.get('name') or 'static'}"
            app.static(path, directory, **merged)

        self._mounts.append(mount)
        for app in self._apps:  # already mounted: the route joins those apps too
            mount(app)

    def register(self, app: MountTarget) -> None:
        """Add this blueprint's routes to ``app`` (``app.blueprint(bp)`` calls it)."""
        for mount in self._mounts:
            mount(app)
        self._apps.append(app)
