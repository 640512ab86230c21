"""ASGI lifespan per worker (SPEC §10) through a real worker."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

import httpx
import pytest
from http_helpers import serve_app, wait_until

from app_server.settings.model import Settings
from app_server.workers.entry import EXIT_BOOT_FAILED, serve

Scope = dict[str, Any]


def lifespan_app(log: list[str], fail: str | None = None) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    log.append("startup")
                    if fail == "failed":
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    if fail == "raise":
                        raise ConnectionError("db down")
                    scope["state"]["pool"] = "the-pool"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    log.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await receive()
        log.append("request:" + scope["path"])
        if scope["path"] == "/slow":
            await asyncio.sleep(0.3)  # in flight while the worker drains
        body = str(scope["state"].get("pool")).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        log.append("answered:" + scope["path"])

    return app


def test_startup_state_reaches_requests_and_shutdown_runs_after_in_flight() -> None:
    log: list[str] = []
    result: list[httpx.Response] = []
    with serve_app(lifespan_app(log)) as server:
        assert log == ["startup"]  # before ready
        assert httpx.get(server.url + "/").text == "the-pool"
        slow = threading.Thread(
            target=lambda: result.append(httpx.get(server.url + "/slow", timeout=10))
        )
        slow.start()
        wait_until(lambda: "request:/slow" in log)
    slow.join(10)
    assert result[0].text == "the-pool"
    assert log[-2:] == ["answered:/slow", "shutdown"]


def _serve_once(app: Any) -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        return asyncio.run(serve(app, Settings(channels="local"), [listener],
                                 stop=asyncio.Event()))
    finally:
        listener.close()


@pytest.mark.parametrize("fail", ["failed", "raise"])
def test_startup_failure_is_a_boot_failure(fail: str) -> None:
    log: list[str] = []
    assert _serve_once(lifespan_app(log, fail)) == EXIT_BOOT_FAILED
    assert log == ["startup"]


def test_app_raising_on_lifespan_is_served_without_and_logged_once_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def django_like(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    caplog.set_level(logging.INFO, "app_server")
    with serve_app(django_like) as server:
        assert httpx.get(server.url + "/").text == "served"
        assert httpx.get(server.url + "/").text == "served"
    lines = [r for r in caplog.records if "lifespan" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
