"""Protocol edges read strictly (RFC 9112, RFC 6455), over raw sockets.

A real in-process worker on 127.0.0.1:0; every byte is chosen by the test.
HTTP: a method token we do not implement is 501 (methods are case-sensitive),
``GET *``, a fragment or two spaces in the request line are 400, a transfer
coding other than chunked is 501, HTTP/1.2 is served as 1.1. WebSocket:
messages before an invalid frame in the same read reach the application
before the connection fails, invalid UTF-8 fails while the text frame is
still arriving, and a Close with 1012-1014 is answered normally. Socket
timeouts are the deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from http_helpers import RunningServer, raw_client, serve_app, wait_until

from app_server import App, text
from app_server.exceptions import WebSocketClosed
from app_server.settings.model import WebSocketLimits
from tests.integration.ws_helpers import RawWebSocket, client_frame, close_payload

TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


def build_app() -> tuple[App, dict[str, Any]]:
    app = App("edges")
    seen: dict[str, Any] = {"calls": Counter(), "received": [], "closed": []}

    @app.route("/", methods=["GET", "POST", "OPTIONS"])
    async def index(request):  # type: ignore[no-untyped-def]
        seen["calls"][request.method] += 1
        return text(f"{request.method} {request.path} {len(request.body)}")

    @app.websocket("/record")
    async def record(request, ws):  # type: ignore[no-untyped-def]
        try:
            while True:
                seen["received"].append(await ws.recv())
        except WebSocketClosed as exc:
            seen["closed"].append(exc.code)

    return app, seen


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[RunningServer, dict[str, Any]]]:
    app, seen = build_app()
    limits = WebSocketLimits(max_size=100_000, timeout_s=2.0)
    with serve_app(app, websocket=limits, graceful_timeout_s=2.0) as server:
        yield server, seen


def refused(server: RunningServer, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw``; the one response's status, and proof nothing follows it."""
    with raw_client(server) as client:
        client.send(raw)
        response = client.response()
        assert response.header("connection") == "close"
        assert client.at_eof(), "the connection must close after the error"
        return response.status, response.body


# -- RFC 9112 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # RFC 9110 §9.1: valid method syntax we do not implement; case-sensitive.
        (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (b"CONFORMANCE-CHECK / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # not a token: bad syntax
        # RFC 9112 §3.2.4: asterisk-form is for OPTIONS only.
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        # RFC 9112 §3.2: no request-target form has a fragment.
        (b"GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        # RFC 9112 §3: method SP request-target SP HTTP-version, one SP each.
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        # RFC 9112 §6.1: a transfer coding we do not implement.
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ],
    ids=[
        "get",
        "conformance-check",
        "not-a-token",
        "asterisk-get",
        "fragment",
        "two-spaces-after-method",
        "two-spaces-after-target",
        "gzip-chunked",
    ],
)
def test_request_line_and_coding_edges(
    served: tuple[RunningServer, dict[str, Any]], raw: bytes, status: int
) -> None:
    server, seen = served
    before = sum(seen["calls"].values())
    assert refused(server, raw)[0] == status
    assert sum(seen["calls"].values()) == before  # no handler ran


def test_unknown_method_split_across_reads_is_still_501(
    served: tuple[RunningServer, dict[str, Any]],
) -> None:
    server, _ = served
    with raw_client(server) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nCONF")
        assert client.response().status == 200
        client.send(b"ORMANCE-CHECK / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert client.response().status == 501
        assert client.at_eof()


def test_asterisk_form_options_is_served(served: tuple[RunningServer, dict[str, Any]]) -> None:
    server, _ = served
    with raw_client(server) as client:
        client.send(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        assert client.response().status != 400


def test_http_1_2_is_served_as_1_1(served: tuple[RunningServer, dict[str, Any]]) -> None:
    # RFC 9112 §2.3: a higher minor version is served with the highest we
    # support, and keeps 1.1's persistent connection.
    server, _ = served
    with raw_client(server) as client:
        client.send(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")
        first = client.response()
        assert (first.version, first.status, first.body) == ("HTTP/1.1", 200, b"GET / 0")
        assert first.header("connection") != "close"
        client.send(b"POST / HTTP/1.2\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        assert client.response().body == b"POST / 3"


# -- RFC 6455 ------------------------------------------------------------------


def _open(server: RunningServer) -> RawWebSocket:
    raw = RawWebSocket(server.host, server.port, "/record")
    assert raw.status == 101
    return raw


def test_messages_before_an_invalid_frame_are_delivered_then_the_connection_fails(
    served: tuple[RunningServer, dict[str, Any]],
) -> None:
    server, seen = served
    seen["received"].clear()
    seen["closed"].clear()
    with _open(server) as raw:
        # One write, so the worker reads both messages and the bad frame at once.
        raw.send(
            client_frame(TEXT, b"first")
            + client_frame(BINARY, b"second")
            + client_frame(TEXT, b"x", rsv=0x40)
        )
        code, _, _ = raw.read_until_close()
        assert code == 1002
        assert raw.wait_tcp_close()
    wait_until(lambda: seen["closed"])
    assert seen["received"] == ["first", b"second"]
    assert seen["closed"] == [1002]


def test_invalid_utf8_fails_while_the_text_frame_arrives(
    served: tuple[RunningServer, dict[str, Any]],
) -> None:
    server, seen = served
    seen["closed"].clear()
    frame = client_frame(TEXT, b"ok \xff" + b"x" * 5000)
    with _open(server) as raw:
        raw.send(frame[:200])  # the rest of the frame is never sent
        code, _, _ = raw.read_until_close()
        assert code == 1007
        assert raw.wait_tcp_close()
    wait_until(lambda: seen["closed"] == [1007])


@pytest.mark.parametrize("code", [1012, 1013, 1014])
def test_registered_close_codes_are_answered_normally(
    served: tuple[RunningServer, dict[str, Any]], code: int
) -> None:
    server, seen = served
    seen["closed"].clear()
    with _open(server) as raw:
        raw.send_frame(CLOSE, close_payload(code, "bye"))
        assert raw.read_until_close()[:2] == (code, "bye")
        assert raw.wait_tcp_close()
    wait_until(lambda: seen["closed"] == [code])
