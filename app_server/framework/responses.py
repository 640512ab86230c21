"""Response types and the helpers that build them.

Owns: ``HTTPResponse`` (a complete body), ``StreamingResponse`` (a body that
arrives in pieces), ``FileResponse``, and the helpers ``text``, ``json``,
``html``, ``raw``, ``empty``, ``redirect``, ``stream`` and ``file``. A response
knows its own header lines; the worker adds Content-Length, Date and
Connection. Common Content-Type lines are precomputed so the hot path only
joins bytes.
"""

from __future__ import annotations

import asyncio
import json as _json
import mimetypes
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

from app_server.framework.datastructures import format_set_cookie

_CONTENT_TYPE_LINES: dict[str, bytes] = {}
_FORBIDDEN_IN_HEADERS: Final = ("\r", "\n", "\x00")
_MAX_CACHED_CONTENT_TYPES: Final = 256

# One encoder for the common call: json.dumps with non-default options would
# build a new JSONEncoder on every call.
_encode_json = _json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

TEXT: Final = "text/plain; charset=utf-8"
HTML: Final = "text/html; charset=utf-8"
JSON: Final = "application/json"
OCTET: Final = "application/octet-stream"


def _content_type_line(content_type: str) -> bytes:
    line = _CONTENT_TYPE_LINES.get(content_type)
    if line is None:
        line = _header_line("Content-Type", content_type)
        if len(_CONTENT_TYPE_LINES) < _MAX_CACHED_CONTENT_TYPES:
            _CONTENT_TYPE_LINES[content_type] = line
    return line


def _header_line(name: str, value: str) -> bytes:
    for bad in _FORBIDDEN_IN_HEADERS:
        if bad in name or bad in value:
            raise ValueError(f"invalid character {bad!r} in response header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")


class BaseResponse:
    __slots__ = ("status", "headers", "content_type", "_cookies")

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.status = status
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.content_type = content_type
        self._cookies: list[str] | None = None

    def add_cookie(self, name: str, value: str, **options: Any) -> None:
        """Queue a ``Set-Cookie`` header (options as ``format_set_cookie``)."""
        if self._cookies is None:
            self._cookies = []
        self._cookies.append(format_set_cookie(name, value, **options))

    def delete_cookie(self, name: str, path: str = "/") -> None:
        self.add_cookie(name, "", max_age=0, path=path)

    def header_block(self) -> bytes:
        """This response's own header lines, each ending in CRLF."""
        ct = self.content_type
        block = _content_type_line(ct) if ct else b""
        if self.headers or self._cookies:
            block += self._extra_lines()
        return block

    def _extra_lines(self) -> bytes:
        """The app's header lines and cookies (no Content-Type)."""
        block = b""
        if self.headers:
            block = b"".join(
                [
                    _header_line(k, v)
                    for k, v in self.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding")
                ]
            )
        if self._cookies:
            block += b"".join([_header_line("Set-Cookie", c) for c in self._cookies])
        return block


class HTTPResponse(BaseResponse):
    """A response whose whole body is in memory."""

    __slots__ = ("body",)

    def __init__(
        self,
        body: bytes | str = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = TEXT,
    ) -> None:
        BaseResponse.__init__(self, status, headers, content_type)
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)

    def __repr__(self) -> str:
        return f"<HTTPResponse {self.status} {len(self.body)} bytes>"


ChunkSource = AsyncIterable[bytes | str]
StreamCallback = Callable[["StreamingResponse"], Awaitable[None]]


class StreamingResponse(BaseResponse):
    """A response whose body is produced piece by piece (sent chunked).

    ``source`` is an async iterable of ``bytes``/``str``, or a callback
    ``async def fn(response)`` that calls ``await response.write(...)``.
    """

    __slots__ = ("source", "content_length", "_writer")

    def __init__(
        self,
        source: ChunkSource | StreamCallback,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = TEXT,
        content_length: int | None = None,
    ) -> None:
        BaseResponse.__init__(self, status, headers, content_type)
        self.source = source
        self.content_length = content_length
        self._writer: Callable[[bytes], Awaitable[None]] | None = None

    async def write(self, data: bytes | str) -> None:
        """Send one piece of the body (inside a ``stream()`` callback)."""
        if self._writer is None:
            raise RuntimeError("write() is only available while the response is being sent")
        await self._writer(data.encode("utf-8") if isinstance(data, str) else data)

    async def send_body(self, writer: Callable[[bytes], Awaitable[None]]) -> None:
        """Produce the body through ``writer`` (called by the worker)."""
        source = self.source
        if isinstance(source, AsyncIterable):
            async for piece in source:
                await writer(piece.encode("utf-8") if isinstance(piece, str) else piece)
            return
        self._writer = writer
        try:
            await source(self)
        finally:
            self._writer = None


