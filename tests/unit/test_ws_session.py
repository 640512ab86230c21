"""The sans-IO WebSocket session and handshake: every input replayed whole,
byte by byte and in seeded random chunks must give the same events."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import pytest

from app_server.protocols.http.events import RequestHead
from app_server.protocols.websocket.frames import (
    OP_BINARY,
    OP_TEXT,
    BoundedDeflate,
    encode_close,
    encode_frame,
)
from app_server.protocols.websocket.handshake import (
    UpgradeRefused,
    accept_response,
    accept_token,
    negotiate_deflate,
    read_offer,
    select_subprotocol,
)
from app_server.protocols.websocket.session import (
    BYTES,
    CLOSE,
    FAIL,
    PING,
    PONG,
    TEXT,
    Session,
)
from tests.integration.ws_helpers import client_frame, close_payload, deflate_message

BIG = 1 << 30


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, 9)
        out.append(data[i : i + n])
        i += n
    return out


SPLITS: list[Callable[[bytes], list[bytes]]] = [whole, bytewise, random_chunks]


def replay(
    data: bytes,
    split: Callable[[bytes], list[bytes]],
    max_size: int = 1000,
    deflate: BoundedDeflate | None = None,
) -> list[tuple[int, object]]:
    session = Session(max_size, deflate)
    events: list[tuple[int, object]] = []
    for chunk in split(data):
        events.extend(session.receive(chunk, BIG))
    return events


CASES: list[tuple[str, bytes, list[tuple[int, object]]]] = [
    ("text", client_frame(OP_TEXT, b"hello"), [(TEXT, "hello")]),
    ("binary", client_frame(OP_BINARY, b"\x00\xff"), [(BYTES, b"\x00\xff")]),
    ("empty text", client_frame(OP_TEXT, b""), [(TEXT, "")]),
    (
        "fragmented",
        client_frame(OP_TEXT, b"he", fin=False)
        + client_frame(0, b"l", fin=False)
        + client_frame(0, b"lo"),
        [(TEXT, "hello")],
    ),
    (
        "utf8 split",
        client_frame(OP_TEXT, "é".encode()[:1], fin=False) + client_frame(0, "é".encode()[1:]),
        [(TEXT, "é")],
    ),
    (
        "ping inside fragments",
        client_frame(OP_BINARY, b"a", fin=False) + client_frame(0x9, b"p") + client_frame(0, b"b"),
        [(PING, b"p"), (BYTES, b"ab")],
    ),
    ("pong", client_frame(0xA, b"x"), [(PONG, b"x")]),
    ("medium length", client_frame(OP_BINARY, b"m" * 300), [(BYTES, b"m" * 300)]),
    ("close", client_frame(0x8, close_payload(1001, "bye")), [(CLOSE, (1001, "bye"))]),
    ("close without code", client_frame(0x8, b""), [(CLOSE, (1005, ""))]),
    (
        "nothing after close",
        client_frame(0x8, close_payload(1000)) + client_frame(OP_TEXT, b"x"),
        [(CLOSE, (1000, ""))],
    ),
    ("at the limit", client_frame(OP_TEXT, b"x" * 1000), [(TEXT, "x" * 1000)]),
    ("over the limit", client_frame(OP_TEXT, b"x" * 1001), [(FAIL, (1009, "message too big"))]),
    (
        "over the limit in fragments",
        client_frame(OP_TEXT, b"x" * 600, fin=False) + client_frame(0, b"x" * 401),
        [(FAIL, (1009, "message too big"))],
    ),
    (
        "limit is per message",
        client_frame(OP_TEXT, b"x" * 600) + client_frame(OP_TEXT, b"y" * 600),
        [(TEXT, "x" * 600), (TEXT, "y" * 600)],
    ),
    ("bad utf8", client_frame(OP_TEXT, b"\xff"), [(FAIL, (1007, "invalid frame payload data"))]),
    ("unmasked", client_frame(OP_TEXT, b"x", mask=False), [(FAIL, (1002, "protocol error"))]),
    ("rsv1", client_frame(OP_TEXT, b"x", rsv=0x40), [(FAIL, (1002, "protocol error"))]),
    ("opcode 3", client_frame(3, b"x"), [(FAIL, (1002, "protocol error"))]),
    ("control too long", client_frame(0x9, b"x" * 126), [(FAIL, (1002, "protocol error"))]),
    ("close code 999", client_frame(0x8, close_payload(999)), [(FAIL, (1002, "protocol error"))]),
]


@pytest.mark.parametrize("split", SPLITS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("name", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_session_replays(
    name: str,
    data: bytes,
    expected: list[tuple[int, object]],
    split: Callable[[bytes], list[bytes]],
) -> None:
    events = replay(data, split)
    # wsproto may word a protocol error's reason differently; the code matters.
    if expected and expected[-1][0] == FAIL:
        assert [(k, v[0]) for k, v in events] == [(k, v[0]) for k, v in expected]  # type: ignore[index]
    else:
        assert events == expected


def test_room_limits_messages_and_keeps_the_rest() -> None:
    session = Session(1000)
    data = b"".join(client_frame(OP_TEXT, str(i).encode()) for i in range(10))
    first = session.receive(data, 3)
    assert first == [(TEXT, "0"), (TEXT, "1"), (TEXT, "2")]
    assert session.pending
    assert session.receive(b"", 0) == []
    rest = session.receive(b"", 100)
    assert rest == [(TEXT, str(i)) for i in range(3, 10)]
    assert not session.pending


def _deflate_session(max_size: int) -> Session:
    extension, header = negotiate_deflate(["permessage-deflate"], max_size)  # type: ignore[misc]
    assert header.startswith("permessage-deflate")
    return Session(max_size, extension)


@pytest.mark.parametrize("split", SPLITS, ids=lambda f: f.__name__)
def test_deflate_messages_inflate(split: Callable[[bytes], list[bytes]]) -> None:
    session = _deflate_session(10_000)
    data = client_frame(OP_TEXT, deflate_message(b"a" * 5000), rsv=0x40)
    events = []
    for chunk in split(data):
        events.extend(session.receive(chunk, BIG))
    assert events == [(TEXT, "a" * 5000)]


def test_deflate_bomb_stops_at_the_budget() -> None:
    session = _deflate_session(10_000)
    bomb = deflate_message(b"\0" * 10_000_000)  # ~10 KB inflating to 10 MB
    events = session.receive(client_frame(OP_BINARY, bomb, rsv=0x40), BIG)
    assert events[0][0] == FAIL
    assert events[0][1][0] == 1009  # type: ignore[index]


def test_deflate_at_exact_budget_is_accepted() -> None:
    session = _deflate_session(4096)
    payload = bytes(range(256)) * 16
    events = session.receive(client_frame(OP_BINARY, deflate_message(payload), rsv=0x40), BIG)
    assert events == [(BYTES, payload)]


def test_server_compression_round_trips() -> None:
    session = _deflate_session(10_000)
    frame = session.encode_message("hello " * 100)
    assert frame[0] & 0x40  # RSV1: compressed
    assert len(frame) < 100
    length = frame[1] & 0x7F
    payload = frame[2 : 2 + length]
    inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    assert inflated == b"hello " * 100


# -- frames the server writes ---------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536])
def test_encode_frame_lengths(n: int) -> None:
    frame = encode_frame(OP_BINARY, b"z" * n)
    assert frame[0] == 0x82
    if n < 126:
        assert frame[1] == n and len(frame) == 2 + n
    elif n < 65536:
        assert frame[1] == 126 and int.from_bytes(frame[2:4], "big") == n
    else:
        assert frame[1] == 127 and int.from_bytes(frame[2:10], "big") == n


def test_encode_close() -> None:
    assert encode_close(None) == b"\x88\x00"
    assert encode_close(1005) == b"\x88\x00"  # 1005/1006 are never sent
    assert encode_close(1000, "bye") == b"\x88\x05\x03\xe8bye"
    assert len(encode_close(1000, "x" * 500)) == 2 + 125  # control frames stay ≤ 125


# -- handshake -----------------------------------------------------------------


def head(
    headers: list[tuple[bytes, bytes]], method: str = "GET", version: str = "1.1"
) -> RequestHead:
    return RequestHead(
        method, b"/ws", "/ws", b"", version, headers, True, b"websocket", False, None, False, "x"
    )


GOOD = [
    (b"host", b"x"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def test_rfc_example_accept_token() -> None:
    assert accept_token(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_read_offer_collects_protocols_and_extensions() -> None:
    offer = read_offer(
        head(
            GOOD
            + [
                (b"sec-websocket-protocol", b"a, b"),
                (b"sec-websocket-protocol", b"c"),
                (b"sec-websocket-extensions", b"permessage-deflate; x"),
            ]
        )
    )
    assert offer.subprotocols == ["a", "b", "c"]
    assert offer.extensions == ["permessage-deflate; x"]


@pytest.mark.parametrize(
    ("headers", "method", "version", "status"),
    [
        (GOOD[:1] + GOOD[2:], "GET", "1.1", 400),  # no key
        ([GOOD[0], (b"sec-websocket-key", b"c2hvcnQ="), GOOD[2]], "GET", "1.1", 400),
        (GOOD + [(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")], "GET", "1.1", 400),
        (GOOD[:2], "GET", "1.1", 426),  # no version
        (GOOD[:2] + [(b"sec-websocket-version", b"8")], "GET", "1.1", 426),
        (GOOD, "POST", "1.1", 400),
        (GOOD, "GET", "1.0", 400),
    ],
)
def test_read_offer_refusals(
    headers: list[tuple[bytes, bytes]], method: str, version: str, status: int
) -> None:
    with pytest.raises(UpgradeRefused) as info:
        read_offer(head(headers, method, version))
    assert info.value.status_hint == status
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in info.value.headers


def test_select_subprotocol_prefers_the_route_order() -> None:
    assert select_subprotocol(["a", "b"], ["b", "a"]) == "b"
    assert select_subprotocol(["a"], ["b"]) is None
    assert select_subprotocol([], ["b"]) is None
    assert select_subprotocol(["a"], None) is None


def test_negotiate_deflate() -> None:
    assert negotiate_deflate(["x-webkit-deflate-frame"], 100) is None
    _, header = negotiate_deflate(["permessage-deflate; client_max_window_bits"], 100)  # type: ignore[misc]
    assert header == "permessage-deflate; client_max_window_bits=15"
    # an unacceptable parameter value makes the server try the next offer
    _, header = negotiate_deflate(
        ["permessage-deflate; server_max_window_bits=7", "permessage-deflate"], 100
    )  # type: ignore[misc]
    assert header == "permessage-deflate"


def test_accept_response_rejects_header_injection() -> None:
    ok = accept_response(b"dGhlIHNhbXBsZSBub25jZQ==", "chat", None, [("X-A", "1")])
    assert ok.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Protocol: chat\r\n" in ok
    with pytest.raises(ValueError):
        accept_response(b"k", None, None, [("X-A", "1\r\nSet-Cookie: a=b")])


# -- the direct decoder and wsproto agree -----------------------------------


def _random_stream(rng: random.Random) -> bytes:
    frames = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.45:
            size = rng.choice([0, 1, 5, 64, 125, 126, 300, 999, 1000, 1001, 70000])
            opcode = rng.choice([OP_TEXT, OP_BINARY])
            payload = (b"a" if opcode == OP_TEXT else b"\x00") * size
            frames.append(client_frame(opcode, payload))
        elif kind < 0.6:  # a fragmented message, maybe with a ping inside
            opcode = rng.choice([OP_TEXT, OP_BINARY])
            parts = rng.randint(2, 4)
            for i in range(parts):
                frames.append(
                    client_frame(
                        opcode if i == 0 else 0, b"f" * rng.randint(0, 400), fin=i == parts - 1
                    )
                )
                if rng.random() < 0.3:
                    frames.append(client_frame(0x9, b"in"))
        elif kind < 0.7:
            frames.append(client_frame(rng.choice([0x9, 0xA]), b"c" * rng.randint(0, 125)))
        elif kind < 0.78:
            frames.append(client_frame(OP_TEXT, "é€".encode()))
        elif kind < 0.83:
            frames.append(client_frame(OP_TEXT, b"ok\xff"))  # invalid UTF-8
        elif kind < 0.86:
            frames.append(client_frame(OP_TEXT, b"x", mask=False))
        elif kind < 0.89:
            frames.append(client_frame(OP_TEXT, b"x", rsv=0x20))
        elif kind < 0.92:
            frames.append(client_frame(0x0, b"orphan"))
        else:
            frames.append(client_frame(0x8, close_payload(1000, "bye")))
    return b"".join(frames)


def _collect(
    data: bytes, split: Callable[[bytes], list[bytes]], room: int, direct: bool
) -> list[tuple[int, object]]:
    session = Session(1000, direct=direct)
    events: list[tuple[int, object]] = []
    chunks = split(data)
    for chunk in chunks:
        events.extend(session.receive(chunk, room))
        while session.pending:  # the app drains its queue
            events.extend(session.receive(b"", room))
    return [(k, v[0] if k == FAIL else v) for k, v in events]  # type: ignore[index]


@pytest.mark.parametrize("seed", range(60))
def test_direct_decoding_matches_wsproto(seed: int) -> None:
    rng = random.Random(seed)
    data = _random_stream(rng)
    reference = _collect(data, whole, BIG, direct=False)
    for split in (whole, bytewise, lambda d: random_chunks(d, seed)):
        for room in (1, 3, BIG):
            assert _collect(data, split, room, direct=True) == reference, (split, room)


# -- protocol edges (RFC 6455, read strictly) ---------------------------------


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wsproto"])
@pytest.mark.parametrize("code", [1012, 1013, 1014])
def test_registered_close_codes_are_a_normal_close(code: int, direct: bool) -> None:
    # RFC 6455 §7.4.2 and the IANA registry: 1012-1014 are valid to receive.
    for split in SPLITS:
        session = Session(1000, direct=direct)
        events = []
        for chunk in split(client_frame(0x8, close_payload(code, "later"))):
            events.extend(session.receive(chunk, BIG))
        assert events == [(CLOSE, (code, "later"))], split.__name__
        assert session.close_received and not session.failed


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wsproto"])
def test_registered_close_code_with_a_bad_reason_is_1007(direct: bool) -> None:
    session = Session(1000, direct=direct)
    events = session.receive(client_frame(0x8, close_payload(1012) + b"\xff"), BIG)
    assert [(k, v[0]) for k, v in events] == [(FAIL, 1007)]  # type: ignore[index]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wsproto"])
@pytest.mark.parametrize(
    "frames",
    [
        [client_frame(OP_TEXT, b"ok \xff" + b"x" * 500)],  # one frame
        [client_frame(OP_TEXT, b"fine", fin=False), client_frame(0, b"\xc3(" + b"x" * 500)],
    ],
    ids=["frame", "continuation"],
)
def test_invalid_utf8_fails_before_the_text_frame_completes(
    frames: list[bytes], direct: bool
) -> None:
    data = b"".join(frames)
    cut = len(data) - 400  # the invalid bytes are in; 400 payload bytes are not
    session = Session(1000, direct=direct)
    events = session.receive(data[:cut], BIG)
    assert [(k, v[0]) for k, v in events] == [(FAIL, 1007)]  # type: ignore[index]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wsproto"])
def test_valid_text_arriving_in_pieces_is_not_failed_early(direct: bool) -> None:
    text = "é€😀" * 50
    session = Session(1000, direct=direct)
    events = []
    for chunk in bytewise(client_frame(OP_TEXT, text.encode())):
        events.extend(session.receive(chunk, BIG))
    assert events == [(TEXT, text)]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wsproto"])
def test_messages_before_an_error_in_the_same_read_come_first(direct: bool) -> None:
    data = (
        client_frame(OP_TEXT, b"one")
        + client_frame(OP_BINARY, b"two")
        + client_frame(OP_TEXT, b"x", rsv=0x20)
        + client_frame(OP_TEXT, b"after")
    )
    session = Session(1000, direct=direct)
    events = session.receive(data, BIG)
    assert [(k, v if k != FAIL else v[0]) for k, v in events] == [  # type: ignore[index]
        (TEXT, "one"),
        (BYTES, b"two"),
        (FAIL, 1002),
    ]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wsproto"])
def test_a_frame_header_alone_does_not_end_a_fragmented_message(direct: bool) -> None:
    # Found by tests/unit/test_fuzz_websocket.py: the header of a whole text
    # frame, arriving without its mask key inside a fragmented message,
    # reset the "fragmented" flag before the frame was handed to wsproto, so
    # the fast path then decoded that frame as a message of its own.
    data = (
        client_frame(OP_TEXT, b"", fin=False)
        + client_frame(0, b"", fin=False)
        + client_frame(OP_TEXT, b"")
    )
    cut = len(data) - 4  # the last frame's mask key arrives in the next read
    session = Session(1000, direct=direct)
    events = session.receive(data[:cut], BIG) + session.receive(data[cut:], BIG)
    assert [(k, v[0]) for k, v in events] == [(FAIL, 1002)]  # type: ignore[index]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "wsproto"])
def test_a_stray_continuation_is_a_protocol_error_whatever_came_before(direct: bool) -> None:
    # Found by tests/unit/test_fuzz_websocket.py: the size budget kept the
    # last message's size, so a stray CONTINUATION was 1009 after a message
    # wsproto had decoded, but 1002 after one the fast path had decoded.
    data = client_frame(OP_TEXT, b"x" * 600) + client_frame(0, b"y" * 600)
    session = Session(1000, direct=direct)
    events = session.receive(data, BIG)
    assert [(k, v if k != FAIL else v[0]) for k, v in events] == [  # type: ignore[index]
        (TEXT, "x" * 600),
        (FAIL, 1002),
    ]
