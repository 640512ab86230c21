"""examples/ws_echo_page.py (Sanic echo + test page) over a real socket."""

from __future__ import annotations

import httpx

from examples.ws_echo_page import app
from tests.conftest import serve_app
from tests.examples.ws_client import expect_http_refusal, recv, run, ws_connect


def test_page_is_served_and_points_at_the_socket() -> None:
    with serve_app(app) as server, httpx.Client(base_url=server.url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "new WebSocket(`ws://${location.host}/ws`)" in page.text


def test_welcome_then_echo_of_every_message() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws") as ws:
            assert await recv(ws) == "Welcome to WebSocket echo server!"
            for text in ["hello", "", "ünïcødé ✓", "x" * 70_000]:
                await ws.send(text)
                assert await recv(ws) == f"Echo: {text}"
            # Binary messages come back in the f-string's rendering of bytes.
            await ws.send(b"\x00\x01")
            assert await recv(ws) == "Echo: b'\\x00\\x01'"

    with serve_app(app) as server:
        run(scenario(server))


def test_two_clients_are_echoed_independently() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws") as a, ws_connect(server, "/ws") as b:
            assert await recv(a) == await recv(b) == "Welcome to WebSocket echo server!"
            await a.send("from a")
            await b.send("from b")
            assert await recv(b) == "Echo: from b"
            assert await recv(a) == "Echo: from a"

    with serve_app(app) as server:
        run(scenario(server))


def test_client_close_ends_the_handler_and_server_answers_the_close() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/ws") as ws:
            assert await recv(ws) == "Welcome to WebSocket echo server!"
            await ws.close(1000, "bye")
            # The server echoed our close frame (the handler's loop ended quietly).
            assert ws.close_code == 1000

    with serve_app(app) as server:
        run(scenario(server))


def test_unknown_path_and_plain_http_on_the_ws_route() -> None:
    async def scenario(server) -> None:
        response = await expect_http_refusal(server, "/nope")
        assert response.status_code == 404
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/ws")).status_code == 426

    with serve_app(app) as server:
        run(scenario(server))