FILE_CHUNK_SIZE: Final = 256 * 1024


class FileResponse(StreamingResponse):
    """A file sent from disk with a known Content-Length.

    The worker sends it with ``os.sendfile`` on a plain socket, or in chunks
    read by a thread (TLS, the in-process test client), after answering the
    request's conditional and Range headers (``framework/static.py``); see
    ``workers/sendfile.py``. ``send_body`` reads in a thread too, so no path
    reads the file on the event loop. ``status`` is updated to what was sent
    (304, 206, 416...). The file is stat'ed here, so a missing file raises in
    the handler, and opened only when the response is sent.
    """

    __slots__ = ("path", "etag", "last_modified")

    def __init__(
        self,
        path: str | os.PathLike[str],
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        filename: str | None = None,
        *,
        stat_result: os.stat_result | None = None,
    ) -> None:
        self.path = os.fspath(path)
        size = (stat_result or os.stat(self.path)).st_size
        if content_type is None:
            guessed, _ = mimetypes.guess_type(self.path)
            content_type = guessed or OCTET
            if content_type.startswith("text/"):
                content_type += "; charset=utf-8"
        all_headers = dict(headers) if headers else {}
        if filename is not None:
            all_headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
        # Validators the app set itself replace the generated ones.
        self.etag: str | None = None
        self.last_modified: str | None = None
        for name, value in all_headers.items():
            low = name.lower()
            if low == "etag":
                self.etag = value
            elif low == "last-modified":
                self.last_modified = value
        StreamingResponse.__init__(
            self, self._chunks(), status, all_headers, content_type, content_length=size
        )

    def head_block(self, with_content_type: bool) -> bytes:
        """The header lines, without Content-Type for a body-less 304/412/416."""
        if with_content_type:
            return self.header_block()
        return self._extra_lines() if self.headers or self._cookies else b""

    async def _chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fh = await loop.run_in_executor(None, open, self.path, "rb")
        try:
            while chunk := await loop.run_in_executor(None, fh.read, FILE_CHUNK_SIZE):
                yield chunk
        finally:
            fh.close()


def text(
    body: str,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = TEXT,
) -> HTTPResponse:
    return HTTPResponse(body, status, headers, content_type)


def html(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(body, status, headers, HTML)


def json(
    body: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    dumps: Callable[..., str] | None = None,
    content_type: str = JSON,
    **kwargs: Any,
) -> HTTPResponse:
    if dumps is None:
        data = (
            _json.dumps(body, separators=(",", ":"), ensure_ascii=False, **kwargs)
            if kwargs
            else _encode_json(body)
        )
    else:
        data = dumps(body, **kwargs)
    return HTTPResponse(data, status, headers, content_type)


def raw(
    body: bytes | bytearray | memoryview,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = OCTET,
) -> HTTPResponse:
    return HTTPResponse(bytes(body), status, headers, content_type)


def empty(status: int = 204, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(b"", status, headers, None)


def redirect(to: str, status: int = 302, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    all_headers = dict(headers) if headers else {}
    all_headers["Location"] = quote(to, safe=":/%#?&=@[]!$&'()*+,;")
    return HTTPResponse(b"", status, all_headers, None)


def stream(
    source: ChunkSource | StreamCallback,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = TEXT,
) -> StreamingResponse:
    return StreamingResponse(source, status, headers, content_type)


def file(
    path: str | os.PathLike[str],
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    mime_type: str | None = None,
    filename: str | None = None,
) -> FileResponse:
    return FileResponse(path, status, headers, mime_type, filename)


def to_response(value: object) -> BaseResponse:
    """Coerce a handler's return value: a response, ``str``, ``bytes`` or ``dict``/``list``."""
    if isinstance(value, BaseResponse):
        return value
    if isinstance(value, str):
        return HTTPResponse(value, 200, None, TEXT)
    if isinstance(value, bytes | bytearray | memoryview):
        return HTTPResponse(bytes(value), 200, None, OCTET)
    if isinstance(value, dict | list):
        return json(value)
    if value is None:
        raise TypeError("the handler returned None: expected a response, str, bytes or dict")
    raise TypeError(
        f"the handler returned {type(value).__name__}: expected a response, str, bytes or dict"
    )
