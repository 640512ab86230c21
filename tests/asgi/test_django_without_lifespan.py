"""Django's own ASGI handler (no wrapper) raises on the lifespan scope: app-server serves
it without lifespan, says so once at INFO, and answers its routes as Uvicorn does."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from examples.asgi.common import json_document
from tests.asgi.conftest import SERVERS, ServerProcess
from tests.system.harness import poll

TARGET = "examples.asgi.django_app:django_asgi"


def test_django_served_without_lifespan(
    start_server: Callable[[str, str], ServerProcess],
) -> None:
    answers = {}
    servers = {}
    for kind in SERVERS:
        server = servers[kind] = start_server(kind, TARGET)
        reply = httpx.get(server.url + "/json", timeout=10)
        answers[kind] = (reply.status_code, reply.json())
        # No lifespan state reaches the view: the resource is absent, not an error.
        assert httpx.get(server.url + "/resource", timeout=10).json() == {"resource": None}
    assert answers["app-server"] == answers["uvicorn"] == (200, json_document("django"))
    server = servers["app-server"]
    poll(lambda: "does not support ASGI lifespan" in server.log(), 10, "the INFO line")
    assert server.log().count("does not support ASGI lifespan") == 1
