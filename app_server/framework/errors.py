"""Exception handlers and the default error response.

Owns: ``ExceptionHandlers``, the exception-class → handler table of one scope
(the app, or one blueprint), looked up along the exception's MRO and cached;
``find_handler`` over a route's scopes, nearest first (a blueprint's handlers,
then the app's: Sanic's semantics); and ``error_response``, the body of an
HTTP error nobody handled, in the route's ``error_format`` (text, json or
html; text when the route names none); ``render_exception``, which picks
between them for an exception that reached the app.
"""

from __future__ import annotations

import html as html_escape
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app_server.exceptions import HTTPError, ServerError, reason_phrase
from app_server.framework.responses import BaseResponse, HTTPResponse, html, json, text, to_response

error_log = logging.getLogger("app_server.error")

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
            f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>'
            f"</head><body><h1>{title}</h1><p>{html_escape.escape(message)}</p></body></html>"
        )
        return html(page, status, headers)
    return text(message, status, headers)


async def render_exception(
    scopes: tuple[ExceptionHandlers, ...],
    request: Any,
    exc: BaseException,
    error_format: str | None,
    debug: bool,
) -> BaseResponse:
    """The response for ``exc``: the nearest scope's handler's, else the
    default error in ``error_format`` (a 500 logs the exception, and shows
    the traceback only when ``debug``)."""
    handler = find_handler(scopes, type(exc))
    if handler is not None:
        try:
            return to_response(await handler(request, exc))
        except Exception as inner:  # noqa: BLE001  a failing handler is answered like its error
            error_log.exception("error handler for %s failed", type(exc).__name__)
            exc = inner
    if isinstance(exc, HTTPError):
        return error_response(exc.status, exc.message, exc.headers, error_format)
    where = f" in {request.method} {request.path}" if request is not None else ""
    error_log.error("unhandled exception%s", where, exc_info=exc)
    if debug:
        return error_response(500, "".join(traceback.format_exception(exc)), None, error_format)
    return error_response(500, ServerError().message, None, error_format)
