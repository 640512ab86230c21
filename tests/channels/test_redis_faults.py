"""Redis killed and restarted under publish load: publish raises
ChannelUnavailable at once while it is down, the workers reconnect and
resubscribe by themselves, and a handler-side subscriber of a history topic
either gets every message (Redis restarted with its data) or ChannelGap
(restarted empty: a new epoch)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app_server import App, Request, WebSocket
from app_server.exceptions import ChannelGap, ChannelUnavailable
from tests.channels.conftest import RedisProcess
from tests.conftest import serve_app, wait_until


def recorder_app() -> tuple[App, dict[str, Any]]:
    """An app whose background task consumes topic ``room:f`` and records what it sees."""
    app = App("faults")
    app.channels.history("room:*", size=1000)
    seen: dict[str, Any] = {"data": [], "gaps": 0, "ready": threading.Event()}

    async def consume() -> None:
        async with app.channels.subscribe("room:f") as sub:
            seen["ready"].set()
            while True:
                try:
                    async for message in sub:
                        seen["data"].append(message.data)
                except ChannelGap:
                    seen["gaps"] += 1

    @app.after_server_start
    async def start(app_: Any = None) -> None:
        seen["task"] = asyncio.ensure_future(consume())

    @app.before_server_stop
    async def stop(app_: Any = None) -> None:
        seen["task"].cancel()

    @app.websocket("/ws")
    async def feed(ws: WebSocket) -> None:
        await ws.subscribe("room:f", envelope=lambda topic, offset, data: data)
        await ws.send("ready")
        async for _ in ws:
            pass

    @app.route("/publish", methods=["POST"])
    async def publish(request: Request) -> Any:
        try:
            return {"offset": await request.app.channels.publish("room:f", request.body.decode())}
        except ChannelUnavailable as exc:
            return {"unavailable": str(exc)}

    return app, seen


class FeedClient:
    """A WebSocket subscriber of room:f read by a thread until the server closes it."""

    def __init__(self, ws_url: str) -> None:
        self._connection = connect(f"{ws_url}/ws")
        self.ws = self._connection.__enter__()
        assert self.ws.recv(timeout=5) == "ready"
        self.data: list[str] = []
        self.close_code: int | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                self.data.append(str(self.ws.recv()))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self.thread.join(10)


def _publish(url: str, text: str) -> dict[str, Any]:
    return httpx.post(f"{url}/publish", content=text, timeout=10).json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("persistent", [True, False], ids=["with-data", "empty"])
def test_redis_restart_under_load(
    redis_factory: Callable[..., RedisProcess], persistent: bool
) -> None:
    redis = redis_factory(persistent=persistent)
    app_a, seen = recorder_app()
    app_b, _ = recorder_app()
    with serve_app(app_a, channels=redis.url) as a, serve_app(app_b, channels=redis.url) as b:
        assert seen["ready"].wait(5)
        client = FeedClient(f"ws://127.0.0.1:{a.port}")
        sent = [f"before-{i}" for i in range(20)]
        for text in sent:
            assert "offset" in _publish(b.url, text)
        wait_until(lambda: len(seen["data"]) == 20)
        redis.kill()
        # While down: ChannelUnavailable, at once, from both workers.
        wait_until(lambda: "unavailable" in _publish(b.url, "lost?"))
        started = time.monotonic()
        assert "unavailable" in _publish(a.url, "lost?")
        assert time.monotonic() - started < 1.0  # no silent wait for a dead Redis
        redis.start()
        # Worker B publishes as soon as it is back, maybe before A has
        # reconnected: A must recover those from its last offset (with data).
        wait_until(lambda: "offset" in _publish(b.url, "after-0"), timeout=10)
        after = ["after-0"] + [f"after-{i}" for i in range(1, 20)]
        for text in after[1:]:
            assert "offset" in _publish(b.url, text)
        wait_until(lambda: seen["data"][-1:] == ["after-19"], timeout=10)
        if persistent:
            wait_until(lambda: client.data[-1:] == ["after-19"], timeout=10)
        else:
            wait_until(lambda: client.close_code is not None, timeout=10)
        client.close()
    data = seen["data"]
    if persistent:
        assert data == sent + after  # nothing lost, nothing twice, in order
        assert client.data == sent + after  # the WebSocket subscriber too
        assert seen["gaps"] == 0
    else:
        # A WebSocket cannot be told in-band: it is closed so that it
        # reconnects with its offset and the app sends a full state.
        assert client.close_code == 1013 and client.data == sent
        # Messages published before this worker was back are lost (and said
        # to be); every later one arrives, in order, once.
        rest = data[20:]
        assert data[:20] == sent and rest == after[len(after) - len(rest) :]
        assert seen["gaps"] == 1  # told, once, that history was lost


def test_redis_killed_during_continuous_publishing_loses_nothing_that_was_acknowledged(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    """A publisher never stops while Redis (with its data) is killed and
    restarted: every publish either returns an offset or raises
    ChannelUnavailable, and the subscriber on the other worker receives every
    acknowledged message once, in publish order (a message whose reply was
    lost in the kill may arrive too: it was stored)."""
    redis = redis_factory(persistent=True)
    app_a, seen = recorder_app()
    app_b, _ = recorder_app()
    acknowledged: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def publisher(url: str) -> None:
        i = 0
        while not stop.is_set():
            text = f"m-{i}"
            (acknowledged if "offset" in _publish(url, text) else refused).append(text)
            i += 1

    with serve_app(app_a, channels=redis.url) as a, serve_app(app_b, channels=redis.url) as b:
        assert seen["ready"].wait(5)
        thread = threading.Thread(target=publisher, args=(b.url,), daemon=True)
        thread.start()
        try:
            wait_until(lambda: len(acknowledged) >= 50)
            redis.kill()
            wait_until(lambda: len(refused) >= 5)
            redis.start()
            mark = len(acknowledged)
            wait_until(lambda: len(acknowledged) >= mark + 50, timeout=15)
        finally:
            stop.set()
            thread.join(15)
        wait_until(lambda: seen["data"][-1:] == acknowledged[-1:], timeout=10)
        assert "offset" in _publish(a.url, "a-too")  # both workers publish again
        wait_until(lambda: seen["data"][-1:] == ["a-too"])
    data = seen["data"][:-1]
    numbers = [int(text[2:]) for text in data]
    assert numbers == sorted(set(numbers))  # publish order, each once
    assert set(acknowledged) <= set(data)
    assert set(data) - set(acknowledged) <= set(refused)
    assert seen["gaps"] == 0
