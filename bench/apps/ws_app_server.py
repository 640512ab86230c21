"""app-server WebSocket routes (framework handlers, not a raw protocol).

  /echo   every message is sent back as it came
  /bcast  a message from any connection is fanned out to every open /bcast
          connection (the sender included) by ``app.broadcast``, which encodes
          the frame once
  GET /   200 "ok" (readiness probe)
"""

from __future__ import annotations

from app_server import App, text

app = App("bench")
clients: set = set()


@app.get("/")
async def index(request):
    return text("ok")


@app.websocket("/echo")
async def echo(request, ws):
    async for msg in ws:
        await ws.send(msg)


@app.websocket("/bcast")
async def bcast(request, ws):
    clients.add(ws)
    try:
        async for msg in ws:
            await app.broadcast(clients, msg)
    finally:
        clients.discard(ws)
