"""Form bodies: ``application/x-www-form-urlencoded`` and ``multipart/form-data``.

Owns: ``parse_form`` (fields and uploaded files out of a buffered body),
``FormData``, ``UploadedFile`` and ``FormError``. Parsing is pure: bytes in,
values out, no I/O. A malformed body raises ``FormError`` (a ValueError),
which the request layer answers with 400; any other content type yields
empty results.

Rule: imports only ``framework.datastructures`` from the package.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import unquote

from app_server.framework.datastructures import (
    QueryArgs,
    split_header_value,
    unquote_header_value,
)

__all__ = ["FormData", "FormError", "UploadedFile", "parse_form"]

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
DEFAULT_MAX_PARTS = 1000
_CRLF = b"\r\n"


class FormError(ValueError):
    """The body does not parse as the form its Content-Type announces."""


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file from a multipart body (Sanic's ``File``)."""

    name: str
    type: str
    body: bytes = field(repr=False)


class FormData(NamedTuple):
    """What ``parse_form`` returns; unpacks as ``fields, files``."""

    fields: QueryArgs
    files: dict[str, list[UploadedFile]]


def parse_form(body: bytes, content_type: str, *, max_parts: int = DEFAULT_MAX_PARTS) -> FormData:
    """Parse ``body`` according to ``content_type`` (the header value).

    ``max_parts`` caps the number of fields and parts, so a small body cannot
    fan out into a huge number of objects.
    """
    media_type, params = parse_header_params(content_type)
    if media_type == URLENCODED:
        return FormData(_parse_urlencoded(body, params, max_parts), {})
    if media_type == MULTIPART:
        return _parse_multipart(body, params, max_parts)
    return FormData(QueryArgs(), {})


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"'`` -> ``("form-data", {"name": "a"})``.

    The main value and parameter names are lower-cased; a parameter without
    ``=`` is ignored; the first occurrence of a name wins.
    """
    items = split_header_value(value, ";")
    if not items or "=" in items[0]:
        return "", _collect_params(items)
    return items[0].lower(), _collect_params(items[1:])


def _collect_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, eq, raw = item.partition("=")
        name = name.strip().lower()
        if eq and name and name not in params:
            params[name] = unquote_header_value(raw.strip())
    return params


def _codec(charset: str | None, default: str = "utf-8") -> str:
    if not charset:
        return default
    try:
        return codecs.lookup(charset).name
    except LookupError:
        raise FormError(f"unsupported charset {charset!r}") from None


def _check_count(count: int, max_parts: int) -> None:
    if count > max_parts:
        raise FormError(f"form has more than {max_parts} fields or parts")


# -- urlencoded -----------------------------------------------------------------


def _parse_urlencoded(body: bytes, params: dict[str, str], max_parts: int) -> QueryArgs:
    _check_count(body.count(b"&") + 1, max_parts)
    return QueryArgs.parse(body, _codec(params.get("charset")))


# -- multipart (RFC 7578, RFC 2046 §5.1.1) ------------------------------------------


def _parse_multipart(body: bytes, params: dict[str, str], max_parts: int) -> FormData:
    boundary = params.get("boundary", "")
    if not boundary:
        raise FormError("multipart/form-data Content-Type has no boundary parameter")
    if len(boundary) > 70:
        raise FormError(f"multipart boundary is longer than 70 characters: {boundary!r}")
    fields = QueryArgs()
    files: dict[str, list[UploadedFile]] = {}
    parts = _split_parts(body, boundary.encode("latin-1", "replace"), max_parts)
    for number, part in enumerate(parts, start=1):
        _add_part(part, number, fields, files)
    return FormData(fields, files)


def _split_parts(body: bytes, boundary: bytes, max_parts: int) -> list[bytes]:
    """The bytes of each part, between the delimiters, checked for a close delimiter."""
    dash_boundary = b"--" + boundary
    # The first delimiter may open the body or follow a preamble line.
    position = _find_delimiter(body, dash_boundary, 0, at_start=True)
    if position < 0:
        raise FormError("multipart body does not contain its boundary")
    delimiter = _CRLF + dash_boundary
    parts: list[bytes] = []
    while True:
        if body.startswith(b"--", position):
            return parts
        start = _skip_boundary_line(body, position)
        end = _find_delimiter(body, delimiter, start, at_start=False)
        if end < 0:
            raise FormError("multipart body has no closing boundary")
        parts.append(body[start : end - len(delimiter)])
        _check_count(len(parts), max_parts)
        position = end


def _find_delimiter(body: bytes, delimiter: bytes, start: int, *, at_start: bool) -> int:
    """Index just past the next ``delimiter`` that ends a line, or -1.

    A delimiter must be followed by "--", optional whitespace and CRLF, or the
    end of the body; anything else is part data that merely starts alike.
    """
    if at_start and body.startswith(delimiter) and _ends_delimiter(body, len(delimiter)):
        return len(delimiter)
    needle = delimiter if not at_start else _CRLF + delimiter
    found = body.find(needle, start)
    while found >= 0:
        after = found + len(needle)
        if _ends_delimiter(body, after):
            return after
        found = body.find(needle, found + 1)
    return -1


def _ends_delimiter(body: bytes, index: int) -> bool:
    if body.startswith(b"--", index) or index == len(body):
        return True
    line_end = body.find(_CRLF, index)
    return line_end >= 0 and not body[index:line_end].strip(b" \t")


def _skip_boundary_line(body: bytes, position: int) -> int:
    line_end = body.find(_CRLF, position)
    if line_end < 0:
        raise FormError("multipart body has no closing boundary")
    return line_end + 2


def _add_part(
    part: bytes, number: int, fields: QueryArgs, files: dict[str, list[UploadedFile]]
) -> None:
    headers, content = _split_part(part, number)
    disposition, options = parse_header_params(headers.get("content-disposition", ""))
    if disposition != "form-data":
        raise FormError(f"multipart part {number}: expected Content-Disposition form-data")
    name = options.get("name")
    if name is None:
        raise FormError(f"multipart part {number}: Content-Disposition has no name")
    # RFC 7578 §4.4: a part without Content-Type is text/plain.
    content_type = headers.get("content-type") or "text/plain"
    filename = _filename(options)
    if filename is not None:
        upload = UploadedFile(name=filename, type=content_type, body=content)
        files.setdefault(name, []).append(upload)
        return
    charset = parse_header_params(content_type)[1].get("charset")
    fields.setdefault(name, []).append(content.decode(_codec(charset), "replace"))


def _split_part(part: bytes, number: int) -> tuple[dict[str, str], bytes]:
    """Part headers (lower-cased names, first wins) and the part's content."""
    if part.startswith(_CRLF):
        return {}, part[2:]
    head, separator, content = part.partition(_CRLF + _CRLF)
    if not separator:
        raise FormError(f"multipart part {number}: headers are not followed by a blank line")
    headers: dict[str, str] = {}
    for line in head.split(_CRLF):
        name, colon, value = _decode_header_text(line).partition(":")
        if not colon:
            raise FormError(f"multipart part {number}: malformed header line {line[:80]!r}")
        headers.setdefault(name.strip().lower(), value.strip())
    return headers, content


def _decode_header_text(raw: bytes) -> str:
    # Browsers send file names as raw UTF-8 (HTML's form encoding); fall back
    # to latin-1, which never fails, for anything else.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _filename(options: dict[str, str]) -> str | None:
    """``filename*`` (RFC 8187 ``charset'lang'pct-encoded``) wins over ``filename``."""
    extended = options.get("filename*")
    if extended is not None:
        charset, quote, rest = extended.partition("'")
        _language, quote2, encoded = rest.partition("'")
        if quote and quote2:
            try:
                return unquote(encoded, encoding=codecs.lookup(charset).name, errors="replace")
            except LookupError:
                pass
    return options.get("filename")
