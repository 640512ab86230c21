"""The framework over real sockets with httpx (SPEC §2.1–2.4, §2.7).

Routing (typed parameters in both spellings, 404/405, HEAD, hosts,
strict_slashes, versions, blueprints, url_for), argument injection, middleware,
lifecycle hooks, error handling, every response helper, the request object,
streamed request bodies and authentication.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_helpers import RunningServer, raw_client, serve_app

from app_server import (
    App,
    Blueprint,
    FromJSON,
    Identity,
    auth,
    empty,
    file,
    html,
    json,
    raw,
    redirect,
    stream,
    text,
)
from app_server.exceptions import NotFound

FAST_STOP = {"graceful_timeout_s": 2.0}
FILE_TEXT = "line one\nline two, with ünïcode\n"


def build_app(static_dir: Path) -> tuple[App, list[str]]:
    app = App("framework")
    events: list[str] = []
    (static_dir / "notes.txt").write_text(FILE_TEXT, encoding="utf-8")
    (static_dir / "blob.bin").write_bytes(bytes(range(256)) * 1000)

    # -- hooks and middleware -----------------------------------------------
    @app.before_server_start
    async def before_start(app_: App) -> None:
        events.append("before_server_start")

    @app.after_server_start
    async def after_start(app_: App) -> None:
        events.append("after_server_start")

    @app.before_server_stop
    async def before_stop(app_: App) -> None:
        events.append("before_server_stop")

    @app.after_server_stop
    async def after_stop(app_: App) -> None:
        events.append("after_server_stop")

    @app.on_request
    async def gate(request):  # type: ignore[no-untyped-def]
        request.ctx.seen_by_middleware = True
        if request.path == "/blocked":
            return text("blocked by middleware", 403)
        return None

    @app.on_response
    async def stamp(request, response):  # type: ignore[no-untyped-def]
        response.headers["X-Served-By"] = "app-server-tests"

    @app.get("/events")
    async def show_events(request):  # type: ignore[no-untyped-def]
        return json({"events": list(events), "ctx": request.ctx.seen_by_middleware})

    @app.get("/blocked")
    async def blocked(request):  # type: ignore[no-untyped-def]
        events.append("blocked handler ran")
        return text("should not run")

    # -- routing ------------------------------------------------------------
    @app.get("/users/{user_id:int}")
    async def user(request, user_id: int):  # type: ignore[no-untyped-def]
        return json(
            {"user_id": user_id, "type": type(user_id).__name__, "template": request.route.template}
        )

    @app.get("/items/<item_id:int>")
    async def item(request, item_id: int):  # type: ignore[no-untyped-def]
        return json({"item_id": item_id, "type": type(item_id).__name__})

    @app.get("/typed/{f:float}/{u:uuid}/{s:slug}/{rest:path}")
    async def typed(request, f: float, u: uuid.UUID, s: str, rest: str):  # type: ignore[no-untyped-def]
        return json({"f": f, "u": str(u), "u_type": type(u).__name__, "s": s, "rest": rest})

    @app.post("/only-post")
    async def only_post(request):  # type: ignore[no-untyped-def]
        return text("posted")

    @app.get("/hosted", host="api.example.com")
    async def hosted_api(request):  # type: ignore[no-untyped-def]
        return text("api host")

    @app.get("/hosted")
    async def hosted_any(request):  # type: ignore[no-untyped-def]
        return text("any host")

    @app.get("/api-only", host="api.example.com")
    async def api_only(request):  # type: ignore[no-untyped-def]
        return text("api only")

    @app.get("/strict", strict_slashes=True)
    async def strict(request):  # type: ignore[no-untyped-def]
        return text("strict")

    @app.get("/loose")
    async def loose(request):  # type: ignore[no-untyped-def]
        return text("loose")

    @app.get("/info", version=1)
    async def info_v1(request):  # type: ignore[no-untyped-def]
        return text("v1")

    @app.get("/info", version=2, version_prefix="/api/v")
    async def info_v2(request):  # type: ignore[no-untyped-def]
        return text("v2")

    bp = Blueprint("shop", url_prefix="/shop")

    @bp.get("/product/{pid:int}", name="product")
    async def product(request, pid: int):  # type: ignore[no-untyped-def]
        return json({"pid": pid, "self": request.app.url_for("shop.product", pid=pid, ref="x")})

    @bp.get("/")
    async def shop_index(request):  # type: ignore[no-untyped-def]
        return text("shop index")

    versioned = Blueprint("vbp", url_prefix="/things", version=3)

    @versioned.get("/list")
    async def things(request):  # type: ignore[no-untyped-def]
        return text("things v3")

    app.blueprint(bp)
    app.blueprint(versioned)

    @app.get("/link", name="link")
    async def link(request):  # type: ignore[no-untyped-def]
        return text(app.url_for("user", user_id=7, tab="posts"))

    # -- injection ----------------------------------------------------------
    @app.get("/search")
    async def search(
        request,
        q: str,
        page: int = 1,
        exact: bool = False,  # type: ignore[no-untyped-def]
        ratio: float = 0.5,
    ):
        return json({"q": q, "page": page, "exact": exact, "ratio": ratio})

    @app.post("/data")
    async def data(payload: FromJSON[dict]):  # type: ignore[type-arg]
        return json({"got": payload.value})

    # -- responses ----------------------------------------------------------
    @app.get("/r/str")
    async def r_str(request):  # type: ignore[no-untyped-def]
        return "plain string"

    @app.get("/r/bytes")
    async def r_bytes(request):  # type: ignore[no-untyped-def]
        return b"\x00\x01raw"

    @app.get("/r/dict")
    async def r_dict(request):  # type: ignore[no-untyped-def]
        return {"a": [1, 2], "b": None}

    @app.get("/r/json")
    async def r_json(request):  # type: ignore[no-untyped-def]
        return json({"created": True}, status=201, headers={"X-Extra": "1"})

    @app.get("/r/html")
    async def r_html(request):  # type: ignore[no-untyped-def]
        return html("<h1>hi</h1>")

    @app.get("/r/raw")
    async def r_raw(request):  # type: ignore[no-untyped-def]
        return raw(b"\xff\xfe")

    @app.get("/r/empty")
    async def r_empty(request):  # type: ignore[no-untyped-def]
        return empty()

    @app.get("/r/redirect")
    async def r_redirect(request):  # type: ignore[no-untyped-def]
        return redirect("/r/str")

    @app.get("/r/redirect301")
    async def r_redirect301(request):  # type: ignore[no-untyped-def]
        return redirect("/r/str", status=301)

    @app.get("/r/file/{name}")
    async def r_file(request, name: str):  # type: ignore[no-untyped-def]
        return file(static_dir / name)

    @app.get("/r/stream-gen")
    async def r_stream_gen(request):  # type: ignore[no-untyped-def]
        async def gen() -> AsyncIterator[bytes | str]:
            for i in range(3):
                await asyncio.sleep(0)
                yield f"chunk{i}|"
            yield b"bytes-too"

        return stream(gen(), content_type="text/csv")

    @app.get("/r/stream-callback")
    async def r_stream_callback(request):  # type: ignore[no-untyped-def]
        async def produce(response: Any) -> None:
            await response.write("first,")
            await response.write(b"second,")
            await response.write("third")

        return stream(produce)

    @app.get("/r/cookie")
    async def r_cookie(request):  # type: ignore[no-untyped-def]
        response = text("cookie set")
        response.add_cookie("session", "abc123", path="/", httponly=True)
        return response

    @app.get("/r/none")
    async def r_none(request):  # type: ignore[no-untyped-def]
        return None

    # -- request ------------------------------------------------------------
    @app.get("/req/inspect")
    async def inspect_request(request):  # type: ignore[no-untyped-def]
        return json(
            {
                "method": request.method,
                "path": request.path,
                "query_string": request.query_string,
                "a": request.args.get("a"),
                "tags": request.args.getlist("tag"),
                "missing": request.args.getlist("nope"),
                "x_multi": request.headers.getall("x-multi"),
                "x_single": request.headers.get("X-SINGLE"),
                "cookies": request.cookies,
                "host": request.host,
                "url": request.url,
                "ip": request.ip,
                "id": request.id,
            }
        )

    @app.post("/req/form")
    async def form(request):  # type: ignore[no-untyped-def]
        files = {
            name: [
                {
                    "name": f.name,
                    "type": f.type,
                    "size": len(f.body),
                    "text": f.body.decode("latin-1"),
                }
                for f in items
            ]
            for name, items in request.files.items()
        }
        return json(
            {
                "fields": {k: request.form.getlist(k) for k in request.form},
                "files": files,
            }
        )

    @app.post("/req/json")
    async def req_json(request):  # type: ignore[no-untyped-def]
        return json({"json": request.json, "text": request.text})

    @app.post("/req/stream", stream=True)
    async def req_stream(request):  # type: ignore[no-untyped-def]
        sizes = []
        async for chunk in request.stream:
            sizes.append(len(chunk))
        return json({"chunks": len(sizes), "size": sum(sizes), "largest": max(sizes or [0])})

    @app.put("/req/stream-all", stream=True)
    async def req_stream_all(request):  # type: ignore[no-untyped-def]
        body = await request.stream()
        return json({"size": len(body), "head": body[:5].decode()})

    return app, events


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, list[str]]]:
    app, events = build_app(tmp_path_factory.mktemp("static"))
    with serve_app(app, **FAST_STOP) as server:
        yield server, events
    # after the server stopped, the stop hooks ran, in order
    assert events[-2:] == ["before_server_stop", "after_server_stop"]


@pytest.fixture
def client(served: tuple[RunningServer, list[str]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0].url, timeout=10) as c:
        yield c


# -- routing ---------------------------------------------------------------------


def test_int_parameter_in_brace_spelling(client: httpx.Client) -> None:
    response = client.get("/users/42")
    assert response.status_code == 200
    assert response.json() == {"user_id": 42, "type": "int", "template": "/users/{user_id:int}"}


def test_int_parameter_in_sanic_spelling(client: httpx.Client) -> None:
    assert client.get("/items/7").json() == {"item_id": 7, "type": "int"}


def test_float_uuid_slug_path_parameters(client: httpx.Client) -> None:
    u = uuid.uuid4()
    response = client.get(f"/typed/2.5/{u}/my-slug/a/b/c.txt")
    assert response.status_code == 200
    assert response.json() == {
        "f": 2.5,
        "u": str(u),
        "u_type": "UUID",
        "s": "my-slug",
        "rest": "a/b/c.txt",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/users/abc",
        "/users/1.5",
        "/items/x",
        "/typed/x/1/s/r",
        "/typed/1/not-uuid/s/r",
        "/typed/1/" + str(uuid.UUID(int=1)) + "/Bad_Slug/r",
    ],
)
def test_value_that_does_not_convert_is_404(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 404


def test_unknown_path_is_404(client: httpx.Client) -> None:
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert "Traceback" not in response.text


def test_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    response = client.get("/only-post")
    assert response.status_code == 405
    assert "POST" in response.headers["allow"]
    assert client.post("/only-post").text == "posted"


def test_head_is_served_from_get(client: httpx.Client) -> None:
    head = client.head("/users/5")
    get = client.get("/users/5")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]


def test_host_restricted_routes(client: httpx.Client) -> None:
    assert client.get("/hosted", headers={"Host": "api.example.com"}).text == "api host"
    assert client.get("/hosted", headers={"Host": "api.example.com:8080"}).text == "api host"
    assert client.get("/hosted", headers={"Host": "www.example.com"}).text == "any host"
    assert client.get("/api-only", headers={"Host": "api.example.com"}).text == "api only"
    assert client.get("/api-only", headers={"Host": "www.example.com"}).status_code == 404


def test_strict_slashes(client: httpx.Client) -> None:
    assert client.get("/strict").status_code == 200
    assert client.get("/strict/").status_code == 404
    assert client.get("/loose").text == "loose"
    assert client.get("/loose/").text == "loose"


def test_versions_and_version_prefix(client: httpx.Client) -> None:
    assert client.get("/v1/info").text == "v1"
    assert client.get("/api/v2/info").text == "v2"
    assert client.get("/info").status_code == 404


def test_blueprint_url_prefix_and_url_for(client: httpx.Client) -> None:
    response = client.get("/shop/product/12")
    assert response.status_code == 200
    assert response.json() == {"pid": 12, "self": "/shop/product/12?ref=x"}
    assert client.get("/shop").text == "shop index"
    assert client.get("/shop/").text == "shop index"


def test_blueprint_version(client: httpx.Client) -> None:
    assert client.get("/v3/things/list").text == "things v3"


def test_app_url_for_with_query(client: httpx.Client) -> None:
    assert client.get("/link").text == "/users/7?tab=posts"


# -- injection -----------------------------------------------------------------------


def test_query_parameters_injected_and_converted(client: httpx.Client) -> None:
    response = client.get(
        "/search", params={"q": "cats", "page": "3", "exact": "true", "ratio": "0.25"}
    )
    assert response.json() == {"q": "cats", "page": 3, "exact": True, "ratio": 0.25}
    assert client.get("/search?q=dogs").json() == {
        "q": "dogs",
        "page": 1,
        "exact": False,
        "ratio": 0.5,
    }


@pytest.mark.parametrize(
    "query", ["", "page=2", "q=x&page=abc", "q=x&exact=maybe", "q=x&ratio=lots"]
)
def test_missing_or_invalid_query_parameter_is_400(client: httpx.Client, query: str) -> None:
    response = client.get("/search?" + query)
    assert response.status_code == 400
    assert "Traceback" not in response.text


def test_from_json(client: httpx.Client) -> None:
    assert client.post("/data", json={"name": "x", "n": [1]}).json() == {
        "got": {"name": "x", "n": [1]},
    }


def test_from_json_invalid_body_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/data", content=b"{broken", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


# -- middleware and hooks ------------------------------------------------------------------


def test_start_hooks_ran_before_first_request(client: httpx.Client) -> None:
    body = client.get("/events").json()
    assert body["events"][:2] == ["before_server_start", "after_server_start"]
    assert body["ctx"] is True


def test_request_middleware_short_circuits(
    client: httpx.Client, served: tuple[RunningServer, list[str]]
) -> None:
    response = client.get("/blocked")
    assert response.status_code == 403
    assert response.text == "blocked by middleware"
    assert "blocked handler ran" not in served[1]


def test_response_middleware_modifies_headers(client: httpx.Client) -> None:
    assert client.get("/r/str").headers["x-served-by"] == "app-server-tests"
    assert client.get("/blocked").headers["x-served-by"] == "app-server-tests"
    assert client.get("/no/such/path").headers["x-served-by"] == "app-server-tests"


# -- responses -------------------------------------------------------------------------------


def test_returning_str_bytes_dict(client: httpx.Client) -> None:
    s = client.get("/r/str")
    assert s.text == "plain string"
    assert s.headers["content-type"].startswith("text/plain")
    b = client.get("/r/bytes")
    assert b.content == b"\x00\x01raw"
    assert b.headers["content-type"] == "application/octet-stream"
    d = client.get("/r/dict")
    assert d.json() == {"a": [1, 2], "b": None}
    assert d.headers["content-type"] == "application/json"


def test_json_html_raw_helpers(client: httpx.Client) -> None:
    j = client.get("/r/json")
    assert j.status_code == 201
    assert j.json() == {"created": True}
    assert j.headers["x-extra"] == "1"
    h = client.get("/r/html")
    assert h.headers["content-type"] == "text/html; charset=utf-8"
    assert h.text == "<h1>hi</h1>"
    r = client.get("/r/raw")
    assert r.content == b"\xff\xfe"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == "2"


def test_empty_is_204_without_body(client: httpx.Client) -> None:
    response = client.get("/r/empty")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-length" not in response.headers


def test_redirect(client: httpx.Client) -> None:
    response = client.get("/r/redirect")
    assert response.status_code == 302
    assert response.headers["location"] == "/r/str"
    assert client.get("/r/redirect301").status_code == 301
    assert client.get("/r/redirect", follow_redirects=True).text == "plain string"


def test_file_text(client: httpx.Client) -> None:
    response = client.get("/r/file/notes.txt")
    assert response.status_code == 200
    assert response.text == FILE_TEXT
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-length"] == str(len(FILE_TEXT.encode("utf-8")))
    assert "transfer-encoding" not in response.headers


def test_file_binary_larger_than_one_read(client: httpx.Client) -> None:
    response = client.get("/r/file/blob.bin")
    assert response.content == bytes(range(256)) * 1000
    assert response.headers["content-length"] == str(256_000)
    assert response.headers["content-type"] == "application/octet-stream"


def test_file_head_has_length_no_body(client: httpx.Client) -> None:
    response = client.head("/r/file/blob.bin")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(256_000)
    assert response.content == b""
    assert client.get("/r/str").text == "plain string"  # connection still in step


def test_stream_async_generator(client: httpx.Client) -> None:
    response = client.get("/r/stream-gen")
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text == "chunk0|chunk1|chunk2|bytes-too"


def test_stream_callback(client: httpx.Client) -> None:
    response = client.get("/r/stream-callback")
    assert response.status_code == 200
    assert response.text == "first,second,third"


def test_set_cookie(client: httpx.Client) -> None:
    response = client.get("/r/cookie")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("session=abc123")
    assert "HttpOnly" in cookie
    assert response.cookies["session"] == "abc123"


def test_handler_returning_none_is_500(client: httpx.Client) -> None:
    response = client.get("/r/none")
    assert response.status_code == 500
    assert "Traceback" not in response.text


# -- request ---------------------------------------------------------------------------------


def test_request_args_headers_cookies(client: httpx.Client) -> None:
    response = client.get(
        "/req/inspect?a=1&tag=x&tag=y&empty=",
        headers=[
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("x-single", "s"),
            ("Cookie", "sid=42; theme=dark"),
            ("X-Request-ID", "req-1"),
        ],
    )
    body = response.json()
    assert body["method"] == "GET"
    assert body["path"] == "/req/inspect"
    assert body["query_string"] == "a=1&tag=x&tag=y&empty="
    assert body["a"] == "1"
    assert body["tags"] == ["x", "y"]
    assert body["missing"] == []
    assert body["x_multi"] == ["one", "two"]
    assert body["x_single"] == "s"
    assert body["cookies"] == {"sid": "42", "theme": "dark"}
    assert body["host"].startswith("127.0.0.1:")
    assert body["url"].startswith("http://127.0.0.1:")
    assert body["url"].endswith("/req/inspect?a=1&tag=x&tag=y&empty=")
    assert body["ip"] == "127.0.0.1"
    assert body["id"] == "req-1"


def test_urlencoded_form(client: httpx.Client) -> None:
    response = client.post("/req/form", data={"name": "Zoë", "tag": ["a", "b"]})
    assert response.json() == {"fields": {"name": ["Zoë"], "tag": ["a", "b"]}, "files": {}}


def test_multipart_form_with_file(client: httpx.Client) -> None:
    response = client.post(
        "/req/form",
        data={"title": "report"},
        files={"upload": ("notes.txt", b"file body\r\nline 2", "text/plain")},
    )
    body = response.json()
    assert body["fields"] == {"title": ["report"]}
    assert body["files"] == {
        "upload": [
            {"name": "notes.txt", "type": "text/plain", "size": 17, "text": "file body\r\nline 2"}
        ],
    }


def test_json_and_text_body(client: httpx.Client) -> None:
    assert client.post("/req/json", json={"k": "v"}).json()["json"] == {"k": "v"}
    response = client.post("/req/json", content=b'{"k": "v"}')
    assert response.json() == {"json": {"k": "v"}, "text": '{"k": "v"}'}


def test_invalid_json_body_is_400(client: httpx.Client) -> None:
    assert client.post("/req/json", content=b"{nope").status_code == 400


def test_streamed_upload_read_piece_by_piece(client: httpx.Client) -> None:
    piece = b"s" * 65536
    total = 4 * 1024 * 1024

    def pieces() -> Iterator[bytes]:
        for _ in range(total // len(piece)):
            yield piece

    response = client.post("/req/stream", content=pieces())  # chunked: no length
    body = response.json()
    assert response.status_code == 200
    assert body["size"] == total
    assert body["chunks"] > 1  # delivered in pieces, not buffered into one


def test_streamed_upload_with_content_length(client: httpx.Client) -> None:
    data = b"hello" + b"." * 300_000
    response = client.put("/req/stream-all", content=data)
    assert response.json() == {"size": len(data), "head": "hello"}


# -- errors ------------------------------------------------------------------------------------


class Teapot(Exception):
    pass


def error_app(debug: bool) -> App:
    app = App("errors")
    app.config.DEBUG = debug

    @app.get("/boom")
    async def boom(request):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("secret-internal-detail")

    @app.get("/teapot")
    async def teapot(request):  # type: ignore[no-untyped-def]
        raise Teapot("short and stout")

    @app.get("/raise-404")
    async def raise_404(request):  # type: ignore[no-untyped-def]
        raise NotFound("no such widget")

    return app


@pytest.fixture
def error_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture ``app_server.error`` on the logger itself (it may not propagate)."""
    logger = logging.getLogger("app_server.error")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


