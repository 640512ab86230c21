"""Property-based tests of the WebSocket frame decoder and the handshake reader.

1. The fast path (``Session``) and the wsproto path (``Session(direct=False)``)
   give the same events for any frame sequence, valid or not, cut at any
   points and drained with any queue room.
2. Both agree with wsproto itself fed the whole stream, except where RFC 6455
   is read more strictly here (item 6 of issue 9): a Close with the registered
   codes 1012-1014 is a normal close, where wsproto 1.3 refuses 1014.
3. ``read_offer`` and ``negotiate_deflate`` take any header values and only
   ever refuse with ``UpgradeRefused`` (or decline an offer).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from app_server.protocols.http.events import RequestHead
from app_server.protocols.websocket.frames import SizeGuard
from app_server.protocols.websocket.handshake import (
    Offer,
    UpgradeRefused,
    negotiate_deflate,
    read_offer,
)
from app_server.protocols.websocket.session import BYTES, CLOSE, FAIL, PING, PONG, TEXT, Session
from tests.integration.ws_helpers import client_frame
from tests.unit.fuzzing import fuzz

MAX_SIZE = 1000
BIG = 1 << 30
REGISTERED = (1012, 1013, 1014)

# -- frame sequences -----------------------------------------------------------------

CLOSE_CODES = [
    1000,
    1001,
    1002,
    1003,
    1004,
    1005,
    1006,
    1007,
    1011,
    1012,
    1013,
    1014,
    1015,
    999,
    2999,
    3000,
    4999,
    5000,
]
TEXTS = [
    b"",
    b"a",
    "é€😀".encode(),
    b"ok\xff",
    b"\xc3",
    b"\xa9",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
]


@st.composite
def payload(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["text", "binary", "sized"]))
    if kind == "text":
        return b"".join(draw(st.lists(st.sampled_from(TEXTS), max_size=6)))
    if kind == "binary":
        return draw(st.binary(max_size=40))
    # around the limits: 125/126 (length forms), max_size, the small-frame size
    size = draw(st.sampled_from([125, 126, 999, 1000, 1001, 65535, 65537]))
    return draw(st.sampled_from([b"a", b"\xff", "é".encode()])) * size


@st.composite
def frame(draw: st.DrawFn) -> tuple[int, bytes]:
    opcode = draw(st.sampled_from([0x1, 0x2, 0x0, 0x1, 0x2, 0x9, 0xA, 0x8, 0x3, 0xB]))
    fin = draw(st.integers(0, 5)) > 0
    rsv = 0 if draw(st.integers(0, 9)) else draw(st.sampled_from([0x40, 0x20, 0x10]))
    mask = draw(st.integers(0, 19)) > 0
    if opcode == 0x8 and draw(st.integers(0, 5)):
        body = struct.pack("!H", draw(st.sampled_from(CLOSE_CODES)))
        body += draw(st.sampled_from([b"", b"bye", b"\xff", "é".encode()]))
    elif opcode & 0x8 and draw(st.integers(0, 5)):
        body = draw(st.binary(max_size=125))
    else:
        body = draw(payload())
    return opcode, client_frame(opcode, body, fin=fin, rsv=rsv, mask=mask)


streams = st.lists(frame(), min_size=1, max_size=8)
cuts = st.lists(st.integers(0, 1 << 20), max_size=8)


def split(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points}) + [len(data)]
    pieces, last = [], 0
    for mark in marks:
        pieces.append(data[last:mark])
        last = mark
    return [p for p in pieces if p]


def collect(chunks: list[bytes], room: int, direct: bool) -> list[tuple[int, Any]]:
    session = Session(MAX_SIZE, direct=direct)
    events: list[tuple[int, Any]] = []
    for chunk in chunks:
        events.extend(session.receive(chunk, room))
        while session.pending:  # the application drains its queue
            events.extend(session.receive(b"", room))
    # wsproto may word a failure's reason differently; the code is the contract.
    return [(kind, value[0] if kind == FAIL else value) for kind, value in events]


def wsproto_reference(data: bytes) -> list[tuple[int, Any]]:
    """wsproto alone, fed the whole stream, events mapped as Session maps them."""
    conn = Connection(ConnectionType.SERVER, [SizeGuard(MAX_SIZE)])
    conn.receive_data(data)
    events: list[tuple[int, Any]] = []
    parts: list[Any] = []
    for event in conn.events():
        if isinstance(event, TextMessage | BytesMessage):
            parts.append(event.data)
            if event.message_finished:
                kind = TEXT if isinstance(event, TextMessage) else BYTES
                events.append((kind, ("" if kind == TEXT else b"").join(parts)))
                parts = []
        elif isinstance(event, Ping):
            events.append((PING, event.payload))
        elif isinstance(event, Pong):
            events.append((PONG, event.payload))
        elif isinstance(event, CloseConnection):
            if conn.state is ConnectionState.OPEN:
                events.append((FAIL, int(event.code)))
            else:
                events.append((CLOSE, (int(event.code), event.reason or "")))
            break
    return events


def expected(frames: list[tuple[int, bytes]]) -> list[tuple[int, Any]]:
    """The reference, with the one deliberate departure from wsproto applied."""
    for i, (opcode, raw) in enumerate(frames):
        if opcode != 0x8 or raw[0] != 0x88 or not raw[1] & 0x80 or len(raw) < 8:
            continue
        length = raw[1] & 0x7F
        mask, body = raw[2:6], raw[6 : 6 + length]
        unmasked = bytes(b ^ mask[j % 4] for j, b in enumerate(body))
        code = int.from_bytes(unmasked[:2], "big")
        if code not in REGISTERED:
            continue
        before = wsproto_reference(b"".join(raw for _, raw in frames[:i]))
        if before and before[-1][0] in (FAIL, CLOSE):
            return before  # the stream ended before this Close
        try:
            return before + [(CLOSE, (code, unmasked[2:].decode()))]
        except UnicodeDecodeError:
            return before + [(FAIL, 1007)]
    return wsproto_reference(b"".join(raw for _, raw in frames))


@fuzz(200)
@given(frames=streams, points=cuts, room=st.sampled_from([1, 2, 3, BIG]))
@example(
    frames=[(0x1, client_frame(0x1, b"x" * 300 + b"\xff" + b"y" * 300))], points=[200], room=BIG
)
@example(frames=[(0x8, client_frame(0x8, struct.pack("!H", 1014)))], points=[3], room=1)
def test_fast_path_and_wsproto_agree_however_split(
    frames: list[tuple[int, bytes]], points: list[int], room: int
) -> None:
    data = b"".join(raw for _, raw in frames)
    reference = collect([data], BIG, direct=False)
    assert reference == expected(frames)
    chunks = split(data, points)
    assert collect(chunks, room, direct=True) == reference
    assert collect(chunks, room, direct=False) == reference


# -- the handshake reader ----------------------------------------------------------

HEADER_NAMES = [
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-protocol",
    b"sec-websocket-extensions",
    b"host",
    b"sec-websocket-accept",
    b"x-a",
]
GOOD_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


@st.composite
def header_value(draw: st.DrawFn) -> bytes:
    return draw(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [
                    GOOD_KEY,
                    b"13",
                    b"8",
                    b" 13",
                    b"chat, superchat",
                    b"",
                    b"permessage-deflate; client_max_window_bits",
                    b"permessage-deflate; server_max_window_bits=7",
                    b"permessage-deflate; server_max_window_bits=x",
                    b"permessage-deflate; client_max_window_bits=99, permessage-deflate",
                    b"permessage-deflate;;",
                    b"x-webkit-deflate-frame",
                    b"\xff\xfe",
                    b"dGhlIHNhbXBsZSBub25jZQ",
                    b"dGhlIHNhbXBsZSBub25jZQ===",
                ]
            ),
        )
    )


@fuzz(300)
@given(
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value()), max_size=8),
    method=st.sampled_from(["GET", "POST", "get"]),
    version=st.sampled_from(["1.1", "1.0"]),
)
def test_read_offer_only_refuses_with_upgrade_refused(
    headers: list[tuple[bytes, bytes]], method: str, version: str
) -> None:
    head = RequestHead(
        method, b"/ws", "/ws", b"", version, headers, True, b"websocket", False, None, False, "h"
    )
    try:
        offer = read_offer(head)
    except UpgradeRefused as exc:
        assert exc.status_hint in (400, 426)
        return
    assert isinstance(offer, Offer)
    negotiated = negotiate_deflate(offer.extensions, MAX_SIZE)
    if negotiated is not None:
        extension, response_header = negotiated
        assert response_header.startswith("permessage-deflate")
        assert "\r" not in response_header and "\n" not in response_header
        assert extension.max_size == MAX_SIZE
