"""Request parsing on httptools with our limits and anti-smuggling rules.

Owns: turning bytes into ``RequestHead`` / body ``bytes`` / ``REQUEST_END``
events, and every rule that decides whether a request is acceptable before the
framework sees it: head size (431), body size (413, from Content-Length before
any body byte is read), HTTP version (505), framing conflicts and malformed
headers (400). httptools (llhttp) already rejects most malformed syntax; the
checks here cover what it leaves to the server (RFC 9112 §6.3 framing rules,
Host rules, duplicate Content-Length, NUL bytes) so that one request can never
be read as two. No I/O, no clock, no logging.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

import httptools

from app_server.protocols.http.events import ProtocolError, RequestHead


class _RequestEnd:
    __slots__ = ()

    def __repr__(self) -> str:
        return "REQUEST_END"


REQUEST_END: Final = _RequestEnd()
"""Marks the end of one request's body in the event list."""

Event = RequestHead | bytes | _RequestEnd

_METHODS: Final[dict[bytes, str]] = {
    m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
}
_VERSIONS: Final = frozenset({"1.0", "1.1"})
# Per-header framing overhead we count towards the head size: ": " and CRLF.
_HEADER_OVERHEAD: Final = 4
_OWS: Final = (b" ", b"\t")


class RequestParser:
    """Feed bytes with ``feed``; take parsed events from ``events``.

    ``events`` is a list the caller drains. After a ``ProtocolError`` the
    parser is unusable: answer with the error's status and close.
    """

    __slots__ = (
        "events",
        "_parser",
        "_max_head",
        "_max_body",
        "_url",
        "_headers",
        "_head_size",
        "_body_size",
        "_hosts",
        "_content_lengths",
        "_transfer_encoding",
        "_expect_continue",
        "_connection_upgrade",
        "_upgrade",
        "_error",
        "upgraded_at",
        "in_message",
    )

    def __init__(self, max_head_size: int, max_body_size: int) -> None:
        self.events: list[Event] = []
        self._parser = httptools.HttpRequestParser(self)
        self._max_head = max_head_size
        self._max_body = max_body_size
        self._error: ProtocolError | None = None
        self.upgraded_at: int = -1
        self.in_message = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._body_size = 0
        # Framing-relevant headers, recorded only when present (rare but for Host).
        self._hosts: list[bytes] = []
        self._content_lengths: list[bytes] | None = None
        self._transfer_encoding: bytes | None = None
        self._expect_continue = False
        self._connection_upgrade = False
        self._upgrade: bytes | None = None

    # -- feeding -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``; raises ``ProtocolError`` on a request we refuse.

        On a protocol upgrade (``Connection: upgrade``) parsing stops after the
        request: ``upgraded_at`` is set to the offset of the first byte that
        belongs to the new protocol.
        """
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded_at = int(exc.args[0]) if exc.args else len(data)
        except httptools.HttpParserCallbackError as exc:
            raise self._error or ProtocolError(400, "Bad Request") from exc
        except httptools.HttpParserInvalidMethodError as exc:
            raise ProtocolError(400, "Invalid method") from exc
        except httptools.HttpParserInvalidURLError as exc:
            raise ProtocolError(400, "Invalid request target") from exc
        except httptools.HttpParserError as exc:
            detail = _describe(exc)
            status = 505 if "HTTP version" in detail else 400
            raise ProtocolError(status, detail) from exc

    def _fail(self, status: int, detail: str) -> None:
        self._error = ProtocolError(status, detail)
        raise self._error

    # -- httptools callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._max_head:
            self._fail(431, "Request line and headers too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp has already refused invalid name tokens, NUL/CR/LF in values
        # and obs-fold (the corpus tests pin that down); it strips leading
        # whitespace but keeps trailing whitespace, which RFC 9110 §5.5 excludes.
        size = self._head_size + len(name) + len(value) + _HEADER_OVERHEAD
        self._head_size = size
        if size > self._max_head:
            self._fail(431, "Request line and headers too large")
        name = name.lower()
        if value[-1:] in _OWS:
            value = value.rstrip(b" \t")
        special = _SPECIAL_HEADERS.get(name)
        if special is not None:
            special(self, value)
        self._headers.append((name, value))

    def _on_host(self, value: bytes) -> None:
        self._hosts.append(value)

    def _on_content_length(self, value: bytes) -> None:
        if self._content_lengths is None:
            self._content_lengths = [value]
        else:
            self._content_lengths.append(value)

    def _on_transfer_encoding(self, value: bytes) -> None:
        # Several Transfer-Encoding lines form one list (RFC 9110 §5.3).
        te = self._transfer_encoding
        self._transfer_encoding = value if te is None else te + b"," + value

    def _on_expect(self, value: bytes) -> None:
        self._expect_continue = value.lower() == b"100-continue"

    def _on_connection(self, value: bytes) -> None:
        self._connection_upgrade = b"upgrade" in value.lower()

    def _on_upgrade(self, value: bytes) -> None:
        self._upgrade = value.lower()

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version not in _VERSIONS:
            self._fail(505, f"HTTP version {version} not supported")
        content_length = (
            self._check_framing(version)
            if self._transfer_encoding is not None or self._content_lengths is not None
            else None
        )
        hosts = self._hosts
        host = hosts[0].decode("latin-1") if len(hosts) == 1 else self._check_host(version)
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        url = self._url
        raw_path, path, query = _split_target(url)
        upgrade = self._upgrade if self._connection_upgrade else None
        self.events.append(
            RequestHead(
                method,
                raw_path,
                path,
                query,
                version,
                self._headers,
                parser.should_keep_alive(),
                upgrade,
                self._transfer_encoding is not None,
                content_length,
                self._expect_continue and version == "1.1",
                host,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._fail(413, "Request body too large")
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.events.append(REQUEST_END)

    # -- rules -------------------------------------------------------------

    def _check_framing(self, version: str) -> int | None:
        """RFC 9112 §6.3: one unambiguous body length or refuse the request."""
        te = self._transfer_encoding
        lengths = self._content_lengths
        if te is not None:
            if lengths:
                self._fail(400, "Both Content-Length and Transfer-Encoding")
            if version == "1.0":
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip() for c in te.lower().split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                self._fail(400, "Transfer-Encoding must end with a single chunked")
            return None
        if lengths is None:
            return None
        if len(lengths) > 1:
            self._fail(400, "Several Content-Length headers")
        value = lengths[0]
        if not value.isdigit():
            self._fail(400, "Invalid Content-Length")
        length = int(value)
        if length > self._max_body:
            self._fail(413, "Request body too large")
        return length

    def _check_host(self, version: str) -> str:
        hosts = self._hosts
        if len(hosts) > 1:
            self._fail(400, "Several Host headers")
        if not hosts:
            if version == "1.1":
                self._fail(400, "Missing Host header")
            return ""
        return hosts[0].decode("latin-1")


_SPECIAL_HEADERS: Final = {
    b"host": RequestParser._on_host,
    b"content-length": RequestParser._on_content_length,
    b"transfer-encoding": RequestParser._on_transfer_encoding,
    b"expect": RequestParser._on_expect,
    b"connection": RequestParser._on_connection,
    b"upgrade": RequestParser._on_upgrade,
}


def _split_target(url: bytes) -> tuple[bytes, str, bytes]:
    """Split a request target into raw path, decoded path and query bytes."""
    if b"?" not in url and b"%" not in url and url[:1] == b"/":
        return url, url.decode("latin-1"), b""
    if url[:1] != b"/":
        if url == b"*":
            return url, "*", b""
        # absolute-form (RFC 9112 §3.2.2): keep only path and query.
        parsed = httptools.parse_url(url)
        path_bytes = parsed.path or b"/"
        query = parsed.query or b""
        raw = path_bytes + (b"?" + query if query else b"")
        return raw, _decode_path(path_bytes), query
    q = url.find(b"?")
    if q < 0:
        path_bytes, query = url, b""
    else:
        path_bytes, query = url[:q], url[q + 1 :]
    frag = query.find(b"#")
    if frag >= 0:
        query = query[:frag]
    return url, _decode_path(path_bytes), query


def _decode_path(path: bytes) -> str:
    text = path.decode("latin-1")
    if "%" in text:
        return unquote(text, encoding="utf-8", errors="surrogateescape")
    return text


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return text or "Malformed request"
