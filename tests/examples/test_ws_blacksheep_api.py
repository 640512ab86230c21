"""examples/ws_blacksheep_api.py (the BlackSheep seed's API snippets) over real sockets."""

from __future__ import annotations

import gc
import json
from datetime import datetime

import pytest

from examples import ws_blacksheep_api
from examples.ws_blacksheep_api import app
from tests.conftest import serve_app, wait_until
from tests.examples.ws_client import (
    expect_close,
    expect_http_refusal,
    poll,
    recv,
    recv_json,
    run,
    ws_connect,
)


class Output:
    """What the server's handlers print (they run in the server thread)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def has(self, line: str) -> bool:
        self.text += self.capsys.readouterr().out
        return line in self.text.splitlines()


@pytest.fixture
def output(capsys: pytest.CaptureFixture[str]) -> Output:
    return Output(capsys)


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/ws", "Echo: "),
        ("/chat", "Received: "),
        ("/stateful", "Echo: "),
        ("/validated", "Processed: "),
    ],
)
def test_text_echo_handlers(path, prefix) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, path) as ws:
            for text in ["one", "two words", "ünï"]:
                await ws.send(text)
                assert await recv(ws) == prefix + text

    with serve_app(app) as server:
        run(scenario(server))


def test_state_and_scope_are_visible_to_the_handler(output: Output) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat") as ws:
            await ws.send("x")
            assert await recv(ws) == "Received: x"
            await ws.close(4000, "leaving")
        await poll(lambda: output.has("Connection closed"))

        async with ws_connect(server, "/stateful") as ws:
            await ws.send("y")
            assert await recv(ws) == "Echo: y"
        await poll(lambda: output.has("Final state: WebSocketState.DISCONNECTED"))

    with serve_app(app) as server:
        run(scenario(server))
    for line in [
        "Connection state: WebSocketState.CONNECTED",
        "Client connected from: 127.0.0.1",
        "Client disconnected with code: 4000",
        "Initial state: WebSocketState.CONNECTING",
        "After accept: WebSocketState.CONNECTED",
    ]:
        assert output.has(line), f"{line!r} not in {output.text!r}"


def test_receive_gives_event_dicts_for_text_and_bytes() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/messages") as ws:
            await ws.send("hello")
            assert await recv(ws) == "Got text: hello"
            await ws.send(b"\x00\xffbin")
            assert await recv(ws) == b"\x00\xffbin"
            await ws.send("")
            assert await recv(ws) == "Got text: "

    with serve_app(app) as server:
        run(scenario(server))


def test_every_send_method() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/updates") as ws:
            assert await recv(ws) == "Welcome to updates!"
            assert await recv_json(ws) == {"type": "notification", "message": "Server started"}
            assert await recv(ws) == b"Binary data here"
            custom = await recv_json(ws)
            assert custom["users"] == [1, 2, 3]
            datetime.fromisoformat(custom["timestamp"])  # the custom dumps did the encoding

    with serve_app(app) as server:
        run(scenario(server))


def test_every_receive_method(output: Output) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/receiver") as ws:
            await ws.send("plain")
            await ws.send(json.dumps({"a": [1, 2]}))
            await ws.send(b"12345")
            await ws.send('{"price": 1.10}')
            await poll(lambda: output.has("Received custom JSON: {'price': Decimal('1.10')}"))

    with serve_app(app) as server:
        run(scenario(server))
    assert output.has("Received text: plain")
    assert output.has("Received JSON: {'a': [1, 2]}")
    assert output.has("Received 5 bytes")


def test_typed_route_parameter() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/user/7/notifications") as ws:
            assert await recv_json(ws) == {"user_id": 7, "id": 1, "text": "notification 1"}
            assert await recv_json(ws) == {"user_id": 7, "id": 2, "text": "notification 2"}
        response = await expect_http_refusal(server, "/user/seven/notifications")
        assert response.status_code == 404

    with serve_app(app) as server:
        run(scenario(server))


def test_error_handling_keeps_the_connection_for_app_errors_only() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/error-handling") as ws:
            await ws.send("ok")
            assert await recv_json(ws) == {"result": "OK"}
            await ws.send("   ")
            assert await recv_json(ws) == {"error": "validation_error", "message": "empty message"}
            await ws.send("still ok")
            assert await recv_json(ws) == {"result": "STILL OK"}
            await ws.send("crash")
            assert await recv_json(ws) == {
                "error": "internal_error",
                "message": "An unexpected error occurred",
            }
            code, _reason = await expect_close(ws)
            assert code == 1011

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize(
    ("message", "code"), [("invalid", 1003), ("policy", 1008), ("size", 1009), ("fine", 1000)]
)
def test_close_codes(message, code) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/close-codes") as ws:
            await ws.send(message)
            if code == 1000:
                # Accepted, then the handler returns: a normal close.
                assert await recv(ws) == "Message accepted"
            assert (await expect_close(ws))[0] == code

    with serve_app(app) as server:
        run(scenario(server))


def test_background_processing_and_weakset_registry() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/optimized") as a, ws_connect(server, "/optimized") as b:
            await poll(lambda: len(ws_blacksheep_api.active_connections) == 2)
            await a.send("abcd")
            assert await recv_json(a) == {"result": 4}
            await b.send("fail")
            assert await recv_json(b) == {"error": "cannot process 'fail'"}

    with serve_app(app) as server:
        run(scenario(server))
        # Once their connections are gone nothing keeps the WebSocket objects alive.
        wait_until(lambda: gc.collect() >= 0 and len(ws_blacksheep_api.active_connections) == 0)
