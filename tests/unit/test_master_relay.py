"""The master's channel relay: ``RelayCore`` fed requests (what it sends to
whom), and ``Relay`` on real socket pairs (bounded buffers, RESYNC, a stalled
worker, EOF)."""

from __future__ import annotations

import selectors
import socket

from app_server.channels.history import make_offset
from app_server.control import relay as wire
from app_server.control.relay import ErrCode, Op
from app_server.master.relay import Relay, RelayCore

EPOCH = 7


def frames(packets: list[tuple[int, bytes]], to: int) -> list[tuple[int, int, bytes]]:
    reader = wire.FrameReader()
    return reader.feed(b"".join(p for wid, p in packets if wid == to))


def request(core: RelayCore, wid: int, packet: bytes) -> list[tuple[int, bytes]]:
    [(op, rid, body)] = wire.FrameReader().feed(packet)
    return core.handle(wid, op, rid, body)


def history_core() -> RelayCore:
    core = RelayCore(EPOCH, clock=lambda: 0.0)
    request(core, 1, wire.hello([("room:*", 3, None)]))
    return core


def test_a_message_goes_once_to_each_subscribed_worker_and_the_ack_after_its_own_copy() -> None:
    core = history_core()
    for wid, count in ((1, 2), (2, 5)):
        [(to, ack)] = request(core, wid, wire.sub(9, "room:a", count))
        assert to == wid and frames([(to, ack)], wid) == [
            (Op.ACK, 9, wire._Q.pack(make_offset(EPOCH, 0)))
        ]
    request(core, 3, wire.sub(1, "room:b", 1))  # another topic: gets nothing
    out = request(core, 1, wire.pub(42, "room:a", b"thello"))
    assert sorted({wid for wid, _ in out}) == [1, 2]
    assert [wid for wid, _ in out].count(2) == 1
    mine = frames(out, 1)
    assert [op for op, _, _ in mine] == [Op.DELIVER, Op.ACK]  # delivered, then acknowledged
    assert wire.parse_deliver(mine[0][2]) == ("room:a", make_offset(EPOCH, 1), b"thello")
    assert mine[1][1] == 42 and wire.parse_ack(mine[1][2]) == make_offset(EPOCH, 1)
    [(op, _, body)] = frames(out, 2)
    assert op == Op.DELIVER and wire.parse_deliver(body)[1] == make_offset(EPOCH, 1)
    assert core.published == 1 and core.forwarded == 2


def test_a_topic_without_history_has_no_offsets_and_the_count_sums_workers() -> None:
    core = history_core()
    request(core, 1, wire.sub(1, "news", 2))
    request(core, 2, wire.sub(1, "news", 3))
    out = request(core, 2, wire.pub(5, "news", b"tx"))
    assert wire.parse_deliver(frames(out, 1)[0][2])[1] is None
    assert wire.parse_ack(frames(out, 2)[-1][2]) is None
    [(_, answer)] = request(core, 3, wire.topic_only(Op.COUNT, 8, "news"))
    assert wire.parse_ack(frames([(3, answer)], 3)[0][2]) == 5
    request(core, 1, wire.topic_only(Op.UNSUB, 0, "news"))
    [(_, answer)] = request(core, 3, wire.topic_only(Op.COUNT, 8, "news"))
    assert wire.parse_ack(frames([(3, answer)], 3)[0][2]) == 3
    core.remove(2)  # its EOF: nothing of it remains
    assert core.subs == {} and core.topics_of.get(2) is None
    assert request(core, 1, wire.pub(6, "news", b"ty")) == [(1, wire.ack(6, None))]


def test_fetch_replays_what_is_kept_and_a_gap_past_it() -> None:
    core = history_core()
    offsets = [
        wire.parse_ack(frames(request(core, 1, wire.pub(i, "room:h", b"t%d" % i)), 1)[-1][2])
        for i in range(5)
    ]
    assert offsets == [make_offset(EPOCH, s) for s in range(1, 6)]
    [(_, answer)] = request(core, 2, wire.fetch(3, "room:h", offsets[2]))
    [(op, rid, body)] = frames([(2, answer)], 2)
    assert (op, rid) == (Op.REPLAY, 3)
    assert wire.parse_replay(body) == [(offsets[3], b"t3"), (offsets[4], b"t4")]
    for since in (offsets[0], make_offset(EPOCH + 1, 4)):  # trimmed (size 3); another epoch
        [(_, answer)] = request(core, 2, wire.fetch(4, "room:h", since))
        [(op, _, body)] = frames([(2, answer)], 2)
        assert op == Op.ERR and wire.parse_err(body)[0] is ErrCode.GAP


