"""The WebSocket opening handshake (RFC 6455 §4.2, RFC 7692 negotiation).

Owns: checking an upgrade request the HTTP parser has already parsed (no
second parse), the ``Sec-WebSocket-Accept`` token, subprotocol selection,
permessage-deflate negotiation and the bytes of the 101 response. Sans-IO:
headers in, bytes out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence

from app_server.protocols.http.events import ProtocolError, RequestHead
from app_server.protocols.websocket.frames import BoundedDeflate

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUPPORTED_VERSION = b"13"


class UpgradeRefused(ProtocolError):
    """A WebSocket upgrade request we cannot accept; carries extra headers."""

    def __init__(self, status_hint: int, detail: str, headers: Sequence[tuple[str, str]] = ()):
        super().__init__(status_hint, detail)
        self.headers = tuple(headers)


class Offer:
    """What the client asked for in its upgrade request."""

    __slots__ = ("key", "subprotocols", "extensions")

    def __init__(self, key: bytes, subprotocols: list[str], extensions: list[str]) -> None:
        self.key = key
        self.subprotocols = subprotocols
        self.extensions = extensions


def _split(values: Iterable[bytes]) -> list[str]:
    items: list[str] = []
    for value in values:
        for part in value.decode("latin-1").split(","):
            part = part.strip()
            if part:
                items.append(part)
    return items


def read_offer(head: RequestHead) -> Offer:
    """Validate an upgrade request; raise ``UpgradeRefused`` with the status to answer."""
    if head.method != "GET":
        raise UpgradeRefused(400, "WebSocket upgrade requires GET")
    if head.http_version != "1.1":
        raise UpgradeRefused(400, "WebSocket upgrade requires HTTP/1.1")
    key = None
    versions: list[bytes] = []
    protocols: list[bytes] = []
    extensions: list[bytes] = []
    for name, value in head.headers:
        if not name.startswith(b"sec-websocket-"):
            continue
        if name == b"sec-websocket-key":
            if key is not None:
                raise UpgradeRefused(400, "Several Sec-WebSocket-Key headers")
            key = value
        elif name == b"sec-websocket-version":
            versions.append(value)
        elif name == b"sec-websocket-protocol":
            protocols.append(value)
        elif name == b"sec-websocket-extensions":
            extensions.append(value)
    if versions != [SUPPORTED_VERSION]:
        raise UpgradeRefused(
            426, "Unsupported WebSocket version", (("Sec-WebSocket-Version", "13"),)
        )
    if key is None:
        raise UpgradeRefused(400, "Missing Sec-WebSocket-Key")
    try:
        decoded = base64.b64decode(key, validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != 16:
        raise UpgradeRefused(400, "Invalid Sec-WebSocket-Key")
    return Offer(key, _split(protocols), _split(extensions))


def accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 - RFC 6455


def select_subprotocol(offered: Sequence[str], supported: Sequence[str] | None) -> str | None:
    """The first of the route's subprotocols that the client offered."""
    if not supported or not offered:
        return None
    for name in supported:
        if name in offered:
            return name
    return None


def negotiate_deflate(offers: Sequence[str], max_size: int) -> tuple[BoundedDeflate, str] | None:
    """Accept the first acceptable permessage-deflate offer: (extension, header value)."""
    for offer in offers:
        if offer.split(";", 1)[0].strip().lower() != BoundedDeflate.name:
            continue
        extension = BoundedDeflate(max_size)
        try:
            params = extension.accept(offer)
        except ValueError:  # a malformed parameter value: try the next offer
            continue
        if params is None:
            continue
        return extension, (f"{BoundedDeflate.name}; {params}" if params else BoundedDeflate.name)
    return None


def _header_line(name: str, value: str) -> bytes:
    if any(c in value for c in "\r\n\0") or any(c in name for c in "\r\n\0: "):
        raise ValueError(f"invalid header {name!r}")
    return f"{name}: {value}\r\n".encode("latin-1")


def accept_response(
    key: bytes,
    subprotocol: str | None = None,
    extensions: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The complete ``101 Switching Protocols`` response."""
    parts = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: ",
        accept_token(key),
        b"\r\n",
    ]
    if subprotocol:
        parts.append(_header_line("Sec-WebSocket-Protocol", subprotocol))
    if extensions:
        parts.append(_header_line("Sec-WebSocket-Extensions", extensions))
    for name, value in headers:
        parts.append(_header_line(name, value))
    parts.append(b"\r\n")
    return b"".join(parts)
