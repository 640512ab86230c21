"""A raw ASGI 3 WebSocket app (no framework) for uvicorn.

Run by bench/ws_run.py with uvicorn's default WebSocket implementation and
with ``--ws wsproto`` (both ``--http httptools --loop uvloop``):

  /echo   websocket: every message is sent back as it came (text or bytes)
  /bcast  websocket: a message from any connection is sent to every open
          /bcast connection (the sender included), one ``websocket.send`` each
  GET /   http: 200 "ok" (readiness probe); anything else 404
"""

from __future__ import annotations

_OK_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
_NOT_FOUND_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"9")]

CLIENTS: set = set()  # the ``send`` callables of the open /bcast connections


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "websocket":
        await _websocket(scope, receive, send)
    elif kind == "http":
        if scope["path"] == "/":
            await send({"type": "http.response.start", "status": 200, "headers": _OK_HEADERS})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await send({"type": "http.response.start", "status": 404,
                        "headers": _NOT_FOUND_HEADERS})
            await send({"type": "http.response.body", "body": b"Not Found"})
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _websocket(scope, receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    path = scope["path"]
    if path == "/echo":
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes")})
    elif path == "/bcast":
        await send({"type": "websocket.accept"})
        CLIENTS.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return
                text = message.get("text")
                out = ({"type": "websocket.send", "text": text} if text is not None
                       else {"type": "websocket.send", "bytes": message.get("bytes")})
                for client in list(CLIENTS):
                    try:
                        await client(out)
                    except Exception:  # that client went away meanwhile
                        CLIENTS.discard(client)
        finally:
            CLIENTS.discard(send)
    else:
        await send({"type": "websocket.close", "code": 1008})
