"""Static files: what to send for a file, and which files a directory serves.

Owns: the rules of conditional and range requests for a file (RFC 9110
§13 and §14) as pure functions of the request's header values and the
file's size and modification time (``plan_file``), the validators we
generate (``make_etag``, ``http_date``), and ``StaticDirectory``: the
resolution of a request path to a regular file that is provably inside one
directory, plus the handler ``app.static`` registers.

It does no socket I/O and imports nothing from ``workers``; the worker's
``workers/sendfile.py`` opens the file, asks ``plan_file`` what to send and
sends it.
"""

from __future__ import annotations

import calendar
import os
import re
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate, parsedate_tz
from typing import Final

from app_server.exceptions import BadRequest, NotFound
from app_server.framework.request import Request
from app_server.framework.responses import FileResponse

_NS_PER_S: Final = 1_000_000_000
_ACCEPT_RANGES: Final = b"Accept-Ranges: bytes\r\n"
# An entity-tag (RFC 9110 §8.8.3): optional weakness prefix, then a quoted
# opaque string. Entity-tags may contain commas, so a list is scanned, not split.
_ENTITY_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_BYTE_RANGE = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
_PRECONDITION_FIELDS: Final = frozenset(
    {
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"range",
        b"if-range",
    }
)


# -- validators ----------------------------------------------------------------


def make_etag(size: int, mtime_ns: int) -> str:
    """A strong entity-tag from the file's size and modification time (ns)."""
    return f'"{size:x}-{mtime_ns:x}"'


