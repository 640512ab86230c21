"""examples/ws_live_updates.py (BlackSheep live updates pushed by HTTP POST), real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from examples import ws_live_updates
from examples.ws_live_updates import app
from tests.conftest import serve_app
from tests.examples.ws_client import poll, recv_json, run, ws_connect


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    ws_live_updates.topic_store.clear()
    ws_live_updates.update_subscribers.clear()
    yield
    ws_live_updates.topic_store.clear()
    ws_live_updates.update_subscribers.clear()


def subscribers(topic: str) -> int:
    return len(ws_live_updates.update_subscribers.get(topic, []))


async def recv_update(ws) -> dict:
    message = await recv_json(ws)
    assert isinstance(message.pop("timestamp"), float)
    return message


def test_http_posts_reach_the_topic_subscribers() -> None:
    async def post(http: httpx.AsyncClient, topic: str, data: object) -> None:
        response = await http.post(f"/api/data/{topic}", json=data)
        assert response.status_code == 200
        assert response.json() == {"updated": True}

    async def scenario(server) -> None:
        async with (
            httpx.AsyncClient(base_url=server.url) as http,
            ws_connect(server, "/updates/prices") as s1,
        ):
            assert await recv_json(s1) == {"type": "initial_data", "topic": "prices", "data": {}}
            await post(http, "prices", {"p": 1})
            assert await recv_update(s1) == {"topic": "prices", "data": {"p": 1}}

            async with (
                ws_connect(server, "/updates/prices") as s2,
                ws_connect(server, "/updates/news") as s3,
            ):
                # A late subscriber starts from the saved data.
                assert await recv_json(s2) == {
                    "type": "initial_data",
                    "topic": "prices",
                    "data": {"p": 1},
                }
                assert await recv_json(s3) == {"type": "initial_data", "topic": "news", "data": {}}

                await post(http, "prices", {"p": 2})
                assert await recv_update(s1) == {"topic": "prices", "data": {"p": 2}}
                assert await recv_update(s2) == {"topic": "prices", "data": {"p": 2}}
                # s3 did not get the prices update: its next message is news.
                await post(http, "news", {"n": 1})
                assert await recv_update(s3) == {"topic": "news", "data": {"n": 1}}

                # Subscribing to more topics over the socket.
                await s1.send(json.dumps({"type": "subscribe_additional", "topic": "news"}))
                await poll(lambda: subscribers("news") == 2)
                await post(http, "news", {"n": 2})
                assert await recv_update(s1) == {"topic": "news", "data": {"n": 2}}
                assert await recv_update(s3) == {"topic": "news", "data": {"n": 2}}

                await s1.send(json.dumps({"type": "unsubscribe", "topic": "prices"}))
                await poll(lambda: subscribers("prices") == 1)
                await post(http, "prices", {"p": 3})
                assert await recv_update(s2) == {"topic": "prices", "data": {"p": 3}}
                await post(http, "news", {"n": 3})
                assert await recv_update(s1) == {"topic": "news", "data": {"n": 3}}

            # Closed connections leave every topic they were subscribed to.
            await poll(lambda: subscribers("prices") == 0 and subscribers("news") == 1)
            await post(http, "prices", {"p": 4})  # nobody listening: still fine
            await post(http, "news", {"n": 4})
            assert await recv_update(s1) == {"topic": "news", "data": {"n": 4}}

        await poll(lambda: subscribers("news") == 0)

    with serve_app(app) as server:
        run(scenario(server))


def test_post_without_subscribers_and_with_a_bad_body() -> None:
    with serve_app(app) as server, httpx.Client(base_url=server.url) as http:
        response = http.post("/api/data/quiet", json={"x": 1})
        assert response.status_code == 200
        assert response.json() == {"updated": True}
        assert ws_live_updates.topic_store["quiet"] == {"x": 1}
        bad = http.post(
            "/api/data/quiet", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400
        assert ws_live_updates.topic_store["quiet"] == {"x": 1}
