"""urlencoded and multipart/form-data parsing."""

from __future__ import annotations

import pytest

from app_server.framework.datastructures import QueryArgs
from app_server.framework.forms import (
    FormData,
    FormError,
    UploadedFile,
    parse_form,
    parse_header_params,
)

BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: bytes, boundary: str = BOUNDARY, epilogue: bytes = b"\r\n") -> bytes:
    """Assemble a body from already-formatted parts (headers CRLF CRLF content)."""
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return body + delimiter + b"--" + epilogue


def field(name: str, value: bytes, *extra_headers: str) -> bytes:
    head = [f'Content-Disposition: form-data; name="{name}"', *extra_headers]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + value


def upload(name: str, filename: str, content: bytes, content_type: str | None = None) -> bytes:
    head = [f'Content-Disposition: form-data; name="{name}"; filename="{filename}"']
    if content_type:
        head.append(f"Content-Type: {content_type}")
    return "\r\n".join(head).encode() + b"\r\n\r\n" + content


# -- Content-Type parameters --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ("", {})),
        ("text/plain", ("text/plain", {})),
        ("Text/HTML; Charset=UTF-8", ("text/html", {"charset": "UTF-8"})),
        (
            'form-data; name="a;b"; filename="x.txt"',
            ("form-data", {"name": "a;b", "filename": "x.txt"}),
        ),
        ('multipart/form-data; boundary="q b"', ("multipart/form-data", {"boundary": "q b"})),
        ("a; novalue; k=v; k=second", ("a", {"k": "v"})),
        ("charset=utf-8", ("", {"charset": "utf-8"})),
    ],
)
def test_parse_header_params(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_header_params(value) == expected


# -- urlencoded ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", "application/x-www-form-urlencoded", {}),
        (b"a=1&b=2", "application/x-www-form-urlencoded", {"a": ["1"], "b": ["2"]}),
        (
            b"a=1&a=2&empty=&flag",
            "application/x-www-form-urlencoded",
            {"a": ["1", "2"], "empty": [""], "flag": [""]},
        ),
        (b"msg=hello+world%21", "Application/X-WWW-Form-URLEncoded", {"msg": ["hello world!"]}),
        (b"name=%E2%82%AC", "application/x-www-form-urlencoded", {"name": ["\u20ac"]}),
        (
            b"name=%E2%82%AC",
            "application/x-www-form-urlencoded; charset=UTF-8",
            {"name": ["\u20ac"]},
        ),
        (
            b"name=caf%E9",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
            {"name": ["caf\u00e9"]},
        ),
        (b"name=caf%E9", "application/x-www-form-urlencoded", {"name": ["caf\ufffd"]}),
        (b"line=a%0D%0Ab", "application/x-www-form-urlencoded", {"line": ["a\r\nb"]}),
    ],
)
def test_urlencoded(body: bytes, content_type: str, expected: dict[str, list[str]]) -> None:
    fields, files = parse_form(body, content_type)
    assert isinstance(fields, QueryArgs)
    assert fields == expected
    assert files == {}


def test_urlencoded_unknown_charset() -> None:
    with pytest.raises(FormError, match="unsupported charset 'klingon'"):
        parse_form(b"a=1", "application/x-www-form-urlencoded; charset=klingon")


def test_urlencoded_field_limit() -> None:
    assert parse_form(b"a&b&c", "application/x-www-form-urlencoded", max_parts=3).fields == {
        "a": [""],
        "b": [""],
        "c": [""],
    }
    with pytest.raises(FormError, match="more than 3"):
        parse_form(b"a&b&c&d", "application/x-www-form-urlencoded", max_parts=3)


@pytest.mark.parametrize(
    "content_type", ["", "application/json", "text/plain", "multipart/mixed; boundary=x", "garbage"]
)
def test_other_content_types_give_empty_results(content_type: str) -> None:
    result = parse_form(b"a=1", content_type)
    assert result == FormData(QueryArgs(), {})
    assert result.fields == {} and result.files == {}


# -- multipart: fields and files ----------------------------------------------


