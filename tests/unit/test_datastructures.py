"""Headers, QueryArgs, cookies and the header-value helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app_server.framework.datastructures import (
    Headers,
    QueryArgs,
    format_set_cookie,
    parse_cookies,
    split_header_value,
    unquote_header_value,
)

RAW = [
    (b"host", b"example.com"),
    (b"accept", b"text/html"),
    (b"x-dup", b"one"),
    (b"cookie", b"a=1"),
    (b"x-dup", b"two"),
    (b"x-latin", "caf\u00e9".encode("latin-1")),
]


@pytest.fixture
def headers() -> Headers:
    return Headers(list(RAW))


# -- Headers ------------------------------------------------------------------


def test_headers_construction_only_keeps_the_list() -> None:
    raw = list(RAW)
    headers = Headers(raw)
    assert headers.raw is raw
    assert headers._index is None  # built on first lookup, not before
    headers.get("host")
    assert headers._index is not None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("host", "example.com"),
        ("Host", "example.com"),
        ("HOST", "example.com"),
        ("x-dup", "one"),
        ("X-Dup", "one"),
        ("x-latin", "caf\u00e9"),
        ("missing", None),
        ("", None),
        ("\u212aey", None),  # KELVIN SIGN lower-cases to "k"; must not match
    ],
)
def test_headers_get_first_value(headers: Headers, name: str, expected: str | None) -> None:
    assert headers.get(name) == expected


def test_headers_get_default(headers: Headers) -> None:
    assert headers.get("missing", "fallback") == "fallback"
    assert headers.get("missing", 0) == 0
    assert headers.get("host", "fallback") == "example.com"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("x-dup", ["one", "two"]), ("X-DUP", ["one", "two"]), ("host", ["example.com"]), ("no", [])],
)
def test_headers_getall(headers: Headers, name: str, expected: list[str]) -> None:
    assert headers.getall(name) == expected
    assert headers.getlist(name) == expected


def test_headers_getall_returns_a_copy(headers: Headers) -> None:
    headers.getall("x-dup").append("three")
    assert headers.getall("x-dup") == ["one", "two"]


def test_headers_getitem(headers: Headers) -> None:
    assert headers["ACCEPT"] == "text/html"
    with pytest.raises(KeyError, match="missing"):
        headers["missing"]


@pytest.mark.parametrize(
    ("key", "present"),
    [("host", True), ("HOST", True), ("nope", False), (b"host", False), (1, False)],
)
def test_headers_contains(headers: Headers, key: object, present: bool) -> None:
    assert (key in headers) is present


def test_headers_iteration_and_views(headers: Headers) -> None:
    assert list(headers) == ["host", "accept", "x-dup", "cookie", "x-latin"]
    assert len(headers) == 6
    assert headers.keys() == ["host", "accept", "x-dup", "cookie", "x-dup", "x-latin"]
    assert headers.values() == ["example.com", "text/html", "one", "a=1", "two", "caf\u00e9"]
    assert headers.items() == [
        ("host", "example.com"),
        ("accept", "text/html"),
        ("x-dup", "one"),
        ("cookie", "a=1"),
        ("x-dup", "two"),
        ("x-latin", "caf\u00e9"),
    ]


def test_empty_headers() -> None:
    for headers in (Headers(), Headers([])):
        assert len(headers) == 0
        assert list(headers) == []
        assert headers.items() == []
        assert headers.get("host") is None
        assert "host" not in headers
        assert headers == {}


def test_headers_from_items() -> None:
    assert Headers.from_items({"Content-Type": "text/plain"}).raw == [
        (b"content-type", b"text/plain")
    ]
    pairs = Headers.from_items([("X-A", "1"), ("x-a", "2")])
    assert pairs.getall("x-a") == ["1", "2"]


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ([(b"a", b"1"), (b"b", b"2")], [(b"b", b"2"), (b"a", b"1")], True),  # names reorder
        ([(b"a", b"1"), (b"a", b"2")], [(b"a", b"2"), (b"a", b"1")], False),  # values do not
        ([(b"a", b"1")], [(b"a", b"1"), (b"a", b"1")], False),
        ([], [], True),
    ],
)
def test_headers_equality(
    left: list[tuple[bytes, bytes]], right: list[tuple[bytes, bytes]], equal: bool
) -> None:
    assert (Headers(left) == Headers(right)) is equal


@pytest.mark.parametrize(
    ("mapping", "equal"),
    [
        ({"Host": "h", "Accept": "*/*"}, True),
        ({"host": "h", "accept": "*/*"}, True),
        ({"host": "h"}, False),
        ({"host": "other", "accept": "*/*"}, False),
    ],
)
def test_headers_equal_to_dict(mapping: dict[str, str], equal: bool) -> None:
    headers = Headers([(b"host", b"h"), (b"accept", b"*/*")])
    assert (headers == mapping) is equal
    assert (headers != mapping) is not equal


def test_headers_not_equal_to_other_types_and_unhashable() -> None:
    headers = Headers([(b"a", b"1")])
    assert headers != [("a", "1")]
    assert headers != "a: 1"
    with pytest.raises(TypeError):
        hash(headers)


def test_headers_repr() -> None:
    assert repr(Headers([(b"a", b"1")])) == "Headers([('a', '1')])"


def test_headers_work_with_dict_constructor(headers: Headers) -> None:
    assert dict(headers)["x-dup"] == "one"


# -- QueryArgs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        (b"", {}),
        ("a=1", {"a": ["1"]}),
        (b"a=1&b=2", {"a": ["1"], "b": ["2"]}),
        ("a=1&a=2&a=3", {"a": ["1", "2", "3"]}),
        ("flag", {"flag": [""]}),
        ("a=&b", {"a": [""], "b": [""]}),
        ("a=1&&b=2&", {"a": ["1"], "b": ["2"]}),
        ("=orphan", {"": ["orphan"]}),
        ("q=a+b%20c", {"q": ["a b c"]}),
        ("q=1%2B1", {"q": ["1+1"]}),
        ("k%20ey=v", {"k ey": ["v"]}),
        ("eq=a=b=c", {"eq": ["a=b=c"]}),
        ("amp=%26&semi=a;b", {"amp": ["&"], "semi": ["a;b"]}),
        ("name=%E2%82%AC%C3%A9", {"name": ["\u20ac\u00e9"]}),
        ("name=%F0%9F%98%80", {"name": ["\U0001f600"]}),
        ("%C3%A9t%C3%A9=summer", {"\u00e9t\u00e9": ["summer"]}),
        ("bad=%ZZ%4", {"bad": ["%ZZ%4"]}),
        ("bad=%FF", {"bad": ["\ufffd"]}),
        ("raw=caf\u00e9", {"raw": ["caf\u00e9"]}),
        (b"raw=caf\xc3\xa9", {"raw": ["caf\u00e9"]}),
    ],
)
def test_query_args_parse(query: str | bytes, expected: dict[str, list[str]]) -> None:
    args = QueryArgs.parse(query)
    assert isinstance(args, QueryArgs)
    assert args == expected


def test_query_args_parse_other_encoding() -> None:
    assert QueryArgs.parse(b"name=caf%E9", "latin-1") == {"name": ["caf\u00e9"]}


def test_query_args_accessors() -> None:
    args = QueryArgs.parse("a=1&a=2&b=&c")
    assert args["a"] == ["1", "2"]
    assert args.get("a") == "1"
    assert args.get("b") == ""
    assert args.get("c") == ""
    assert args.get("missing") is None
    assert args.get("missing", 7) == 7
    assert args.getlist("a") == ["1", "2"]
    assert args.getlist("missing") == []
    assert args.getlist("missing", ["x"]) == ["x"]
    assert "a" in args and "missing" not in args
    with pytest.raises(KeyError):
        args["missing"]


def test_query_args_get_on_empty_list_returns_default() -> None:
    args = QueryArgs({"k": []})
    assert args.get("k", "d") == "d"


# -- header value helpers -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "separator", "expected"),
    [
        ("a; b ;c", ";", ["a", "b", "c"]),
        ('name="a;b"; x=1', ";", ['name="a;b"', "x=1"]),
        ('for="[::1]:80", for=1.2.3.4', ",", ['for="[::1]:80"', "for=1.2.3.4"]),
        ('q="say \\"hi\\"; ok"; z', ";", ['q="say \\"hi\\"; ok"', "z"]),
        (";;a;;", ";", ["a"]),
        ("", ";", []),
        ('a="unterminated; b=1', ";", ['a="unterminated; b=1']),
        ("trailing\\", ";", ["trailing\\"]),
    ],
)
def test_split_header_value(value: str, separator: str, expected: list[str]) -> None:
    assert split_header_value(value, separator) == expected


def test_split_header_value_is_linear_on_hostile_input() -> None:
    # Many unterminated quoted strings would be quadratic for a naive pattern.
    hostile = '"\\' * 50_000
    assert split_header_value(hostile, ";") == [hostile]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"plain"', "plain"),
        ("bare", "bare"),
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ('"C:\\path\\file.txt"', "C:\\path\\file.txt"),
        ('""', ""),
        ('"', '"'),
        ('"open', '"open'),
    ],
)
def test_unquote_header_value(value: str, expected: str) -> None:
    assert unquote_header_value(value) == expected


# -- cookies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {}),
        ("a=1", {"a": "1"}),
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("a=1;b=2;", {"a": "1", "b": "2"}),
        ("  a = 1 ;  b=2  ", {"a": "1", "b": "2"}),
        ('q="quoted value"', {"q": "quoted value"}),
        ('q="', {"q": '"'}),
        ("a=1; a=2", {"a": "1"}),  # the most specific path comes first
        ("empty=", {"empty": ""}),
        ("novalue; a=1", {"a": "1"}),
        ("=nameless; a=1", {"a": "1"}),
        ("token=abc==; x=y", {"token": "abc==", "x": "y"}),
        ('json={"a":1}', {"json": '{"a":1}'}),
        ("uni=caf\u00e9", {"uni": "caf\u00e9"}),
        (";;;", {}),
        ("garbage", {}),
    ],
)
def test_parse_cookies(header: str, expected: dict[str, str]) -> None:
    assert parse_cookies(header) == expected


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "sid=abc; Path=/"),
        ({"path": None}, "sid=abc"),
        ({"path": "/app", "domain": "example.com"}, "sid=abc; Path=/app; Domain=example.com"),
        ({"max_age": 3600}, "sid=abc; Path=/; Max-Age=3600"),
        ({"max_age": 0}, "sid=abc; Path=/; Max-Age=0"),
        ({"secure": True, "httponly": True}, "sid=abc; Path=/; Secure; HttpOnly"),
        ({"samesite": "lax"}, "sid=abc; Path=/; SameSite=Lax"),
        ({"samesite": "STRICT"}, "sid=abc; Path=/; SameSite=Strict"),
        ({"samesite": "None", "secure": True}, "sid=abc; Path=/; Secure; SameSite=None"),
        (
            {"expires": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)},
            "sid=abc; Path=/; Expires=Wed, 02 Jan 2030 03:04:05 GMT",
        ),
        (
            {"expires": datetime(2030, 1, 2, 3, 4, 5)},  # naive means UTC
            "sid=abc; Path=/; Expires=Wed, 02 Jan 2030 03:04:05 GMT",
        ),
        (
            {"expires": datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))},
            "sid=abc; Path=/; Expires=Wed, 02 Jan 2030 03:04:05 GMT",
        ),
        (
            {"expires": "Wed, 02 Jan 2030 03:04:05 GMT"},
            "sid=abc; Path=/; Expires=Wed, 02 Jan 2030 03:04:05 GMT",
        ),
    ],
)
def test_format_set_cookie(options: dict[str, object], expected: str) -> None:
    assert format_set_cookie("sid", "abc", **options) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "a-b_c.d~!#$%&'()*+/:<=>?@[]^`{|}", "abc=="])
def test_format_set_cookie_accepts_cookie_octets(value: str) -> None:
    assert format_set_cookie("n", value, path=None) == f"n={value}"


@pytest.mark.parametrize(
    ("name", "value", "options", "bad"),
    [
        ("se;ssion", "v", {}, "';'"),
        ("se ssion", "v", {}, "' '"),
        ("na=me", "v", {}, "'='"),
        ("n\u00e9", "v", {}, "'\u00e9'"),
        ("n", "a b", {}, "' '"),
        ("n", "a;b", {}, "';'"),
        ("n", 'a"b', {}, "'\"'"),
        ("n", "a,b", {}, "','"),
        ("n", "a\\b", {}, "'\\\\\\\\'"),
        ("n", "a\r\nSet-Cookie: x=y", {}, "'\\\\r'"),
        ("n", "caf\u00e9", {}, "'\u00e9'"),
        ("n", "v", {"path": "/a;Secure"}, "';'"),
        ("n", "v", {"path": "/a\nb"}, "'\\\\n'"),
        ("n", "v", {"domain": "x.com;"}, "';'"),
        ("n", "v", {"expires": "never; HttpOnly"}, "';'"),
    ],
)
def test_format_set_cookie_names_the_bad_character(
    name: str, value: str, options: dict[str, object], bad: str
) -> None:
    with pytest.raises(ValueError, match=f"invalid character {bad}"):
        format_set_cookie(name, value, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("", {}, "must not be empty"),
        ("n", {"samesite": "sometimes"}, "Strict, Lax or None"),
        ("n", {"samesite": "none"}, "requires secure=True"),
    ],
)
def test_format_set_cookie_rejects_bad_options(
    name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        format_set_cookie(name, "v", **options)  # type: ignore[arg-type]


def test_set_cookie_round_trips_through_parse_cookies() -> None:
    header = format_set_cookie("token", "abc.DEF-123==", httponly=True)
    name_value = header.split(";", 1)[0]
    assert parse_cookies(name_value) == {"token": "abc.DEF-123=="}
