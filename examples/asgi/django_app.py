"""Django example: a single-module Django project (settings configured in code).

``app-server examples.asgi.django_app:app`` (or ``uvicorn`` the same).

Django has no WebSocket support without Channels and refuses the ASGI
lifespan scope, so ``app`` is a small raw ASGI wrapper: it answers
``lifespan`` itself (opening the resource and putting it in the lifespan
state, which reaches Django views as ``request.scope["state"]``), echoes
``websocket`` scopes, and hands every ``http`` scope to Django's ASGI
handler. ``django_asgi`` is Django alone: a server must serve it without
lifespan (it raises on that scope).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import django
from django.conf import settings
from django.urls import path

from examples.asgi.common import DATA_FILE, STREAM_CHUNKS, BodyDigest, json_document, open_resource

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="examples-asgi-django-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
        # The upload route streams the body itself; no in-memory cap on it.
        DATA_UPLOAD_MAX_MEMORY_SIZE=None,
    )
    django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402  (needs the settings above)
from django.http import (  # noqa: E402
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.views.decorators.csrf import csrf_exempt  # noqa: E402


async def json_route(request: HttpRequest) -> HttpResponse:
    return JsonResponse(json_document("django"))


async def resource(request: HttpRequest) -> HttpResponse:
    state = request.scope.get("state") or {}  # type: ignore[attr-defined]
    return JsonResponse({"resource": state.get("resource")})


async def stream(request: HttpRequest) -> HttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in STREAM_CHUNKS:
            yield chunk
    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def file(request: HttpRequest) -> HttpResponse:
    return FileResponse(open(DATA_FILE, "rb"), content_type="text/plain")


@csrf_exempt
async def upload(request: HttpRequest) -> HttpResponse:
    digest = BodyDigest()
    while chunk := request.read(64 * 1024):
        digest.feed(chunk)
    return JsonResponse(digest.result())


urlpatterns = [
    path("json", json_route),
    path("resource", resource),
    path("stream", stream),
    path("file", file),
    path("upload", upload),
]

django_asgi = get_asgi_application()


async def _lifespan(receive: Receive, send: Send, state: dict[str, Any] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if state is not None:
                state["resource"] = await open_resource()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _websocket_echo(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:  # websocket.disconnect
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        await django_asgi(scope, receive, send)
    elif kind == "websocket":
        await _websocket_echo(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send, scope.get("state"))
