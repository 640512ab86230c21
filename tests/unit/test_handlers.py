"""Handler argument injection (``framework.handlers.bind``), without a server.

Every seed's signature style: Sanic ``(request, ws, room_id)``, BlackSheep
``(websocket: WebSocket, room_id: int)``, Bocadillo ``(ws, channel: str,
anonymous: bool = False)`` and the HTTP style ``(request, user_id: int)``;
path parameters, then query parameters converted by annotation, then
defaults; a missing required parameter is a 400.
"""

from __future__ import annotations

import asyncio
import inspect
import json as _json
from typing import TYPE_CHECKING, Any

import pytest

from app_server.exceptions import BadRequest, NotFound
from app_server.framework.handlers import FromJSON, bind
from app_server.framework.request import ConnectionInfo, Request
from app_server.protocols.http.events import RequestHead

if TYPE_CHECKING:
    from app_server.framework.request import Request as OnlyForTypeCheckers


def make_request(
    target: bytes = b"/",
    match_info: dict[str, Any] | None = None,
    body: bytes = b"",
    method: str = "GET",
) -> Request:
    path, _, query = target.partition(b"?")
    head = RequestHead(
        method,
        target,
        path.decode(),
        query,
        "1.1",
        [(b"host", b"t")],
        True,
        None,
        False,
        len(body) or None,
        False,
        "t",
    )
    request = Request(head, ConnectionInfo("127.0.0.1", 5000, "t", 80, "http", None), app=None)
    request.match_info = dict(match_info or {})
    request.body = body
    return request


def call(handler: Any, request: Request, path_params: tuple[str, ...] = (), ws: Any = None) -> Any:
    getter = (lambda req: ws) if ws is not None else None
    caller = bind(handler, path_params, getter)
    return asyncio.run(_await(caller(request)))


async def _await(awaitable: Any) -> Any:
    return await awaitable


class FakeSocket:
    """Stands in for the WebSocket object: bind only passes it through."""


# -- request injection ----------------------------------------------------------


def test_request_by_name() -> None:
    async def h(request):  # type: ignore[no-untyped-def]
        return request

    req = make_request()
    assert call(h, req) is req


def test_request_by_annotation_under_another_name() -> None:
    async def h(incoming: Request) -> Any:
        return incoming

    req = make_request()
    assert call(h, req) is req


def test_sanic_first_positional_request_whatever_its_name() -> None:
    async def h(r, user_id: int):  # type: ignore[no-untyped-def]
        return r, user_id

    req = make_request(match_info={"user_id": 3})
    assert call(h, req, ("user_id",)) == (req, 3)


def test_sync_handler_is_awaited() -> None:
    def h(request):  # type: ignore[no-untyped-def]
        return "sync"

    assert call(h, make_request()) == "sync"


def test_handler_without_parameters() -> None:
    async def h() -> str:
        return "none"

    assert call(h, make_request()) == "none"


def test_request_annotation_known_only_to_type_checkers() -> None:
    # ``Request`` imported under TYPE_CHECKING with postponed annotations is a
    # common typed-code pattern; the annotation cannot be evaluated at runtime.
    # The request must still be injected and ``page: int`` still converted.
    async def h(request: OnlyForTypeCheckers, page: int = 1) -> Any:
        return request, page

    req = make_request(b"/?page=2")
    assert call(h, req) == (req, 2)


# -- path and query parameters -----------------------------------------------


def test_http_style_path_parameter() -> None:
    async def h(request, user_id: int):  # type: ignore[no-untyped-def]
        return user_id

    assert call(h, make_request(match_info={"user_id": 42}), ("user_id",)) == 42


def test_untyped_template_value_converted_by_annotation() -> None:
    async def h(request, user_id: int):  # type: ignore[no-untyped-def]
        return user_id

    assert call(h, make_request(match_info={"user_id": "42"}), ("user_id",)) == 42


def test_path_value_that_does_not_convert_is_404() -> None:
    async def h(request, user_id: int):  # type: ignore[no-untyped-def]
        return user_id

    with pytest.raises(NotFound):
        call(h, make_request(match_info={"user_id": "abc"}), ("user_id",))


def test_path_parameter_beats_query_parameter_of_the_same_name() -> None:
    async def h(request, item: str):  # type: ignore[no-untyped-def]
        return item

    req = make_request(b"/?item=from-query", match_info={"item": "from-path"})
    assert call(h, req, ("item",)) == "from-path"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"page=3&size=2.5&flag=true&q=hi", (3, 2.5, True, "hi")),
        (b"page=-1&size=0&flag=0&q=", (-1, 0.0, False, "")),
        (b"flag=yes", (1, 10.0, True, "default")),
        (b"flag=off", (1, 10.0, False, "default")),
        (b"", (1, 10.0, False, "default")),
    ],
)
def test_query_parameters_converted_by_annotation(query: bytes, expected: tuple[Any, ...]) -> None:
    async def h(
        request,
        page: int = 1,
        size: float = 10.0,
        flag: bool = False,  # type: ignore[no-untyped-def]
        q: str = "default",
    ):
        return page, size, flag, q

    result = call(h, make_request(b"/?" + query))
    assert result == expected
    assert [type(v) for v in result] == [type(v) for v in expected]


def test_unannotated_query_parameter_is_a_string() -> None:
    async def h(request, q):  # type: ignore[no-untyped-def]
        return q

    assert call(h, make_request(b"/?q=5")) == "5"


def test_repeated_query_parameter_gives_the_first_value() -> None:
    async def h(request, tag: str):  # type: ignore[no-untyped-def]
        return tag

    assert call(h, make_request(b"/?tag=a&tag=b")) == "a"


