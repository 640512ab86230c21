"""The worker's HTTP/1.1 connection over real sockets (SPEC §3).

One worker on 127.0.0.1:<free port>, driven with raw sockets (to control every
byte) and httpx. Covers keep-alive, pipelining, chunked bodies both ways,
100-continue, HEAD, HTTP/1.0, automatic headers, every limit, the smuggling
vectors (each must give exactly one 400 and a close, and the hidden request's
handler must never run), lingering close, TLS, trusted proxies and the
access log. Socket timeouts are the deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import json as _json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from http_helpers import (
    RawClient,
    RunningServer,
    count_responses,
    raw_client,
    serve_app,
    wait_until,
)

from app_server import App, json, stream, text
from app_server.framework.responses import StreamingResponse
from app_server.logs import ACCESS_LOGGER, JsonFormatter
from app_server.settings.model import HttpLimits, TlsSettings
from app_server.testing import TestClient

FAST_STOP = {"graceful_timeout_s": 2.0}


def build_app() -> tuple[App, Counter[str]]:
    """An app whose handlers count their calls, so tests can see what ran."""
    app = App("protocol")
    calls: Counter[str] = Counter()

    @app.get("/")
    async def index(request):  # type: ignore[no-untyped-def]
        calls["index"] += 1
        return text("hello")

    @app.route("/echo", methods=["POST", "PUT"])
    async def echo(request):  # type: ignore[no-untyped-def]
        calls["echo"] += 1
        return text(request.body.decode("latin-1"))

    @app.get("/hidden")
    async def hidden(request):  # type: ignore[no-untyped-def]
        calls["hidden"] += 1
        return text("SMUGGLED")

    @app.route("/hidden", methods=["POST", "DELETE", "PUT"])
    async def hidden_other(request):  # type: ignore[no-untyped-def]
        calls["hidden"] += 1
        return text("SMUGGLED")

    @app.get("/n/{n:int}")
    async def numbered(request, n: int):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return text(f"n={n}")

    @app.get("/slow/{n:int}")
    async def slow(request, n: int):  # type: ignore[no-untyped-def]
        calls["slow"] += 1
        await asyncio.sleep(0.2)  # the behaviour under test: a slow handler
        return text(f"slow={n}")

    @app.get("/sleep")
    async def sleep_long(request):  # type: ignore[no-untyped-def]
        calls["sleep"] += 1
        await asyncio.sleep(30)
        return text("woke")

    @app.get("/stream")
    async def streamed(request):  # type: ignore[no-untyped-def]
        async def parts() -> AsyncIterator[str]:
            for i in range(5):
                yield f"part{i};"

        return stream(parts())

    @app.post("/early", stream=True)
    async def early(request):  # type: ignore[no-untyped-def]
        calls["early"] += 1
        return text("early answer")

    @app.get("/whoami")
    async def whoami(request):  # type: ignore[no-untyped-def]
        return json({"ip": request.ip, "scheme": request.scheme, "url": request.url})

    return app, calls


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[RunningServer, Counter[str]]]:
    app, calls = build_app()
    with serve_app(app, **FAST_STOP) as server:
        yield server, calls


@pytest.fixture
def server(shared: tuple[RunningServer, Counter[str]]) -> RunningServer:
    return shared[0]


@pytest.fixture
def calls(shared: tuple[RunningServer, Counter[str]]) -> Counter[str]:
    return shared[1]


def get(path: str, extra: str = "", version: str = "1.1") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode()


def assert_closed_after_one(client: RawClient, status: int) -> None:
    """Exactly one response with ``status``, then the connection closes."""
    response = client.response()
    assert response.status == status, response
    assert (response.header("connection") or "").lower() == "close"
    rest = client.rest_until_close()
    assert rest == b"", f"bytes after the {status} response: {rest!r}"
    assert client.closed_by_peer


# -- keep-alive, pipelining, framing -------------------------------------------


def test_keep_alive_serves_several_requests_on_one_socket(server: RunningServer) -> None:
    with raw_client(server) as client:
        for n in range(5):
            client.send(get(f"/n/{n}"))
            response = client.response()
            assert response.status == 200
            assert response.body == f"n={n}".encode()
            assert (
                response.header("connection") is None
                or response.header("connection").lower() != "close"
            )  # type: ignore[union-attr]


def test_date_and_content_length_are_automatic(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(get("/"))
        response = client.response()
    assert response.header("content-length") == "5"
    date = response.header("date")
    assert date is not None and date.endswith(" GMT")
    assert response.header(
        "content-type",
    ).startswith("text/plain")  # type: ignore[union-attr]


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(get("/n/1") + get("/n/2") + get("/n/3") + get("/n/4"))
        bodies = [client.response().body for _ in range(4)]
    assert bodies == [b"n=1", b"n=2", b"n=3", b"n=4"]


def test_pipelined_slow_handler_first_keeps_the_order(
    server: RunningServer, calls: Counter[str]
) -> None:
    with raw_client(server) as client:
        client.send(
            get("/slow/1")
            + get("/n/2")
            + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            + get("/slow/4")
            + get("/n/5")
        )
        bodies = [client.response().body for _ in range(5)]
    assert bodies == [b"slow=1", b"n=2", b"abc", b"slow=4", b"n=5"]


def test_pipelined_requests_split_across_sends(server: RunningServer) -> None:
    post = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    data = get("/n/1") + post + get("/n/3")
    with raw_client(server) as client:
        for i in range(0, len(data), 7):
            client.send(data[i : i + 7])
        bodies = [client.response().body for _ in range(3)]
    assert bodies == [b"n=1", b"hello", b"n=3"]


def test_chunked_request_body(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        response = client.response()
        assert response.status == 200
        assert response.body == b"hello, world"
        client.send(get("/n/7"))  # the connection is still usable
        assert client.response().body == b"n=7"


def test_chunked_request_body_with_httpx(server: RunningServer) -> None:
    def pieces() -> Iterator[bytes]:
        for i in range(50):
            yield b"%03d," % i

    with httpx.Client(base_url=server.url) as client:
        response = client.post("/echo", content=pieces())
    assert response.status_code == 200
    assert response.text == "".join(f"{i:03d}," for i in range(50))


def test_streamed_response_is_chunked(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(get("/stream"))
        response = client.response()
        assert response.header("transfer-encoding") == "chunked"
        assert response.header("content-length") is None
        assert response.body == b"part0;part1;part2;part3;part4;"
        client.send(get("/n/1"))
        assert client.response().body == b"n=1"
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/stream").text == "part0;part1;part2;part3;part4;"


def test_expect_100_continue(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = client.response()
        assert interim.status == 100
        client.send(b"hello")
        final = client.response()
        assert final.status == 200
        assert final.body == b"hello"


def test_no_100_continue_for_http_1_0(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(
            b"POST /echo HTTP/1.0\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            b"hello"
        )
        response = client.response()
        assert response.status == 200
        assert response.body == b"hello"
        assert client.at_eof()


def test_head_has_content_length_but_no_body(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = client.response(head_only=True)
        assert head.status == 200
        assert head.header("content-length") == "5"
        # The next response starts right after the head: no body bytes in between.
        client.send(get("/n/9"))
        response = client.response()
        assert response.status == 200
        assert response.body == b"n=9"


def test_head_of_streamed_response_has_no_body(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(b"HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n" + get("/n/2"))
        head = client.response(head_only=True)
        assert head.status == 200
        assert client.response().body == b"n=2"


def test_http_1_0_closes_by_default(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        response = client.response()
        assert response.status == 200
        assert response.body == b"hello"
        assert client.at_eof()


def test_http_1_0_keep_alive_is_honoured(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(b"GET /n/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = client.response()
        assert first.body == b"n=1"
        assert (first.header("connection") or "").lower() == "keep-alive"
        client.send(b"GET /n/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert client.response().body == b"n=2"
        client.send(b"GET /n/3 HTTP/1.0\r\n\r\n")
        assert client.response().body == b"n=3"
        assert client.at_eof()


def test_connection_close_from_client_is_honoured(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(get("/", "Connection: close\r\n"))
        response = client.response()
        assert response.status == 200
        assert (response.header("connection") or "").lower() == "close"
        assert client.at_eof()


def test_httpx_keep_alive_round_trips(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        for i in range(10):
            response = client.post("/echo", content=f"body-{i}")
            assert response.text == f"body-{i}"
            assert "date" in response.headers
            assert response.headers["content-length"] == str(len(f"body-{i}"))


# -- limits ----------------------------------------------------------------------


def test_body_over_limit_refused_from_content_length_before_body() -> None:
    app, calls = build_app()
    with serve_app(app, request_max_size=1024, **FAST_STOP) as srv, raw_client(srv) as client:
        # Only the head is sent: the 413 must come without waiting for the body.
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        response = client.response(timeout=3)
        assert response.status == 413
        assert (response.header("connection") or "").lower() == "close"
        assert client.at_eof()
    assert calls["echo"] == 0


def test_body_at_limit_is_accepted() -> None:
    app, _ = build_app()
    with serve_app(app, request_max_size=1024, **FAST_STOP) as srv, raw_client(srv) as client:
        body = b"x" * 1024
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n" + body)
        response = client.response()
        assert response.status == 200
        assert response.body == body


def test_expect_continue_over_limit_gets_413_not_100() -> None:
    app, _ = build_app()
    with serve_app(app, request_max_size=1024, **FAST_STOP) as srv, raw_client(srv) as client:
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert_closed_after_one(client, 413)


def test_chunked_body_over_limit_is_413() -> None:
    app, calls = build_app()
    with serve_app(app, request_max_size=1024, **FAST_STOP) as srv, raw_client(srv) as client:
        chunk = b"400\r\n" + b"y" * 1024 + b"\r\n"
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk
            + chunk
            + b"0\r\n\r\n"
        )
        assert_closed_after_one(client, 413)
    assert calls["echo"] == 0


def test_headers_over_limit_are_431() -> None:
    app, calls = build_app()
    with (
        serve_app(app, request_max_header_size=1024, **FAST_STOP) as srv,
        raw_client(srv) as client,
    ):
        client.send(get("/", "X-Big: " + "a" * 2000 + "\r\n"))
        assert_closed_after_one(client, 431)
    assert calls["index"] == 0


def test_many_small_headers_over_limit_are_431() -> None:
    app, _ = build_app()
    with (
        serve_app(app, request_max_header_size=1024, **FAST_STOP) as srv,
        raw_client(srv) as client,
    ):
        client.send(get("/", "".join(f"X-H{i}: v\r\n" for i in range(200))))
        assert_closed_after_one(client, 431)


def test_long_request_line_is_431() -> None:
    app, _ = build_app()
    with (
        serve_app(app, request_max_header_size=1024, **FAST_STOP) as srv,
        raw_client(srv) as client,
    ):
        client.send(get("/n/1?q=" + "a" * 2000))
        assert_closed_after_one(client, 431)


def test_http_2_0_request_line_is_505(server: RunningServer) -> None:
    with raw_client(server) as client:
        client.send(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
        assert_closed_after_one(client, 505)


# HTTP/1.2 is served as 1.1 (RFC 9112 §2.3): test_protocol_edges.py.
@pytest.mark.parametrize("version", [b"HTTP/3.0", b"HTTP/0.9"])
def test_other_unsupported_versions_are_refused(server: RunningServer, version: bytes) -> None:
    with raw_client(server) as client:
        client.send(b"GET / " + version + b"\r\nHost: t\r\n\r\n")
        response = client.response()
        assert response.status in (400, 505)
        assert client.at_eof()


def test_partial_head_gets_408() -> None:
    app, calls = build_app()
    with serve_app(app, request_timeout_s=1.0, **FAST_STOP) as srv, raw_client(srv) as client:
        start = time.monotonic()
        client.send(b"GET / HTTP/1.1\r\nHost:")
        assert_closed_after_one(client, 408)
        assert time.monotonic() - start < 3.0
    assert calls["index"] == 0


def test_partial_body_gets_408() -> None:
    app, calls = build_app()
    with serve_app(app, request_timeout_s=1.0, **FAST_STOP) as srv, raw_client(srv) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        assert_closed_after_one(client, 408)
    assert calls["echo"] == 0


def test_slow_sender_cannot_extend_the_request_deadline() -> None:
    """One byte every 0.2 s; the deadline is fixed at the first byte."""
    app, _ = build_app()
    head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 200
    with serve_app(app, request_timeout_s=1.0, **FAST_STOP) as srv:
        sock = srv.connect()
        try:
            sock.settimeout(0.2)  # the interval between bytes, and the read deadline
            first_byte_at = time.monotonic()
            received = b""
            for i in range(len(head)):
                try:
                    sock.sendall(head[i : i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                received += data
                break
            elapsed = time.monotonic() - first_byte_at
            client = RawClient(sock)
            client.buffer = received
            response = client.response()
        finally:
            sock.close()
    assert response.status == 408
    assert elapsed < 3.0, f"408 took {elapsed:.2f}s after the first byte"


def test_idle_keep_alive_connection_is_closed() -> None:
    app, _ = build_app()
    with serve_app(app, keep_alive_timeout_s=0.5, **FAST_STOP) as srv, raw_client(srv) as client:
        client.send(get("/"))
        assert client.response().status == 200
        start = time.monotonic()
        assert client.at_eof(timeout=3.0)
        assert time.monotonic() - start < 3.0


def test_idle_connection_without_any_request_is_closed() -> None:
    app, _ = build_app()
    with serve_app(app, keep_alive_timeout_s=0.5, **FAST_STOP) as srv, raw_client(srv) as client:
        assert client.at_eof(timeout=3.0)


def test_handler_over_response_timeout_gets_503(calls: Counter[str]) -> None:
    app, app_calls = build_app()
    with serve_app(app, response_timeout_s=0.5, **FAST_STOP) as srv, raw_client(srv) as client:
        start = time.monotonic()
        client.send(get("/sleep"))
        assert_closed_after_one(client, 503)
        assert time.monotonic() - start < 3.0
    assert app_calls["sleep"] == 1


def test_response_timeout_drops_pipelined_followers() -> None:
    app, calls = build_app()
    with serve_app(app, response_timeout_s=0.5, **FAST_STOP) as srv, raw_client(srv) as client:
        client.send(get("/sleep") + get("/hidden"))
        assert_closed_after_one(client, 503)
    assert calls["hidden"] == 0


# -- long responses: RESPONSE_TIMEOUT ends with the head; a stalled body is aborted --

SSE_CHUNKS = [f"chunk {i}\n" for i in range(30)]
SSE_BODY = "".join(SSE_CHUNKS).encode()


def long_response_app() -> tuple[App, dict[str, object]]:
    """Streams that outlast a 1 s response timeout, and one that never ends."""
    app = App("long")
    seen: dict[str, object] = {"flood_ended": None}

    async def sse_parts() -> AsyncIterator[str]:
        for chunk in SSE_CHUNKS:
            yield chunk
            await asyncio.sleep(0.1)  # the behaviour under test: 30 x 0.1 s = 3 s

    @app.get("/sse")
    async def sse(request):  # type: ignore[no-untyped-def]
        return stream(sse_parts())

    @app.get("/quick")
    async def quick(request):  # type: ignore[no-untyped-def]
        return text("quick")

    @app.get("/sized")
    async def sized(request):  # type: ignore[no-untyped-def]
        return StreamingResponse(sse_parts(), content_length=len(SSE_BODY))

    @app.get("/pause")
    async def pause(request):  # type: ignore[no-untyped-def]
        async def parts() -> AsyncIterator[str]:
            yield "before;"
            await asyncio.sleep(1.5)  # over the write timeout: the app is slow, not the client
            yield "after"

        return stream(parts())

    @app.get("/flood")
    async def flood(request):  # type: ignore[no-untyped-def]
        async def body(response: StreamingResponse) -> None:
            chunk = b"x" * 65536
            try:
                while True:
                    await response.write(chunk)
            except BaseException as exc:
                seen["flood_ended"] = type(exc).__name__
                raise

        return stream(body)

    return app, seen


@pytest.mark.parametrize("path", ["/sse", "/sized"])
def test_stream_longer_than_response_timeout_arrives_whole(path: str) -> None:
    app, _ = long_response_app()
    with (
        serve_app(app, response_timeout_s=1.0, **FAST_STOP) as srv,
        raw_client(srv, timeout=15) as client,
    ):
        client.send(get(path))
        response = client.response()
        assert response.status == 200
        if path == "/sse":
            assert response.header("transfer-encoding") == "chunked"
        else:
            assert response.header("content-length") == str(len(SSE_BODY))
        assert response.body == SSE_BODY
        # Well framed to the end: nothing follows, and the connection still serves.
        assert client.buffer == b""
        client.send(get("/quick"))
        assert client.response().body == b"quick"


def test_stream_longer_than_response_timeout_is_whole_through_the_test_client() -> None:
    app, _ = long_response_app()
    with TestClient(app, limits=HttpLimits(response_timeout_s=1.0)) as client:
        chunked = client.get("/sse")
        sized = client.get("/sized")
    assert (chunked.status, chunked.headers.get("transfer-encoding")) == (200, "chunked")
    assert chunked.body == SSE_BODY
    assert (sized.status, sized.body) == (200, SSE_BODY)


def test_a_slow_producer_is_not_taken_for_a_stalled_client() -> None:
    app, _ = long_response_app()
    with (
        serve_app(app, response_write_timeout_s=0.5, **FAST_STOP) as srv,
        raw_client(srv, timeout=10) as client,
    ):
        client.send(get("/pause"))
        assert client.response().body == b"before;after"


def test_a_client_that_stops_reading_is_dropped_with_nothing_appended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, seen = long_response_app()
    caplog.set_level(logging.WARNING, logger="app_server.error")
    with serve_app(app, response_write_timeout_s=1.0, **FAST_STOP) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((srv.host, srv.port))
        try:
            sock.sendall(get("/flood"))
            # The client reads nothing: the body fills every buffer and stalls.
            wait_until(lambda: seen["flood_ended"] is not None, timeout=15)
            received = _read_all(sock)
        finally:
            sock.close()
    assert seen["flood_ended"] in ("CancelledError", "ConnectionResetError")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 503" not in received
    # What arrived is a prefix of the chunked body: whole 64 KiB chunks, then
    # at most one cut short, and never the last-chunk marker.
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    whole, rest = divmod(len(body), len(chunk))
    assert body[: whole * len(chunk)] == chunk * whole
    assert chunk.startswith(body[whole * len(chunk) :]), body[whole * len(chunk) :][:100]
    stalled = [r for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalled) == 1, [r.getMessage() for r in caplog.records]


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sent, up to its close (or reset)."""
    sock.settimeout(10)
    chunks = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def test_missing_host_is_400(server: RunningServer, calls: Counter[str]) -> None:
    before = calls["index"]
    with raw_client(server) as client:
        client.send(b"GET / HTTP/1.1\r\n\r\n")
        assert_closed_after_one(client, 400)
    assert calls["index"] == before


