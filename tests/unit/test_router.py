"""The route table and route templates, without a server.

Static lookups, dynamic buckets, typed parameters (a value that does not
convert is a 404, never a 500), 404/405/426/501, any RFC 9110 method token,
HEAD from GET, hosts, strict_slashes, conflicts and ``url_for``; the options
``route()``/``websocket()`` accept.
"""

from __future__ import annotations

import uuid
from urllib.parse import unquote

import pytest

from app_server import App
from app_server.exceptions import HTTPError, MethodNotAllowed, NotFound, UpgradeRequired
from app_server.framework.routing.patterns import TemplateError, compile_template
from app_server.framework.routing.router import Router


def handler() -> None:  # a stand-in: the router never calls handlers
    return None


def make_router(*routes: tuple[str, tuple[str, ...]], **options: object) -> Router:
    router = Router()
    for i, (template, methods) in enumerate(routes):
        router.add(template, methods, handler, name=f"r{i}", **options)  # type: ignore[arg-type]
    return router


# -- templates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "normal", "fmt"),
    [
        ("/users/{id:int}", "/users/{id:int}", "/users/{id}"),
        ("/users/<id:int>", "/users/{id:int}", "/users/{id}"),
        ("/users/<name>", "/users/{name}", "/users/{name}"),
        ("/users/{name:str}", "/users/{name}", "/users/{name}"),
        ("/a/{x:float}/b/<y:uuid>", "/a/{x:float}/b/{y:uuid}", "/a/{x}/b/{y}"),
        ("/static", "/static", "/static"),
    ],
)
def test_both_spellings_normalise_to_one_template(template: str, normal: str, fmt: str) -> None:
    pattern = compile_template(template)
    assert pattern.template == normal
    assert pattern.format == fmt


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int", "42", 42),
        ("int", "-7", -7),
        ("float", "1.5", 1.5),
        ("float", "3", 3.0),
        (
            "uuid",
            "12345678-1234-5678-1234-567812345678",
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
        ),
        ("path", "a/b/c.txt", "a/b/c.txt"),
        ("slug", "hello-world-2", "hello-world-2"),
        ("alpha", "Hello", "Hello"),
        ("str", "any thing", "any thing"),
    ],
)
def test_typed_parameter_matches_and_converts(kind: str, value: str, expected: object) -> None:
    pattern = compile_template(f"/x/{{v:{kind}}}")
    params = pattern.match(f"/x/{value}")
    assert params == {"v": expected}
    assert type(params["v"]) is type(expected)  # type: ignore[index]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("int", "abc"),
        ("int", "1.5"),
        ("int", ""),
        ("float", "nan-ish"),
        ("uuid", "not-a-uuid"),
        ("slug", "Not_A_Slug"),
        ("alpha", "abc1"),
        ("str", "a/b"),
    ],
)
def test_typed_parameter_that_does_not_convert_is_no_match(kind: str, value: str) -> None:
    assert compile_template(f"/x/{{v:{kind}}}").match(f"/x/{value}") is None


