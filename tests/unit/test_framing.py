from __future__ import annotations

import pytest

from app_server.protocols.http import framing


def test_response_has_length_date_and_body() -> None:
    out = framing.encode_response(
        200, b"Content-Type: text/plain\r\n", b"hi", b"Date: x\r\n", b"", False
    )
    assert out == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nDate: x\r\n\r\nhi"
    )


def test_head_keeps_length_but_drops_body() -> None:
    out = framing.encode_response(200, b"", b"hello", b"", b"", True)
    assert out.endswith(b"Content-Length: 5\r\n\r\n")


@pytest.mark.parametrize("status", [204, 304, 101])
def test_statuses_without_body(status: int) -> None:
    out = framing.encode_response(status, b"", b"ignored", b"", b"", False)
    assert b"Content-Length" not in out and not out.endswith(b"ignored")


def test_unknown_status_gets_a_line_and_bad_status_is_refused() -> None:
    assert framing.status_line(599) == b"HTTP/1.1 599 \r\n"
    with pytest.raises(ValueError, match="invalid HTTP status"):
        framing.status_line(42)


def test_chunks() -> None:
    assert framing.encode_chunk(b"abc") == b"3\r\nabc\r\n"
    assert framing.encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert framing.encode_chunk(b"") == b""


def test_streaming_head() -> None:
    assert b"Transfer-Encoding: chunked" in framing.encode_streaming_head(200, b"", None, b"", b"")
    assert b"Content-Length: 9" in framing.encode_streaming_head(200, b"", 9, b"", b"")
