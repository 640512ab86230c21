"""Blueprints (SPEC §2.1): their middleware and exception handlers apply to
their own routes only (Sanic's semantics), in a fixed order around the app's,
for HTTP and WebSocket routes; ``websocket_route``/``add_websocket_route``;
option checks when the decorator is written. Driven through the real worker
protocol by ``TestClient``.
"""

from __future__ import annotations

from typing import Any

import pytest

from app_server import App, Blueprint, Request, json, text
from app_server.exceptions import NotFound
from app_server.framework.app import AppFrozenError
from app_server.testing import TestClient, WebSocketRejected


class ShopError(Exception):
    pass


def build_app() -> tuple[App, list[str]]:
    app = App("scoped")
    seen: list[str] = []
    shop = Blueprint("shop", url_prefix="/shop")
    blog = Blueprint("blog", url_prefix="/blog")

    @app.on_request
    async def app_request(request: Request) -> None:
        seen.append("app-request")

    @app.on_response
    async def app_response(request: Request, response: Any) -> None:
        seen.append("app-response")
        response.headers["x-app"] = "1"

    @shop.on_request
    async def shop_request(request: Request) -> Any:
        seen.append("shop-request")
        if request.args.get("deny"):
            return text("denied by shop", 403)
        return None

    @shop.middleware("response")
    async def shop_response(request: Request, response: Any) -> None:
        seen.append("shop-response")
        response.headers["x-shop"] = "1"

    @shop.exception(ShopError)
    async def shop_error(request: Request, exc: Exception) -> Any:
        return json({"handled_by": "shop"}, 418)

    @shop.exception(NotFound)
    async def shop_not_found(request: Request, exc: Exception) -> Any:
        return text("shop has no such thing", 404)

    @app.exception(ShopError)
    async def app_error(request: Request, exc: Exception) -> Any:
        return json({"handled_by": "app"}, 400)

    @shop.get("/item")
    async def item(request: Request) -> Any:
        seen.append("shop-handler")
        return text("item")

    @shop.get("/fail")
    async def shop_fail(request: Request) -> Any:
        raise ShopError()

    @shop.get("/missing")
    async def shop_missing(request: Request) -> Any:
        raise NotFound("no item")

    @blog.get("/post")
    async def post(request: Request) -> Any:
        seen.append("blog-handler")
        return text("post")

    @blog.get("/fail")
    async def blog_fail(request: Request) -> Any:
        raise ShopError()

    @app.get("/plain")
    async def plain(request: Request) -> Any:
        seen.append("app-handler")
        return text("plain")

    @app.get("/missing")
    async def app_missing(request: Request) -> Any:
        raise NotFound("no page")

    @shop.websocket_route("/live")
    async def live(ws: Any) -> None:
        await ws.send(await ws.receive())

    async def upper(ws: Any) -> None:
        message = await ws.recv()  # a plain websocket route: no text defaults
        await ws.send(message.upper())

    shop.add_websocket_route(upper, "/upper")

    @shop.websocket("/boom")
    async def boom(ws: Any) -> None:
        raise ShopError()

    app.blueprint([shop, blog])
    return app, seen


def test_blueprint_middleware_runs_around_its_routes_after_the_apps() -> None:
    app, seen = build_app()
    with TestClient(app) as client:
        response = client.get("/shop/item")
    assert response.status == 200
    assert response.headers["x-shop"] == "1" and response.headers["x-app"] == "1"
    assert seen == [
        "app-request",
        "shop-request",
        "shop-handler",
        "shop-response",
        "app-response",
    ]


def test_blueprint_middleware_skips_other_blueprints_and_app_routes() -> None:
    app, seen = build_app()
    with TestClient(app) as client:
        blog = client.get("/blog/post")
        plain = client.get("/plain")
        nowhere = client.get("/shop/nowhere")
    assert (blog.status, plain.status, nowhere.status) == (200, 200, 404)
    assert "x-shop" not in blog.headers and "x-shop" not in plain.headers
    assert "x-shop" not in nowhere.headers  # no route matched: only the app's middleware
    assert seen == [
        "app-request",
        "blog-handler",
        "app-response",
        "app-request",
        "app-handler",
        "app-response",
        "app-request",
        "app-response",
    ]


def test_blueprint_request_middleware_short_circuits_its_routes_only() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        denied = client.get("/shop/item?deny=1")
        allowed = client.get("/blog/post?deny=1")
    assert (denied.status, denied.text) == (403, "denied by shop")
    assert denied.headers["x-shop"] == "1"  # response middleware still runs
    assert allowed.status == 200


def test_blueprint_exception_handler_wins_for_its_routes_and_app_handles_the_rest() -> None:
    app, _ = build_app()
    with TestClient(app) as client:
        shop = client.get("/shop/fail")
        blog = client.get("/blog/fail")
        shop_missing = client.get("/shop/missing")
        app_missing = client.get("/missing")
        unmatched = client.get("/shop/unknown-path")
    assert (shop.status, shop.json()) == (418, {"handled_by": "shop"})
    assert (blog.status, blog.json()) == (400, {"handled_by": "app"})
    assert shop_missing.text == "shop has no such thing"
    assert app_missing.text == "no page"
    assert unmatched.status == 404 and unmatched.text != "shop has no such thing"


