"""Request parsing on httptools with our limits and anti-smuggling rules.

Owns: turning bytes into ``RequestHead`` / body ``bytes`` / ``REQUEST_END``
events, and every rule that decides whether a request is acceptable before the
framework sees it: head size (431), body size (413, from Content-Length before
any body byte is read), HTTP version (505), framing conflicts and malformed
headers (400), unknown methods and transfer codings (501). httptools
(llhttp) already rejects most malformed syntax; the checks here cover what it
leaves to the server (RFC 9112 §6.3 framing rules, Host rules, duplicate
Content-Length, NUL bytes, the request-target forms of §3.2, one SP between
method and target) so that one request can never be read as two. No I/O, no
clock, no logging.
"""

from __future__ import annotations

import re
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
# RFC 9112 §3 request-line with an RFC 9110 §5.6.2 token as the method, and
# the set of its prefixes (a line that cannot become valid is refused early).
_TCHAR: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_REQUEST_LINE: Final = re.compile(rb"(" + _TCHAR + rb"+) [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r\n")
_REQUEST_LINE_PREFIX: Final = re.compile(
    _TCHAR
    + rb"+(?: (?:[\x21-\x7e]+(?: (?:H(?:T(?:T(?:P(?:/(?:[0-9](?:\.(?:[0-9]\r?)?)?)?)?)?)?)?)?)?)?)?"
)
# Two spaces in a read send it through _feed_spaced (a regex scans faster
# than ``in`` for a two-byte needle).
_DOUBLE_SP: Final = re.compile(b"  ").search
# A refused method is located by replaying at most this many bytes since the
# last message boundary; further back it gets a plain 400 (see _on_refused_method).
_REPLAY_LIMIT: Final = 65536
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
        "_since",
        "_since_size",
        "_space_tail",
        "_url_closed",
        "_length",
        "_refused_method",
        "upgraded_at",
        "in_message",
    )

    def __init__(self, max_head_size: int, max_body_size: int) -> None:
        self.events: list[Event] = []
        self._parser = parser = httptools.HttpRequestParser(self)
        # llhttp refuses HTTP/1.2; RFC 9112 §2.3 says a 1.x minor version we
        # do not know is served as the highest we support. on_headers_complete
        # decides what is served and what gets 505.
        parser.set_dangerous_leniencies(lenient_version=True)
        self._max_head = max_head_size
        self._max_body = max_body_size
        self._error: ProtocolError | None = None
        # The bytes received since the last read that began at a message
        # boundary, kept only while a message spans reads (bounded): on the
        # error path they locate the method llhttp refused.
        self._since: bytes | list[bytes] | None = None
        self._since_size = 0
        # The last read ended with the SP after the method or the target: a
        # read that starts with SP again makes two (RFC 9112 §3).
        self._space_tail = False
        self._url_closed = False  # on_url saw the SP that ends the target
        # The start of a request whose method llhttp refused, until enough of
        # its request line has arrived to decide between 501 and 400.
        self._refused_method: bytes | None = None
        self.upgraded_at: int = -1
        self.in_message = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._length = -1  # Content-Length of the body being read, once known
        if self._headers:
            self._headers = []
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
        if self._refused_method is not None:
            self._judge_method(self._refused_method + data)
            return
        if not self.in_message:
            self._since = data
        elif (since := self._since) is not None:
            self._keep(since, data)
        if (
            self._space_tail
            or data[-1:] == b" "
            or (
                not (
                    self._length > 0
                    and self.in_message
                    and self._body_size + len(data) <= self._length
                )  # all body: skip the scan
                and _DOUBLE_SP(data)
            )
        ):
            self._feed_spaced(data)
        else:
            try:
                self._parser.feed_data(data)
            except Exception as exc:  # noqa: BLE001 - every kind is mapped or re-raised
                self._parser_error(exc, data, 0)
        if not self.in_message:
            self._since = None  # an idle connection keeps no bytes

    def _keep(self, since: bytes | list[bytes], data: bytes) -> None:
        """A message spans reads: keep them (bounded) for the error path."""
        if isinstance(since, bytes):
            self._since = [since, data]
            self._since_size = len(since) + len(data)
        else:
            since.append(data)
            self._since_size += len(data)
        if self._since_size > _REPLAY_LIMIT:
            self._since = None

    def _feed(self, data: bytes, offset: int) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # noqa: BLE001 - every kind is mapped or re-raised
            self._parser_error(exc, data, offset)

    def _parser_error(self, exc: Exception, data: bytes, offset: int) -> None:
        """Map an httptools exception from feeding ``data`` (at ``offset`` in the read)."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            self.upgraded_at = offset + (int(exc.args[0]) if exc.args else len(data))
        elif isinstance(exc, httptools.HttpParserCallbackError):
            raise self._error or ProtocolError(400, "Bad Request") from exc
        elif isinstance(exc, httptools.HttpParserInvalidMethodError):
            self._on_refused_method(exc)
        elif isinstance(exc, httptools.HttpParserInvalidURLError):
            raise ProtocolError(400, "Invalid request target") from exc
        elif isinstance(exc, httptools.HttpParserError):
            detail = _describe(exc)
            status = 505 if "HTTP version" in detail else 400
            raise ProtocolError(status, detail) from exc
        else:
            raise exc

    def _feed_spaced(self, data: bytes) -> None:
        """Feed a read holding ``SP SP`` (or ending in SP): refuse it in a request line.

        RFC 9112 §3: request-line = method SP request-target SP HTTP-version;
        llhttp skips any number of spaces at both places. Rare (a header value
        or a body with two spaces, a read that ends in SP): the read is fed up
        to each such SP and then the SP alone; the parser's state then says
        whether the SP follows the method (a message has begun, its target
        has not) or the target (on_url is called, empty, as the SP closes it).
        A Content-Length body's bytes are fed in one piece.
        """
        if self._space_tail and data[:1] == b" ":
            self._fail_spaces()
        self._space_tail = False
        n = len(data)
        start = 0
        at = data.find(b"  ")
        while True:
            if at < 0:
                if data[-1:] != b" " or n - 1 < start:
                    break
                at = n - 1
            if self._length > 0 and self.in_message:
                body_end = start + self._length - self._body_size
                if at < body_end:  # inside the body: no request line there
                    if body_end >= n:
                        break
                    at = data.find(b"  ", body_end)
                    continue
            if at > start:
                self._feed(data[start:at], start)
                if self.upgraded_at >= 0 or self._refused_method is not None:
                    return
            self._url_closed = False
            self._feed(data[at : at + 1], at)
            if self.upgraded_at >= 0 or self._refused_method is not None:
                return
            start = at + 1
            if self.in_message and (not self._url or self._url_closed):
                if start < n:
                    self._fail_spaces()
                self._space_tail = True  # the next read decides
            if start >= n:
                return
            at = data.find(b"  ", start)
        if start < n:
            self._feed(data[start:], start)

    def _fail_spaces(self) -> None:
        self._error = ProtocolError(400, "More than one space in the request line")
        raise self._error

    # -- methods llhttp does not know ---------------------------------------

    def _on_refused_method(self, exc: Exception) -> None:
        """llhttp knows a fixed list of methods; any other token is valid syntax.

        RFC 9110 §9.1: a method the server does not implement gets 501, and
        methods are case-sensitive (``get`` is not GET). Only this error path
        looks at the raw bytes: they are replayed from the last message
        boundary to find where the refused request starts.
        """
        since = self._since
        received = b"" if since is None else since if isinstance(since, bytes) else b"".join(since)
        if not received or len(received) > _REPLAY_LIMIT:
            # Too far back to replay cheaply (the probe parses cost
            # O(n log n)): the refusal stays, without the 501 distinction.
            raise ProtocolError(400, "Invalid method") from exc
        self._judge_method(received[_request_start(received) :])

    def _judge_method(self, line: bytes) -> None:
        """501 for a well-formed request line, 400 for any other; wait while undecided.

        The decision depends only on the line's first ``max_head`` bytes, and
        a prefix that no valid line starts with is refused at once, so the
        answer is the same however the bytes arrive.
        """
        limit = self._max_head
        end = line.find(b"\n", 0, limit)
        if end >= 0:
            self._refused_method = None
            match = _REQUEST_LINE.fullmatch(line, 0, end + 1)
            if match is None:
                raise ProtocolError(400, "Invalid method")
            method = match[1].decode("ascii")
            raise ProtocolError(501, f"Method {method} not implemented")
        if _REQUEST_LINE_PREFIX.fullmatch(line, 0, limit) is None:
            self._refused_method = None
            raise ProtocolError(400, "Invalid method")
        if len(line) > limit:
            self._refused_method = None
            raise ProtocolError(431, "Request line and headers too large")
        self._refused_method = line  # the rest of the line is in a later read

    def _fail(self, status: int, detail: str) -> None:
        self._error = ProtocolError(status, detail)
        raise self._error

    # -- httptools callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self._reset()

    def on_url(self, url: bytes) -> None:
        if not url:
            # A read began at the SP that ends the target (see _feed_spaced).
            self._url_closed = True
            return
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
            version = self._check_version(version)
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
        if b"?" not in url and b"%" not in url and b"#" not in url and url[:1] == b"/":
            raw_path, path, query = url, url.decode("latin-1"), b""
        else:
            raw_path, path, query = self._split_target(url, method)
        upgrade = self._upgrade if self._connection_upgrade else None
        self._length = -1 if content_length is None else content_length
        headers = self._headers
        # Trailer fields of a chunked body (RFC 9112 §7.1.2) also come through
        # on_header: they go to a list nobody reads, never into this head's
        # headers, which the application may already be looking at.
        self._headers = []
        self.events.append(
            RequestHead(
                method,
                raw_path,
                path,
                query,
                version,
                headers,
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

    def _split_target(self, url: bytes, method: str) -> tuple[bytes, str, bytes]:
        """Raw path, decoded path and query of a target that is not a plain path."""
        if b"#" in url:
            # RFC 9112 §3.2: no request-target form carries a fragment.
            self._fail(400, "Fragment in the request target")
        if url[:1] != b"/":
            if url == b"*":
                # RFC 9112 §3.2.4: asterisk-form is only for a server-wide OPTIONS.
                if method != "OPTIONS":
                    self._fail(400, "Asterisk-form target is only for OPTIONS")
                return url, "*", b""
            # absolute-form (RFC 9112 §3.2.2): keep only path and query.
            parsed = httptools.parse_url(url)
            path_bytes = parsed.path or b"/"
            query = parsed.query or b""
            raw = path_bytes + (b"?" + query if query else b"")
            return raw, _decode_path(path_bytes), query
        q = url.find(b"?")
        if q < 0:
            return url, _decode_path(url), b""
        return url, _decode_path(url[:q]), url[q + 1 :]

    def _check_version(self, version: str) -> str:
        """RFC 9112 §2.3: an unknown 1.x minor version is served as 1.1."""
        if version[:2] == "1." and version != "1.0":
            return "1.1"
        self._fail(505, f"HTTP version {version} not supported")
        return version  # not reached: _fail raises

    def _check_framing(self, version: str) -> int | None:
        """RFC 9112 §6.3: one unambiguous body length or refuse the request."""
        te = self._transfer_encoding
        lengths = self._content_lengths
        if te is not None:
            if lengths:
                self._fail(400, "Both Content-Length and Transfer-Encoding")
            if version == "1.0":
                self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip(b" \t") for c in te.lower().split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                # RFC 9112 §6.3: without chunked last the length is unknown.
                self._fail(400, "Transfer-Encoding must end with a single chunked")
            if len(codings) > 1:
                # RFC 9112 §6.1: a coding we do not understand gets 501.
                other = codings[0].decode("latin-1")
                self._fail(501, f"Transfer-Encoding {other!r} not implemented")
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


def _decode_path(path: bytes) -> str:
    text = path.decode("latin-1")
    if "%" in text:
        return unquote(text, encoding="utf-8", errors="surrogateescape")
    return text


class _Begins:
    """A probe protocol for ``_request_start``: counts message starts."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def on_message_begin(self) -> None:
        self.count += 1


def _begins(data: bytes) -> int:
    probe = _Begins()
    parser = httptools.HttpRequestParser(probe)
    parser.set_dangerous_leniencies(lenient_version=True)
    try:
        parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        pass
    return probe.count


def _request_start(data: bytes) -> int:
    """Offset in ``data`` (which starts at a message boundary) of the last request.

    llhttp announces a message at its first byte, so the shortest prefix of
    ``data`` that announces as many messages as the whole ends with that
    byte. A bisection of fresh parses: error path only.
    """
    total = _begins(data)
    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        if _begins(data[:mid]) >= total:
            hi = mid
        else:
            lo = mid + 1
    return max(lo - 1, 0)


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return text or "Malformed request"
