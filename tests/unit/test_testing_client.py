"""``app_server.testing.TestClient``: the in-process client over the real
worker protocol and an in-memory transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app_server import App, empty, json, stream, text
from app_server.settings.model import HttpLimits
from app_server.testing import TestClient, encode_request


def build_app() -> tuple[App, list[str]]:
    app = App("client")
    hooks: list[str] = []

    @app.before_server_start
    async def start(app_: App) -> None:
        hooks.append("start")

    @app.after_server_stop
    async def stop(app_: App) -> None:
        hooks.append("stop")

    @app.get("/hello/{name}")
    async def hello(request, name: str):  # type: ignore[no-untyped-def]
        return json({"hello": name})

    @app.route("/echo", methods=["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def echo(request):  # type: ignore[no-untyped-def]
        return json(
            {
                "method": request.method,
                "body": request.text,
                "json": request.json
                if request.headers.get("content-type") == "application/json"
                else None,
                "args": {k: request.args.getlist(k) for k in request.args},
                "x_token": request.headers.get("x-token"),
            }
        )

    @app.get("/who")
    async def who(request):  # type: ignore[no-untyped-def]
        return text(f"{request.ip} {request.host}")

    @app.get("/stream")
    async def streamed(request):  # type: ignore[no-untyped-def]
        async def parts() -> AsyncIterator[str]:
            for i in range(3):
                yield f"<{i}>"

        return stream(parts())

    @app.post("/upload", stream=True)
    async def upload(request):  # type: ignore[no-untyped-def]
        size = 0
        async for chunk in request.stream:
            size += len(chunk)
        return json({"size": size})

    @app.get("/nothing")
    async def nothing(request):  # type: ignore[no-untyped-def]
        return empty()

    @app.get("/boom")
    async def boom(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("kaboom")

    @app.get("/slow")
    async def slow(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(30)
        return text("late")

    @app.get("/hooks")
    async def show_hooks(request):  # type: ignore[no-untyped-def]
        return json(hooks)

    return app, hooks


def test_get_json_response() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = client.get("/hello/world")
    assert response.status == 200
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("content-length") == str(len(response.body))
    assert response.headers.get("date") is not None


def test_hooks_run_once_with_context_manager() -> None:
    app, hooks = build_app()
    with TestClient(app) as client:
        client.get("/hello/a")
        client.get("/hello/b")
        assert client.get("/hooks").json() == ["start"]
    assert hooks == ["start", "stop"]


def test_without_context_manager_each_request_boots_the_app() -> None:
    app, hooks = build_app()
    client = TestClient(app)
    assert client.get("/hello/a").status == 200
    assert hooks == ["start", "stop"]


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
def test_methods_with_body(method: str) -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = getattr(client, method)("/echo", body="payload")
    assert response.json()["method"] == method.upper()
    assert response.json()["body"] == "payload"


def test_json_params_and_headers() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = client.post(
            "/echo",
            json={"k": [1, 2]},
            params={"a": "1", "b": ["x", "y"]},
            headers={"X-Token": "t0k"},
        )
    body = response.json()
    assert body["json"] == {"k": [1, 2]}
    assert body["args"] == {"a": ["1"], "b": ["x", "y"]}
    assert body["x_token"] == "t0k"


def test_text_property() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        assert client.get("/who").text == "127.0.0.1 testserver"


def test_peer_sets_request_ip() -> None:
    app, _ = build_app()
    with TestClient(app, peer=("10.1.2.3", 4444)) as client:
        assert client.get("/who").text.startswith("10.1.2.3 ")


def test_not_found_and_method_not_allowed() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        assert client.get("/nope").status == 404
        response = client.get("/echo")
    assert response.status == 405
    assert "POST" in response.headers["allow"]


def test_streamed_response_is_reassembled() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = client.get("/stream")
    assert response.body == b"<0><1><2>"
    assert response.headers["transfer-encoding"] == "chunked"


def test_streamed_request_body() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = client.post("/upload", body=b"u" * 100_000)
    assert response.json() == {"size": 100_000}


def test_empty_response() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = client.get("/nothing")
    assert response.status == 204
    assert response.body == b""


def test_head_request_returns_without_body() -> None:
    app, _ = build_app()
    with TestClient(app, timeout_s=2) as client:
        response = client.head("/hello/x")
    assert response.status == 200
    assert response.body == b""
    assert response.headers["content-length"] == str(len(b'{"hello":"x"}'))


def test_unhandled_exception_is_500() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = client.get("/boom")
    assert response.status == 500
    assert "kaboom" not in response.text


def test_send_raw_malformed_request_gets_400() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        response = client.send_raw(b"GET /hello/x HTTP/1.1\r\n\r\n")  # no Host
    assert response.status == 400
    assert response.headers["connection"] == "close"


def test_send_raw_pipelined_returns_first_response() -> None:
    app, _ = build_app()
    raw = encode_request("GET", "/hello/one") + encode_request("GET", "/hello/two")
    with TestClient(app) as client:
        assert client.send_raw(raw).json() == {"hello": "one"}


def test_limits_apply() -> None:
    app, _ = build_app()
    with TestClient(app, limits=HttpLimits(request_max_size=10)) as client:
        response = client.post("/echo", body=b"x" * 11)
    assert response.status == 413


def test_response_timeout_limit_gives_503() -> None:
    app, _ = build_app()
    limits = HttpLimits(response_timeout_s=0.2)
    with TestClient(app, limits=limits, timeout_s=2) as client:
        response = client.get("/slow")
    assert response.status == 503


def test_client_timeout_raises() -> None:
    app, _ = build_app()
    with TestClient(app, timeout_s=0.2) as client, pytest.raises(TimeoutError):
        client.get("/slow")


def test_encode_request() -> None:
    raw = encode_request("POST", "/p", json={"a": 1}, params={"q": "1 2"}, headers={"X-A": "b"})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /p?q=1+2 HTTP/1.1"
    assert b"host: testserver" in lines
    assert b"x-a: b" in lines
    assert b"content-type: application/json" in lines
    assert b"content-length: %d" % len(body) in lines
    assert body == b'{"a": 1}'


def test_encode_request_get_has_no_content_length() -> None:
    raw = encode_request("GET", "/")
    assert b"content-length" not in raw.lower()
    assert raw.endswith(b"\r\n\r\n")


# -- WebSockets -------------------------------------------------------------


def build_ws_app() -> App:
    from app_server.exceptions import WebSocketClosed  # noqa: F401  (documented alias target)

    app = App("ws-testing")

    @app.websocket("/echo", subprotocols=["v1"])
    async def echo(ws):  # type: ignore[no-untyped-def]
        async for message in ws:
            await ws.send(message)

    @app.websocket_route("/json", value_type="json")
    async def as_json(ws):  # type: ignore[no-untyped-def]
        async for message in ws:
            await ws.send({"got": message})

    @app.websocket("/bye")
    async def bye(ws):  # type: ignore[no-untyped-def]
        await ws.close(4001, "bye now")

    @app.websocket("/private")
    async def private(ws):  # type: ignore[no-untyped-def]
        await ws.reject(403)

    return app


def test_websocket_text_bytes_and_subprotocol() -> None:
    with (
        TestClient(build_ws_app()) as client,
        client.websocket_connect("/echo", subprotocols=["v0", "v1"]) as ws,
    ):
        assert ws.subprotocol == "v1"
        ws.send_text("hi")
        assert ws.receive_text() == "hi"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_bytes() == b"\x00\x01"
        ws.close()
        assert ws.close_code == 1000


def test_websocket_json() -> None:
    with TestClient(build_ws_app()) as client, client.websocket_connect("/json") as ws:
        ws.send_json({"a": 1})
        assert ws.receive_json() == {"got": {"a": 1}}


def test_websocket_close_code_from_the_server() -> None:
    from app_server.exceptions import WebSocketClosed

    with TestClient(build_ws_app()) as client, client.websocket_connect("/bye") as ws:
        with pytest.raises(WebSocketClosed) as info:
            ws.receive()
        assert (info.value.code, info.value.reason) == (4001, "bye now")


def test_websocket_oversized_message_is_1009() -> None:
    from app_server.exceptions import WebSocketClosed
    from app_server.settings.model import WebSocketLimits

    client = TestClient(build_ws_app(), websocket=WebSocketLimits(max_size=100))
    with client, client.websocket_connect("/echo") as ws:
        ws.send_text("x" * 100)
        assert ws.receive_text() == "x" * 100
        ws.send_text("x" * 101)
        with pytest.raises(WebSocketClosed) as info:
            ws.receive()
        assert info.value.code == 1009


def test_websocket_rejected_and_unknown_paths() -> None:
    from app_server.testing import WebSocketRejected

    with TestClient(build_ws_app()) as client:
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/private")
        assert info.value.response.status == 403
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/nowhere")
        assert info.value.response.status == 404
        assert client.get("/echo").status == 426