def http_date(seconds: int) -> str:
    """``seconds`` since the epoch as an IMF-fixdate (RFC 9110 §5.6.7)."""
    return formatdate(seconds, usegmt=True)


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch for an HTTP-date in any of its three forms, else None.

    RFC 9110 §5.6.7: recipients accept IMF-fixdate, the obsolete RFC 850
    form and asctime; all are UTC (asctime carries no zone).
    """
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        # datetime() refuses a 31st of November or a 25th hour; timegm would
        # silently roll them over into another valid date.
        datetime(*parsed[:6])
    except (ValueError, OverflowError):
        return None
    return calendar.timegm(parsed[:6]) - (parsed[9] or 0)


def _tags(value: str) -> list[tuple[bool, str]] | None:
    """The ``(weak, opaque-tag)`` pairs of an entity-tag list, None if malformed."""
    tags: list[tuple[bool, str]] = []
    pos, end = 0, len(value)
    while pos < end:
        m = _ENTITY_TAG.match(value, pos)
        if m is None or m.end() == pos:
            return None
        tags.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return tags


def matches_strong(field: str, etag: str) -> bool:
    """If-Match / If-Range comparison (RFC 9110 §8.8.3.2): weak tags never match."""
    if field.strip() == "*":
        return True
    weak_etag = etag.startswith("W/")
    tags = _tags(field)
    return tags is not None and not weak_etag and any(not w and t == etag for w, t in tags)


def matches_weak(field: str, etag: str) -> bool:
    """If-None-Match comparison (RFC 9110 §13.1.2): opaque tags equal, W/ ignored."""
    if field.strip() == "*":
        return True
    opaque = etag[2:] if etag.startswith("W/") else etag
    tags = _tags(field)
    return tags is not None and any(t == opaque for _, t in tags)


# -- ranges --------------------------------------------------------------------


class Unsatisfiable:
    """The Range names no byte of the file: answer 416 (RFC 9110 §15.5.17)."""

    __slots__ = ()


UNSATISFIABLE: Final = Unsatisfiable()


def parse_range(value: str, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """The one inclusive byte range ``(first, last)`` that ``value`` asks for.

    None means "ignore the Range and send the whole file": a unit other than
    bytes, a malformed or reversed range (RFC 9110 §14.2 lets a server ignore
    it), several ranges (we do not build multipart/byteranges, and a 200 with
    the whole file is a valid answer to them), or an empty file, where no
    range can be expressed in a Content-Range.
    """
    unit, sep, ranges = value.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in ranges or size == 0:
        return None
    m = _BYTE_RANGE.fullmatch(ranges.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        if last and int(last) < start:
            return None
        if start >= size:
            return UNSATISFIABLE
        return start, min(int(last), size - 1) if last else size - 1
    if not last:
        return None  # "bytes=-" names nothing
    suffix = int(last)
    if suffix == 0:
        return UNSATISFIABLE
    return max(0, size - suffix), size - 1


# -- the plan --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FilePlan:
    """What to answer for a file: status, which bytes, and the extra header lines."""

    status: int
    offset: int
    length: int
    header_lines: bytes
    with_content_type: bool


def _fields(request_headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, str]:
    found: dict[bytes, str] = {}
    for name, value in request_headers:
        if name in _PRECONDITION_FIELDS:
            text = value.decode("latin-1")
            # Repeated list fields combine (RFC 9110 §5.3); a repeated date or
            # Range then fails to parse and is ignored, as a malformed one is.
            found[name] = found[name] + ", " + text if name in found else text
    return found


def plan_file(
    method: str,
    request_headers: Iterable[tuple[bytes, bytes]],
    size: int,
    mtime_ns: int,
    *,
    status: int = 200,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FilePlan:
    """Decide the response to ``method`` for a file of ``size`` bytes.

    ``etag``/``last_modified`` are the validators the app set itself; when
    None ours are generated (and sent). Only a 200 is subject to
    preconditions and ranges: an app that sends a file with another status
    (a custom 404 page) gets it sent whole.
    """
    if status != 200:
        return FilePlan(status, 0, size, b"", True)
    ours = b""
    if etag is None:
        etag = make_etag(size, mtime_ns)
        ours += b"ETag: " + etag.encode("latin-1") + b"\r\n"
    modified_s: int | None
    if last_modified is None:
        modified_s = mtime_ns // _NS_PER_S
        ours += b"Last-Modified: " + http_date(modified_s).encode("ascii") + b"\r\n"
    else:
        modified_s = parse_http_date(last_modified)
    fields = _fields(request_headers)
    if fields:
        refused = _evaluate_preconditions(method, fields, etag, modified_s)
        if refused is not None:
            return FilePlan(refused, 0, 0, ours if refused == 304 else b"", False)
        if method == "GET" and b"range" in fields:
            return _plan_range(fields, size, etag, modified_s, ours)
    return FilePlan(200, 0, size, ours + _ACCEPT_RANGES, True)


def _evaluate_preconditions(
    method: str, fields: dict[bytes, str], etag: str, modified_s: int | None
) -> int | None:
    """304 or 412 when a precondition decides the answer, else None.

    The order is RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since; then
    If-None-Match, else If-Modified-Since (GET and HEAD only).
    """
    safe = method in ("GET", "HEAD")
    if_match = fields.get(b"if-match")
    if if_match is not None:
        if not matches_strong(if_match, etag):
            return 412
    else:
        since = fields.get(b"if-unmodified-since")
        limit = parse_http_date(since) if since is not None else None
        if limit is not None and modified_s is not None and modified_s > limit:
            return 412
    if_none_match = fields.get(b"if-none-match")
    if if_none_match is not None:
        if matches_weak(if_none_match, etag):
            return 304 if safe else 412
        return None
    since = fields.get(b"if-modified-since")
    if safe and since is not None and modified_s is not None:
        limit = parse_http_date(since)
        if limit is not None and modified_s <= limit:
            return 304
    return None


def _plan_range(
    fields: dict[bytes, str], size: int, etag: str, modified_s: int | None, ours: bytes
) -> FilePlan:
    whole = FilePlan(200, 0, size, ours + _ACCEPT_RANGES, True)
    if_range = fields.get(b"if-range")
    if if_range is not None and not _if_range_holds(if_range, etag, modified_s):
        return whole  # the client's copy is stale: send the whole file (§13.1.5)
    wanted = parse_range(fields[b"range"], size)
    if wanted is None:
        return whole
    if isinstance(wanted, Unsatisfiable):
        return FilePlan(416, 0, 0, b"Content-Range: bytes */%d\r\n" % size, False)
    first, last = wanted
    content_range = b"Content-Range: bytes %d-%d/%d\r\n" % (first, last, size)
    return FilePlan(206, first, last - first + 1, ours + _ACCEPT_RANGES + content_range, True)


def _if_range_holds(value: str, etag: str, modified_s: int | None) -> bool:
    """If-Range (RFC 9110 §13.1.5): a strong entity-tag match, or the exact date."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return matches_strong(value, etag)
    date = parse_http_date(value)
    return date is not None and date == modified_s


