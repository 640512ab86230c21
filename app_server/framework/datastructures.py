"""Request-side data structures and the header-value helpers they share.

Owns: ``Headers`` (a read-only, case-insensitive multi-dict over the parser's
raw header pairs), ``QueryArgs`` (Sanic's query multi-dict), cookie parsing
and ``Set-Cookie`` formatting, and quote-aware splitting of header values
(used by ``framework.forms`` and ``framework.proxy``).

These sit on the per-request hot path: constructing a ``Headers`` only keeps
the list it is given, and the name index is built on the first lookup, so a
request whose headers are never read costs nothing. Rule: this module imports
nothing from the package.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TypeVar, overload
from urllib.parse import unquote_to_bytes

__all__ = [
    "Headers",
    "QueryArgs",
    "format_set_cookie",
    "parse_cookies",
    "split_header_value",
    "unquote_header_value",
]

RawHeaders = list[tuple[bytes, bytes]]
_Default = TypeVar("_Default")


def _fold(name: str) -> str:
    # Header names are ASCII tokens; str.lower() on other text could fold
    # e.g. KELVIN SIGN onto "k" and match a header it does not name.
    return name.lower() if name.isascii() else name


def _build_index(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name, value in pairs:
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)
    return index


class Headers:
    """Case-insensitive, read-only view of a request's header pairs.

    ``raw`` holds ``(name, value)`` bytes with names already lower-cased (the
    HTTP parser guarantees it); text is decoded as latin-1 (RFC 9110 §5.5).
    Iteration yields each distinct name once; ``len()``, ``keys()``,
    ``values()`` and ``items()`` count every pair, in arrival order.
    """

    __slots__ = ("raw", "_index")

    def __init__(self, raw: RawHeaders | None = None) -> None:
        self.raw: RawHeaders = raw if raw is not None else []
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def from_items(cls, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
        """Build from text pairs or a mapping, in any letter case."""
        pairs = items.items() if isinstance(items, Mapping) else items
        return cls([(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs])

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = self._index = _build_index(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw
            )
        return index

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: _Default) -> str | _Default: ...

    def get(self, name: str, default: object = None) -> object:
        """The first value of ``name``, or ``default``."""
        values = self._lookup().get(_fold(name))
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in arrival order (empty when absent)."""
        return list(self._lookup().get(_fold(name), ()))

    getlist = getall

    def __getitem__(self, name: str) -> str:
        values = self._lookup().get(_fold(name))
        if not values:
            raise KeyError(name)
        return values[0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _fold(name) in self._lookup()

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup())

    def __len__(self) -> int:
        return len(self.raw)

    def keys(self) -> list[str]:
        return [k.decode("latin-1") for k, _ in self.raw]

    def values(self) -> list[str]:
        return [v.decode("latin-1") for _, v in self.raw]

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw]

    def __eq__(self, other: object) -> bool:
        # Order matters between values of one name, not between names.
        if isinstance(other, Headers):
            return self._lookup() == other._lookup()
        if isinstance(other, Mapping):
            return self._lookup() == _build_index((_fold(str(k)), str(v)) for k, v in other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to dicts, so unhashable

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


# -- query strings ------------------------------------------------------------


def _decode_form_component(part: bytes, encoding: str) -> str:
    """WHATWG urlencoded decoding: '+' is a space, then percent-decode bytes."""
    if b"+" in part:
        part = part.replace(b"+", b" ")
    if b"%" in part:
        part = unquote_to_bytes(part)
    return part.decode(encoding, "replace")


class QueryArgs(dict[str, list[str]]):
    """Sanic-style multi-dict: ``args["k"]`` is the list, ``args.get("k")`` the first."""

    __slots__ = ()

    @classmethod
    def parse(cls, query: str | bytes, encoding: str = "utf-8") -> QueryArgs:
        """Parse ``a=1&a=2&b`` keeping blank values; undecodable bytes become U+FFFD."""
        if not query:
            return cls()
        data = query.encode("utf-8", "replace") if isinstance(query, str) else query
        fields = (field.partition(b"=") for field in data.split(b"&") if field)
        return cls(
            _build_index(
                (_decode_form_component(name, encoding), _decode_form_component(value, encoding))
                for name, _, value in fields
            )
        )

    @overload  # type: ignore[override]  # the first value, not the list
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: _Default) -> str | _Default: ...

    def get(self, key: str, default: object = None) -> object:
        """The first value of ``key``, or ``default``."""
        values = dict.get(self, key)
        return values[0] if values else default

    def getlist(self, key: str, default: list[str] | None = None) -> list[str]:
        """Every value of ``key``; ``default`` (``[]`` when not given) if absent."""
        values = dict.get(self, key)
        if values is not None:
            return values
        return [] if default is None else default


