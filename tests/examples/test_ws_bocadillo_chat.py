"""examples/ws_bocadillo_chat.py (Bocadillo chat room page) with a Python client.

tests/examples/test_ws_browser.py drives the same page in a real browser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from examples import ws_bocadillo_chat
from examples.ws_bocadillo_chat import app
from tests.conftest import serve_app
from tests.examples.ws_client import poll, recv_json, run, ws_connect


@pytest.fixture(autouse=True)
def empty_room() -> Iterator[None]:
    ws_bocadillo_chat.history.clear()
    yield
    ws_bocadillo_chat.history.clear()


def message(user: str, text: str) -> dict:
    return {"type": "message", "user": user, "text": text}


def test_the_page_is_the_template() -> None:
    template = (ws_bocadillo_chat.TEMPLATES / "index.html").read_bytes()
    with serve_app(app) as server, httpx.Client(base_url=server.url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.content == template
        assert b"new WebSocket(`ws://${location.host}/chat`)" in page.content


def test_messages_reach_every_client_and_newcomers_get_the_history() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat") as a, ws_connect(server, "/chat") as b:
            await poll(lambda: len(ws_bocadillo_chat.clients) == 2)
            await a.send(json.dumps(message("ann", "hi")))
            # Everyone gets it, the sender included.
            assert await recv_json(a) == message("ann", "hi")
            assert await recv_json(b) == message("ann", "hi")

            # Other types go to the history but are not broadcast.
            await b.send(json.dumps({"type": "typing", "user": "bea"}))
            await b.send(json.dumps(message("bea", "yo")))
            assert await recv_json(a) == message("bea", "yo")
            assert await recv_json(b) == message("bea", "yo")

            async with ws_connect(server, "/chat") as c:
                assert [await recv_json(c) for _ in range(3)] == [
                    message("ann", "hi"),
                    {"type": "typing", "user": "bea"},
                    message("bea", "yo"),
                ]
                await c.send(json.dumps(message("cy", "hello all")))
                for ws in (a, b, c):
                    assert await recv_json(ws) == message("cy", "hello all")

        # Every client is unregistered once its connection is gone.
        await poll(lambda: not ws_bocadillo_chat.clients)

    with serve_app(app) as server:
        run(scenario(server))


def test_a_client_that_drops_is_skipped_by_the_broadcast() -> None:
    async def scenario(server) -> None:
        async with ws_connect(server, "/chat") as a:
            b = await ws_connect(server, "/chat")
            await poll(lambda: len(ws_bocadillo_chat.clients) == 2)
            b.transport.abort()  # no close frame: the server notices on its own
            await a.send(json.dumps(message("ann", "still here?")))
            assert await recv_json(a) == message("ann", "still here?")
            await poll(lambda: len(ws_bocadillo_chat.clients) == 1)
            await a.send(json.dumps(message("ann", "yes")))
            assert await recv_json(a) == message("ann", "yes")
        await poll(lambda: not ws_bocadillo_chat.clients)

    with serve_app(app) as server:
        run(scenario(server))
