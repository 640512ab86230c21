"""FastAPI example: ``app-server examples.asgi.fastapi_app:app`` (or ``uvicorn`` the same).

The lifespan opens the resource and yields it as lifespan state; the routes
read it from ``request.state``. FastAPI leaves its matched route in
``scope["route"]``, which app-server uses as the metrics route label.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse

from examples.asgi.common import DATA_FILE, STREAM_CHUNKS, BodyDigest, json_document, open_resource


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"resource": await open_resource()}


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/json")
async def json_route() -> dict[str, Any]:
    return json_document("fastapi")


@app.get("/resource")
async def resource(request: Request) -> dict[str, Any]:
    return {"resource": request.state.resource}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in STREAM_CHUNKS:
            yield chunk
    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/file")
async def file() -> FileResponse:
    return FileResponse(DATA_FILE, media_type="text/plain")


@app.post("/upload")
async def upload(request: Request) -> dict[str, Any]:
    digest = BodyDigest()
    async for chunk in request.stream():
        digest.feed(chunk)
    return digest.result()


@app.websocket("/ws")
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
