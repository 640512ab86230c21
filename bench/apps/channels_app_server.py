"""app-server channel routes for bench/channels_run.py.

  /bcast     every connection subscribes to the topic ``bench``; a message
             from any connection is published to it (so it reaches every
             subscriber in every worker, the sender included)
  GET /count the topic's subscribers over all workers (the load generator
             waits for all of them before the first message)
  /multi     "subscribe N" subscribes the connection to mem:0 .. mem:N-1
  GET /      200 "ok" (readiness probe)

Run with ``--workers 2 --channels <backend>``.
"""

from __future__ import annotations

from typing import Any

from app_server import App, Request, WebSocket, text

app = App("bench-channels")
TOPIC = "bench"


@app.get("/")
async def index(request: Request) -> Any:
    return text("ok")


@app.get("/count")
async def count(request: Request) -> Any:
    return text(str(await app.channels.count(TOPIC)))


@app.websocket("/bcast")
async def bcast(request: Request, ws: WebSocket) -> None:
    await ws.subscribe(TOPIC)
    async for msg in ws:
        await app.channels.publish(TOPIC, msg)


@app.websocket("/multi")
async def multi(request: Request, ws: WebSocket) -> None:
    """``subscribe N``: subscribe to ``mem:0`` .. ``mem:N-1``, then answer ``ok N``
    (bench/channels_run.py's subscription-memory measurement)."""
    async for msg in ws:
        n = int(str(msg).split()[1])
        for i in range(n):
            await ws.subscribe(f"mem:{i}")
        await ws.send(f"ok {n}")