def test_unhandled_exception_is_500_without_traceback(error_log: pytest.LogCaptureFixture) -> None:
    caplog = error_log
    with serve_app(error_app(debug=False), **FAST_STOP) as srv:
        response = httpx.get(srv.url + "/boom")
    assert response.status_code == 500
    assert "Traceback" not in response.text
    assert "secret-internal-detail" not in response.text
    assert "ZeroDivisionError" not in response.text
    logged = [r for r in caplog.records if r.name == "app_server.error" and r.exc_info]
    assert logged, "the unhandled exception was not logged with its traceback"


def test_unhandled_exception_with_debug_shows_traceback() -> None:
    with serve_app(error_app(debug=True), **FAST_STOP) as srv:
        response = httpx.get(srv.url + "/boom")
    assert response.status_code == 500
    assert "Traceback" in response.text
    assert "ZeroDivisionError: secret-internal-detail" in response.text


def test_error_handlers_for_not_found_and_custom_exception() -> None:
    app = error_app(debug=False)

    @app.exception(NotFound)
    async def not_found(request, exc):  # type: ignore[no-untyped-def]
        return json({"error": "not found", "detail": str(exc)}, status=404)

    @app.exception(Teapot)
    async def teapot(request, exc):  # type: ignore[no-untyped-def]
        return text(f"I'm a teapot: {exc}", status=418)

    with serve_app(app, **FAST_STOP) as srv, httpx.Client(base_url=srv.url) as client:
        missing = client.get("/nowhere")
        raised = client.get("/raise-404")
        custom = client.get("/teapot")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not found"
    assert raised.json() == {"error": "not found", "detail": "no such widget"}
    assert custom.status_code == 418
    assert custom.text == "I'm a teapot: short and stout"


