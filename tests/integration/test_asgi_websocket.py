"""WebSockets over ASGI (SPEC §10) through a real worker, with the websockets client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from http_helpers import serve_app, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from app_server.settings.model import WebSocketLimits

Scope = dict[str, Any]


def make_app(events: list[Any]) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        events.append(scope)
        connect_message = await receive()
        events.append(connect_message)
        path = scope["path"]
        if path == "/deny":
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"x-why", b"token")]})
            await send({"type": "websocket.http.response.body", "body": b"no ",
                        "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"token"})
            return
        if path == "/refuse":
            await send({"type": "websocket.close"})
            return
        if path == "/boom":
            raise RuntimeError("boom before accept")
        chosen = "chat.v2" if "chat.v2" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": chosen,
                    "headers": [(b"x-accepted", b"yes")]})
        while True:
            message = await receive()
            events.append(message)
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close-me":
                await send({"type": "websocket.close", "code": 4321, "reason": "asked"})
                continue
            if "text" in message:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})

    return app


def test_accept_with_subprotocol_and_headers_then_echo() -> None:
    events: list[Any] = []
    with serve_app(make_app(events)) as server, connect(
        server.ws_url + "/chat?room=1", subprotocols=["chat.v1", "chat.v2"]  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response.headers["x-accepted"] == "yes"
        ws.send("hello")
        assert ws.recv() == "HELLO"
        ws.send(b"\x01\x02\x03")
        assert ws.recv() == b"\x03\x02\x01"
    scope = events[0]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["path"] == "/chat" and scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert "websocket.http.response" in scope["extensions"]
    assert events[1] == {"type": "websocket.connect"}


def test_app_close_code_and_reason_reach_the_client() -> None:
    events: list[Any] = []
    with serve_app(make_app(events)) as server, connect(server.ws_url + "/chat") as ws:
        ws.send("close-me")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4321, "asked")


def test_disconnect_carries_the_peer_close_code() -> None:
    events: list[Any] = []
    with serve_app(make_app(events)) as server:
        with connect(server.ws_url + "/chat") as ws:
            ws.close(4005, "bye")
        wait_until(lambda: events and events[-1]["type"] == "websocket.disconnect")
    assert events[-1]["code"] == 4005


def test_denial_response_is_a_real_http_response() -> None:
    events: list[Any] = []
    with serve_app(make_app(events)) as server:
        with pytest.raises(InvalidStatus) as denied:
            connect(server.ws_url + "/deny")
        response = denied.value.response
        assert response.status_code == 401
        assert response.headers["x-why"] == "token"
        assert response.body == b"no token"


def test_close_before_accept_is_403_and_an_error_before_accept_is_500() -> None:
    events: list[Any] = []
    with serve_app(make_app(events)) as server:
        with pytest.raises(InvalidStatus) as refused:
            connect(server.ws_url + "/refuse")
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as failed:
            connect(server.ws_url + "/boom")
        assert failed.value.response.status_code == 500
        assert httpx.get(server.url + "/").status_code == 500  # no http answer from this app


def test_message_over_max_size_closes_1009() -> None:
    events: list[Any] = []
    limits = WebSocketLimits(max_size=1024)
    with serve_app(make_app(events), websocket=limits) as server:
        with connect(server.ws_url + "/chat", max_size=None) as ws:
            ws.send("x" * 2048)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        wait_until(lambda: events and events[-1]["type"] == "websocket.disconnect")
    assert events[-1]["code"] == 1009


def test_an_error_raised_after_the_peer_closed_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                raise LookupError(f"disconnected {message['code']}")  # as Starlette does

    caplog.set_level(logging.INFO, "app_server")
    with serve_app(app) as server:
        with connect(server.ws_url + "/") as ws:
            ws.close(1000)
        wait_until(lambda: any("LookupError" in r.getMessage() for r in caplog.records))
    lines = [r for r in caplog.records if "LookupError" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and lines[0].exc_info is None


def test_a_receive_pending_before_accept_gets_the_messages_after_it() -> None:
    """Quart receives in a task of its own while its handler accepts."""
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        pending = asyncio.ensure_future(receive())
        await asyncio.sleep(0)  # the receive is parked before the accept
        await send({"type": "websocket.accept"})
        message = await pending
        await send({"type": "websocket.send", "text": "got " + message["text"]})
        await receive()

    with serve_app(app) as server, connect(server.ws_url + "/") as ws:
        ws.send("first")
        assert ws.recv(timeout=5) == "got first"