def test_multipart_fields_and_files() -> None:
    body = multipart(
        field("title", b"Hello"),
        field("tag", b"a"),
        field("tag", b"b"),
        upload("doc", "notes.txt", b"line 1\r\nline 2\r\n", "text/plain"),
        upload("doc", "pic.png", b"\x89PNG\r\n\x1a\n\x00\xff", "image/png"),
    )
    fields, files = parse_form(body, MULTIPART)
    assert fields == {"title": ["Hello"], "tag": ["a", "b"]}
    assert files == {
        "doc": [
            UploadedFile(name="notes.txt", type="text/plain", body=b"line 1\r\nline 2\r\n"),
            UploadedFile(name="pic.png", type="image/png", body=b"\x89PNG\r\n\x1a\n\x00\xff"),
        ]
    }


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\r\n",
        b"\r\n\r\n",
        b"text with\r\nCRLF inside\r\n",
        b"--" + BOUNDARY.encode() + b"x not a delimiter",
        b"\r\n--" + BOUNDARY.encode() + b"suffix makes it data\r\n",
        bytes(range(256)) * 4,
    ],
    ids=[
        "empty",
        "crlf",
        "two-crlf",
        "crlf-inside",
        "boundary-prefix",
        "boundary-lookalike",
        "binary",
    ],
)
def test_multipart_file_content_is_exact(content: bytes) -> None:
    body = multipart(upload("f", "blob.bin", content, "application/octet-stream"))
    files = parse_form(body, MULTIPART).files
    assert files["f"][0].body == content


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        (b"plain", (), "plain"),
        ("\u00e9t\u00e9 \u20ac".encode(), (), "\u00e9t\u00e9 \u20ac"),
        (b"\xff\xfe", (), "\ufffd\ufffd"),
        (
            "caf\u00e9".encode("latin-1"),
            ("Content-Type: text/plain; charset=latin-1",),
            "caf\u00e9",
        ),
        (b"multi\r\nline", (), "multi\r\nline"),
    ],
)
def test_multipart_field_decoding(content: bytes, extra: tuple[str, ...], expected: str) -> None:
    fields = parse_form(multipart(field("f", content, *extra)), MULTIPART).fields
    assert fields == {"f": [expected]}


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        ('form-data; name="f"; filename="a.txt"', "a.txt"),
        ("form-data; name=f; filename=a.txt", "a.txt"),
        ('form-data; name="f"; filename="semi;colon.txt"', "semi;colon.txt"),
        ('form-data; name="f"; filename="quo\\"te.txt"', 'quo"te.txt'),
        ('form-data; name="f"; filename="C:\\Users\\me\\a.txt"', "C:\\Users\\me\\a.txt"),
        ('form-data; name="f"; filename=""', ""),
        ("form-data; name=\"f\"; filename*=UTF-8''na%C3%AFve%20file.txt", "na\u00efve file.txt"),
        (
            'form-data; name="f"; filename="fallback.txt"; filename*=utf-8\'en\'%E2%82%AC.txt',
            "\u20ac.txt",
        ),
        (
            'form-data; name="f"; filename="fallback.txt"; filename*=bogus\'\'x.txt',
            "fallback.txt",
        ),
        ('form-data; name="f"; filename="fallback.txt"; filename*=broken', "fallback.txt"),
        ('FORM-DATA; NAME="f"; FILENAME="upper.txt"', "upper.txt"),
        ('form-data; name="f"; filename="\u65e5\u672c.txt"', "\u65e5\u672c.txt"),
    ],
)
def test_multipart_filenames(disposition: str, filename: str) -> None:
    part = f"Content-Disposition: {disposition}".encode() + b"\r\n\r\ndata"
    files = parse_form(multipart(part), MULTIPART).files
    assert files == {"f": [UploadedFile(name=filename, type="text/plain", body=b"data")]}


def test_multipart_latin1_header_fallback() -> None:
    part = b'Content-Disposition: form-data; name="f"; filename="caf\xe9.txt"\r\n\r\nx'
    assert parse_form(multipart(part), MULTIPART).files["f"][0].name == "caf\u00e9.txt"


def test_multipart_part_headers_are_case_insensitive() -> None:
    part = (
        b'content-disposition: form-data; name="f"; filename="a"\r\n'
        b"CONTENT-TYPE: image/gif\r\n\r\nGIF"
    )
    assert parse_form(multipart(part), MULTIPART).files["f"][0].type == "image/gif"


def test_multipart_file_keeps_content_type_parameters() -> None:
    body = multipart(upload("f", "a.csv", b"x", "text/csv; charset=utf-8"))
    assert parse_form(body, MULTIPART).files["f"][0].type == "text/csv; charset=utf-8"


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/form-data; boundary="{BOUNDARY}"',
        f"Multipart/Form-Data; charset=utf-8; BOUNDARY={BOUNDARY}",
        f"multipart/form-data;boundary={BOUNDARY}",
    ],
)
def test_multipart_boundary_spellings(content_type: str) -> None:
    assert parse_form(multipart(field("a", b"1")), content_type).fields == {"a": ["1"]}


