"""examples/ws_bocadillo_echo.py (the Bocadillo guide's snippets) over real sockets."""

from __future__ import annotations

import itertools
import json

import pytest

from examples import ws_bocadillo_echo
from examples.ws_bocadillo_echo import app
from tests.conftest import serve_app
from tests.examples.ws_client import (
    expect_close,
    expect_http_refusal,
    recv,
    recv_json,
    run,
    ws_connect,
)


@pytest.mark.parametrize("path", ["/echo", "/echo-events"])
def test_echo_one_message_then_a_normal_close(path) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, path) as ws:
            await ws.send("ping")
            assert await recv(ws) == "You said: ping"
            assert await expect_close(ws) == (1000, "")

    with serve_app(app) as server:
        run(scenario(server))


def test_echo_every_message_until_the_client_leaves() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/echo-all") as ws:
            for text in ["a", "b c", json.dumps({"text": "pong"})]:
                await ws.send(text)
                assert await recv(ws) == f"You said: {text}"
            await ws.close(1001)
        assert ws.close_code == 1001

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize(
    ("query", "headers", "user"),
    [
        ("", {"user": "bob"}, "bob"),
        ("?anonymous=true", None, "Anonymous"),
        ("?anonymous=1", {"user": "bob"}, "Anonymous"),
        ("?anonymous=false", {"user": "al"}, "al"),
    ],
)
def test_chat_channel_json_in_and_out(query, headers, user) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat/general" + query, additional_headers=headers) as ws:
            for payload in [{"text": "hi"}, [1, 2], "plain", 3]:
                await ws.send(json.dumps(payload))
                assert await recv_json(ws) == {"user": user, "message": payload}

    with serve_app(app) as server:
        run(scenario(server))


def test_chat_channel_without_user_header_fails_with_1011() -> None:
    # ws.headers["user"] raises KeyError before anything is sent; the route
    # auto-accepts, so the client gets the handshake and then close 1011.
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat/general") as ws:
            code, _reason = await expect_close(ws)
            assert code == 1011

    with serve_app(app) as server:
        run(scenario(server))


def test_chat_channel_with_a_query_value_that_is_not_a_bool_is_a_400() -> None:
    async def scenario(server) -> None:
        response = await expect_http_refusal(server, "/chat/general?anonymous=maybe")
        assert response.status_code == 400

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize("path", ["/hello", "/hello-ctx"])
def test_manual_accept_and_close(path) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, path) as ws:
            assert await recv(ws) == "Hello, WebSockets!"
            assert await expect_close(ws) == (1000, "")

    with serve_app(app) as server:
        run(scenario(server))


def test_reject_without_the_api_key_is_an_http_403() -> None:
    async def scenario(server) -> None:
        for headers in (None, {"api-key": "guess"}):
            response = await expect_http_refusal(server, "/hello-key", additional_headers=headers)
            assert response.status_code == 403
        async with ws_connect(server, "/hello-key", additional_headers={"api-key": "s3kr3t"}) as ws:
            assert await recv(ws) == "Hello, WebSockets!"
            assert await expect_close(ws) == (1000, "")

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize(("boom_at", "oks", "code"), [(3, 2, 4003), (None, 100, 1000)])
def test_dangerous_closes_with_the_application_code(monkeypatch, boom_at, oks, code) -> None:
    # The dice are loaded so the outcome is known: 4003 on the boom_at-th
    # message, else "OK" a hundred times and a normal close.
    calls = itertools.count(1)
    monkeypatch.setattr(
        ws_bocadillo_echo.random, "random", lambda: 0.05 if next(calls) == boom_at else 0.95
    )

    async def scenario(server) -> None:
        async with ws_connect(server, "/dangerous") as ws:
            for i in range(oks):
                await ws.send(f"m{i}")
                assert await recv(ws) == "OK"
            if boom_at is not None:
                await ws.send("boom")
            assert await expect_close(ws) == (code, "")

    with serve_app(app) as server:
        run(scenario(server))