def test_the_latest_rules_win_and_bad_requests_get_an_error() -> None:
    core = history_core()
    request(core, 2, wire.hello([("feed:*", 10, 30.0)]))
    assert core.rules.for_topic("room:x") is None and core.rules.for_topic("feed:x") is not None
    bad = (
        wire.frame(Op.PUB, 3, b"\x00"),
        wire.frame(Op.ACK, 3),
        wire.pub(3, "", b"tx"),
        wire.frame(Op.HELLO, 0, b"\x00\x09[]"),
        wire.frame(Op.SUB, 3, b"\x00\x00\x00\x01\xff"),
    )
    for packet in bad:  # short, not a request, empty topic, other version, bad UTF-8
        [(to, answer)] = request(core, 1, packet)
        [(op, _, body)] = frames([(to, answer)], 1)
        assert op == Op.ERR and wire.parse_err(body)[0] is ErrCode.FAILED, packet


def test_a_frame_reader_rejects_a_corrupt_length() -> None:
    reader = wire.FrameReader()
    try:
        reader.feed(b"\xff\xff\xff\xff\x04\x00\x00\x00\x00")
    except wire.RelayError:
        pass
    else:
        raise AssertionError("a 4 GiB frame was accepted")


# -- the component, on real socket pairs -------------------------------------------------


class Harness:
    def __init__(self, out_limit: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.relay = Relay(self.selector, epoch=EPOCH, out_limit=out_limit)
        self.ends: dict[int, socket.socket] = {}

    def worker(self, wid: int) -> socket.socket:
        master_end, worker_end = Relay.pair()
        self.relay.add(wid, master_end)
        worker_end.settimeout(5)
        self.ends[wid] = worker_end
        return worker_end

    def run(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            for key, mask in self.selector.select(0):
                key.data(mask)

    def close(self) -> None:
        self.relay.close()
        for sock in self.ends.values():
            sock.close()
        self.selector.close()


def test_a_worker_that_does_not_read_is_dropped_for_then_resynced_and_stalled() -> None:
    h = Harness(out_limit=64 * 1024)
    try:
        reader, publisher = h.worker(1), h.worker(2)
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(wire.sub(1, "feed", 1))
        h.run()
        assert wire.FrameReader().feed(reader.recv(100))[0][0] == Op.ACK
        body = b"t" + b"x" * 1000
        publisher.setblocking(False)
        acks = wire.FrameReader()
        for i in range(400):  # 400 KB to a worker that reads nothing
            publisher.sendall(wire.pub(i + 1, "feed", body))
            h.run(2)
            try:
                acks.feed(publisher.recv(1 << 16))  # the publisher reads its acks
            except BlockingIOError:
                pass
        peer = h.relay.peers[1]
        assert h.relay.dropped > 0 and peer.dropping
        assert peer.queued <= 64 * 1024 + len(wire.deliver("feed", None, body))  # bounded
        assert h.relay.stalled(peer.sent_at + 1.0, 0.5) == [1]
        assert h.relay.stalled(peer.sent_at + 0.1, 0.5) == []
        # it reads again: everything queued, then RESYNC (it recovers the rest)
        stream = wire.FrameReader()
        got: list[int] = []
        reader.setblocking(False)
        while Op.RESYNC not in got:
            h.run(1)
            try:
                got += [op for op, _, _ in stream.feed(reader.recv(1 << 16))]
            except BlockingIOError:
                pass
        assert got.count(Op.DELIVER) == 400 - h.relay.dropped
        assert not h.relay.peers[1].dropping and h.relay.stalled(1e12, 0.5) == []
    finally:
        h.close()


def test_eof_removes_a_workers_subscriptions_at_once() -> None:
    h = Harness(out_limit=1 << 20)
    try:
        end = h.worker(1)
        end.sendall(wire.sub(1, "feed", 4))
        h.run()
        assert h.relay.core.subscriptions() == 4
        end.close()
        h.run()
        assert h.relay.core.subscriptions() == 0 and 1 not in h.relay.peers
    finally:
        h.close()
