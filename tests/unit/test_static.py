"""``framework.static``: conditional requests (RFC 9110 §13), single byte
ranges (§14) and the directory confinement of ``app.static``, as pure
functions over header values, sizes and a real temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app_server.exceptions import BadRequest
from app_server.framework.static import (
    UNSATISFIABLE,
    StaticDirectory,
    http_date,
    make_etag,
    matches_strong,
    matches_weak,
    parse_http_date,
    parse_range,
    plan_file,
    static_route,
)

SIZE = 1000
MTIME_NS = 1_700_000_000_123_456_789
MTIME_S = MTIME_NS // 1_000_000_000
ETAG = make_etag(SIZE, MTIME_NS)
LAST_MODIFIED = http_date(MTIME_S)


def plan(method: str = "GET", **headers: str):  # type: ignore[no-untyped-def]
    pairs = [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in headers.items()]
    return plan_file(method, pairs, SIZE, MTIME_NS)


# -- validators ----------------------------------------------------------------


def test_etag_is_size_and_mtime_in_hex() -> None:
    assert make_etag(255, 4096) == '"ff-1000"'


def test_last_modified_is_an_imf_fixdate() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize(
    "value",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_all_three_http_date_forms_parse(value: str) -> None:
    assert parse_http_date(value) == 784111777


@pytest.mark.parametrize("value", ["", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT"])
def test_invalid_dates_are_none(value: str) -> None:
    assert parse_http_date(value) is None


def test_weak_comparison_ignores_w_prefix_and_scans_lists() -> None:
    assert matches_weak(ETAG, ETAG)
    assert matches_weak(f"W/{ETAG}", ETAG)
    assert matches_weak(f'"a,b", "other", {ETAG}', ETAG)
    assert matches_weak("*", ETAG)
    assert not matches_weak('"other"', ETAG)
    assert not matches_weak("no-quotes", ETAG)


def test_strong_comparison_refuses_weak_tags() -> None:
    assert matches_strong(ETAG, ETAG)
    assert not matches_strong(f"W/{ETAG}", ETAG)
    assert matches_strong("*", ETAG)


# -- conditional requests --------------------------------------------------------


def test_plain_get_is_200_with_validators_and_accept_ranges() -> None:
    p = plan()
    assert (p.status, p.offset, p.length) == (200, 0, SIZE)
    assert f"ETag: {ETAG}\r\n".encode() in p.header_lines
    assert f"Last-Modified: {LAST_MODIFIED}\r\n".encode() in p.header_lines
    assert b"Accept-Ranges: bytes\r\n" in p.header_lines
    assert p.with_content_type


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_if_none_match_hit_is_304_with_validators_and_no_body(method: str) -> None:
    p = plan(method, if_none_match=ETAG)
    assert (p.status, p.length) == (304, 0)
    assert f"ETag: {ETAG}".encode() in p.header_lines
    assert b"Last-Modified" in p.header_lines
    assert not p.with_content_type


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    # The tag does not match, so the (matching) date must be ignored: 200.
    assert plan(if_none_match='"old"', if_modified_since=LAST_MODIFIED).status == 200
    assert plan(if_none_match=ETAG, if_modified_since=http_date(0)).status == 304


def test_if_modified_since() -> None:
    assert plan(if_modified_since=LAST_MODIFIED).status == 304
    assert plan(if_modified_since=http_date(MTIME_S + 60)).status == 304
    assert plan(if_modified_since=http_date(MTIME_S - 1)).status == 200
    assert plan(if_modified_since="garbage").status == 200


def test_conditionals_for_other_methods() -> None:
    # If-Modified-Since only applies to GET/HEAD; a matching If-None-Match on
    # another method is a failed precondition (RFC 9110 §13.1.2).
    assert plan("POST", if_modified_since=LAST_MODIFIED).status == 200
    assert plan("POST", if_none_match=ETAG).status == 412


def test_if_match_and_if_unmodified_since() -> None:
    assert plan(if_match='"other"').status == 412
    assert plan(if_match=ETAG).status == 200
    assert plan(if_unmodified_since=http_date(MTIME_S - 1)).status == 412
    assert plan(if_unmodified_since=LAST_MODIFIED).status == 200


def test_app_supplied_validators_are_used_and_not_duplicated() -> None:
    p = plan_file("GET", [(b"if-none-match", b'"mine"')], SIZE, MTIME_NS, etag='"mine"')
    assert p.status == 304
    assert b"ETag" not in p.header_lines


def test_other_statuses_are_sent_whole_without_conditionals() -> None:
    p = plan_file(
        "GET", [(b"if-none-match", b"*"), (b"range", b"bytes=0-1")], SIZE, MTIME_NS, status=404
    )
    assert (p.status, p.offset, p.length, p.header_lines) == (404, 0, SIZE, b"")


# -- ranges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, SIZE - 1)),
        ("bytes=-100", (SIZE - 100, SIZE - 1)),
        ("bytes=-5000", (0, SIZE - 1)),
        ("bytes=990-5000", (990, SIZE - 1)),
        ("BYTES = 5-5", (5, 5)),
        ("bytes=1000-", UNSATISFIABLE),
        ("bytes=5000-6000", UNSATISFIABLE),
        ("bytes=-0", UNSATISFIABLE),
        ("bytes=9-3", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes=\u0661-2", None),
        ("bytes 0-1", None),
    ],
)
def test_parse_range(value: str, expected: object) -> None:
    assert (
        parse_range(value, SIZE) == expected
        if expected is not UNSATISFIABLE
        else (parse_range(value, SIZE) is UNSATISFIABLE)
    )


def test_an_empty_file_ignores_range() -> None:
    assert parse_range("bytes=0-", 0) is None


def test_single_range_is_206_with_content_range() -> None:
    p = plan(range="bytes=10-19")
    assert (p.status, p.offset, p.length) == (206, 10, 10)
    assert b"Content-Range: bytes 10-19/1000\r\n" in p.header_lines
    assert f"ETag: {ETAG}".encode() in p.header_lines


def test_unsatisfiable_range_is_416_with_star_content_range() -> None:
    p = plan(range="bytes=2000-")
    assert (p.status, p.length, p.header_lines) == (416, 0, b"Content-Range: bytes */1000\r\n")


def test_several_ranges_get_the_whole_file() -> None:
    assert (plan(range="bytes=0-1, 10-20").status, plan(range="bytes=0-1, 10-20").length) == (
        200,
        SIZE,
    )


def test_range_is_only_for_get() -> None:
    assert plan("HEAD", range="bytes=0-1").status == 200


def test_if_range() -> None:
    assert plan(range="bytes=0-1", if_range=ETAG).status == 206
    assert plan(range="bytes=0-1", if_range='"stale"').status == 200
    assert plan(range="bytes=0-1", if_range=f"W/{ETAG}").status == 200
    assert plan(range="bytes=0-1", if_range=LAST_MODIFIED).status == 206
    assert plan(range="bytes=0-1", if_range=http_date(MTIME_S - 5)).status == 200


def test_a_304_beats_a_range() -> None:
    assert plan(range="bytes=0-1", if_none_match=ETAG).status == 304


# -- directory confinement -------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>hi</h1>")
    (root / "sub" / "a.txt").write_text("a")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")
    os.symlink(root / "sub" / "a.txt", root / "alias.txt")
    os.symlink(tmp_path, root / "up")
    os.mkfifo(root / "pipe")
    return root


def test_files_inside_resolve(tree: Path) -> None:
    static = StaticDirectory(tree)
    found = static.resolve("sub/a.txt")
    assert found is not None and found[0] == str(tree / "sub" / "a.txt")
    # A link that stays inside is fine; leading slashes stay inside too.
    assert static.resolve("alias.txt") is not None
    assert static.resolve("//sub/a.txt") is not None


@pytest.mark.parametrize(
    "tail",
    [
        "../secret.txt",
        "sub/../../secret.txt",
        "leak.txt",
        "up/secret.txt",
        "sub",
        "",
        "missing",
        "pipe",
        "/" + "../" * 10 + "etc/passwd",
        "sub/a.txt/..",
    ],
)
def test_nothing_outside_and_no_directories_or_fifos(tree: Path, tail: str) -> None:
    assert StaticDirectory(tree).resolve(tail) is None


def test_nul_is_a_bad_request(tree: Path) -> None:
    with pytest.raises(BadRequest):
        StaticDirectory(tree).resolve("index.html\x00.png")


def test_a_directory_that_is_a_symlink_is_resolved_once(tree: Path, tmp_path: Path) -> None:
    link = tmp_path / "public-link"
    os.symlink(tree, link)
    assert StaticDirectory(link).resolve("index.html") is not None


def test_static_route_templates(tree: Path) -> None:
    assert static_route("/assets/", tree)[0] == "/assets/{file_path:path}"
    assert static_route("/favicon.ico", tree / "index.html")[0] == "/favicon.ico"
    with pytest.raises(ValueError, match="does not exist"):
        static_route("/x", tree / "nope")
