"""examples/ws_sanic_snippets.py (the Sanic seed's API snippets) over real sockets."""

from __future__ import annotations

import pytest

from examples.ws_sanic_snippets import app
from tests.conftest import serve_app
from tests.examples.ws_client import expect_close, recv, run, ws_connect


@pytest.mark.parametrize("path", ["/ws", "/added"])
def test_greet_read_one_message_then_normal_close(path) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, path) as ws:
            assert await recv(ws) == "Hello WebSocket!"
            await ws.send("hi there")
            assert await expect_close(ws) == (1000, "")

    with serve_app(app) as server:
        run(scenario(server))


def test_add_websocket_route_is_named() -> None:
    assert app.url_for("added") == "/added"


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        (["chat"], "chat"),
        (["notification", "chat"], "chat"),
        (["x-other", "notification"], "notification"),
    ],
)
def test_the_first_route_subprotocol_the_client_offers_is_selected(offered, selected) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws/subprotocols", subprotocols=offered) as ws:
            assert ws.subprotocol == selected
            if selected == "chat":
                await ws.send("hello")
                assert await recv(ws) == "chat: hello"
            else:
                assert await recv(ws) == "notification: subscribed"
                assert await expect_close(ws) == (1000, "")

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize("offered", [None, ["x-other"]])
def test_no_common_subprotocol_closes_with_1002(offered) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws/subprotocols", subprotocols=offered) as ws:
            assert ws.subprotocol is None
            assert await expect_close(ws) == (1002, "Unsupported subprotocol")

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (None, "Authentication required"),
        ({"Authorization": "Bearer bad"}, "Invalid authentication"),
    ],
)
def test_authenticated_handler_closes_with_1008(headers, reason) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws/authenticated", additional_headers=headers) as ws:
            assert await expect_close(ws) == (1008, reason)

    with serve_app(app) as server:
        run(scenario(server))


def test_authenticated_handler_with_a_good_token() -> None:
    async def scenario(server) -> None:
        headers = {"Authorization": "Bearer good-token"}
        async with ws_connect(server, "/ws/authenticated", additional_headers=headers) as ws:
            assert await recv(ws) == "Hello ada"
            await ws.send("msg")
            assert await recv(ws) == "ada: msg"

    with serve_app(app) as server:
        run(scenario(server))
