"""Client-side helpers for the WebSocket example tests.

Every wait has a deadline: messages are awaited with ``asyncio.wait_for``
and server-side conditions are polled with a deadline, never slept on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT = 5.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run one test's client side on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(server: Any, path: str) -> str:
    return "ws" + server.url.removeprefix("http") + path


def ws_connect(server: Any, path: str, **options: Any) -> connect:
    """``websockets`` client for ``path`` on the test server (no proxy, no compression)."""
    options.setdefault("open_timeout", TIMEOUT)
    options.setdefault("close_timeout", TIMEOUT)
    return connect(ws_url(server, path), proxy=None, compression=None, **options)


async def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout)


async def recv_json(ws: ClientConnection, timeout: float = TIMEOUT) -> Any:
    message = await recv(ws, timeout)
    assert isinstance(message, str), f"expected a text frame, got {message!r}"
    return json.loads(message)


async def recv_json_until(
    ws: ClientConnection, predicate: Callable[[Any], bool], timeout: float = TIMEOUT
) -> tuple[Any, list[Any]]:
    """Read JSON messages until one satisfies ``predicate``: (it, the ones before it)."""
    skipped: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await recv_json(ws, timeout)
            if predicate(message):
                return message, skipped
            skipped.append(message)


async def expect_close(ws: ClientConnection, timeout: float = TIMEOUT) -> tuple[int, str]:
    """Wait for the server's close frame; fail on any message before it.

    Returns the code and reason the server sent (not 1006 made up locally).
    """
    try:
        message = await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, f"connection dropped without a close frame: {exc!r}"
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError(f"expected the server to close, got a message: {message!r}")


async def expect_http_refusal(server: Any, path: str, **options: Any) -> Any:
    """The handshake is answered with an HTTP response instead of 101: return it."""
    try:
        async with ws_connect(server, path, **options):
            pass
    except InvalidStatus as exc:
        return exc.response
    raise AssertionError(f"the handshake for {path} was accepted")


async def poll(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Async ``wait_until``: poll a server-side condition with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(0.01)


__all__ = [
    "ConnectionClosed",
    "InvalidStatus",
    "TIMEOUT",
    "expect_close",
    "expect_http_refusal",
    "poll",
    "recv",
    "recv_json",
    "recv_json_until",
    "run",
    "websockets",
    "ws_connect",
    "ws_url",
]