def test_two_host_headers_are_400(server: RunningServer, calls: Counter[str]) -> None:
    before = calls["index"]
    with raw_client(server) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert_closed_after_one(client, 400)
    assert calls["index"] == before


def test_error_after_good_pipelined_request_keeps_the_good_answer(
    server: RunningServer, calls: Counter[str]
) -> None:
    before = calls["hidden"]
    with raw_client(server) as client:
        client.send(get("/n/1") + b"GET / HTTP/1.1\r\n\r\n" + get("/hidden"))
        first = client.response()
        assert first.body == b"n=1"
        rest = client.rest_until_close()
    assert count_responses(rest) <= 1
    assert b"SMUGGLED" not in rest
    assert calls["hidden"] == before


# -- smuggling ---------------------------------------------------------------------

HIDDEN = b"GET /hidden HTTP/1.1\r\nHost: t\r\n\r\n"
SMUGGLING: dict[str, bytes] = {
    "cl then te": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te then cl": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 40\r\n\r\n0\r\n\r\n",
    "duplicate cl, same value": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "duplicate cl, different values": b"POST /echo HTTP/1.1\r\nHost: t\r\n"
    b"Content-Length: 0\r\nContent-Length: 36\r\n\r\n",
    "cl list in one header": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl with plus sign": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
    "cl negative": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc",
    "cl hex": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc",
    "cl with inner space": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1 2\r\n\r\nabc",
    "cl empty": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\n",
    "te gzip only": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
    "te chunked then gzip": b"POST /echo HTTP/1.1\r\nHost: t\r\n"
    b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te chunked twice": b"POST /echo HTTP/1.1\r\nHost: t\r\n"
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te unknown coding": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n"
    b"0\r\n\r\n",
    "te in http/1.0": b"POST /echo HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
    "obs-fold in te": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
    b"0\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: t\r\nX-A : b\r\n\r\n",
    "space before colon in te": b"POST /echo HTTP/1.1\r\nHost: t\r\n"
    b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "space before colon in cl": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\nabc",
    "nul in header value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
    "cr in header value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
    "lf in header value": b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\nContent-Length: 36\r\n\r\n",
    "nul in header name": b"GET / HTTP/1.1\r\nHost: t\r\nX-\x00A: b\r\n\r\n",
    "invalid method token": b"G(T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "method with space": b"GE T / HTTP/1.1\r\nHost: t\r\n\r\n",
    "bad chunk size": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_smuggling_vector_gets_one_400_and_close(
    server: RunningServer, calls: Counter[str], raw: bytes
) -> None:
    hidden_before = calls["hidden"]
    with raw_client(server) as client:
        client.send(raw + HIDDEN)
        response = client.response()
        rest = client.rest_until_close()
        closed = client.closed_by_peer
    assert response.status == 400, response
    assert (response.header("connection") or "").lower() == "close"
    assert rest == b"", f"a second response was smuggled: {rest!r}"
    assert closed
    assert calls["hidden"] == hidden_before, "the hidden request's handler ran"


def test_smuggling_vectors_never_reach_a_handler(calls: Counter[str]) -> None:
    # Runs after the parametrized cases in this module's order: none of them
    # may have produced a call to any handler that reads a body.
    assert calls["hidden"] == 0


# -- lingering close ------------------------------------------------------------------


def _send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    def run() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may close once it has lingered long enough

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_early_response_survives_a_large_upload(server: RunningServer, calls: Counter[str]) -> None:
    body = b"z" * (8 * 1024 * 1024)
    with raw_client(server, timeout=10) as client:
        sender = _send_in_background(
            client.sock,
            b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        )
        response = client.response()
        sender.join(10)
    assert response.status == 200
    assert response.body == b"early answer"
    assert (response.header("connection") or "").lower() == "close"


def test_413_survives_a_large_upload() -> None:
    app, _ = build_app()
    body = b"z" * (8 * 1024 * 1024)
    with (
        serve_app(app, request_max_size=1024, **FAST_STOP) as srv,
        raw_client(srv, timeout=10) as client,
    ):
        sender = _send_in_background(
            client.sock,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        )
        response = client.response()
        sender.join(10)
    assert response.status == 413
    assert response.body  # the whole error body arrived, not an RST


def test_413_survives_a_large_chunked_upload() -> None:
    app, _ = build_app()
    chunk = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"
    data = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 64
    with (
        serve_app(app, request_max_size=1024, **FAST_STOP) as srv,
        raw_client(srv, timeout=10) as client,
    ):
        sender = _send_in_background(client.sock, data)
        response = client.response()
        sender.join(10)
    assert response.status == 413


# -- TLS -------------------------------------------------------------------------------


def test_tls(tls_files: TlsSettings) -> None:
    app, _ = build_app()
    with serve_app(app, tls=tls_files, **FAST_STOP) as srv:
        assert srv.url.startswith("https://")
        with httpx.Client(base_url=srv.url, verify=False) as client:
            first = client.get("/")
            second = client.get("/whoami")
            posted = client.post("/echo", content=b"over tls")
    assert first.status_code == 200
    assert first.text == "hello"
    assert second.json()["scheme"] == "https"
    assert second.json()["url"].startswith("https://")
    assert posted.text == "over tls"


def test_plain_http_to_tls_port_does_not_hang(tls_files: TlsSettings) -> None:
    app, _ = build_app()
    with serve_app(app, tls=tls_files, **FAST_STOP) as srv, raw_client(srv, timeout=5) as client:
        client.send(get("/"))
        data = client.rest_until_close(timeout=5)
        assert client.closed_by_peer
    assert b"hello" not in data


# -- trusted proxies -------------------------------------------------------------------

XFF = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
FORWARDED = {"Forwarded": "for=203.0.113.9;proto=https"}


@pytest.mark.parametrize("headers", [XFF, FORWARDED], ids=["x-forwarded", "forwarded"])
def test_trusted_proxy_headers_set_ip_and_scheme(headers: dict[str, str]) -> None:
    app, _ = build_app()
    with serve_app(app, forwarded_allow_ips=("127.0.0.1",), **FAST_STOP) as srv:
        data = httpx.get(srv.url + "/whoami", headers=headers).json()
    assert data["ip"] == "203.0.113.9"
    assert data["scheme"] == "https"


@pytest.mark.parametrize("headers", [XFF, FORWARDED], ids=["x-forwarded", "forwarded"])
def test_untrusted_proxy_headers_are_ignored(headers: dict[str, str]) -> None:
    app, _ = build_app()
    with serve_app(app, forwarded_allow_ips=(), **FAST_STOP) as srv:
        data = httpx.get(srv.url + "/whoami", headers=headers).json()
    assert data["ip"] == "127.0.0.1"
    assert data["scheme"] == "http"


def test_peer_not_in_allow_list_is_not_trusted() -> None:
    app, _ = build_app()
    with serve_app(app, forwarded_allow_ips=("10.0.0.0/8",), **FAST_STOP) as srv:
        data = httpx.get(srv.url + "/whoami", headers=XFF).json()
    assert data == {"ip": "127.0.0.1", "scheme": "http", "url": data["url"]}


def test_without_proxy_headers_ip_is_the_peer() -> None:
    app, _ = build_app()
    with serve_app(app, **FAST_STOP) as srv:
        data = httpx.get(srv.url + "/whoami").json()
    assert data["ip"] == "127.0.0.1"
    assert data["scheme"] == "http"


# -- access log -------------------------------------------------------------------------


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of ``app_server.access``, captured on that logger itself (it may
    not propagate once ``configure_logging`` has run in this process)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # dict.fromkeys: a record seen by both handlers (ours and root's) counts once
    return list(dict.fromkeys(r for r in caplog.records if r.name == ACCESS_LOGGER))


def test_access_log_text_line(access_log: pytest.LogCaptureFixture) -> None:
    app, _ = build_app()
    with serve_app(app, access_log=True, **FAST_STOP) as srv:
        with httpx.Client(base_url=srv.url) as client:
            assert client.get("/n/42?x=1").status_code == 200
            assert client.get("/missing").status_code == 404
        wait_until(lambda: len(_access(access_log)) >= 2, timeout=5)
    first, second = (r.getMessage() for r in _access(access_log)[:2])
    # client, method, path, status, body bytes ("n=42") and duration in ms
    client = r"127\.0\.0\.1(:\d+)?"
    assert re.fullmatch(client + r' - "GET /n/42\?x=1 HTTP/1\.1" 200 4 \d+\.\d+ms', first), first
    assert re.fullmatch(client + r' - "GET /missing HTTP/1\.1" 404 \d+ \d+\.\d+ms', second), second


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_access_log_client_is_ip_and_port(
    access_log: pytest.LogCaptureFixture, log_format: str
) -> None:
    # app_server/logs.py documents ``client`` as ``ip:port`` in both formats.
    app, _ = build_app()
    with serve_app(app, access_log=True, log_format=log_format, **FAST_STOP) as srv:
        assert httpx.get(srv.url + "/").status_code == 200
        wait_until(lambda: _access(access_log), timeout=5)
    record = _access(access_log)[0]
    if log_format == "json":
        client = _json.loads(JsonFormatter().format(record))["client"]
    else:
        client = record.getMessage().split(" ", 1)[0]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", client), client


def test_access_log_off_by_setting(access_log: pytest.LogCaptureFixture) -> None:
    app, _ = build_app()
    with serve_app(app, access_log=False, **FAST_STOP) as srv:
        assert httpx.get(srv.url + "/").status_code == 200
    assert _access(access_log) == []


def test_access_log_json_fields(access_log: pytest.LogCaptureFixture) -> None:
    app, _ = build_app()
    with serve_app(app, access_log=True, log_format="json", **FAST_STOP) as srv:
        assert httpx.post(srv.url + "/echo?a=1", content=b"abc").status_code == 200
        wait_until(lambda: _access(access_log), timeout=5)
    entry = _json.loads(JsonFormatter().format(_access(access_log)[0]))
    assert set(entry) == {
        "time",
        "type",
        "client",
        "method",
        "path",
        "protocol",
        "status",
        "bytes",
        "duration_ms",
        "pid",
    }
    assert entry["type"] == "access"
    assert entry["client"].split(":")[0] == "127.0.0.1"  # the port: see the test above
    assert entry["method"] == "POST"
    assert entry["path"] == "/echo?a=1"
    assert entry["protocol"] == "HTTP/1.1"
    assert entry["status"] == 200
    assert entry["bytes"] == 3
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert entry["pid"] == os.getpid()
