"""The WebSocket close paths and their races against a real worker.

Raw sockets make the races happen on purpose: the peer breaks the protocol
after our Close, closes while ours is on its way, or vanishes during the
closing handshake. Whatever happens, the server writes one Close frame, the
TCP connection ends, and the handler sees the close that decided it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from app_server import App, WebSocketState
from app_server.settings.model import WebSocketLimits
from app_server.status import CloseCode
from tests.conftest import serve_app, wait_until
from tests.integration.ws_helpers import RawWebSocket, client_frame, close_payload

TEXT, CLOSE = 0x1, 0x8


def build_app() -> tuple[App, dict[str, Any]]:
    app = App("close-paths")
    seen: dict[str, Any] = {}

    @app.websocket("/close/{code:int}")
    async def close(ws: Any, code: int) -> None:
        await ws.send("hello")
        await ws.close(code, "from the handler")
        seen[ws.path] = (ws.close_code, ws.client_state, ws.server_state, ws.state)

    @app.websocket("/close-now/{code:int}")
    async def close_now(ws: Any, code: int) -> None:
        await ws.close(code, "from the handler")
        seen[ws.path] = (ws.close_code, ws.close_reason)

    @app.websocket("/close-twice")
    async def close_twice(ws: Any) -> None:
        await ws.close(CloseCode.NORMAL_CLOSURE, "first")
        await ws.close(4002, "second")  # outside ``async with``: a no-op
        seen[ws.path] = (ws.close_code, ws.close_reason)

    return app, seen


@pytest.fixture()
def served() -> Iterator[tuple[Any, dict[str, Any]]]:
    app, seen = build_app()
    limits = WebSocketLimits(timeout_s=1.0)
    with serve_app(app, websocket=limits, graceful_timeout_s=2.0) as server:
        yield server, seen


def frames_to_eof(raw: RawWebSocket) -> list[tuple[int, bytes]]:
    """Every frame the server sends until it closes the TCP connection."""
    frames = []
    while True:
        try:
            _, opcode, payload = raw.read_frame()
        except (ConnectionError, OSError):
            return frames
        frames.append((opcode, payload))


def closes(frames: list[tuple[int, bytes]]) -> list[bytes]:
    return [payload for opcode, payload in frames if opcode == CLOSE]


def test_fail_after_our_close_sends_no_second_close(served: Any) -> None:
    server, seen = served
    with RawWebSocket(server.host, server.port, "/close/4000") as raw:
        assert raw.read_frame() == (True, TEXT, b"hello")
        assert raw.read_until_close()[:2] == (4000, "from the handler")
        raw.send(client_frame(TEXT, b"x", rsv=0x40))  # RSV1 without compression: 1002
        assert closes(frames_to_eof(raw)) == []  # our Close went out once
    wait_until(lambda: "/close/4000" in seen)
    # The handler learns why the connection ended: the peer's protocol error.
    code, *states = seen["/close/4000"]
    assert code == CloseCode.PROTOCOL_ERROR
    assert states == [WebSocketState.DISCONNECTED] * 3


def test_peer_close_while_ours_is_in_flight(served: Any) -> None:
    server, seen = served
    with RawWebSocket(server.host, server.port, "/close-now/4001") as raw:
        # Our Close crosses the handler's: whichever the server sees first,
        # it writes exactly one Close and ends the connection.
        raw.send_frame(CLOSE, close_payload(CloseCode.NORMAL_CLOSURE, "client"))
        frames = frames_to_eof(raw)
    sent = closes(frames)
    assert len(sent) == 1
    assert sent[0] in (
        close_payload(4001, "from the handler"),
        close_payload(CloseCode.NORMAL_CLOSURE, "client"),
    )
    wait_until(lambda: "/close-now/4001" in seen)
    assert seen["/close-now/4001"][0] == CloseCode.NORMAL_CLOSURE  # the peer's close decided it


def test_transport_lost_during_the_closing_handshake(served: Any) -> None:
    server, seen = served
    with RawWebSocket(server.host, server.port, "/close/4003") as raw:
        assert raw.read_frame() == (True, TEXT, b"hello")
        assert raw.read_until_close()[:2] == (4003, "from the handler")
        # Vanish without answering: a reset, not a Close.
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_until(lambda: "/close/4003" in seen)
    assert seen["/close/4003"][0] == CloseCode.ABNORMAL_CLOSURE


def test_double_close_sends_one_close(served: Any) -> None:
    server, seen = served
    with RawWebSocket(server.host, server.port, "/close-twice") as raw:
        assert raw.read_until_close()[:2] == (CloseCode.NORMAL_CLOSURE, "first")
        raw.send_frame(CLOSE, close_payload(CloseCode.NORMAL_CLOSURE))
        assert closes(frames_to_eof(raw)) == []
    wait_until(lambda: "/close-twice" in seen)
    assert seen["/close-twice"] == (CloseCode.NORMAL_CLOSURE, "")


def test_the_state_views_while_our_close_is_in_flight() -> None:
    app = App("views")
    seen: dict[str, Any] = {}

    @app.websocket("/views")
    async def views(ws: Any) -> None:
        await ws.accept()
        closing = asyncio.ensure_future(ws.close(4004, "bye"))
        await asyncio.sleep(0)  # our Close is written; the peer's is not here yet
        seen["during"] = (ws.state, ws.client_state, ws.server_state, ws.close_code)
        await closing
        seen["after"] = (ws.state, ws.client_state, ws.server_state, ws.close_code)

    with serve_app(app, websocket=WebSocketLimits(timeout_s=1.0)) as server:
        with RawWebSocket(server.host, server.port, "/views") as raw:
            assert raw.read_until_close()[:2] == (4004, "bye")
            wait_until(lambda: "during" in seen)
            raw.send_frame(CLOSE, close_payload(CloseCode.NORMAL_CLOSURE))
            assert raw.wait_tcp_close()
        wait_until(lambda: "after" in seen)
    connected, disconnected = WebSocketState.CONNECTED, WebSocketState.DISCONNECTED
    # Starlette's parties: the server is done once its Close is out; the client
    # only once its own Close arrives.
    assert seen["during"] == (disconnected, connected, disconnected, 4004)
    assert seen["after"] == (disconnected, disconnected, disconnected, CloseCode.NORMAL_CLOSURE)
