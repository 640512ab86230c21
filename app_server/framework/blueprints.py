"""Blueprints: groups of routes mounted onto an app with a prefix.

Owns: ``Blueprint``, which records registrations made with the same
decorators as ``App`` and replays them when ``app.blueprint(bp)`` mounts it,
adding ``url_prefix``, ``version`` and the ``<blueprint>.<handler>`` route name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from app_server.framework.app import App

F = TypeVar("F", bound=Callable[..., Any])
_Replay = Callable[["App", "Blueprint"], None]


class Blueprint:
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
        self._replays: list[_Replay] = []

    def _route_options(self, uri: str, options: dict[str, Any], handler: Callable[..., Any]) -> \
            tuple[str, dict[str, Any]]:
        merged = dict(options)
        if merged.get("version") is None and self.version is not None:
            merged["version"] = self.version
            merged.setdefault("version_prefix", self.version_prefix)
        if merged.get("strict_slashes") is None:
            merged["strict_slashes"] = self.strict_slashes
        if merged.get("host") is None:
            merged["host"] = self.host
        merged["name"] = f"{self.name}.{merged.get('name') or handler.__name__}"
        path = self.url_prefix + uri if uri != "/" or not self.url_prefix else self.url_prefix
        return path, merged

    # -- routes ------------------------------------------------------------

    def route(self, uri: str, methods: Iterable[str] = ("GET",), **options: Any) \
            -> Callable[[F], F]:
        def register(handler: F) -> F:
            def replay(app: App, bp: Blueprint) -> None:
                path, merged = bp._route_options(uri, options, handler)
                app.route(path, methods, **merged)(handler)

            self._replays.append(replay)
            return handler

        return register

    def add_route(self, handler: Callable[..., Any], uri: str, methods: Iterable[str] = ("GET",),
                  **options: Any) -> None:
        self.route(uri, methods, **options)(handler)

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

    def websocket(self, uri: str, **options: Any) -> Callable[[F], F]:
        def register(handler: F) -> F:
            def replay(app: App, bp: Blueprint) -> None:
                path, merged = bp._route_options(uri, options, handler)
                app.websocket(path, **merged)(handler)

            self._replays.append(replay)
            return handler

        return register

    ws = websocket

    def add_websocket_route(self, handler: Callable[..., Any], uri: str, **options: Any) -> None:
        self.websocket(uri, **options)(handler)

    def static(self, uri: str, directory: str | os.PathLike[str], **options: Any) -> None:
        """``app.static`` under this blueprint's prefix (and host)."""

        def replay(app: App, bp: Blueprint) -> None:
            path = bp.url_prefix + uri if uri != "/" or not bp.url_prefix else bp.url_prefix
            merged = dict(options)
            if merged.get("host") is None:
                merged["host"] = bp.host
            merged["name"] = f"{bp.name}.{merged.get('name') or 'static'}"
            app.static(path, directory, **merged)

        self._replays.append(replay)

    # -- middleware and errors --------------------------------------------

    def middleware(self, kind: str | Callable[..., Any] = "request") -> Any:
        if callable(kind):
            self._replays.append(lambda app, bp: app.middleware("request")(kind))
            return kind

        def register(fn: F) -> F:
            self._replays.append(lambda app, bp: app.middleware(kind)(fn))
            return fn

        return register

    def on_request(self, fn: F) -> F:
        return self.middleware("request")(fn)  # type: ignore[no-any-return]  # decorator

    def on_response(self, fn: F) -> F:
        return self.middleware("response")(fn)  # type: ignore[no-any-return]  # decorator

    def exception(self, *exceptions: type[BaseException]) -> Callable[[F], F]:
        def register(fn: F) -> F:
            self._replays.append(lambda app, bp: app.exception(*exceptions)(fn))
            return fn

        return register

    def register(self, app: App) -> None:
        for replay in self._replays:
            replay(app, self)