def test_blueprint_falls_back_to_the_app_exception_handler() -> None:
    app = App("fallback")
    bp = Blueprint("bp")

    @bp.exception(KeyError)
    async def key_error(request: Request, exc: Exception) -> Any:
        return text("bp key", 409)

    @app.exception(ValueError)
    async def value_error(request: Request, exc: Exception) -> Any:
        return text("app value", 422)

    @bp.get("/value")
    async def value(request: Request) -> Any:
        raise ValueError("x")

    @bp.get("/key")
    async def key(request: Request) -> Any:
        raise KeyError("x")

    app.blueprint(bp)
    with TestClient(app) as client:
        assert (client.get("/value").status, client.get("/key").status) == (422, 409)


def test_blueprint_websocket_route_has_bocadillo_text_defaults() -> None:
    app, seen = build_app()
    with TestClient(app) as client:
        with client.websocket_connect("/shop/live") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
        with client.websocket_connect("/shop/upper") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "HI"
    route = app.router.names["shop.live"]
    assert (route.options["receive_type"], route.options["send_type"]) == ("text", "text")
    assert app.router.names["shop.upper"].websocket
    # The handshake ran the app's request middleware and the blueprint's.
    assert seen.count("shop-request") == 2 and seen.count("app-request") == 2


def test_blueprint_request_middleware_can_reject_its_websocket_handshake() -> None:
    app, _ = build_app()
    with TestClient(app) as client, pytest.raises(WebSocketRejected) as info:
        client.websocket_connect("/shop/live?deny=1")
    assert info.value.response.status == 403


def test_blueprint_exception_handler_answers_a_failed_websocket_handshake() -> None:
    app, _ = build_app()
    bp = app.blueprints["shop"]
    assert bp.exception_handlers.find(ShopError) is not None
    app2 = App("ws-errors")
    wsbp = Blueprint("wsbp")

    @wsbp.exception(ShopError)
    async def handled(request: Request, exc: Exception) -> Any:
        return text("refused by the blueprint", 451)

    @wsbp.websocket("/boom", auto_accept=False)
    async def boom(ws: Any) -> None:
        raise ShopError()

    app2.blueprint(wsbp)
    with TestClient(app2) as client, pytest.raises(WebSocketRejected) as info:
        client.websocket_connect("/boom")
    assert (info.value.response.status, info.value.response.text) == (
        451,
        "refused by the blueprint",
    )


def test_blueprint_options_are_checked_when_written() -> None:
    bp = Blueprint("checked")
    with pytest.raises(
        TypeError,
        match=r"Blueprint\.route\(\) got an unexpected keyword "
        r"argument 'method'; did you mean 'methods'\?",
    ):
        bp.get("/x", method=["GET"])
    with pytest.raises(
        TypeError,
        match=r"Blueprint\.websocket\(\) got an unexpected keyword "
        r"argument 'subprotocol'; did you mean 'subprotocols'\?",
    ):
        bp.websocket("/x", subprotocol=["chat"])
    with pytest.raises(ValueError, match="error_format"):
        bp.get("/x", error_format="xml")


def test_blueprint_middleware_after_the_app_serves_is_refused() -> None:
    app, _ = build_app()
    with TestClient(app):
        with pytest.raises(AppFrozenError, match="blueprint 'shop'"):
            app.blueprints["shop"].on_request(lambda request: None)


def test_add_route_returns_the_handler_on_app_and_blueprint() -> None:
    app, bp = App("returns"), Blueprint("returns_bp")

    async def handler(request: Request) -> Any:
        return text("ok")

    assert app.add_route(handler, "/a") is handler
    assert bp.add_route(handler, "/b") is handler
    assert app.add_websocket_route(handler, "/c") is handler
    assert bp.add_websocket_route(handler, "/d") is handler


def test_route_added_to_a_mounted_blueprint_joins_the_app() -> None:
    app, bp = App("late"), Blueprint("late_bp", url_prefix="/late")
    app.blueprint(bp)

    @bp.get("/added")
    async def added(request: Request) -> Any:
        return text("added after mounting")

    with TestClient(app) as client:
        assert client.get("/late/added").text == "added after mounting"
    with pytest.raises(AppFrozenError):
        bp.get("/too-late")(added)


def test_error_format_shapes_a_refused_websocket_handshake() -> None:
    app, bp = App("ws-format"), Blueprint("wsf")

    @bp.websocket("/private", error_format="json", auto_accept=False)
    async def private(ws: Any) -> None:
        raise NotFound("no such room")

    app.blueprint(bp)
    with TestClient(app) as client, pytest.raises(WebSocketRejected) as info:
        client.websocket_connect("/private")
    assert info.value.response.status == 404
    assert info.value.response.json() == {
        "status": 404,
        "description": "Not Found",
        "message": "no such room",
    }