@pytest.mark.parametrize(
    "template",
    ["no-slash", "/x/{1bad}", "/x/{a}/{a}", "/x/{a:nosuchtype}"],
)
def test_invalid_templates_raise_template_error(template: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(template)


def test_static_template_has_no_regex() -> None:
    pattern = compile_template("/health")
    assert pattern.is_static
    assert pattern.param_names == ()
    assert pattern.match("/health") == {}
    assert pattern.match("/health/x") is None


# -- lookups -------------------------------------------------------------------


def test_static_lookup_returns_route_and_no_params() -> None:
    router = make_router(("/a", ("GET",)), ("/b", ("POST",)))
    route, params = router.match_http("GET", "/a", "h")
    assert route.name == "r0"
    assert params == {}
    route, _ = router.match_http("POST", "/b", "h")
    assert route.name == "r1"


def test_dynamic_lookup_converts_parameters() -> None:
    router = make_router(("/users/{id:int}", ("GET",)), ("/files/<rest:path>", ("GET",)))
    assert router.match_http("GET", "/users/42", "h")[1] == {"id": 42}
    assert router.match_http("GET", "/files/a/b/c", "h")[1] == {"rest": "a/b/c"}


def test_dynamic_value_that_does_not_convert_is_404() -> None:
    router = make_router(("/users/{id:int}", ("GET",)))
    with pytest.raises(NotFound):
        router.match_http("GET", "/users/abc", "h")


def test_static_route_wins_over_dynamic_sibling() -> None:
    router = make_router(("/users/{name}", ("GET",)), ("/users/me", ("GET",)))
    route, params = router.match_http("GET", "/users/me", "h")
    assert route.name == "r1"
    assert params == {}
    route, params = router.match_http("GET", "/users/bob", "h")
    assert route.name == "r0"
    assert params == {"name": "bob"}


def test_dynamic_buckets_by_first_segment_and_leading_parameter() -> None:
    router = make_router(
        ("/a/{x:int}", ("GET",)),
        ("/b/{x:int}", ("GET",)),
        ("/{lang:alpha}/about", ("GET",)),
    )
    assert router.match_http("GET", "/a/1", "h")[0].name == "r0"
    assert router.match_http("GET", "/b/2", "h")[0].name == "r1"
    route, params = router.match_http("GET", "/en/about", "h")
    assert route.name == "r2"
    assert params == {"lang": "en"}
    with pytest.raises(NotFound):
        router.match_http("GET", "/c/1", "h")


def test_typed_and_untyped_siblings_both_reachable_when_typed_registered_first() -> None:
    router = make_router(("/items/{id:int}", ("GET",)), ("/items/{slug}", ("GET",)))
    assert router.match_http("GET", "/items/5", "h")[1] == {"id": 5}
    assert router.match_http("GET", "/items/five", "h")[1] == {"slug": "five"}


def test_unknown_path_is_404() -> None:
    router = make_router(("/a", ("GET",)))
    with pytest.raises(NotFound):
        router.match_http("GET", "/nope", "h")


def test_other_method_is_405_with_allow() -> None:
    router = make_router(("/a", ("GET",)), ("/a", ("POST",)))
    with pytest.raises(MethodNotAllowed) as info:
        router.match_http("DELETE", "/a", "h")
    assert set(info.value.allowed) == {"GET", "HEAD", "POST"}
    assert set(info.value.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


def test_405_on_dynamic_route() -> None:
    router = make_router(("/u/{id:int}", ("PUT",)))
    with pytest.raises(MethodNotAllowed) as info:
        router.match_http("GET", "/u/1", "h")
    assert info.value.allowed == ("PUT",)


def test_any_registered_method_token_routes() -> None:
    app = App("tokens")

    @app.route("/cache", methods=["PURGE", "conformance-check"])
    async def purge(request):  # type: ignore[no-untyped-def]
        return None

    router = app.router
    assert router.match_http("PURGE", "/cache", "h")[0].name == "purge"
    assert router.match_http("CONFORMANCE-CHECK", "/cache", "h")[0].name == "purge"
    with pytest.raises(MethodNotAllowed) as info:
        router.match_http("GET", "/cache", "h")
    assert set(info.value.allowed) == {"PURGE", "CONFORMANCE-CHECK"}


@pytest.mark.parametrize("method", ["GE T", "", "GET\r\n", "caf\u00e9", "(GET)"])
def test_a_method_that_is_no_token_is_refused_at_registration(method: str) -> None:
    with pytest.raises(ValueError, match="RFC 9110 token"):
        App("bad").route("/x", methods=[method])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PURGE", "/a", 405),  # registered elsewhere: this path does not take it
        ("DELETE", "/a", 405),  # defined by RFC 9110: 405 with Allow
        ("DELETE", "/nope", 404),
        ("PROPFIND", "/a", 501),  # no route anywhere and not an RFC 9110 method
        ("PROPFIND", "/nope", 501),
        ("get", "/a", 501),  # methods are case-sensitive (RFC 9110 §9.1)
        ("CONFORMANCE-CHECK", "/ws", 501),
    ],
)
def test_a_method_no_route_registered_is_405_or_501_never_400(
    method: str, path: str, status: int
) -> None:
    router = make_router(("/a", ("GET",)), ("/b", ("PURGE",)))
    router.add("/ws", ("GET",), handler, name="ws", websocket=True)
    with pytest.raises(HTTPError) as info:
        router.match_http(method, path, "h")
    assert info.value.status == status
    if status == 405:
        assert "GET" in info.value.headers["Allow"]


def test_websocket_routes_do_not_make_a_method_known() -> None:
    router = Router()
    router.add("/ws", ("GET",), handler, name="ws", websocket=True)
    with pytest.raises(UpgradeRequired):
        router.match_http("GET", "/ws", "h")


# -- registration options ---------------------------------------------------------