# -- header values ------------------------------------------------------------

# A quoted string runs to its closing quote, or to the end when unterminated,
# so every match attempt succeeds and splitting stays linear on hostile input.
_SEPARATED = {
    sep: re.compile(rf'(?:"(?:[^"\\]|\\.?)*(?:"|\Z)|[^{sep}"])+', re.DOTALL) for sep in (";", ",")
}
_QUOTED_ESCAPE = re.compile(r'\\(["\\])')


def split_header_value(value: str, separator: str) -> list[str]:
    """Split on ``separator`` (";" or ",") outside double quotes; strip; drop empties.

    Never raises: an unterminated quoted string simply runs to the end.
    """
    pattern = _SEPARATED[separator]
    return [item for item in (m.group().strip() for m in pattern.finditer(value)) if item]


def unquote_header_value(value: str) -> str:
    """Strip one pair of surrounding double quotes and undo ``\\"`` and ``\\\\``.

    Other backslashes are kept: old browsers send Windows paths unescaped.
    """
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _QUOTED_ESCAPE.sub(r"\1", value[1:-1])
    return value


# -- cookies (RFC 6265) -------------------------------------------------------


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently; malformed pairs are skipped.

    The first occurrence of a name wins: RFC 6265 §5.4 has user agents list
    the cookie with the most specific path first.
    """
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip()
        if not eq or not name or name in cookies:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies


_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
# cookie-octet: visible ASCII except DQUOTE, comma, semicolon and backslash.
_COOKIE_VALUE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('",;\\')
# An attribute value may hold anything visible except ';' (RFC 6265 §4.1.1).
_ATTRIBUTE_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - frozenset(";")
_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}


def _check_chars(text: str, allowed: frozenset[str], what: str) -> None:
    for char in text:
        if char not in allowed:
            raise ValueError(f"invalid character {char!r} in {what} {text!r}")


def _format_expires(expires: datetime | str) -> str:
    if isinstance(expires, str):
        _check_chars(expires, _ATTRIBUTE_CHARS, "cookie Expires")
        return expires
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return format_datetime(expires.astimezone(UTC), usegmt=True)


def format_set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    expires: datetime | str | None = None,
    path: str | None = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = False,
    samesite: str | None = None,
) -> str:
    """The value of a ``Set-Cookie`` header; ValueError names any bad character.

    A naive ``expires`` is taken as UTC. The value is not quoted or encoded:
    encode it first (for example with base64url) if it may hold other bytes.
    """
    if not name:
        raise ValueError("cookie name must not be empty")
    _check_chars(name, _TOKEN_CHARS, "cookie name")
    _check_chars(value, _COOKIE_VALUE_CHARS, "cookie value")
    parts = [f"{name}={value}"]
    if path is not None:
        _check_chars(path, _ATTRIBUTE_CHARS, "cookie Path")
        parts.append(f"Path={path}")
    if domain is not None:
        _check_chars(domain, _ATTRIBUTE_CHARS, "cookie Domain")
        parts.append(f"Domain={domain}")
    if max_age is not None:
        parts.append(f"Max-Age={int(max_age)}")
    if expires is not None:
        parts.append(f"Expires={_format_expires(expires)}")
    if secure:
        parts.append("Secure")
    if httponly:
        parts.append("HttpOnly")
    if samesite is not None:
        parts.append(f"SameSite={_samesite(samesite, secure)}")
    return "; ".join(parts)


def _samesite(samesite: str, secure: bool) -> str:
    canonical = _SAMESITE.get(samesite.lower())
    if canonical is None:
        raise ValueError(f"cookie SameSite must be Strict, Lax or None, got {samesite!r}")
    if canonical == "None" and not secure:
        # Browsers drop SameSite=None cookies that are not Secure.
        raise ValueError("cookie SameSite=None requires secure=True")
    return canonical
