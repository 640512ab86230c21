"""Django Channels anchor for bench/channels_run.py (run on Uvicorn, 2 workers).

The usual multi-worker broadcast of Django Channels: every connection joins
the group ``bench`` of a channels_redis layer; a message from any connection
is sent with ``group_send`` and each consumer forwards it to its socket.
``GET /count`` answers the group's size (channels_redis keeps a group as the
sorted set ``asgi:group:<name>``) so that the load generator can wait for all
subscribers; ``GET /`` answers "ok". The Redis URL comes from
``BENCH_REDIS_URL``. Peers only: installed from bench/requirements-channels.txt
into their own virtualenv.
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
settings.configure(
    DEBUG=False,
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }},
)
django.setup()

import redis.asyncio as aioredis  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

GROUP = "bench"
_redis: Any = None


class Bench(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(GROUP, {"type": "bench.message", "text": text_data})

    async def bench_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _redis
    body = b"ok"
    if scope["path"] == "/count":
        if _redis is None:
            _redis = aioredis.from_url(REDIS_URL)
        body = str(await _redis.zcard(f"asgi:group:{GROUP}")).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


application = ProtocolTypeRouter({
    "http": http,
    "websocket": URLRouter([path("bcast", Bench.as_asgi())]),
})
