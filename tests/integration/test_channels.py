"""Channels on the local backend through a real worker and real clients:
order under concurrent publishers, typed data, since/history, count, leaving
at close, the slow-consumer 1013 close, and the API's errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from app_server import App, Request, WebSocket
from app_server.exceptions import ChannelGap, WebSocketClosed
from app_server.settings.model import WebSocketLimits
from app_server.testing import TestClient
from tests.conftest import serve_app, wait_until


def channel_app() -> App:
    app = App("channels")
    app.channels.history("room:*", size=50)  # a plain call at import time
    seen: list[Any] = []
    app.ctx.seen = seen

    @app.websocket("/room/<name>")
    async def room(ws: WebSocket, name: str) -> None:
        since = ws.args.get("since")
        try:
            await ws.subscribe(f"room:{name}", since=int(since) if since else None)
        except ChannelGap:
            await ws.close(4000, "gap")
            return
        await ws.send("ready")
        async for message in ws:
            await ws.app.channels.publish(f"room:{name}", message)

    def envelope(topic: str, offset: int | None, data: Any) -> Any:
        seen.append(type(data).__name__)
        if isinstance(data, bytes):
            return data  # sent as a binary frame, as ws.send(bytes) would
        return {"topic": topic, "offset": offset, "data": data}

    @app.websocket("/typed")
    async def typed(ws: WebSocket) -> None:
        await ws.subscribe("typed", envelope=envelope)
        await ws.send("ready")
        await ws.recv()

    @app.route("/publish/<topic>", methods=["POST"])
    async def publish(request: Request, topic: str) -> Any:
        kind = request.args.get("kind", "text")
        body = request.body
        data: Any = body if kind == "bytes" else body.decode()
        if kind == "json":
            data = json.loads(body)
        return {"offset": await request.app.channels.publish(topic, data)}

    @app.route("/count/<topic>")
    async def count(request: Request, topic: str) -> Any:
        return {"count": await request.app.channels.count(topic)}

    return app


async def _ready(url: str) -> Any:
    ws = await websockets.connect(url, max_size=None)
    assert await ws.recv() == "ready"
    return ws


def test_every_subscriber_sees_one_order_under_concurrent_publishers() -> None:
    with serve_app(channel_app()) as server:

        async def main() -> list[list[str]]:
            clients = [await _ready(f"{server.ws_url}/room/order") for _ in range(5)]
            await asyncio.gather(
                *(
                    asyncio.gather(*(c.send(f"{i}:{k}") for k in range(40)))
                    for i, c in enumerate(clients)
                )
            )

            async def collect(c: Any) -> list[str]:
                return [await asyncio.wait_for(c.recv(), 10) for _ in range(200)]

            got = await asyncio.gather(*(collect(c) for c in clients))
            for c in clients:
                await c.close()
            return [list(g) for g in got]

        got = asyncio.run(main())
    assert sorted(got[0]) == sorted(f"{i}:{k}" for i in range(5) for k in range(40))
    for other in got[1:]:
        assert other == got[0]


def test_data_keeps_its_type_and_the_envelope_runs_once_per_message() -> None:
    app = channel_app()
    with serve_app(app) as server:

        async def main() -> list[Any]:
            clients = [await _ready(f"{server.ws_url}/typed") for _ in range(3)]
            async with httpx.AsyncClient() as http:
                for kind, body in (("text", b"hi"), ("bytes", b"\x00\x01"), ("json", b"[1,2]")):
                    r = await http.post(f"{server.url}/publish/typed?kind={kind}", content=body)
                    assert r.json() == {"offset": None}  # no history for "typed"
            got = [[await asyncio.wait_for(c.recv(), 10) for _ in range(3)] for c in clients]
            for c in clients:
                await c.close()
            return got

        got = asyncio.run(main())
    assert app.ctx.seen == ["str", "bytes", "list"]  # once per worker, not per subscriber
    assert json.loads(got[0][0]) == {"topic": "typed", "offset": None, "data": "hi"}
    assert got[0][1] == b"\x00\x01"
    assert json.loads(got[0][2])["data"] == [1, 2]
    assert all(g == got[0] for g in got)


def test_since_replays_then_goes_live_and_an_unknown_offset_is_a_gap() -> None:
    with serve_app(channel_app()) as server:
        offsets = [
            httpx.post(f"{server.url}/publish/room:h", content=f"m{i}").json()["offset"]
            for i in range(6)
        ]
        assert offsets == list(range(offsets[0], offsets[0] + 6))

        async def main() -> tuple[list[Any], int]:
            ws = await websockets.connect(f"{server.ws_url}/room/h?since={offsets[2]}")
            got = [await ws.recv() for _ in range(4)]
            await ws.send("live")
            got.append(await ws.recv())
            await ws.close()
            bad = await websockets.connect(f"{server.ws_url}/room/h?since={offsets[0] ^ (1 << 40)}")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await bad.recv()
            return got, closed.value.rcvd.code  # type: ignore[union-attr]

        got, code = asyncio.run(main())
    assert got == ["m3", "m4", "m5", "ready", "live"]
    assert code == 4000


def test_count_includes_a_subscriber_once_subscribe_returns_and_drops_it_at_close() -> None:
    with serve_app(channel_app()) as server:

        def count() -> int:
            return int(httpx.get(f"{server.url}/count/room:c").json()["count"])

        async def main() -> None:
            a = await _ready(f"{server.ws_url}/room/c")
            b = await _ready(f"{server.ws_url}/room/c")
            assert await asyncio.to_thread(count) == 2
            b.transport.abort()  # no closing handshake: still left
            await asyncio.to_thread(wait_until, lambda: count() == 1)
            await a.close()
            await asyncio.to_thread(wait_until, lambda: count() == 0)

        asyncio.run(main())


def test_a_slow_subscriber_is_closed_with_1013_and_the_others_keep_everything() -> None:
    # The in-memory transport counts what the client has not read as the
    # connection's write buffer: a client that does not read is a slow one.
    limits = WebSocketLimits(max_send_buffer=64 * 1024)
    chunk = "x" * 8192
    with (
        TestClient(channel_app(), websocket=limits) as client,
        client.websocket_connect("/room/slow") as slow,
        client.websocket_connect("/room/slow") as fast,
    ):
        assert fast.receive_text() == "ready"
        for _ in range(40):  # 320 KiB: far past the slow one's 64 KiB
            fast.send_text(chunk)
            assert fast.receive_text() == chunk
        assert slow.receive_text() == "ready"
        received = 0
        with pytest.raises(WebSocketClosed) as closed:
            while True:
                assert slow.receive_text() == chunk
                received += 1
        assert closed.value.code == 1013
        assert 0 < received <= 8  # bounded by the buffer, not the 40 sent
        hub = client.app.channels.hub
        assert hub is not None and hub.slow_closes == 1


def test_channels_need_a_running_server_but_history_works_at_import() -> None:
    app = App("early")
    app.channels.history("a:*", size=3)
    with pytest.raises(RuntimeError, match="needs a running server"):
        asyncio.run(app.channels.publish("a:1", "x"))


def test_test_client_runs_channels_on_the_local_backend() -> None:
    app = channel_app()
    with TestClient(app) as client, client.websocket_connect("/room/t") as ws:
        assert ws.receive_text() == "ready"
        ws.send_text("hello")
        assert ws.receive_text() == "hello"


def test_handler_side_subscription_replays_since_and_reports_overflow_as_a_gap() -> None:
    app = App("consumer")
    app.channels.history("log", size=10)
    results: dict[str, Any] = {}

    @app.route("/run")
    async def run(request: Request) -> Any:
        channels = request.app.channels
        first = await channels.publish("log", "a")
        await channels.publish("log", b"b")
        async with channels.subscribe("log", since=first) as sub:
            await channels.publish("log", {"c": 1})
            got = [await sub.__anext__(), await sub.__anext__()]
            results["replay"] = [(m.topic, m.offset - first, m.data) for m in got]
        async with channels.subscribe("log", max_queue=2) as small:
            for text in ("x", "y", "z"):  # z does not fit
                await channels.publish("log", text)
            results["kept"] = [(await small.__anext__()).data for _ in range(2)]
            with pytest.raises(ChannelGap, match="queue is full"):
                await small.__anext__()
            await channels.publish("log", "after")
            results["after"] = (await small.__anext__()).data  # it goes on after the gap
        results["count"] = await channels.count("log")
        return {"ok": True}

    with TestClient(app) as client:
        assert client.get("/run").json() == {"ok": True}
    assert results["replay"] == [("log", 1, b"b"), ("log", 2, {"c": 1})]
    assert results["kept"] == ["x", "y"] and results["after"] == "after"
    assert results["count"] == 0  # both left at the end of their block


def test_unsubscribe_stops_delivery_to_that_websocket_only() -> None:
    app = App("unsub")

    @app.websocket("/feed")
    async def feed(ws: WebSocket) -> None:
        await ws.subscribe("a")
        await ws.subscribe("b")
        await ws.send("ready")
        await ws.recv()
        await ws.unsubscribe("a")
        await ws.send("left a")
        await ws.recv()

    @app.route("/publish/<topic>", methods=["POST"])
    async def publish(request: Request, topic: str) -> Any:
        await request.app.channels.publish(topic, request.body.decode())
        return {"count": await request.app.channels.count(topic)}

    with TestClient(app) as client, client.websocket_connect("/feed") as ws:
        assert ws.receive_text() == "ready"
        assert client.post("/publish/a", body=b"1").json() == {"count": 1}
        assert ws.receive_text() == "1"
        ws.send_text("go")
        assert ws.receive_text() == "left a"
        assert client.post("/publish/a", body=b"2").json() == {"count": 0}
        assert client.post("/publish/b", body=b"3").json() == {"count": 1}
        assert ws.receive_text() == "3"  # "2" never came
