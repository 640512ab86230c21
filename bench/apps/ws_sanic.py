"""The equivalent Sanic WebSocket app (framework routes), run with --single-process.

  /echo   every message is sent back as it came
  /bcast  a message from any connection is sent to every open /bcast
          connection (the sender included), one ``ws.send`` each
  GET /   200 "ok" (readiness probe)
"""

from __future__ import annotations

from sanic import Sanic
from sanic.response import text

app = Sanic("bench_ws_sanic")
app.config.ACCESS_LOG = False
app.config.MOTD = False

CLIENTS: set = set()


@app.get("/")
async def index(request):
    return text("ok")


@app.websocket("/echo")
async def echo(request, ws):
    async for msg in ws:
        await ws.send(msg)


@app.websocket("/bcast")
async def bcast(request, ws):
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            for client in list(CLIENTS):
                try:
                    await client.send(msg)
                except Exception:  # that client went away meanwhile
                    CLIENTS.discard(client)
    finally:
        CLIENTS.discard(ws)