def test_route_rejects_a_misspelt_keyword_naming_it_and_the_nearest() -> None:
    app = App("typos")
    with pytest.raises(TypeError) as info:
        app.route("/x", method=["POST"])
    assert str(info.value) == (
        "App.route() got an unexpected keyword argument 'method'; did you mean 'methods'?"
    )
    with pytest.raises(TypeError, match="'nmae'; did you mean 'name'"):
        app.get("/x", nmae="x")
    with pytest.raises(TypeError, match="unexpected keyword arguments 'colour', 'size'"):
        app.post("/x", size=1, colour="red")
    with pytest.raises(
        TypeError,
        match=r"^App\.route\(\) got an unexpected keyword argument "
        r"'zzzzzz'$",
    ):
        app.route("/x", zzzzzz=1)
    assert not app.router.routes


def test_websocket_rejects_a_misspelt_keyword_naming_it_and_the_nearest() -> None:
    app = App("ws-typos")
    with pytest.raises(
        TypeError,
        match=r"App\.websocket\(\) got an unexpected keyword "
        r"argument 'auto_acept'; did you mean 'auto_accept'\?",
    ):
        app.websocket("/ws", auto_acept=False)
    with pytest.raises(TypeError, match="'recieve_type'; did you mean 'receive_type'"):
        app.websocket_route("/ws", recieve_type="json")
    with pytest.raises(TypeError, match=r"App\.websocket\(\)"):
        app.add_websocket_route(handler, "/ws", stream=True)  # an HTTP-only option


def test_error_format_is_checked_and_kept_on_the_route() -> None:
    app = App("formats")
    app.get("/j", error_format="json")(handler)
    app.websocket("/w", error_format="html")(handler)
    assert app.router.names["handler"].options["error_format"] == "json"
    assert app.router.names["handler_2"].options["error_format"] == "html"
    with pytest.raises(ValueError, match="error_format must be one of 'text', 'json', 'html'"):
        app.get("/x", error_format="xml")


def test_head_is_served_by_get() -> None:
    router = make_router(("/a", ("GET",)))
    route, _ = router.match_http("HEAD", "/a", "h")
    assert route.name == "r0"


def test_explicit_head_route_wins_over_get() -> None:
    router = make_router(("/a", ("GET",)), ("/a", ("HEAD",)))
    assert router.match_http("HEAD", "/a", "h")[0].name == "r1"


def test_plain_http_to_websocket_route_is_426() -> None:
    router = Router()
    router.add("/ws", ("GET",), handler, name="ws", websocket=True)
    with pytest.raises(UpgradeRequired) as info:
        router.match_http("GET", "/ws", "h")
    assert info.value.status == 426
    assert info.value.headers["Upgrade"].lower() == "websocket"


def test_websocket_lookup_and_http_only_path_is_404() -> None:
    router = Router()
    router.add("/ws/{room}", ("GET",), handler, name="ws", websocket=True)
    router.add("/page", ("GET",), handler, name="page")
    route, params = router.match_websocket("/ws/lobby", "h")
    assert route.name == "ws"
    assert params == {"room": "lobby"}
    with pytest.raises(NotFound):
        router.match_websocket("/page", "h")


def test_http_and_websocket_routes_share_a_path() -> None:
    router = Router()
    router.add("/chat", ("GET",), handler, name="page")
    router.add("/chat", ("GET",), handler, name="socket", websocket=True)
    assert router.match_http("GET", "/chat", "h")[0].name == "page"
    assert router.match_websocket("/chat", "h")[0].name == "socket"


# -- hosts ---------------------------------------------------------------------


def test_host_restricted_route() -> None:
    router = Router()
    router.add("/", ("GET",), handler, name="api", host="api.example.com")
    router.add("/", ("GET",), handler, name="any")
    assert router.match_http("GET", "/", "api.example.com")[0].name == "api"
    assert router.match_http("GET", "/", "API.Example.com:8080")[0].name == "api"
    assert router.match_http("GET", "/", "www.example.com")[0].name == "any"


def test_host_restricted_route_is_404_for_other_hosts() -> None:
    router = Router()
    router.add("/only", ("GET",), handler, name="api", host="api.example.com")
    with pytest.raises(NotFound):
        router.match_http("GET", "/only", "other.example.com")


def test_route_for_several_hosts() -> None:
    router = Router()
    router.add("/", ("GET",), handler, name="multi", host=["a.test", "b.test"])  # type: ignore[arg-type]
    assert router.match_http("GET", "/", "a.test")[0].name == "multi"
    assert router.match_http("GET", "/", "b.test")[0].name == "multi"
    with pytest.raises(NotFound):
        router.match_http("GET", "/", "c.test")