# -- a directory of files --------------------------------------------------------


class StaticDirectory:
    """The regular files under one directory, and nothing outside it.

    The directory is resolved once (``realpath``). A request path is joined
    to it and resolved again, so ``..`` segments (also when sent as
    ``%2e%2e``: the parser decodes escapes before routing) and symbolic links
    are followed first and the result is then required to lie under the
    directory; a link that leaves it is treated as missing. The directory's
    own contents are trusted: someone who can swap a component for a link
    between our check and the open could still race it.
    """

    __slots__ = ("root", "_prefix", "content_type")

    def __init__(self, directory: str | os.PathLike[str], content_type: str | None = None) -> None:
        root = os.path.realpath(directory)
        if not os.path.isdir(root):
            raise ValueError(f"static directory {os.fspath(directory)!r} is not a directory")
        self.root = root
        self._prefix = root if root.endswith(os.sep) else root + os.sep
        self.content_type = content_type

    def resolve(self, tail: str) -> tuple[str, os.stat_result] | None:
        """The real path and status of the regular file ``tail`` names, or None.

        Raises ``BadRequest`` for a NUL byte, which no file name can hold.
        """
        if "\x00" in tail:
            raise BadRequest("a NUL byte in the path")
        real = os.path.realpath(os.path.join(self.root, tail.lstrip("/")))
        if not real.startswith(self._prefix):
            return None
        try:
            st = os.stat(real)
        except (OSError, ValueError):
            return None
        # Only regular files: opening a FIFO or a device would block or worse.
        return (real, st) if stat.S_ISREG(st.st_mode) else None

    def handler(self) -> Callable[[Request, str], Awaitable[FileResponse]]:
        """The route handler serving ``{file_path:path}`` from this directory."""

        async def static(request: Request, file_path: str) -> FileResponse:
            found = self.resolve(file_path)
            if found is None:
                raise NotFound()  # the path is not echoed: it may not even be text
            path, st = found
            return FileResponse(path, content_type=self.content_type, stat_result=st)

        return static


def file_handler(
    path: str | os.PathLike[str], content_type: str | None = None
) -> Callable[[Request], Awaitable[FileResponse]]:
    """The route handler serving one file (``app.static`` given a file)."""
    real = os.path.realpath(path)

    async def static(request: Request) -> FileResponse:
        return FileResponse(real, content_type=content_type)

    return static


def static_route(
    uri: str, target: str | os.PathLike[str], content_type: str | None = None
) -> tuple[str, Callable[..., Awaitable[FileResponse]]]:
    """The route template and handler for ``app.static(uri, target)``.

    A directory is served under ``uri`` with its relative paths as the tail;
    a single file is served at ``uri`` itself.
    """
    if not os.path.exists(target):
        raise ValueError(f"static path {os.fspath(target)!r} does not exist")
    if os.path.isdir(target):
        base = uri.rstrip("/")
        return base + "/{file_path:path}", StaticDirectory(target, content_type).handler()
    return uri, file_handler(target, content_type)
