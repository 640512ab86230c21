"""WebSockets against a real worker: the handshake and its refusals, the
WebSocket object's API in each seed's style, close codes, limits, keepalive,
compression, backpressure and broadcast. Clients are the ``websockets``
library and, for protocol edge cases, raw sockets with hand-built frames."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app_server import App, Identity, WebSocket, WebSocketState, auth, text
from app_server.exceptions import WebSocketClosed
from app_server.settings.model import WebSocketLimits
from tests.conftest import serve_app, wait_until
from tests.integration.ws_helpers import (
    RawWebSocket,
    client_frame,
    close_payload,
    deflate_message,
)

FAST = {"graceful_timeout_s": 2.0}
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def build_app() -> tuple[App, dict[str, Any]]:
    app = App("ws-test")
    seen: dict[str, Any] = {"events": [], "states": []}

    @app.websocket("/echo")
    async def echo(request, ws):  # type: ignore[no-untyped-def]
        async for message in ws:
            await ws.send(message)

    @app.websocket("/sanic/<room>")
    async def sanic_style(request, ws, room):  # type: ignore[no-untyped-def]
        while True:
            data = await ws.recv()
            await ws.send(f"{room}:{data}")

    @app.ws("/bs/{room_id:int}")
    async def blacksheep_style(websocket: WebSocket, room_id: int):  # type: ignore[no-untyped-def]
        seen["states"].append(websocket.state)
        await websocket.accept()
        seen["states"].append(websocket.state)
        await websocket.send_json({"room": room_id, "values": websocket.route_values})
        try:
            while True:
                event = await websocket.receive()
                if "text" in event:
                    await websocket.send_text(event["text"].upper())
                else:
                    await websocket.send_bytes(event["bytes"][::-1])
        except WebSocketClosed as exc:
            seen["events"].append(("closed", exc.code, exc.reason))
            seen["states"].append(websocket.state)

    @app.websocket_route("/boc/{channel}", value_type="json")
    async def bocadillo_style(ws, channel: str, anonymous: bool = False):  # type: ignore[no-untyped-def]
        user = "anon" if anonymous else ws.headers.get("user", "?")
        async for message in ws:
            await ws.send({"user": user, "channel": channel, "message": message})

    @app.websocket_route("/events")
    async def events(ws):  # type: ignore[no-untyped-def]
        event = await ws.receive_event()
        await ws.send_event({"type": "websocket.send", "text": f"You said: {event['text']}"})
        seen["events"].append(await ws.receive_event())

    @app.websocket("/ctx", auto_accept=False)
    async def ctx(ws):  # type: ignore[no-untyped-def]
        async with ws:
            await ws.send("inside")
            await ws.close(4001, "first")
            try:
                await ws.close()
            except RuntimeError as exc:
                seen["events"].append(("second close", str(exc)))

    @app.websocket("/close-first/{code:int}")
    async def close_first(ws, code: int):  # type: ignore[no-untyped-def]
        await ws.close(code, "go away")

    @app.websocket("/reject")
    async def reject(ws):  # type: ignore[no-untyped-def]
        await ws.reject(403)
        try:
            await ws.send("never")
        except WebSocketClosed:
            seen["events"].append("send after reject raised")
            raise

    @app.websocket("/boom")
    async def boom(ws):  # type: ignore[no-untyped-def]
        await ws.send("before")
        raise ValueError("handler failed")

    @app.websocket("/boom-early")
    async def boom_early(ws):  # type: ignore[no-untyped-def]
        raise ValueError("failed before accepting")

    @app.websocket("/boom-manual", auto_accept=False)
    async def boom_manual(ws):  # type: ignore[no-untyped-def]
        raise ValueError("failed before accepting")

    @app.websocket("/never-accepts", auto_accept=False)
    async def never_accepts(ws):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()

    @app.websocket("/returns")
    async def returns(ws):  # type: ignore[no-untyped-def]
        await ws.send("bye")

    @app.websocket("/needs-query")
    async def needs_query(ws, token: str):  # type: ignore[no-untyped-def]
        await ws.send(token)

    @app.websocket("/proto", subprotocols=["chat.v2", "chat.v1"])
    async def proto(ws):  # type: ignore[no-untyped-def]
        await ws.send(str(ws.subprotocol))

    @app.websocket("/ping")
    async def ping(ws):  # type: ignore[no-untyped-def]
        waiter = await ws.ping()
        latency = await waiter
        await ws.send(f"{latency:.6f}")
        await ws.recv()

    @app.websocket("/timeout")
    async def timeout(ws):  # type: ignore[no-untyped-def]
        try:
            await ws.recv(timeout=0.05)
        except TimeoutError:
            await ws.send("timed out")
        await ws.send(await ws.recv())

    @app.websocket("/info")
    async def info(ws):  # type: ignore[no-untyped-def]
        scope = ws.scope
        await ws.send(
            {
                "url": ws.url,
                "path": scope["path"],
                "query_string": scope["query_string"].decode(),
                "scheme": scope["scheme"],
                "client": list(scope["client"]),
                "args": ws.query_parameters.get("a"),
                "state": f"{ws.state}",
            }
        )
        await ws.send(f"{ws.state}")

    @app.websocket("/codes", caught_close_codes=all)
    async def codes(ws):  # type: ignore[no-untyped-def]
        seen["events"].append(("codes-open",))
        await ws.recv()

    @app.get("/plain")
    async def plain(request):  # type: ignore[no-untyped-def]
        return text("plain")

    @app.websocket("/slow-reader")
    async def slow_reader(ws):  # type: ignore[no-untyped-def]
        chunk = b"x" * 65536
        seen["sent"] = 0
        try:
            while True:
                await ws.send(chunk)
                seen["sent"] += 1
        except WebSocketClosed:
            pass

    @app.websocket("/queue")
    async def queue(ws):  # type: ignore[no-untyped-def]
        gate = seen["gate"] = threading.Event()
        await ws.send("ready")
        seen["channel"] = ws.connection
        await asyncio.to_thread(gate.wait, 10)
        received = [await ws.recv() for _ in range(100)]
        await ws.send(str(received == [str(i) for i in range(100)]))

    return app, seen


@pytest.fixture(scope="module")
def served() -> Any:
    app, seen = build_app()
    limits = WebSocketLimits(max_size=1000, max_queue=8, timeout_s=1.0)
    with serve_app(app, websocket=limits, **FAST) as server:
        yield server, seen


# -- the seeds' styles over a real client -------------------------------------


def test_echo_text_and_binary(served: Any) -> None:
    server, _ = served

    async def go() -> None:
        async with connect(server.ws_url + "/echo") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"

    run(go())


def test_sanic_style_recv_and_path_parameter(served: Any) -> None:
    server, _ = served

    async def go() -> None:
        async with connect(server.ws_url + "/sanic/lobby") as ws:
            await ws.send("hi")
            assert await ws.recv() == "lobby:hi"

    run(go())


def test_blacksheep_style_accept_events_and_state(served: Any) -> None:
    server, seen = served
    seen["events"].clear()
    seen["states"].clear()

    async def go() -> None:
        async with connect(server.ws_url + "/bs/7") as ws:
            assert await ws.recv() == '{"room":7,"values":{"room_id":7}}'
            await ws.send("abc")
            assert await ws.recv() == "ABC"
            await ws.send(b"\x01\x02")
            assert await ws.recv() == b"\x02\x01"
            await ws.close(1001, "leaving")

    run(go())
    wait_until(lambda: seen["events"])
    assert seen["events"] == [("closed", 1001, "leaving")]
    assert seen["states"] == [
        WebSocketState.CONNECTING,
        WebSocketState.CONNECTED,
        WebSocketState.DISCONNECTED,
    ]


def test_bocadillo_style_typed_values_and_query(served: Any) -> None:
    server, _ = served

    async def go() -> None:
        async with connect(server.ws_url + "/boc/news", additional_headers={"user": "ann"}) as ws:
            await ws.send('{"n": 1}')
            assert await ws.recv() == '{"user":"ann","channel":"news","message":{"n":1}}'
        async with connect(server.ws_url + "/boc/news?anonymous=true") as ws:
            await ws.send("[1]")
            assert await ws.recv() == '{"user":"anon","channel":"news","message":[1]}'

    run(go())


def test_receive_event_send_event_and_disconnect_event(served: Any) -> None:
    server, seen = served
    seen["events"].clear()

    async def go() -> None:
        async with connect(server.ws_url + "/events") as ws:
            await ws.send("x")
            assert await ws.recv() == "You said: x"

    run(go())
    wait_until(lambda: seen["events"])
    assert seen["events"] == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]


def test_async_with_closes_once_and_a_second_close_raises(served: Any) -> None:
    server, seen = served
    seen["events"].clear()

    async def go() -> tuple[int, str]:
        async with connect(server.ws_url + "/ctx") as ws:
            assert await ws.recv() == "inside"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason  # type: ignore[return-value]

    assert run(go()) == (4001, "first")
    wait_until(lambda: seen["events"])
    assert seen["events"][0][0] == "second close"


@pytest.mark.parametrize("code", [1000, 4403, 1008])
def test_close_before_accept_shows_the_code(served: Any, code: int) -> None:
    server, _ = served

    async def go() -> tuple[int, str]:
        async with connect(server.ws_url + f"/close-first/{code}") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason  # type: ignore[return-value]

    assert run(go()) == (code, "go away")


def test_handler_returning_closes_normally(served: Any) -> None:
    server, _ = served

    async def go() -> int | None:
        async with connect(server.ws_url + "/returns") as ws:
            assert await ws.recv() == "bye"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert run(go()) == 1000


def test_reject_is_an_http_response(served: Any) -> None:
    server, seen = served
    seen["events"].clear()

    async def go() -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(server.ws_url + "/reject"):
                pass
        return info.value.response.status_code

    assert run(go()) == 403
    wait_until(lambda: seen["events"])
    assert seen["events"] == ["send after reject raised"]


@pytest.mark.parametrize("path", ["/boom", "/boom-early"])
def test_exception_in_handler_closes_1011(served: Any, path: str) -> None:
    server, _ = served

    async def go() -> int | None:
        async with connect(server.ws_url + path) as ws:
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
            return ws.close_code

    assert run(go()) == 1011


def test_exception_before_manual_accept_is_500(served: Any) -> None:
    server, _ = served
    with RawWebSocket(server.host, server.port, "/boom-manual") as raw:
        assert raw.status == 500
        assert raw.wait_tcp_close()


def test_handshake_not_answered_in_time_is_503(served: Any) -> None:
    server, _ = served
    with RawWebSocket(server.host, server.port, "/never-accepts") as raw:
        assert raw.status == 503


def test_missing_required_query_parameter_is_400(served: Any) -> None:
    server, _ = served
    with RawWebSocket(server.host, server.port, "/needs-query") as raw:
        assert raw.status == 400
    with RawWebSocket(server.host, server.port, "/needs-query?token=t") as raw:
        assert raw.status == 101
        assert raw.read_frame() == (True, TEXT, b"t")


def test_unknown_path_is_404_and_http_route_is_404(served: Any) -> None:
    server, _ = served
    for path in ("/nowhere", "/plain"):
        with RawWebSocket(server.host, server.port, path) as raw:
            assert raw.status == 404


def test_plain_http_to_a_websocket_route_is_426(served: Any) -> None:
    server, _ = served
    response = httpx.get(server.url + "/echo")
    assert response.status_code == 426


def test_bad_handshakes(served: Any) -> None:
    server, _ = served
    base = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    missing_key = server.raw((base + "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert missing_key.startswith(b"HTTP/1.1 400")
    bad_key = server.raw(
        (base + "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    assert bad_key.startswith(b"HTTP/1.1 400")
    old = server.raw((base + key + "Sec-WebSocket-Version: 8\r\n\r\n").encode())
    assert old.startswith(b"HTTP/1.1 426")
    assert b"sec-websocket-version: 13" in old.lower()


def test_handshake_response(served: Any) -> None:
    server, _ = served
    data = (
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock = server.connect()
    try:
        sock.sendall(data + client_frame(TEXT, b"early"))  # a frame right behind the request
        received = b""
        while b"early" not in received:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
    finally:
        sock.close()
    head = received.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 101 Switching Protocols")
    # RFC 6455 §1.3's worked example
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head


def test_subprotocol_selection(served: Any) -> None:
    server, _ = served

    async def go(offered: list[str] | None) -> tuple[str | None, str]:
        async with connect(server.ws_url + "/proto", subprotocols=offered) as ws:  # type: ignore[arg-type]
            return ws.subprotocol, await ws.recv()  # type: ignore[return-value]

    assert run(go(["chat.v1", "chat.v2"])) == ("chat.v2", "chat.v2")  # the route's preference
    assert run(go(["chat.v1"])) == ("chat.v1", "chat.v1")
    assert run(go(None)) == (None, "None")


def test_ping_returns_a_waiter_with_the_round_trip(served: Any) -> None:
    server, _ = served

    async def go() -> float:
        async with connect(server.ws_url + "/ping") as ws:
            latency = float(await ws.recv())
            await ws.send("done")
            return latency

    assert 0 < run(go()) < 5


def test_recv_timeout(served: Any) -> None:
    server, _ = served

    async def go() -> None:
        async with connect(server.ws_url + "/timeout") as ws:
            assert await ws.recv() == "timed out"
            await ws.send("after")
            assert await ws.recv() == "after"

    run(go())


def test_scope_url_and_query(served: Any) -> None:
    server, _ = served

    async def go() -> tuple[str, str]:
        async with connect(server.ws_url + "/info?a=1") as ws:
            return await ws.recv(), await ws.recv()  # type: ignore[return-value]

    import json

    first, second = run(go())
    info = json.loads(first)
    assert info["url"] == f"{server.ws_url}/info?a=1"
    assert info["path"] == "/info"
    assert info["query_string"] == "a=1"
    assert info["scheme"] == "ws"
    assert info["client"][0] == "127.0.0.1"
    assert info["args"] == "1"
    assert info["state"] == "WebSocketState.CONNECTING"  # accepted lazily, at the first send
    assert second == "WebSocketState.CONNECTED"


# -- protocol errors: a Close frame with the right code, then TCP close ---------


def _fail_code(server: Any, *frames: bytes) -> tuple[int | None, str]:
    with RawWebSocket(server.host, server.port, "/echo") as raw:
        assert raw.status == 101
        for frame in frames:
            raw.send(frame)
        code, reason, _ = raw.read_until_close()
        assert raw.wait_tcp_close()
        return code, reason


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([client_frame(TEXT, b"x", rsv=0x40)], 1002),  # RSV1 without an extension
        ([client_frame(TEXT, b"x", rsv=0x10)], 1002),  # RSV3
        ([client_frame(0x3, b"x")], 1002),  # reserved data opcode
        ([client_frame(0xB, b"x")], 1002),  # reserved control opcode
        ([client_frame(PING, b"x" * 126)], 1002),  # control frame > 125 bytes
        ([client_frame(PING, b"x", fin=False)], 1002),  # fragmented control frame
        ([client_frame(TEXT, b"x", mask=False)], 1002),  # unmasked client frame
        ([client_frame(0x0, b"x")], 1002),  # continuation with nothing to continue
        ([client_frame(TEXT, b"a", fin=False), client_frame(TEXT, b"b")], 1002),
        ([client_frame(TEXT, b"\xff\xfe")], 1007),  # invalid UTF-8
        # a 2-byte character split across fragments is fine; a broken one is not
        ([client_frame(TEXT, b"\xc3", fin=False), client_frame(0x0, b"(")], 1007),
        ([client_frame(CLOSE, b"\x03")], 1002),  # 1-byte close payload
        ([client_frame(CLOSE, close_payload(999))], 1002),  # invalid close code
        ([client_frame(CLOSE, close_payload(1004))], 1002),  # reserved close code
        ([client_frame(CLOSE, close_payload(1006))], 1002),  # local-only close code
        ([client_frame(CLOSE, b"\x03\xe8\xff")], 1007),  # reason not UTF-8
    ],
    ids=[
        "rsv1",
        "rsv3",
        "opcode-3",
        "opcode-B",
        "control-126",
        "control-fragmented",
        "unmasked",
        "orphan-continuation",
        "text-inside-text",
        "utf8",
        "utf8-fragments",
        "close-1-byte",
        "close-999",
        "close-1004",
        "close-1006",
        "close-reason-utf8",
    ],
)
def test_protocol_errors_close_with_the_right_code(
    served: Any, frames: list[bytes], code: int
) -> None:
    server, _ = served
    assert _fail_code(server, *frames)[0] == code


def test_utf8_split_across_fragments_is_accepted(served: Any) -> None:
    server, _ = served
    with RawWebSocket(server.host, server.port, "/echo") as raw:
        raw.send(client_frame(TEXT, "é".encode()[:1], fin=False))
        raw.send(client_frame(PING, b"between"))  # control frames may interleave
        raw.send(client_frame(0x0, "é".encode()[1:]))
        assert raw.read_frame() == (True, PONG, b"between")
        assert raw.read_frame() == (True, TEXT, "é".encode())


def test_message_over_max_size_closes_1009(served: Any) -> None:
    server, _ = served
    assert _fail_code(server, client_frame(TEXT, b"x" * 1001)) == (1009, "message too big")
    # the limit is on the reassembled message, not on each frame
    fragments = [
        client_frame(TEXT, b"x" * 400, fin=False),
        client_frame(0x0, b"x" * 400, fin=False),
        client_frame(0x0, b"x" * 400),
    ]
    assert _fail_code(server, *fragments)[0] == 1009


def test_message_at_max_size_is_accepted(served: Any) -> None:
    server, _ = served
    with RawWebSocket(server.host, server.port, "/echo") as raw:
        raw.send(client_frame(BINARY, b"y" * 1000))
        assert raw.read_frame() == (True, BINARY, b"y" * 1000)


def test_peer_close_codes_are_echoed(served: Any) -> None:
    server, seen = served
    with RawWebSocket(server.host, server.port, "/echo") as raw:
        raw.send_frame(CLOSE, close_payload(4000, "done"))
        assert raw.read_until_close()[:2] == (4000, "done")
        assert raw.wait_tcp_close()
    with RawWebSocket(server.host, server.port, "/echo") as raw:
        raw.send_frame(CLOSE, b"")  # no status code: 1005, answered with an empty Close
        assert raw.read_until_close()[:2] == (None, "")
        assert raw.wait_tcp_close()


def test_tcp_drop_is_1006_for_the_handler(served: Any) -> None:
    server, seen = served
    seen["events"].clear()
    seen["states"].clear()
    raw = RawWebSocket(server.host, server.port, "/bs/1")
    assert raw.read_frame()[1] == TEXT
    raw.close()
    wait_until(lambda: seen["events"])
    assert seen["events"] == [("closed", 1006, "")]


def test_ping_flood_is_answered_in_order(served: Any) -> None:
    server, _ = served
    with RawWebSocket(server.host, server.port, "/echo") as raw:
        raw.send(b"".join(client_frame(PING, str(i).encode()) for i in range(2000)))
        for i in range(2000):
            assert raw.read_frame() == (True, PONG, str(i).encode())
        raw.send_frame(TEXT, b"still alive")
        assert raw.read_frame() == (True, TEXT, b"still alive")


def test_ping_flood_from_a_peer_that_does_not_read_is_paced() -> None:
    # The peer floods pings and never reads our pongs: the server stops
    # reading (TCP backpressure) instead of buffering pongs without bound.
    app, _ = build_app()
    with serve_app(app, **FAST) as server:
        raw = RawWebSocket(server.host, server.port, "/echo")
        raw.sock.setblocking(False)
        frame = client_frame(PING, b"p" * 125)
        sent = 0
        stalled = 0
        while stalled < 50 and sent < 400_000_000:
            try:
                sent += raw.sock.send(frame * 64)
                stalled = 0
            except BlockingIOError:
                stalled += 1
                wait_until(lambda: True, timeout=0.01)
        raw.close()
    # 400 MB of pongs would have been buffered without flow control; the
    # sender was stopped long before by the server not reading.
    assert sent < 400_000_000


# -- limits and flow ------------------------------------------------------------


def test_slow_reader_blocks_send_with_bounded_buffer(served: Any) -> None:
    server, seen = served
    raw = RawWebSocket(server.host, server.port, "/slow-reader")
    try:
        raw.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
        wait_until(lambda: seen.get("sent", 0) > 0)
        # The count stops growing: send() is waiting on the write buffer.
        previous = -1
        for _ in range(20):
            now = seen["sent"]
            if now == previous:
                break
            previous = now
            wait_until(lambda: True, timeout=0.05)
        stable = seen["sent"]
        wait_until(lambda: True, timeout=0.3)
        assert seen["sent"] == stable
        # 64 KiB messages: what fits in kernel buffers plus one high-water mark
        assert stable < 200
    finally:
        raw.close()


def test_max_queue_pauses_reading_and_loses_nothing(served: Any) -> None:
    server, seen = served
    with RawWebSocket(server.host, server.port, "/queue") as raw:
        assert raw.read_frame() == (True, TEXT, b"ready")
        raw.send(b"".join(client_frame(TEXT, str(i).encode()) for i in range(100)))
        channel = wait_until(lambda: seen.get("channel"))
        # The handler is not reading: the queue fills to max_queue (8) and the
        # server stops reading the socket instead of queueing all 100.
        wait_until(lambda: channel.reading_paused)
        assert len(channel.queue) == 8
        seen["gate"].set()
        assert raw.read_frame() == (True, TEXT, b"True")


def test_keepalive_pings_and_closes_1011_without_pong() -> None:
    app, _ = build_app()
    limits = WebSocketLimits(ping_interval_s=0.1, ping_timeout_s=0.3)
    with serve_app(app, websocket=limits, **FAST) as server:
        with RawWebSocket(server.host, server.port, "/echo") as raw:
            fin, opcode, payload = raw.read_frame()
            assert opcode == PING  # never answered
            code, reason, _ = raw.read_until_close()
            assert (code, reason) == (1011, "keepalive ping timeout")

        async def answered() -> None:  # the websockets client answers pings
            async with connect(server.ws_url + "/echo", ping_interval=None) as ws:
                for _ in range(8):
                    await ws.send("x")
                    assert await ws.recv() == "x"
                    await asyncio.sleep(0.1)  # the behaviour under test: time passing

        run(answered())


def test_draining_closes_with_1001() -> None:
    app, _ = build_app()
    codes: list[int | None] = []
    ready = threading.Event()

    async def client(url: str) -> None:
        async with connect(url + "/echo") as ws:
            ready.set()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            codes.append(ws.close_code)

    with serve_app(app, **FAST) as server:
        thread = threading.Thread(target=lambda: run(client(server.ws_url)))
        thread.start()
        assert ready.wait(10)
    thread.join(10)
    assert codes == [1001]


# -- compression -----------------------------------------------------------------


def test_permessage_deflate_round_trip_and_bomb() -> None:
    app, _ = build_app()
    limits = WebSocketLimits(max_size=10_000, compression="permessage-deflate")
    with serve_app(app, websocket=limits, **FAST) as server:

        async def go() -> str | None:
            async with connect(server.ws_url + "/echo", compression="deflate") as ws:
                await ws.send("z" * 5000)
                assert await ws.recv() == "z" * 5000
                return ws.response.headers.get("sec-websocket-extensions")  # type: ignore[union-attr]

        assert (run(go()) or "").startswith("permessage-deflate")
        headers = {"Sec-WebSocket-Extensions": "permessage-deflate"}
        with RawWebSocket(server.host, server.port, "/echo", headers) as raw:
            assert raw.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            bomb = deflate_message(b"\0" * 1_000_000)  # ~1 KB inflating to 1 MB
            assert len(bomb) < 2000
            raw.send_frame(BINARY, bomb, rsv=0x40)
            code, reason, _ = raw.read_until_close()
            assert (code, reason) == (1009, "message too big")


def test_without_compression_setting_deflate_is_not_negotiated(served: Any) -> None:
    server, _ = served
    headers = {"Sec-WebSocket-Extensions": "permessage-deflate"}
    with RawWebSocket(server.host, server.port, "/echo", headers) as raw:
        assert "sec-websocket-extensions" not in raw.headers


# -- authentication ----------------------------------------------------------------


def test_auth_on_websocket_routes() -> None:
    app = App("auth")

    async def authenticate(request: Any) -> Identity | None:
        token = request.args.get("token")
        if token is None:
            return None
        return Identity({"id": token, "roles": ["admin"] if token == "root" else []})

    app.use_authentication(authenticate)

    @app.websocket("/me")
    @auth()
    async def me(request, ws):  # type: ignore[no-untyped-def]
        await ws.send(request.identity.id)

    @app.websocket("/admin", apply=[auth(roles=["admin"])])
    async def admin(ws):  # type: ignore[no-untyped-def]
        await ws.send("welcome")

    with serve_app(app, **FAST) as server:
        for path, status in (("/me", 401), ("/admin?token=bob", 403), ("/admin", 401)):
            with RawWebSocket(server.host, server.port, path) as raw:
                assert raw.status == status, path
        with RawWebSocket(server.host, server.port, "/me?token=ann") as raw:
            assert raw.read_frame() == (True, TEXT, b"ann")
        with RawWebSocket(server.host, server.port, "/admin?token=root") as raw:
            assert raw.read_frame() == (True, TEXT, b"welcome")


# -- broadcast ----------------------------------------------------------------------


def test_broadcast_writes_one_frame_to_every_open_connection() -> None:
    app = App("bcast")
    members: weakref.WeakSet[WebSocket] = weakref.WeakSet()
    counts: list[int] = []

    @app.websocket("/room")
    async def room(ws):  # type: ignore[no-untyped-def]
        members.add(ws)
        try:
            async for message in ws:
                counts.append(await app.broadcast(members, message))
        finally:
            members.discard(ws)

    with serve_app(app, **FAST) as server:

        async def go() -> None:
            clients = [await connect(server.ws_url + "/room") for _ in range(20)]
            wait_for = asyncio.get_running_loop().time() + 5
            while len(members) < 20 and asyncio.get_running_loop().time() < wait_for:
                await asyncio.sleep(0.01)  # polling the server's view with a deadline
            await clients[5].close()
            await clients[0].send("hello all")
            for i, c in enumerate(clients):
                if i != 5:
                    assert await c.recv() == "hello all"
            await clients[1].send(b"\x01")
            assert await clients[19].recv() == b"\x01"
            for i, c in enumerate(clients):
                if i not in (5, 19):
                    assert await c.recv() == b"\x01"
            for c in clients:
                await c.close()

        run(go())
    assert counts[:2] == [19, 19]


def test_broadcast_frames_corked_in_one_loop_pass_keep_their_order() -> None:
    # Frames broadcast within one loop pass are written together at its end;
    # a direct send, a large frame past the cork limit and the Close frame
    # that follow must still reach the peer after them, in order.
    app = App("cork")
    members: weakref.WeakSet[WebSocket] = weakref.WeakSet()
    big = "x" * 40_000

    @app.websocket("/burst")
    async def burst(ws):  # type: ignore[no-untyped-def]
        members.add(ws)
        count = int(await ws.recv())
        for i in range(count):
            await app.broadcast(members, f"b{i}")
        await ws.send("direct")
        for _ in range(3):
            await app.broadcast(members, big)
        await app.broadcast(members, "after")
        await ws.close(1000, "done")

    with serve_app(app, **FAST) as server:

        async def go() -> None:
            async with connect(server.ws_url + "/burst", max_size=2**20) as c:
                await c.send("200")
                got = [await c.recv() for _ in range(200 + 1 + 3 + 1)]
                assert got[:200] == [f"b{i}" for i in range(200)]
                assert got[200:] == ["direct", big, big, big, "after"]
                with pytest.raises(ConnectionClosed) as info:
                    await c.recv()
                assert (info.value.rcvd.code, info.value.rcvd.reason) == (1000, "done")

        run(go())


def test_closing_handshake_is_bounded_by_the_timeout(served: Any) -> None:
    # The server closes; this client never answers the Close frame. The
    # server ends the TCP connection after WEBSOCKET_TIMEOUT (1 s here).
    server, _ = served
    with RawWebSocket(server.host, server.port, "/close-first/1000") as raw:
        code, reason, _ = raw.read_until_close()
        assert (code, reason) == (1000, "go away")
        assert raw.wait_tcp_close(timeout=5)
