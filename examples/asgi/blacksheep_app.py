"""BlackSheep example: ``app-server examples.asgi.blacksheep_app:app`` (or ``uvicorn`` the same).

BlackSheep's own start-up events run from the ASGI lifespan scope: the
``on_start`` handler opens the resource and registers it as a service, which
the ``/resource`` route receives by type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from blacksheep import (
    Application,
    ContentDispositionType,
    Request,
    Response,
    StreamedContent,
    WebSocket,
    WebSocketDisconnectError,
    file,
    json,
)

from examples.asgi.common import DATA_FILE, STREAM_CHUNKS, BodyDigest, json_document, open_resource


class Resource(dict[str, Any]):
    """The lifespan-initialised resource, injected by BlackSheep's service container."""


app = Application(show_error_details=False)


async def open_on_start(application: Application) -> None:
    application.services.add_instance(Resource(await open_resource()))


app.on_start += open_on_start


@app.router.get("/json")
async def json_route() -> Response:
    return json(json_document("blacksheep"))


@app.router.get("/resource")
async def resource(pool: Resource) -> Response:
    return json({"resource": dict(pool)})


@app.router.get("/stream")
async def stream() -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in STREAM_CHUNKS:
            yield chunk
    return Response(200, content=StreamedContent(b"text/plain", chunks))


@app.router.get("/file")
async def file_route() -> Response:
    return file(str(DATA_FILE), "text/plain", content_disposition=ContentDispositionType.INLINE)


@app.router.post("/upload")
async def upload(request: Request) -> Response:
    digest = BodyDigest()
    async for chunk in request.stream():
        digest.feed(chunk)
    return json(digest.result())


@app.router.ws("/ws")
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
    except WebSocketDisconnectError:
        return