def test_error_format_shapes_unhandled_errors_of_its_route(
    error_log: pytest.LogCaptureFixture,
) -> None:
    app = App("formats")
    bp = Blueprint("api", url_prefix="/api")

    @app.get("/j/{n:int}", error_format="json")
    async def as_json(request, n: int):  # type: ignore[no-untyped-def]
        if n == 0:
            raise ZeroDivisionError("secret-internal-detail")
        raise NotFound("no <widget> here")

    @app.get("/h", error_format="html")
    async def as_html(request):  # type: ignore[no-untyped-def]
        raise NotFound("no <widget> here")

    @bp.get("/need", error_format="json")
    async def need(request, q: int):  # type: ignore[no-untyped-def]
        return text(str(q))

    @app.get("/t")
    async def as_text(request):  # type: ignore[no-untyped-def]
        raise NotFound("no <widget> here")

    app.blueprint(bp)
    with serve_app(app, **FAST_STOP) as srv, httpx.Client(base_url=srv.url) as client:
        json_404 = client.get("/j/1")
        json_500 = client.get("/j/0")
        html_404 = client.get("/h")
        missing_query = client.get("/api/need")
        plain = client.get("/t")
    assert json_404.status_code == 404
    assert json_404.headers["content-type"].startswith("application/json")
    assert json_404.json() == {
        "status": 404,
        "description": "Not Found",
        "message": "no <widget> here",
    }
    assert json_500.status_code == 500
    assert json_500.json()["description"] == "Internal Server Error"
    assert "secret-internal-detail" not in json_500.text
    assert html_404.status_code == 404
    assert html_404.headers["content-type"].startswith("text/html")
    assert "<h1>404 Not Found</h1>" in html_404.text
    assert "no &lt;widget&gt; here" in html_404.text  # the message is escaped
    assert missing_query.status_code == 400
    assert missing_query.json()["message"] == "Missing required parameter 'q'"
    assert (plain.headers["content-type"].split(";")[0], plain.text) == (
        "text/plain",
        "no <widget> here",
    )


