"""The request parser, replayed whole, byte by byte and in seeded random chunks.

Every case in the corpus must give the same result however the bytes arrive:
incremental-parsing bugs are where request smuggling lives.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from app_server.protocols.http.events import ProtocolError, RequestHead
from app_server.protocols.http.parser import REQUEST_END, RequestParser

MAX_HEAD = 8192
MAX_BODY = 1024

# name -> (raw bytes, expected: list of (method, raw_path, body) or an int status)
VALID: dict[str, tuple[bytes, list[tuple[str, bytes, bytes]]]] = {
    "simple get": (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [("GET", b"/", b"")]),
    "query": (b"GET /p?x=1&y=2 HTTP/1.1\r\nHost: a\r\n\r\n", [("GET", b"/p?x=1&y=2", b"")]),
    "content-length body": (
        b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        [("POST", b"/e", b"hello")],
    ),
    "chunked body": (
        b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        [("POST", b"/e", b"abcde")],
    ),
    "chunked with trailer": (
        b"POST /e HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nz\r\n0\r\nX-T: 1\r\n\r\n",
        [("POST", b"/e", b"z")],
    ),
    "pipelined": (
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",
        [("GET", b"/1", b""), ("GET", b"/2", b""), ("POST", b"/3", b"ok")],
    ),
    "http/1.0 without host": (b"GET /old HTTP/1.0\r\n\r\n", [("GET", b"/old", b"")]),
    # RFC 9112 §2.3: an unknown 1.x minor version is served as 1.1.
    "http/1.2": (b"GET /v HTTP/1.2\r\nHost: a\r\n\r\n", [("GET", b"/v", b"")]),
    "asterisk-form options": (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", [("OPTIONS", b"*", b"")]),
    "double spaces in bodies": (
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n{  } \r\n"
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[  ]\r\n0\r\n\r\n",
        [("POST", b"/b", b"{  } \r\n"), ("POST", b"/c", b"[  ]")],
    ),
    "double spaces in a header value": (
        b"GET /s HTTP/1.1\r\nHost: a\r\nX-A: a  b\r\n\r\n",
        [("GET", b"/s", b"")],
    ),
    "custom token method": (b"PURGE /c HTTP/1.1\r\nHost: a\r\n\r\n", [("PURGE", b"/c", b"")]),
    "absolute form": (
        b"GET http://a/x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        [("GET", b"/x?q=1", b"")],
    ),
}

INVALID: dict[str, tuple[bytes, int]] = {
    "cl and te": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "te and cl": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "duplicate content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        400,
    ),
    "content-length list": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
    "signed content-length": (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    "te not chunked": (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nx", 400),
    "te chunked then gzip": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\nx",
        400,
    ),
    "te twice chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te in http/1.0": (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400),
    "space before colon": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A : 1\r\n\r\n", 400),
    "nul in value": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400),
    "bare cr in value": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", 400),
    "bare lf in value": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\n2: 3\r\n\r\n", 400),
    "invalid method": (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "missing host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "http/2.0": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    "http/3.0": (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    "http/1.2 without host": (b"GET / HTTP/1.2\r\n\r\n", 400),  # served as 1.1
    # RFC 9110 §9.1: a method token we do not implement is 501, case-sensitively.
    "lower-case get": (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    "unknown method token": (b"CONFORMANCE-CHECK / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    "unknown method after a body": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nGETGETX / HTTP/1.1\r\n\r\n",
        501,
    ),
    "unknown method after a chunked body": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nAB\r\n0\r\n\r\n"
        b"\r\nBREW /pot HTTP/1.1\r\nHost: a\r\n\r\n",
        501,
    ),
    "method then no space": (b"GETX\r\nHost: a\r\n\r\n", 400),
    # Only a well-formed request line makes an unknown method 501.
    "space inside a method": (b"GE T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "unknown method, bad version": (b"BREW / HTCPCP/1.0\r\nHost: a\r\n\r\n", 400),
    "unknown method, bare lf": (b"BREW / HTTP/1.1\nHost: a\r\n\r\n", 400),
    "method token over the head limit": (b"X" * (MAX_HEAD + 1) + b" / HTTP/1.1\r\n\r\n", 431),
    "asterisk-form for GET": (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "fragment in target": (b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "fragment in absolute target": (b"GET http://a/x#f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "two spaces after method": (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "two spaces after the target": (b"GET /x  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "two spaces in a pipelined request": (
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a  b\r\n\r\nGET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    ),
    "te gzip then chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "body over limit (content-length)": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n",
        413,
    ),
    "body over limit (chunked)": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"200\r\n"
        + b"x" * 512
        + b"\r\n"
        + b"200\r\n"
        + b"x" * 512
        + b"\r\n"
        + b"1\r\nx\r\n0\r\n\r\n",
        413,
    ),
    "head over limit": (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        431,
    ),
    "url over limit": (b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
    "chunk size garbage": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    "lf-only line ends": (b"GET / HTTP/1.1\nHost: a\n\n", 400),
}


def deliveries(data: bytes, seed: int) -> Iterator[tuple[str, list[bytes]]]:
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(data):
        n = rng.randint(1, 17)
        chunks.append(data[i : i + n])
        i += n
    yield "random", chunks


def collect(chunks: list[bytes]) -> list[tuple[str, bytes, bytes]]:
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    requests: list[tuple[str, bytes, bytes]] = []
    head: RequestHead | None = None
    body = b""
    for chunk in chunks:
        parser.feed(chunk)
        for event in parser.events:
            if isinstance(event, RequestHead):
                head, body = event, b""
            elif event is REQUEST_END:
                assert head is not None
                requests.append((head.method, head.raw_path, body))
            else:
                body += event
        parser.events.clear()
    return requests


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_requests_parse_the_same_however_delivered(name: str) -> None:
    raw, expected = VALID[name]
    for how, chunks in deliveries(raw, seed=len(name)):
        assert collect(chunks) == expected, how


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_requests_are_refused_with_their_status(name: str) -> None:
    raw, status = INVALID[name]
    for how, chunks in deliveries(raw, seed=len(name)):
        with pytest.raises(ProtocolError) as info:
            collect(chunks)
        assert info.value.status_hint == status, (how, info.value.detail)


def test_smuggled_second_request_is_never_produced() -> None:
    # The classic CL.TE desync: a front end honouring Content-Length would
    # forward "GET /admin" as body; we must refuse the whole thing instead.
    raw = (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    with pytest.raises(ProtocolError):
        parser.feed(raw)
    assert not any(isinstance(e, RequestHead) and e.raw_path == b"/admin" for e in parser.events)


def test_head_fields() -> None:
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    parser.feed(
        b"POST /a%20b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nX-Pad:  v  \r\n"
        b"Expect: 100-continue\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    head = parser.events[0]
    assert isinstance(head, RequestHead)
    assert head.path == "/a b"
    assert head.query_string == b"x=1"
    assert head.host == "example.com:8080"
    assert (b"x-pad", b"v") in head.headers  # values are trimmed
    assert head.expect_continue is True
    assert head.keep_alive is False
    assert head.content_length == 0


def test_trailer_fields_never_join_the_head() -> None:
    # Found by tests/unit/test_fuzz_http.py: trailers were appended to the
    # RequestHead's header list after it had been handed out, so what the
    # application saw depended on how the bytes arrived.
    raw = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nz\r\n0\r\nX-Trailer: t\r\nHost: evil\r\n\r\n"
    )
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    parser.feed(raw)
    head = parser.events[0]
    assert isinstance(head, RequestHead)
    assert head.headers == [(b"host", b"a"), (b"transfer-encoding", b"chunked")]
    assert parser.events[-1] is REQUEST_END


def test_unknown_method_far_after_a_boundary_is_still_refused() -> None:
    # The 501 distinction replays at most 64 KiB since the last message
    # boundary; further back the request is still refused, with 400.
    body = b"x" * 70_000
    raw = (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
        + b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    parser = RequestParser(MAX_HEAD, 100_000)
    with pytest.raises(ProtocolError) as info:
        parser.feed(raw)
    assert info.value.status_hint == 400
    assert [e for e in parser.events if e is REQUEST_END] == [REQUEST_END]


def test_http_1_2_is_served_as_1_1() -> None:
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    parser.feed(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")
    head = parser.events[0]
    assert isinstance(head, RequestHead)
    assert head.http_version == "1.1" and head.keep_alive is True


def test_http10_expect_continue_is_ignored() -> None:
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    parser.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    head = parser.events[0]
    assert isinstance(head, RequestHead) and head.expect_continue is False


def test_upgrade_stops_parsing_at_the_new_protocol() -> None:
    raw = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    parser.feed(raw + b"\x81\x80")
    head = parser.events[0]
    assert isinstance(head, RequestHead) and head.upgrade == b"websocket"
    assert parser.upgraded_at == len(raw)
