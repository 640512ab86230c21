"""Response framing: status lines, automatic headers, chunked encoding.

Owns: the bytes of a response head and body as HTTP/1.1 frames them, with
everything precomputed that can be (status lines, common header lines), and
the rules of RFC 9110/9112 about which responses carry no body (HEAD, 1xx,
204, 304). No I/O; the Date value is passed in by the caller's clock.
"""

from __future__ import annotations

from email.utils import formatdate
from http import HTTPStatus
from typing import Final

STATUS_LINES: Final[dict[int, bytes]] = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}
CONTINUE_RESPONSE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
CONNECTION_CLOSE: Final = b"Connection: close\r\n"
CONNECTION_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"
CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
_NO_BODY_STATUSES: Final = frozenset({204, 304})


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ValueError(f"invalid HTTP status {status}: expected 100..999")
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def date_line(now: float) -> bytes:
    """The ``Date`` header line for the given Unix time (IMF-fixdate)."""
    return b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"


def status_has_body(status: int) -> bool:
    return status >= 200 and status not in _NO_BODY_STATUSES


def encode_response(
    status: int,
    header_block: bytes,
    body: bytes,
    date: bytes,
    connection: bytes,
    head_only: bool,
) -> bytes:
    """One complete response with a known body length, ready to write.

    ``header_block`` holds the response's own header lines (each ending in
    CRLF); ``connection`` is ``b""``, ``CONNECTION_CLOSE`` or
    ``CONNECTION_KEEP_ALIVE``.
    """
    if status_has_body(status):
        length = b"Content-Length: %d\r\n" % len(body)
        if head_only:
            body = b""
    else:
        length = b""
        body = b""
    return b"".join((status_line(status), header_block, length, date, connection, b"\r\n", body))


def encode_streaming_head(
    status: int, header_block: bytes, content_length: int | None, date: bytes, connection: bytes
) -> bytes:
    """The head of a response whose body follows in pieces.

    With ``content_length`` None the body is sent chunked.
    """
    framing = CHUNKED if content_length is None else b"Content-Length: %d\r\n" % content_length
    if not status_has_body(status):
        framing = b""
    return b"".join((status_line(status), header_block, framing, date, connection, b"\r\n"))


def encode_chunk(data: bytes) -> bytes:
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def encode_error(status: int, detail: str, date: bytes) -> bytes:
    """A small plain-text error response that closes the connection."""
    body = detail.encode("utf-8", "replace") + b"\n"
    return encode_response(
        status,
        b"Content-Type: text/plain; charset=utf-8\r\n",
        body,
        date,
        CONNECTION_CLOSE,
        False,
    )
