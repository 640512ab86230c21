"""examples/ws_token_auth.py (BlackSheep @auth() and query-token WebSockets), real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from examples import ws_token_auth
from examples.ws_token_auth import app
from tests.conftest import serve_app
from tests.examples.ws_client import (
    expect_close,
    expect_http_refusal,
    poll,
    recv_json,
    run,
    ws_connect,
)


@pytest.fixture(autouse=True)
def fresh_inboxes() -> Iterator[None]:
    ws_token_auth.processed_messages.clear()
    ws_token_auth.authenticated_messages.clear()
    yield
    ws_token_auth.processed_messages.clear()
    ws_token_auth.authenticated_messages.clear()


@pytest.mark.parametrize(
    "headers",
    [None, {"Authorization": "Bearer nobody"}, {"Authorization": "Basic alice-token"}],
)
def test_secure_chat_refuses_the_handshake_without_an_identity(headers) -> None:
    async def scenario(server) -> None:
        response = await expect_http_refusal(server, "/secure-chat", additional_headers=headers)
        assert response.status_code == 401

    with serve_app(app) as server:
        run(scenario(server))
    assert ws_token_auth.processed_messages == []


def test_secure_chat_with_a_bearer_token() -> None:
    async def scenario(server) -> None:
        headers = {"Authorization": "Bearer alice-token"}
        async with ws_connect(server, "/secure-chat", additional_headers=headers) as ws:
            assert await recv_json(ws) == {
                "type": "welcome",
                "user_id": "alice",
                "username": "Alice",
            }
            await ws.send(json.dumps({"text": "hi"}))
            await ws.send(json.dumps({"text": "again"}))
            await poll(lambda: len(ws_token_auth.processed_messages) == 2)
        first, second = ws_token_auth.processed_messages
        assert (first["text"], first["user_id"]) == ("hi", "alice")
        assert (second["text"], second["user_id"]) == ("again", "alice")
        assert first["timestamp"] <= second["timestamp"]

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize(
    "query", ["", "?", "?user=alice", "?token=", "?token=forged", "?xtoken=alice-token"]
)
def test_token_auth_without_a_valid_token_closes_with_1008(query) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/token-auth" + query) as ws:
            code, _reason = await expect_close(ws)
            assert code == 1008

    with serve_app(app) as server:
        run(scenario(server))


def test_token_auth_with_a_valid_token() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/token-auth?lang=en&token=bob-token") as ws:
            assert await recv_json(ws) == {
                "type": "authenticated",
                "user": {"id": "bob", "name": "Bob"},
            }
            await ws.send(json.dumps({"ask": "weather"}))
            await poll(lambda: ws_token_auth.authenticated_messages)
        assert ws_token_auth.authenticated_messages == [
            ({"ask": "weather"}, {"id": "bob", "name": "Bob"})
        ]

    with serve_app(app) as server:
        run(scenario(server))
