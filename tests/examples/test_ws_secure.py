"""examples/ws_secure.py (Sanic authentication + rate limiting) over real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest

from examples import ws_secure
from examples.ws_secure import app
from tests.conftest import serve_app
from tests.examples.ws_client import expect_close, poll, recv_json, run, ws_connect

AUTHENTICATED = {
    "type": "authenticated",
    "user": "testuser",
    "message": "Authentication successful",
}
RATE_LIMITED = {"type": "error", "message": "Rate limit exceeded. Please slow down."}


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> Iterator[None]:
    ws_secure.client_requests.clear()
    yield
    ws_secure.client_requests.clear()


@pytest.mark.parametrize(
    ("path", "headers", "reason"),
    [
        ("/ws/secure", None, "Authentication token required"),
        ("/ws/secure?token=", None, "Authentication token required"),
        ("/ws/secure?token=wrong", None, "Invalid authentication token"),
        ("/ws/secure", {"Authorization": "wrong"}, "Invalid authentication token"),
    ],
)
def test_missing_or_bad_token_closes_with_policy_violation(path, headers, reason) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, path, additional_headers=headers) as ws:
            # The handshake completes, then the close carries the code and reason.
            assert await expect_close(ws) == (1008, reason)

    with serve_app(app) as server:
        run(scenario(server))


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/ws/secure?token=valid_token", None), ("/ws/secure", {"Authorization": "valid_token"})],
)
def test_valid_token_in_query_or_header(path, headers) -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, path, additional_headers=headers) as ws:
            assert await recv_json(ws) == AUTHENTICATED
            await ws.send(json.dumps({"message": "hello"}))
            reply = await recv_json(ws)
            assert {k: reply[k] for k in ("type", "user", "message")} == {
                "type": "message",
                "user": "testuser",
                "message": "hello",
            }
            assert datetime.fromisoformat(reply["timestamp"]).utcoffset() is not None

    with serve_app(app) as server:
        run(scenario(server))


def test_rate_limit_counts_every_message_and_resets_on_reconnect() -> None:
    limit = ws_secure.RATE_LIMIT

    async def scenario(server) -> None:
        async with ws_connect(server, "/ws/secure?token=valid_token") as ws:
            assert await recv_json(ws) == AUTHENTICATED
            # Invalid JSON is answered with an error, and it still counts.
            await ws.send("{oops")
            assert await recv_json(ws) == {"type": "error", "message": "Invalid JSON format"}
            for i in range(1, limit):
                await ws.send(json.dumps({"message": f"m{i}"}))
                reply = await recv_json(ws)
                assert (reply["type"], reply["message"]) == ("message", f"m{i}")
            for _ in range(3):
                await ws.send(json.dumps({"message": "one too many"}))
                assert await recv_json(ws) == RATE_LIMITED
            # The connection stays open while limited.
            await ws.close()
            assert ws.close_code == 1000

        # The handler's cleanup forgets the client, so a new connection starts afresh.
        await poll(lambda: "user123" not in ws_secure.client_requests)
        async with ws_connect(server, "/ws/secure?token=valid_token") as ws:
            assert await recv_json(ws) == AUTHENTICATED
            await ws.send(json.dumps({"message": "again"}))
            reply = await recv_json(ws)
            assert (reply["type"], reply["message"]) == ("message", "again")

    with serve_app(app) as server:
        run(scenario(server))
