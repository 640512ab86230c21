"""Which objects are served how (``--interface``), and the per-connection scope keys."""

from __future__ import annotations

import functools
from typing import Any

from app_server import App
from app_server.asgi import as_handler, interface_error, kind_of
from app_server.asgi.adapter import AsgiAdapter
from app_server.asgi.http import connection_scope
from app_server.framework.request import ConnectionInfo


async def asgi3(scope: Any, receive: Any, send: Any) -> None:
    return None


class Asgi3:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


def wsgi(environ: Any, start_response: Any) -> list[bytes]:
    return []


def test_native_and_asgi3_are_recognised() -> None:
    app = App("x")
    assert kind_of(app) == "app"
    assert kind_of(asgi3) == "asgi"
    assert kind_of(Asgi3()) == "asgi"
    assert kind_of(wsgi) is None
    assert kind_of(Asgi3) is None  # the class itself: an ASGI 2 shape
    assert kind_of(functools.partial(wsgi, {})) is None
    assert as_handler(app) is app
    assert isinstance(as_handler(asgi3), AsgiAdapter)
    assert interface_error(asgi3, "auto", "m:a") is None
    assert interface_error(app, "app", "m:a") is None
    assert interface_error(asgi3, "asgi", "m:a") is None


def test_client_and_server_of_the_scope() -> None:
    tcp = ConnectionInfo("10.0.0.1", 5000, "127.0.0.1", 8000, "http", None)
    assert connection_scope(tcp) == (("10.0.0.1", 5000), ("127.0.0.1", 8000))
    unix = ConnectionInfo("", 0, "/run/app.sock", 0, "http", None)
    assert connection_scope(unix) == (None, ("/run/app.sock", None))
