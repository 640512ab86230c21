"""python-socketio anchor for bench/channels_run.py (ASGI on Uvicorn, 2 workers).

The usual multi-worker broadcast of python-socketio: an ``AsyncServer`` whose
client manager is ``AsyncRedisManager``; an event ``msg`` from any client is
emitted to every client of every worker. Clients speak Engine.IO 4 over a
WebSocket only (``/socket.io/?EIO=4&transport=websocket``). ``GET /count``
answers how many clients are connected over all workers (a Redis counter
kept by connect/disconnect, for the load generator to wait on); other HTTP
paths answer "ok". Pings are every 300 s so that none falls inside a run.
The Redis URL comes from ``BENCH_REDIS_URL``. Peers only: installed from
bench/requirements-channels.txt into their own virtualenv.
"""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis
import socketio

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER = "bench:socketio:clients"

sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=socketio.AsyncRedisManager(REDIS_URL),
    ping_interval=300,
    ping_timeout=60,
)
_redis: Any = None


def counter() -> Any:
    global _redis
    if _redis is None:
        _redis = aioredis.from_url(REDIS_URL)
    return _redis


@sio.event
async def connect(sid: str, environ: dict[str, Any]) -> None:
    await counter().incr(COUNTER)


@sio.event
async def disconnect(sid: str, *reason: Any) -> None:
    await counter().decr(COUNTER)


@sio.on("msg")
async def msg(sid: str, data: Any) -> None:
    await sio.emit("msg", data)


async def http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b"ok"
    if scope["path"] == "/count":
        body = str(int(await counter().get(COUNTER) or 0)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


app = socketio.ASGIApp(sio, other_asgi_app=http)