def test_registered_method_token_routes_and_others_get_405_or_501() -> None:
    app = App("methods")

    @app.route("/cache", methods=["PURGE"])
    async def purge(request):  # type: ignore[no-untyped-def]
        return text(f"purged by {request.method}")

    @app.get("/page")
    async def page(request):  # type: ignore[no-untyped-def]
        return text("page")

    with serve_app(app, **FAST_STOP) as srv, raw_client(srv) as conn:
        results = []
        for method in ("PURGE", "GET", "DELETE", "PROPFIND"):
            conn.send(f"{method} /cache HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            results.append(conn.response())
        conn.send(b"PURGE /page HTTP/1.1\r\nHost: t\r\n\r\n")
        on_page = conn.response()
    purged, get, delete, propfind = results
    assert (purged.status, purged.body) == (200, b"purged by PURGE")
    assert (get.status, get.header("allow")) == (405, "PURGE")
    assert (delete.status, delete.header("allow")) == (405, "PURGE")
    assert propfind.status == 501  # no route takes it: not implemented (RFC 9110 §15.6.2)
    assert (on_page.status, on_page.header("allow")) == (405, "GET, HEAD")


# -- authentication ----------------------------------------------------------------------------


def auth_app() -> App:
    app = App("auth")

    async def authenticate(request):  # type: ignore[no-untyped-def]
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        user, _, roles = header[len("Bearer ") :].partition(":")
        return Identity({"id": user, "roles": [r for r in roles.split(",") if r]}, "bearer")

    app.use_authentication(authenticate)

    @app.get("/public")
    async def public(request):  # type: ignore[no-untyped-def]
        identity = request.identity
        return json({"who": identity.id if identity else None})

    @app.get("/me")
    @auth()
    async def me(request):  # type: ignore[no-untyped-def]
        return json({"id": request.identity.id, "roles": request.identity.roles})

    @auth(roles=["admin"])
    @app.get("/admin")
    async def admin(request):  # type: ignore[no-untyped-def]
        return text("admin area")

    @app.get("/applied", apply=[auth(roles=["editor", "admin"])])
    async def applied(request):  # type: ignore[no-untyped-def]
        return text("applied")

    @app.get("/by-identity")
    @auth()
    async def by_identity(identity):  # type: ignore[no-untyped-def]
        return text(f"hello {identity.id}")

    return app


@pytest.fixture(scope="module")
def auth_client() -> Iterator[httpx.Client]:
    with serve_app(auth_app(), **FAST_STOP) as srv, httpx.Client(base_url=srv.url) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_authentication_sets_identity(auth_client: httpx.Client) -> None:
    assert auth_client.get("/public").json() == {"who": None}
    assert auth_client.get("/public", headers=bearer("ann:")).json() == {"who": "ann"}


@pytest.mark.parametrize("path", ["/me", "/admin", "/applied", "/by-identity"])
def test_auth_without_identity_is_401(auth_client: httpx.Client, path: str) -> None:
    assert auth_client.get(path).status_code == 401


def test_auth_below_route_decorator(auth_client: httpx.Client) -> None:
    response = auth_client.get("/me", headers=bearer("ann:reader"))
    assert response.status_code == 200
    assert response.json() == {"id": "ann", "roles": ["reader"]}


def test_auth_above_route_decorator_checks_roles(auth_client: httpx.Client) -> None:
    assert auth_client.get("/admin", headers=bearer("ann:reader")).status_code == 403
    assert auth_client.get("/admin", headers=bearer("bob:admin")).text == "admin area"


def test_auth_via_apply(auth_client: httpx.Client) -> None:
    assert auth_client.get("/applied", headers=bearer("ann:")).status_code == 403
    assert auth_client.get("/applied", headers=bearer("ed:editor")).text == "applied"
    assert auth_client.get("/applied", headers=bearer("bob:reader,admin")).text == "applied"


def test_identity_injected_by_name(auth_client: httpx.Client) -> None:
    assert auth_client.get("/by-identity", headers=bearer("cy:")).text == "hello cy"


def test_auth_errors_carry_no_traceback(auth_client: httpx.Client) -> None:
    for response in (auth_client.get("/me"), auth_client.get("/admin", headers=bearer("a:"))):
        assert "Traceback" not in response.text


def test_auth_refusal_is_not_logged_as_an_error(error_log: pytest.LogCaptureFixture) -> None:
    # a 4xx from auth is not an application error: nothing at ERROR level
    caplog = error_log
    with serve_app(auth_app(), **FAST_STOP) as srv:
        assert httpx.get(srv.url + "/me").status_code == 401
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
