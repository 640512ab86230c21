"""A raw ASGI 3 app (no framework) for the peer servers (uvicorn, granian).

Same three routes as every other app in bench/apps/:
  GET  /      -> 13-byte "Hello, world!" text/plain
  GET  /json  -> {"message":"Hello, world!"} serialised per request
  POST /echo  -> the request body echoed back (application/octet-stream)
Anything else -> 404.
"""

from __future__ import annotations

import json

_PLAIN = b"Hello, world!"
_PLAIN_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"13"),
]
_NOT_FOUND_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"9")]


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if kind != "http":
        return
    path = scope["path"]
    method = scope["method"]
    if path == "/" and method == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": _PLAIN_HEADERS})
        await send({"type": "http.response.body", "body": _PLAIN})
    elif path == "/json" and method == "GET":
        body = json.dumps({"message": "Hello, world!"}, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif path == "/echo" and method == "POST":
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": _NOT_FOUND_HEADERS})
        await send({"type": "http.response.body", "body": b"Not Found"})
