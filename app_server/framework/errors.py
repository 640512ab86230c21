"""Exception handlers and the default error response.

Owns: ``ExceptionHandlers``, the exception-class → handler table of one scope
(the app, or one blueprint), looked up along the exception's MRO and cached;
``find_handler`` over a route's scopes, nearest first (a blueprint's handlers,
then the app's: Sanic's semantics); and ``error_response``, the body of an
HTTP error nobody handled, in the route's ``error_format`` (text, json or
html; text when the route names none).
"""

from __future__ import annotations

import html as html_escape
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app_server.exceptions import reason_phrase
from app_server.framework.responses import HTTPResponse, html, json, text

Handler = Callable[..., Any]
ERROR_FORMATS = ("text", "json", "html")


class ExceptionHandlers:
    """The exception handlers registered on one app or blueprint."""

    __slots__ = ("_handlers", "_cache")

    def __init__(self) -> None:
        self._handlers: dict[type[BaseException], Handler] = {}
        self._cache: dict[type[BaseException], Handler | None] = {}

    def add(self, exception_types: Iterable[type[BaseException]], handler: Handler) -> None:
        for exc_type in exception_types:
            self._handlers[exc_type] = handler
        self._cache.clear()

    def find(self, exc_type: type[BaseException]) -> Handler | None:
        """The handler of the nearest class in ``exc_type``'s MRO, if any."""
        cache = self._cache
        if exc_type in cache:
            return cache[exc_type]
        found = None
        for klass in exc_type.__mro__:
            found = self._handlers.get(klass)
            if found is not None:
                break
        cache[exc_type] = found
        return found

    def __bool__(self) -> bool:
        return bool(self._handlers)


def find_handler(
    scopes: tuple[ExceptionHandlers, ...], exc_type: type[BaseException]
) -> Handler | None:
    """The first scope's handler for ``exc_type`` (its whole MRO), else the next's."""
    for scope in scopes:
        found = scope.find(exc_type)
        if found is not None:
            return found
    return None


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None, error_format: str | None
) -> HTTPResponse:
    """The response for an error no handler took, in ``error_format``."""
    if error_format == "json":
        body = {"status": status, "description": reason_phrase(status), "message": message}
        return json(body, status, headers=headers)
    if error_format == "html":
        title = html_escape.escape(f"{status} {reason_phrase(status)}")
        page = (
            f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"</head><body><h1>{title}</h1><p>{html_escape.escape(message)}</p></body></html>"
        )
        return html(page, status, headers)
    return text(message, status, headers)