def test_multipart_quoted_boundary_with_special_characters() -> None:
    boundary = "b:o=u n'd(ary)?"
    body = multipart(field("a", b"1"), boundary=boundary)
    content_type = f'multipart/form-data; boundary="{boundary}"'
    assert parse_form(body, content_type).fields == {"a": ["1"]}


@pytest.mark.parametrize(
    "body",
    [
        # preamble, transport padding after delimiters, no trailing CRLF, epilogue
        b"preamble text\r\n--B\r\n" + field("a", b"1") + b"\r\n--B--\r\nepilogue",
        b"--B  \t\r\n" + field("a", b"1") + b"\r\n--B--",
        b"--B\r\n" + field("a", b"1") + b"\r\n--B--  \r\n",
    ],
    ids=["preamble-epilogue", "padding", "trailing-space"],
)
def test_multipart_framing_tolerance(body: bytes) -> None:
    assert parse_form(body, "multipart/form-data; boundary=B").fields == {"a": ["1"]}


def test_multipart_with_no_parts() -> None:
    assert parse_form(b"--B--\r\n", "multipart/form-data; boundary=B") == FormData(QueryArgs(), {})


def test_multipart_part_without_content_type_is_text_plain() -> None:
    body = multipart(upload("f", "a", b"x"))
    assert parse_form(body, MULTIPART).files["f"][0].type == "text/plain"


def test_uploaded_file_is_frozen_and_hides_body_in_repr() -> None:
    upload_ = UploadedFile(name="a.bin", type="application/octet-stream", body=b"secret" * 1000)
    assert "secret" not in repr(upload_)
    with pytest.raises(AttributeError):
        upload_.name = "b"  # type: ignore[misc]


# -- multipart: malformed bodies ----------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("multipart/form-data", "no boundary parameter"),
        ('multipart/form-data; boundary=""', "no boundary parameter"),
        ("multipart/form-data; boundary=" + "x" * 71, "longer than 70"),
    ],
)
def test_multipart_bad_boundary_parameter(content_type: str, message: str) -> None:
    with pytest.raises(FormError, match=message):
        parse_form(b"--B\r\n", content_type)


NAMED_A = b'Content-Disposition: form-data; name="a"\r\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "does not contain its boundary"),
        (b"no delimiter here", "does not contain its boundary"),
        (b"--B", "no closing boundary"),
        (b"--B\r\n" + NAMED_A + b"\r\n1", "no closing boundary"),
        (b"--B\r\n" + NAMED_A + b"\r\n1\r\n--B", "no closing boundary"),
        (b"--B\r\n" + NAMED_A + b"\r\n1\r\n--Bx\r\n", "no closing boundary"),
        (b"--B\r\n" + NAMED_A + b"--B--", "not followed by a blank line"),
        (b"--B\r\n" + NAMED_A + b"broken header\r\n\r\nx\r\n--B--", "malformed header line"),
        (
            b"--B\r\n" + NAMED_A + b"Content-Type: text/plain; charset=klingon\r\n\r\nx\r\n--B--",
            "unsupported charset 'klingon'",
        ),
        (
            b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--",
            "part 1: Content-Disposition has no name",
        ),
        (b"--B\r\n\r\nx\r\n--B--", "expected Content-Disposition form-data"),
        (
            b'--B\r\nContent-Disposition: attachment; name="a"\r\n\r\nx\r\n--B--',
            "expected Content-Disposition form-data",
        ),
    ],
)
def test_malformed_multipart(body: bytes, message: str) -> None:
    with pytest.raises(FormError, match=message):
        parse_form(body, "multipart/form-data; boundary=B")


def test_second_part_error_names_its_number() -> None:
    body = multipart(field("ok", b"1"), b"Content-Disposition: form-data\r\n\r\nx")
    with pytest.raises(FormError, match="part 2"):
        parse_form(body, MULTIPART)


def test_multipart_part_limit() -> None:
    body = multipart(*(field(f"f{i}", b"x") for i in range(4)))
    assert len(parse_form(body, MULTIPART, max_parts=4).fields) == 4
    with pytest.raises(FormError, match="more than 3"):
        parse_form(body, MULTIPART, max_parts=3)


def test_form_error_is_a_value_error() -> None:
    assert issubclass(FormError, ValueError)
