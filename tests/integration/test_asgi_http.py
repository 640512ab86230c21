"""HTTP over ASGI (SPEC §10) through a real worker, with httpx and raw sockets.

The apps are plain ASGI 3 callables written here: no framework involved, so
each test pins one rule of the spec as the worker carries it out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import raw_client, serve_app, wait_until

from app_server.logs import ACCESS_LOGGER

Scope = dict[str, Any]


async def read_body(receive: Any) -> tuple[bytes, list[dict[str, Any]]]:
    messages = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body, messages


async def answer(
    send: Any, body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers or [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def test_scope_follows_the_spec_with_root_path_prepended() -> None:
    seen: list[Scope] = []
    states: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return  # no lifespan: served without
        seen.append(scope)
        states.append(dict(scope["state"]))
        scope["state"]["mutated"] = True  # a copy per request: must not leak
        await read_body(receive)
        await answer(send, b"ok")

    with serve_app(app, root_path="/api") as server:
        response = httpx.get(server.url + "/x%20y?q=1", headers={"X-Test": "v"})
        assert response.status_code == 200 and response.text == "ok"
        httpx.get(server.url + "/second")
    first, second = seen
    assert first["type"] == "http"
    assert first["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert first["http_version"] == "1.1"
    assert first["method"] == "GET"
    assert first["scheme"] == "http"
    assert first["path"] == "/api/x y"
    assert first["raw_path"] == b"/api/x%20y"
    assert first["root_path"] == "/api"
    assert first["query_string"] == b"q=1"
    assert (b"x-test", b"v") in first["headers"]
    assert first["client"][0] == "127.0.0.1" and isinstance(first["client"][1], int)
    assert first["server"] == ("127.0.0.1", server.port)
    assert "http.response.pathsend" in first["extensions"]
    assert states == [{}, {}]


def test_body_arrives_in_chunks_with_more_body() -> None:
    got: list[list[dict[str, Any]]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, messages = await read_body(receive)
        got.append(messages)
        await answer(send, b"%d" % len(body))

    payload = b"z" * 2_000_000
    with serve_app(app) as server:
        assert httpx.post(server.url + "/", content=payload).text == str(len(payload))
        # chunked request body
        assert httpx.post(server.url + "/", content=iter([b"a" * 10, b"b" * 20])).text == "30"
        assert httpx.get(server.url + "/").text == "0"
    big, chunked, empty = got
    assert len(big) > 1 and all(m["more_body"] for m in big[:-1])
    assert big[-1]["more_body"] is False
    assert all(m["type"] == "http.request" for m in big + chunked + empty)
    assert empty == [{"type": "http.request", "body": b"", "more_body": False}]


def test_disconnect_after_the_response_and_when_the_client_leaves() -> None:
    after_response: list[dict[str, Any]] = []
    on_leave: list[dict[str, Any]] = []
    parked: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        if scope["path"] == "/wait":
            parked.append(True)
            on_leave.append(await receive())  # parks until the client goes
            return
        await answer(send, b"done")
        after_response.append(await receive())
        after_response.append(await receive())

    with serve_app(app) as server:
        assert httpx.get(server.url + "/").text == "done"
        wait_until(lambda: len(after_response) == 2)
        assert after_response == [{"type": "http.disconnect"}] * 2
        with raw_client(server) as client:
            client.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_until(lambda: parked)
            assert not on_leave
            # Gone for good (RST): a FIN alone is a half-close, after which
            # the client may still read its answer.
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        wait_until(lambda: on_leave)
        assert on_leave == [{"type": "http.disconnect"}]


def test_send_after_the_client_left_raises_an_oserror() -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        except Exception as exc:
            raised.append(exc)
            raise

    with serve_app(app) as server:
        with raw_client(server) as client:
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            client.sock.recv(1000)  # the stream started
        wait_until(lambda: raised)
    assert isinstance(raised[0], OSError)


def test_streamed_response_is_chunked_and_a_declared_length_is_kept() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", b"6")] if scope["path"] == "/sized" else []
        headers.append((b"set-cookie", b"a=1"))
        headers.append((b"set-cookie", b"b=2"))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        for part in (b"ab", b"cd", b"ef"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with serve_app(app) as server:
        chunked = httpx.get(server.url + "/")
        sized = httpx.get(server.url + "/sized")
        head = httpx.head(server.url + "/sized")
    assert chunked.status_code == 201 and chunked.text == "abcdef"
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert chunked.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert sized.text == "abcdef" and sized.headers["content-length"] == "6"
    assert head.status_code == 201 and head.headers["content-length"] == "6"
    assert head.content == b""


def test_pathsend_serves_the_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000
    path = tmp_path / "blob.bin"
    path.write_bytes(data)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        await send({"type": "http.response.pathsend", "path": str(path)})

    with serve_app(app) as server:
        response = httpx.get(server.url + "/")
    assert response.content == data
    assert response.headers["content-length"] == str(len(data))


def test_exception_before_start_is_500_after_start_an_aborted_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/late":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom " + scope["path"])

    caplog.set_level(logging.WARNING, "app_server")
    with serve_app(app) as server:
        early = httpx.get(server.url + "/early")
        assert early.status_code == 500
        with raw_client(server) as client:
            client.send(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            data = client.rest_until_close()
        assert data.startswith(b"HTTP/1.1 200") and b"partial" in data
        assert not data.endswith(b"0\r\n\r\n")  # never completed
    errors = [r for r in caplog.records if r.name.startswith("app_server")]
    assert [r.getMessage() for r in errors] == [
        "ASGI application raised on GET /early",
        "ASGI application raised on GET /late",
    ]


def test_app_that_never_answers_gets_the_response_timeout() -> None:
    told: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        told.append(await receive())  # no answer: parked until the worker gives up

    with serve_app(app, response_timeout_s=0.3) as server:
        response = httpx.get(server.url + "/", timeout=10)
        assert response.status_code == 503
        wait_until(lambda: told)
    assert told == [{"type": "http.disconnect"}]


def test_unread_body_pauses_reading() -> None:
    """An app that does not read its body stops the worker reading the socket:
    the client's send blocks once the kernel buffers are full."""
    release = asyncio.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        loops.append(asyncio.get_running_loop())
        await release.wait()
        body, _ = await read_body(receive)
        await answer(send, b"%d" % len(body))

    size = 24 * 1024 * 1024
    with serve_app(app) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.settimeout(1.0)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        sent = 0
        chunk = b"y" * 65536
        with pytest.raises(TimeoutError):
            while sent < size:
                sent += sock.send(chunk)
        assert sent < 12 * 1024 * 1024  # bounded by buffers, not by the body's size
        wait_until(lambda: loops)
        loops[0].call_soon_threadsafe(release.set)
        sock.settimeout(10.0)
        remaining = size - sent
        while remaining:
            remaining -= sock.send(chunk[: min(len(chunk), remaining)])
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(str(size).encode()):
            more = sock.recv(65536)
            if not more:
                break
            reply += more
        sock.close()
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(str(size).encode())