# -- strict slashes ------------------------------------------------------------


def test_static_route_without_strict_slashes_matches_both() -> None:
    router = make_router(("/a", ("GET",)), ("/b/", ("GET",)))
    assert router.match_http("GET", "/a/", "h")[0].name == "r0"
    assert router.match_http("GET", "/b", "h")[0].name == "r1"
    assert router.match_http("GET", "/b/", "h")[0].name == "r1"


def test_static_route_with_strict_slashes_matches_exactly() -> None:
    router = make_router(("/a", ("GET",)), strict_slashes=True)
    router.match_http("GET", "/a", "h")
    with pytest.raises(NotFound):
        router.match_http("GET", "/a/", "h")


def test_dynamic_route_strict_slashes() -> None:
    loose = make_router(("/u/{id:int}", ("GET",)))
    assert loose.match_http("GET", "/u/1/", "h")[1] == {"id": 1}
    strict = make_router(("/u/{id:int}", ("GET",)), strict_slashes=True)
    with pytest.raises(NotFound):
        strict.match_http("GET", "/u/1/", "h")


def test_root_route() -> None:
    router = make_router(("/", ("GET",)))
    assert router.match_http("GET", "/", "h")[0].name == "r0"


# -- conflicts -----------------------------------------------------------------


def test_same_static_path_and_method_twice_raises() -> None:
    router = make_router(("/a", ("GET",)))
    with pytest.raises(ValueError, match="GET"):
        router.add("/a", ("GET",), handler, name="again")


def test_same_dynamic_template_in_both_spellings_raises() -> None:
    router = make_router(("/u/{id:int}", ("GET",)))
    with pytest.raises(ValueError):
        router.add("/u/<id:int>", ("GET",), handler, name="again")


def test_same_path_different_methods_is_no_conflict() -> None:
    router = make_router(("/u/{id:int}", ("GET",)), ("/u/<id:int>", ("DELETE",)))
    assert router.match_http("DELETE", "/u/3", "h")[0].name == "r1"


def test_duplicate_route_name_raises() -> None:
    router = make_router(("/a", ("GET",)))
    with pytest.raises(ValueError, match="r0"):
        router.add("/b", ("GET",), handler, name="r0")


# -- url_for -------------------------------------------------------------------


def test_url_for_static_and_dynamic() -> None:
    router = Router()
    router.add("/health", ("GET",), handler, name="health")
    router.add("/users/<id:int>/posts/{slug:slug}", ("GET",), handler, name="post")
    assert router.url_for("health") == "/health"
    assert router.url_for("post", id=3, slug="hi-there") == "/users/3/posts/hi-there"


def test_url_for_leftover_parameters_become_query() -> None:
    router = Router()
    router.add("/users/{id:int}", ("GET",), handler, name="user")
    url = router.url_for("user", id=5, page=2, tag=["a", "b"])
    path, _, query = url.partition("?")
    assert path == "/users/5"
    assert sorted(query.split("&")) == ["page=2", "tag=a", "tag=b"]


def test_url_for_quotes_values() -> None:
    router = Router()
    router.add("/s/{q}", ("GET",), handler, name="search")
    assert router.url_for("search", q="a b&c", x="1 2") == "/s/a%20b%26c?x=1+2"


def test_url_for_missing_parameter_and_unknown_name() -> None:
    router = Router()
    router.add("/users/{id:int}", ("GET",), handler, name="user")
    with pytest.raises(KeyError, match="id"):
        router.url_for("user")
    with pytest.raises(KeyError, match="nope"):
        router.url_for("nope")


def test_url_for_result_routes_back_to_the_same_route() -> None:
    router = Router()
    router.add("/files/{filename}", ("GET",), handler, name="file")
    url = router.url_for("file", filename="my report.pdf")
    route, params = router.match_http("GET", unquote(url), "h")
    assert route.name == "file"
    assert params == {"filename": "my report.pdf"}


def test_url_for_with_a_path_parameter_called_name() -> None:
    # ``/users/{name}`` is a common route; url_for's own first parameter must
    # not collide with it (Sanic calls it ``view_name``, positional).
    router = Router()
    router.add("/users/{name}", ("GET",), handler, name="user")
    assert router.url_for("user", name="bob") == "/users/bob"