@pytest.mark.parametrize(
    ("query", "match"),
    [
        (b"", "page"),
        (b"page=abc", "page"),
        (b"page=1.5", "page"),
    ],
)
def test_missing_or_invalid_required_query_parameter_is_400(query: bytes, match: str) -> None:
    async def h(request, page: int):  # type: ignore[no-untyped-def]
        return page

    with pytest.raises(BadRequest, match=match) as info:
        call(h, make_request(b"/?" + query))
    assert info.value.status == 400


@pytest.mark.parametrize("value", [b"maybe", b"2", b"tru"])
def test_invalid_bool_query_parameter_is_400(value: bytes) -> None:
    async def h(request, flag: bool = False):  # type: ignore[no-untyped-def]
        return flag

    with pytest.raises(BadRequest):
        call(h, make_request(b"/?flag=" + value))


def test_optional_annotation_converts_by_its_inner_type() -> None:
    async def h(request, page: int | None = None):  # type: ignore[no-untyped-def]
        return page

    assert call(h, make_request(b"/?page=4")) == 4
    assert call(h, make_request(b"/")) is None


def test_var_keyword_receives_path_parameters() -> None:
    async def h(request, **kwargs):  # type: ignore[no-untyped-def]
        return kwargs

    req = make_request(match_info={"a": 1, "b": "x"})
    assert call(h, req, ("a", "b")) == {"a": 1, "b": "x"}


def test_var_keyword_with_one_named_path_parameter() -> None:
    async def h(request, a: int, **rest):  # type: ignore[no-untyped-def]
        return a, rest

    req = make_request(match_info={"a": 1, "b": "x"})
    assert call(h, req, ("a", "b")) == (1, {"b": "x"})


# -- body and identity -----------------------------------------------------------


def test_from_json_gets_the_parsed_body() -> None:
    async def h(data: FromJSON[dict]) -> Any:  # type: ignore[type-arg]
        return data

    result = call(h, make_request(body=_json.dumps({"a": 1}).encode(), method="POST"))
    assert isinstance(result, FromJSON)
    assert result.value == {"a": 1}


def test_from_json_with_invalid_body_is_400() -> None:
    async def h(data: FromJSON[dict]) -> Any:  # type: ignore[type-arg]
        return data

    with pytest.raises(BadRequest):
        call(h, make_request(body=b"{not json", method="POST"))


def test_identity_by_name() -> None:
    async def h(request, identity):  # type: ignore[no-untyped-def]
        return identity

    req = make_request()
    req.identity = {"id": "u1"}
    assert call(h, req) == {"id": "u1"}


# -- WebSocket seed styles ----------------------------------------------------------


def test_sanic_style_request_ws_room_id() -> None:
    async def h(request, ws, room_id):  # type: ignore[no-untyped-def]
        return request, ws, room_id

    sock = FakeSocket()
    req = make_request(match_info={"room_id": "lobby"})
    assert call(h, req, ("room_id",), ws=sock) == (req, sock, "lobby")


def test_blacksheep_style_websocket_and_int_room_id() -> None:
    async def h(websocket: Any, room_id: int) -> Any:
        return websocket, room_id

    sock = FakeSocket()
    req = make_request(match_info={"room_id": "7"})
    assert call(h, req, ("room_id",), ws=sock) == (sock, 7)


def test_blacksheep_style_with_real_websocket_annotation() -> None:
    import app_server

    web_socket = getattr(app_server, "WebSocket", None)
    if web_socket is None:
        pytest.skip("app_server.WebSocket is not available yet")

    async def h(conn, room_id: int):  # type: ignore[no-untyped-def]
        return conn, room_id

    h.__annotations__["conn"] = web_socket
    sock = FakeSocket()
    req = make_request(match_info={"room_id": 7})
    assert call(h, req, ("room_id",), ws=sock) == (sock, 7)


@pytest.mark.parametrize(
    ("query", "anonymous"),
    [(b"", False), (b"anonymous=true", True), (b"anonymous=1", True), (b"anonymous=false", False)],
)
def test_bocadillo_style_ws_channel_and_bool_default(query: bytes, anonymous: bool) -> None:
    async def h(ws, channel: str, anonymous: bool = False):  # type: ignore[no-untyped-def]
        return ws, channel, anonymous

    sock = FakeSocket()
    req = make_request(b"/?" + query, match_info={"channel": "news"})
    assert call(h, req, ("channel",), ws=sock) == (sock, "news", anonymous)


def test_websocket_handler_missing_required_query_parameter_is_400() -> None:
    async def h(ws, token: str):  # type: ignore[no-untyped-def]
        return token

    with pytest.raises(BadRequest):
        call(h, make_request(), (), ws=FakeSocket())


def test_ws_name_without_ws_getter_is_not_the_websocket() -> None:
    # On an HTTP route there is no WebSocket: ``ws`` is an ordinary parameter.
    async def h(request, ws: str = "none"):  # type: ignore[no-untyped-def]
        return ws

    assert call(h, make_request(b"/?ws=q")) == "q"


# -- resolved once -------------------------------------------------------------


def test_signature_is_resolved_once_at_bind_time() -> None:
    async def h(request, page: int = 1):  # type: ignore[no-untyped-def]
        return page

    caller = bind(h, ())
    # Changing what introspection would report has no effect on the bound caller.
    h.__signature__ = inspect.Signature()  # type: ignore[attr-defined]
    assert asyncio.run(_await(caller(make_request(b"/?page=9")))) == 9
    assert asyncio.run(_await(caller(make_request(b"/?page=10")))) == 10
