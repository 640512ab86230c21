"""The Redis backend against a real redis-server: two workers sharing one
Redis (two "hosts"), the same order at every client, history recovery with
``since``, counts across workers, and Redis killed and restarted."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from tests.channels.apps import chat_app
from tests.channels.conftest import RedisProcess, flush
from tests.conftest import serve_app, wait_until


async def _join(url: str) -> Any:
    ws = await websockets.connect(url)
    assert json.loads(await ws.recv()) == {"ready": True}
    return ws


async def _collect(ws: Any, n: int) -> list[dict[str, Any]]:
    got = []
    while len(got) < n:
        got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    return got


def test_two_servers_sharing_redis_exchange_in_one_order(redis_server: RedisProcess) -> None:
    flush(redis_server)
    with (
        serve_app(chat_app(), channels=redis_server.url) as a,
        serve_app(chat_app(), channels=redis_server.url) as b,
    ):

        async def main() -> list[list[dict[str, Any]]]:
            clients = [await _join(f"{s.ws_url}/room/x") for s in (a, b, a, b)]
            # every client publishes 25 messages at once: 4 concurrent publishers
            await asyncio.gather(
                *(
                    asyncio.gather(*(c.send(f"{i}-{k}") for k in range(25)))
                    for i, c in enumerate(clients)
                )
            )
            got = await asyncio.gather(*(_collect(c, 100) for c in clients))
            for c in clients:
                await c.close()
            return got

        got = asyncio.run(main())
    first = got[0]
    assert sorted(m["d"] for m in first) == sorted(f"{i}-{k}" for i in range(4) for k in range(25))
    for other in got[1:]:
        assert other == first  # same messages, same offsets, same order on both hosts
    offsets = [m["o"] for m in first]
    assert offsets == sorted(offsets) and len(set(offsets)) == 100
    assert offsets[-1] - offsets[0] == 99  # one per message, no hole


def test_count_spans_workers_and_drops_closed_ones(redis_server: RedisProcess) -> None:
    flush(redis_server)
    with (
        serve_app(chat_app(), channels=redis_server.url) as a,
        serve_app(chat_app(), channels=redis_server.url) as b,
    ):

        def count() -> int:
            return int(httpx.get(f"{a.url}/count/room:c").json()["count"])

        async def main() -> None:
            clients = [await _join(f"{s.ws_url}/room/c") for s in (a, b, b)]
            assert await asyncio.to_thread(count) == 3  # counted once subscribe returned
            await clients[1].close()
            await asyncio.to_thread(wait_until, lambda: count() == 2)
            for c in (clients[0], clients[2]):
                await c.close()
            await asyncio.to_thread(wait_until, lambda: count() == 0)

        asyncio.run(main())


def test_since_replays_what_was_missed_then_live(redis_server: RedisProcess) -> None:
    flush(redis_server)
    with (
        serve_app(chat_app(), channels=redis_server.url) as a,
        serve_app(chat_app(), channels=redis_server.url) as b,
    ):
        offsets = [
            httpx.post(f"{b.url}/publish/room:h", content=f"m{i}").json()["offset"]
            for i in range(10)
        ]

        async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            ws = await websockets.connect(f"{a.ws_url}/room/h?since={offsets[3]}")
            replayed = await _collect(ws, 7)  # m4..m9, then the "ready" marker
            await asyncio.to_thread(httpx.post, f"{b.url}/publish/room:h", content="live")
            live = await _collect(ws, 1)
            await ws.close()
            return replayed, live

        replayed, live = asyncio.run(main())
    assert replayed[:6] == [{"o": offsets[i], "d": f"m{i}"} for i in range(4, 10)]
    assert replayed[6] == {"ready": True}
    assert live[0]["d"] == "live" and live[0]["o"] == offsets[-1] + 1


def test_an_offset_from_another_epoch_is_a_gap(redis_factory: Callable[..., RedisProcess]) -> None:
    redis = redis_factory()
    with serve_app(chat_app(), channels=redis.url) as a:
        old = httpx.post(f"{a.url}/publish/room:e", content="before").json()["offset"]
    redis.restart()  # empty: a new epoch
    with serve_app(chat_app(), channels=redis.url) as a:
        new = httpx.post(f"{a.url}/publish/room:e", content="after").json()["offset"]
        assert new >> 32 != old >> 32

        async def main() -> int:
            ws = await websockets.connect(f"{a.ws_url}/room/e?since={old}")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            return int(closed.value.rcvd.code)

        assert asyncio.run(main()) == 4000  # the app saw ChannelGap


def _redis_clients(server: RedisProcess) -> int:
    """Connections Redis has open, not counting the one asking."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"CLIENT LIST\r\n")
        reply = b""
        while not reply.endswith(b"\r\n") or reply.count(b"\n") < 2:
            reply += sock.recv(65536)
    return sum(1 for line in reply.split(b"\n") if line.startswith(b"id=")) - 1


def test_redis_connections_do_not_grow_with_topics_or_subscribers(
    redis_server: RedisProcess,
) -> None:
    flush(redis_server)
    baseline = _redis_clients(redis_server)
    with serve_app(chat_app(), channels=redis_server.url) as a:

        async def main() -> list[int]:
            used = []
            clients = [await _join(f"{a.ws_url}/room/0")]
            await clients[0].send("hello")
            await _collect(clients[0], 1)
            used.append(_redis_clients(redis_server) - baseline)
            for i in range(40):  # 40 more subscribers over 10 topics, all publishing
                clients.append(await _join(f"{a.ws_url}/room/{i % 10}"))
            await asyncio.gather(*(c.send("x") for c in clients))
            await asyncio.gather(*(_collect(c, 1) for c in clients))
            used.append(_redis_clients(redis_server) - baseline)
            for c in clients:
                await c.close()
            return used

        used = asyncio.run(main())
    assert used[0] <= used[1] <= 5  # one pub/sub connection and at most 4 for commands
    assert used[1] <= used[0] + 3  # the pool fills up to its bound, no further
    assert _redis_clients(redis_server) == baseline  # all closed at stop
