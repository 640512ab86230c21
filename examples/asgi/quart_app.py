"""Quart example: ``app-server examples.asgi.quart_app:app`` (or ``uvicorn`` the same).

``before_serving`` runs from the ASGI lifespan startup and opens the resource.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from quart import Quart, Response, jsonify, request, send_file, websocket

from examples.asgi.common import DATA_FILE, STREAM_CHUNKS, BodyDigest, json_document, open_resource

app = Quart(__name__)
# A large upload is the point of /upload: Quart's 16 MiB default would refuse it.
app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024
_resource: dict[str, Any] = {}


@app.before_serving
async def open_on_start() -> None:
    _resource.update(await open_resource())


@app.get("/json")
async def json_route() -> Response:
    return jsonify(json_document("quart"))


@app.get("/resource")
async def resource() -> Response:
    return jsonify({"resource": _resource})


@app.get("/stream")
async def stream() -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in STREAM_CHUNKS:
            yield chunk
    return Response(chunks(), mimetype="text/plain")


@app.get("/file")
async def file() -> Response:
    return await send_file(DATA_FILE, mimetype="text/plain")


@app.post("/upload")
async def upload() -> Response:
    digest = BodyDigest()
    async for chunk in request.body:
        digest.feed(chunk)
    return jsonify(digest.result())


@app.websocket("/ws")
async def echo() -> None:
    # receive() gives str for text frames and bytes for binary ones; send() keeps the kind.
    while True:
        await websocket.send(await websocket.receive())
