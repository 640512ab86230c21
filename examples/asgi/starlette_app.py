"""Starlette example: ``app-server examples.asgi.starlette_app:app`` (or ``uvicorn`` the same).

The lifespan context manager opens the resource and hands it to requests
through the lifespan state (``request.state``), as Starlette documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from examples.asgi.common import DATA_FILE, STREAM_CHUNKS, BodyDigest, json_document, open_resource


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"resource": await open_resource()}


async def json_route(request: Request) -> JSONResponse:
    return JSONResponse(json_document("starlette"))


async def resource(request: Request) -> JSONResponse:
    return JSONResponse({"resource": request.state.resource})


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in STREAM_CHUNKS:
            yield chunk
    return StreamingResponse(chunks(), media_type="text/plain")


async def file(request: Request) -> FileResponse:
    return FileResponse(DATA_FILE, media_type="text/plain")


async def upload(request: Request) -> JSONResponse:
    digest = BodyDigest()
    async for chunk in request.stream():
        digest.feed(chunk)
    return JSONResponse(digest.result())


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/json", json_route),
        Route("/resource", resource),
        Route("/stream", stream),
        Route("/file", file),
        Route("/upload", upload, methods=["POST"]),
        WebSocketRoute("/ws", echo),
    ],
    lifespan=lifespan,
)
