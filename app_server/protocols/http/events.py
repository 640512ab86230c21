"""Data types produced by the HTTP request parser.

Owns: ``RequestHead`` (what a request line and its headers say),
``ProtocolError`` (a peer error that carries the status to answer with, so
callers never need an ``isinstance`` ladder), and the routing answer an
application gives for a head: ``RouteMatch`` or ``RouteRefusal``, the values
of the worker's ``AppHandler`` contract (``workers.app_contract``) that both
the worker and the framework read. Imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

R = TypeVar("R")


@dataclass(frozen=True, slots=True, eq=False)
class RouteMatch(Generic[R]):
    """The application has a handler for this request.

    Built once per route, not per request: identity equality (``eq=False``)
    makes it a cheap dictionary key for per-route metrics.
    """

    route: R  # the application's own route object; opaque to the worker
    label: str  # the route template: a bounded metrics label
    streams_body: bool = False  # the handler reads the body as it arrives
    matched: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, eq=False)
class RouteRefusal:
    """No handler for this request: the application answers with ``error``
    (404, 405, 426...) after its request middleware has run."""

    error: Exception
    streams_body: ClassVar[bool] = False
    matched: ClassVar[bool] = False


class ProtocolError(Exception):
    """The peer broke HTTP/1.1; answer with ``status_hint`` and close."""

    def __init__(self, status_hint: int, detail: str) -> None:
        super().__init__(detail)
        self.status_hint = status_hint
        self.detail = detail


class RequestHead:
    """A parsed request line plus headers.

    ``headers`` holds ``(name, value)`` byte pairs with lower-cased names and
    trimmed values, in arrival order. ``content_length`` is ``None`` when the
    request has no Content-Length (chunked, or no body).
    """

    __slots__ = (
        "method",
        "raw_path",
        "path",
        "query_string",
        "http_version",
        "headers",
        "keep_alive",
        "upgrade",
        "chunked",
        "content_length",
        "expect_continue",
        "host",
    )

    def __init__(
        self,
        method: str,
        raw_path: bytes,
        path: str,
        query_string: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        upgrade: bytes | None,
        chunked: bool,
        content_length: int | None,
        expect_continue: bool,
        host: str,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = path
        self.query_string = query_string
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.chunked = chunked
        self.content_length = content_length
        self.expect_continue = expect_continue
        self.host = host

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.raw_path!r} HTTP/{self.http_version}>"