def test_trusted_proxy_headers_set_client_and_scheme() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope)
        await answer(send, b"ok")

    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with serve_app(app) as server:  # 127.0.0.1 trusted by default
        httpx.get(server.url + "/", headers=headers)
    with serve_app(app, forwarded_allow_ips=()) as server:
        httpx.get(server.url + "/", headers=headers)
    trusted, untrusted = seen
    assert trusted["client"] == ("203.0.113.7", 0) and trusted["scheme"] == "https"
    assert untrusted["client"][0] == "127.0.0.1" and untrusted["scheme"] == "http"


def test_head_gets_the_length_of_the_get_body_and_no_body() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/declared":  # an app that sends no body for HEAD
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"11")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await answer(send, b"hello world")

    with serve_app(app) as server, raw_client(server) as client:
        for path in ("/", "/declared"):
            client.send(b"HEAD %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            response = client.response(head_only=True)
            assert response.status == 200
            assert response.header("content-length") == "11"
            assert response.header("transfer-encoding") is None
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.response().body == b"hello world"  # nothing was left over


def test_access_log_line_like_a_native_app(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(ACCESS_LOGGER)  # may not propagate: listen on it
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        await answer(send, b"four", status=201)

    def lines() -> list[str]:
        return list(
            dict.fromkeys(r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER)
        )

    try:
        with serve_app(app, access_log=True) as server:
            assert httpx.post(server.url + "/n?x=1", content=b"abc").status_code == 201
            wait_until(lines)
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
    assert re.fullmatch(
        r'127\.0\.0\.1:\d+ - "POST /n\?x=1 HTTP/1\.1" 201 4 \d+\.\d+ms', lines()[0]
    ), lines()


@pytest.mark.parametrize(
    "header",
    [
        (b"x-note", b"1\r\nset-cookie: evil=1"),
        (b"x-note\r\nset-cookie", b"evil=1"),
        (b"x-note", b"a\nb"),
        (b"x-note", b"a\rb"),
        (b"x-note", b"nul\x00here"),
    ],
)
def test_a_header_that_would_split_the_response_is_a_500(
    header: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"text/plain"), (bytearray(b"x-fine"), b"yes")]
        if scope["path"] == "/bad":
            headers.append(header)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    caplog.set_level(logging.WARNING, "app_server")
    with serve_app(app) as server:
        with raw_client(server) as client:
            client.send(b"GET /bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = client.rest_until_close()
        good = httpx.get(server.url + "/good")
    assert data.startswith(b"HTTP/1.1 500 ")
    assert b"evil" not in data and b"x-fine" not in data.lower()
    assert good.status_code == 200 and good.headers["x-fine"] == "yes" and good.text == "ok"
    assert any(
        "response header" in r.getMessage() or "ASGI application" in r.getMessage()
        for r in caplog.records
    )
