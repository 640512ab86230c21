"""Property-based tests of the HTTP request parser.

1. Any byte sequence, cut at any points, gives the same events and the same
   error (status) as when fed whole, and nothing escapes but ``ProtocolError``.
2. A request the parser accepts is framed the same way by h11 (a reference
   used only here): same number of requests, method, target, headers, body.

Inputs come from two strategies: arbitrary bytes (they mostly die in the
request line) and near-valid requests built from a grammar and then mutated,
which reach the header, framing and body states.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import h11
from hypothesis import event as note_event
from hypothesis import example, given
from hypothesis import strategies as st

from app_server.protocols.http.events import ProtocolError, RequestHead
from app_server.protocols.http.parser import REQUEST_END, RequestParser
from tests.unit.fuzzing import fuzz

MAX_HEAD = 1024
MAX_BODY = 256

# -- running the parser ------------------------------------------------------------


def _head_fields(head: RequestHead) -> tuple[Any, ...]:
    return (
        head.method,
        head.raw_path,
        head.path,
        head.query_string,
        head.http_version,
        tuple(head.headers),
        head.keep_alive,
        head.upgrade,
        head.chunked,
        head.content_length,
        head.expect_continue,
        head.host,
    )


def run(chunks: list[bytes]) -> tuple[list[Any], int | None, int, bool]:
    """(events with bodies joined, error status, upgrade offset, mid-message)."""
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    events: list[Any] = []
    status = None
    upgraded_at = -1
    offset = 0

    def drain() -> None:
        for event in parser.events:
            if isinstance(event, RequestHead):
                events.append(_head_fields(event))
            elif event is REQUEST_END:
                events.append("END")
            elif events and isinstance(events[-1], bytes):
                events[-1] += event
            else:
                events.append(bytes(event))
        parser.events.clear()

    for chunk in chunks:
        try:
            parser.feed(chunk)
        except ProtocolError as exc:
            status = exc.status_hint
            drain()
            break
        drain()
        if parser.upgraded_at >= 0:
            upgraded_at = offset + parser.upgraded_at
            break
        offset += len(chunk)
    return events, status, upgraded_at, parser.in_message and status is None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points + [len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


# -- near-valid requests -----------------------------------------------------------

# Each part comes from a list of good values, or now and then from a list of
# values that break one rule, so that most requests get deep into the parser.
GOOD_METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"PURGE"]
BAD_METHODS = [b"get", b"Post", b"CONFORMANCE-CHECK", b"BREW", b"G(T", b"", b"GETX", b"M-SEARCH"]
GOOD_TARGETS = [b"/", b"/a/b", b"/p?x=1&y=2", b"/a%20b", b"/%zz", b"http://h/x?q=1", b"//x"]
BAD_TARGETS = [b"/\xff", b"*", b"/a#frag", b"/q?x#f", b"http://h", b"h:80", b"", b"/a b"]
GOOD_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2"]
BAD_VERSIONS = [b"HTTP/1.9", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.", b"http/1.1", b"HTTP/11"]
BAD_SEPARATORS = [b"  ", b"\t", b""]
BAD_EOLS = [b"\n", b"\r"]
GOOD_NAMES = [b"X-A", b"Accept", b"x-b", b"Connection", b"Expect"]
FRAMING_NAMES = [b"Content-Length", b"Transfer-Encoding", b"host", b"Upgrade"]
BAD_NAMES = [b"X A", b"", b"X-\xff", b"X:"] + FRAMING_NAMES
GOOD_VALUES = [
    b"a",
    b"",
    b"0",
    b"3",
    b"chunked",
    b"keep-alive",
    b"100-continue",
    b" padded  ",
    b"a  b",
    b"\xe9t\xe9",
    b"gzip, chunked",
    b"a,b",
]
BAD_VALUES = [
    b"close",
    b"upgrade",
    b"+3",
    b"3, 3",
    b"-1",
    b"99999999999999999999",
    b"chunked, gzip",
    b"identity",
    b"CHUNKED",
    b"websocket",
    b"x\x00y",
    b"x\ry",
]
COLONS = [b":", b" : ", b":\t"]


def part(draw: st.DrawFn, good: list[bytes], bad: list[bytes], valid: bool) -> bytes:
    """A good value (always when ``valid``), or now and then one breaking a rule."""
    if valid or draw(st.integers(0, 9)) < 9:
        return draw(st.sampled_from(good))
    return draw(st.sampled_from(bad))


@st.composite
def chunked_body(draw: st.DrawFn, valid: bool) -> bytes:
    parts = []
    for piece in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3)):
        size = b"%x" % len(piece)
        if draw(st.integers(0, 9)) == 9:
            size += draw(st.sampled_from([b";ext=1"] if valid else [b"  ", b"zz", b"\r"]))
        parts.append(size + b"\r\n" + piece + b"\r\n")
    parts.append(b"0\r\n")
    if draw(st.booleans()):
        parts.append(b"X-Trailer: t\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


@st.composite
def request(draw: st.DrawFn, valid: bool = False) -> bytes:
    eol = part(draw, [b"\r\n"], BAD_EOLS, valid)
    line = (
        part(draw, GOOD_METHODS, BAD_METHODS, valid)
        + part(draw, [b" "], BAD_SEPARATORS, valid)
        + part(draw, GOOD_TARGETS, BAD_TARGETS, valid)
        + part(draw, [b" "], BAD_SEPARATORS, valid)
        + part(draw, GOOD_VERSIONS, BAD_VERSIONS, valid)
    )
    headers = [b"Host: h"] if valid or draw(st.integers(0, 9)) < 9 else []
    for _ in range(draw(st.integers(0, 3))):
        name = part(draw, GOOD_NAMES, BAD_NAMES, valid)
        colon = part(draw, [b": "], COLONS, valid)
        headers.append(name + colon + part(draw, GOOD_VALUES, BAD_VALUES, valid))
    framing = draw(st.sampled_from(["none", "length", "chunked", "both"]))
    body = draw(st.binary(max_size=24))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = draw(chunked_body(valid))
    elif framing == "both" and not valid:
        headers.append(b"Content-Length: %d" % len(body))
        headers.append(b"Transfer-Encoding: chunked")
    else:
        body = b""
    order = draw(st.permutations(headers))
    lead = b"\r\n" if draw(st.integers(0, 9)) == 9 else b""
    return lead + line + eol + b"".join(h + eol for h in order) + eol + body


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from([0, 9, 10, 13, 32, 35, 37, 42, 58, 0x7F, 0xFF]))
        if action == "replace":
            data[at] = byte
        elif action == "insert":
            data.insert(at, byte)
        else:
            del data[at]
    return bytes(data)


pipelines = st.lists(request(), min_size=1, max_size=3).map(b"".join)
near_valid = st.one_of(pipelines, mutated(pipelines))
# h11 only has something to say about what we accept: valid requests, and
# now and then a mutation of them.
valid_pipelines = st.lists(request(valid=True), min_size=1, max_size=3).map(b"".join)
mostly_valid = st.one_of(valid_pipelines, valid_pipelines, mutated(valid_pipelines))
cuts = st.lists(st.integers(0, 1 << 16), max_size=8)


# -- 1. however the bytes arrive ---------------------------------------------------


@fuzz(200)
@given(data=st.binary(max_size=200), cuts=cuts)
def test_arbitrary_bytes_parse_the_same_however_split(data: bytes, cuts: list[int]) -> None:
    assert run(split(data, cuts)) == run([data])


@fuzz(300)
@given(data=near_valid, cuts=cuts)
@example(data=b"GET / HTTP/1.1\r\nHost: h\r\n\r\nget / HTTP/1.1\r\n\r\n", cuts=[30, 31])
@example(
    data=b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nABCD / HTTP/1.1\r\n", cuts=[48]
)
@example(data=b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", cuts=[4])
def test_near_valid_requests_parse_the_same_however_split(data: bytes, cuts: list[int]) -> None:
    whole = run([data])
    note_event(f"error {whole[1]}")
    assert run(split(data, cuts)) == whole
    assert run([data[i : i + 1] for i in range(len(data))]) == whole


# -- 2. h11 frames what we accept the same way -------------------------------------


def h11_requests(data: bytes) -> list[tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bytes]]:
    """Requests h11 reads from ``data``: one h11 connection per request cycle."""
    out = []
    rest = data
    while rest:
        # RFC 9112 §2.2: empty lines before a request-line SHOULD be ignored;
        # llhttp does, h11 refuses them (by design, not a framing difference).
        rest = rest.lstrip(b"\r\n")
        if not rest:
            break
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD * 4)
        conn.receive_data(rest)
        req: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                req = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert req is not None
                headers = [(n.lower(), v) for n, v in req.headers.raw_items()]
                out.append((req.method, req.target, headers, body, req.http_version))
                break
            else:  # NEED_DATA, PAUSED: the input ends inside a request
                return out
        if conn.their_state is h11.MUST_CLOSE and not _http10_keep_alive(req):
            return out
        rest = conn.trailing_data[0]
    return out


def _http10_keep_alive(req: h11.Request) -> bool:
    # h11 never keeps an HTTP/1.0 connection open (by design); llhttp honours
    # "Connection: keep-alive" there (RFC 9112 §9.3), so the comparison goes on.
    return req.http_version == b"1.0" and any(
        name == b"connection" and b"keep-alive" in value.lower() for name, value in req.headers
    )


def ours(data: bytes) -> list[tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bytes]]:
    parser = RequestParser(MAX_HEAD, MAX_BODY)
    parser.feed(data)
    out = []
    head: RequestHead | None = None
    body = b""
    for event in parser.events:
        if isinstance(event, RequestHead):
            head, body = event, b""
        elif event is REQUEST_END:
            assert head is not None
            out.append(
                (
                    head.method.encode(),
                    head.raw_path,
                    list(head.headers),
                    body,
                    head.http_version.encode(),
                )
            )
        else:
            body += event
    return out


def _comparable(request: tuple[Any, ...]) -> tuple[Any, ...]:
    method, target, headers, body, version = request
    if not target.startswith(b"/") and target != b"*":
        # absolute-form: we keep path and query (RFC 9112 §3.2.2 reconstruction).
        parts = urlsplit(target)
        target = (parts.path or b"/") + (b"?" + parts.query if parts.query else b"")
    if version not in (b"1.0", b"1.1"):
        version = b"1.1"  # RFC 9112 §2.3: we serve HTTP/1.x (x > 1) as 1.1
    return method, target, headers, body, version


@fuzz(300)
@given(data=mostly_valid)
def test_accepted_requests_are_framed_the_same_by_h11(data: bytes) -> None:
    try:
        accepted = ours(data)
    except ProtocolError as exc:
        note_event(f"refused with {exc.status_hint}")
        return
    note_event(f"{len(accepted)} request(s) accepted")
    if not accepted:
        return
    # Exclusions, each by design: blank lines before a request and HTTP/1.0
    # keep-alive (h11_requests); HTTP/1.x above 1.1 and absolute-form
    # targets (_comparable).
    try:
        reference = h11_requests(data)
    except h11.RemoteProtocolError as exc:
        raise AssertionError(f"h11 refuses what we accept: {exc}") from exc
    assert [_comparable(r) for r in reference[: len(accepted)]] == accepted
    assert len(reference) >= len(accepted)
