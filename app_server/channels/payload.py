"""A published message's data, kept with its type, as bytes for the wire.

Owns: ``Payload``, what a channel carries for one message: its kind (text,
binary or JSON), the body bytes a WebSocket frame is built from, and the data
as it was published (``str``, ``bytes``, or the ``dict``/``list``), decoded
lazily when it came off the wire. ``to_wire``/``from_wire`` give the one-byte
kind tag plus body used by the Redis backend (and the master relay): never
pickle, so nothing a peer sends can run code here.

Pure: no I/O. Imports nothing from the package.
"""

from __future__ import annotations

import json
from typing import Any

KIND_TEXT = 0x74  # "t": UTF-8 text, sent as a text frame
KIND_BYTES = 0x62  # "b": bytes, sent as a binary frame
KIND_JSON = 0x6A  # "j": a dict or list as compact JSON text, sent as a text frame
_KINDS = frozenset({KIND_TEXT, KIND_BYTES, KIND_JSON})
_UNSET: Any = object()


def dumps(data: Any) -> str:
    """The JSON text a dict/list is sent as (the same as ``ws.send`` produces)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class Payload:
    """One message's data: ``kind``, ``body`` (bytes) and ``data`` (typed)."""

    __slots__ = ("kind", "body", "_data", "_text")

    def __init__(self, kind: int, body: bytes, data: Any = _UNSET) -> None:
        self.kind = kind
        self.body = body
        self._data = data
        self._text: str | None = None

    @classmethod
    def of(cls, data: Any) -> Payload:
        """Encode published data; TypeError for anything but str, bytes, dict or list."""
        if isinstance(data, str):
            text = str(data)  # a str subclass (a StrEnum member) travels as plain text
            payload = cls(KIND_TEXT, text.encode(), text)
            payload._text = text
            return payload
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
            return cls(KIND_BYTES, raw, raw)
        if isinstance(data, dict | list):
            text = dumps(data)
            payload = cls(KIND_JSON, text.encode(), data)
            payload._text = text
            return payload
        raise TypeError(f"cannot publish {type(data).__name__}: expected str, bytes, dict or list")

    @classmethod
    def from_wire(cls, raw: bytes) -> Payload:
        """Decode ``to_wire()`` bytes; ValueError when they are not a payload."""
        if not raw or raw[0] not in _KINDS:
            raise ValueError("not a channel payload: unknown kind byte")
        return cls(raw[0], raw[1:])

    def to_wire(self) -> bytes:
        return bytes((self.kind,)) + self.body

    @property
    def is_text(self) -> bool:
        return self.kind != KIND_BYTES

    @property
    def text(self) -> str:
        """The text of a text or JSON payload (decoded once)."""
        text = self._text
        if text is None:
            text = self._text = self.body.decode()
        return text

    @property
    def message(self) -> str | bytes:
        """What ``ws.send`` would put in the frame: str for text and JSON, else bytes."""
        return self.text if self.kind != KIND_BYTES else self.body

    @property
    def data(self) -> Any:
        """The data with the type it was published with."""
        data = self._data
        if data is _UNSET:
            if self.kind == KIND_BYTES:
                data = self.body
            elif self.kind == KIND_TEXT:
                data = self.text
            else:
                data = json.loads(self.body)
            self._data = data
        return data

    def __repr__(self) -> str:
        return f"Payload({chr(self.kind)!r}, {self.body[:40]!r})"
