"""The equivalent aiohttp WebSocket app, on uvloop, one process, access log off.

  /echo   every message is sent back as it came (text or bytes)
  /bcast  a message from any connection is sent to every open /bcast
          connection (the sender included), one ``send_str``/``send_bytes`` each
  GET /   200 "ok" (readiness probe)

    python bench/apps/ws_aiohttp.py --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import WSMsgType, web

CLIENTS: set[web.WebSocketResponse] = set()


async def index(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def bcast(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            for client in list(CLIENTS):
                try:
                    if msg.type == WSMsgType.TEXT:
                        await client.send_str(msg.data)
                    else:
                        await client.send_bytes(msg.data)
                except ConnectionError:  # that client went away meanwhile
                    CLIENTS.discard(client)
    finally:
        CLIENTS.discard(ws)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/echo", echo)
    app.router.add_get("/bcast", bcast)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None,
                shutdown_timeout=2.0, loop=uvloop.new_event_loop())
