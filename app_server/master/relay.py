"""The master backend of channels: the master relays publishes between its workers.

Owns: ``RelayCore``, the pure part (topic -> {worker: subscriber count},
each history topic's bounded log with offsets in the master's epoch, and
what to answer and forward for each request), and ``Relay``, the selector
component around it: one ``SOCK_STREAM`` socket per worker, made at spawn
(``pair``) and separate from the control channel, read and written without
blocking.

Supervision comes first: a readable relay socket is read once per wake
(at most ``READ_CHUNK`` bytes), so a flooding publisher cannot hold the loop
while heartbeats wait; each worker's outgoing bytes are bounded
(``OUT_LIMIT``): past it, deliveries to that worker are dropped and counted,
and once its buffer drains it is told RESYNC (its hub recovers history
topics from their last offsets, others get ChannelGap); while it is over the
bound nothing more is read from it; a worker that has not taken a byte of
its relay buffer for ``--timeout`` is reported by ``stalled`` and treated
as hung by the loop. A worker's EOF (its exit, a SIGKILL) removes its
subscriptions at once.

Order: the master appends a message to its topic's log and queues its
DELIVER to every subscribed worker in one step, before the publisher's ACK
on the same stream: every worker, the publisher's too, sees a topic's
messages in the master's order, and a publisher's own subscribers get its
message from the master, never before the others.

Rule: imports nothing from the package but ``control.relay``,
``channels.history`` (pure) and ``exceptions``: never the framework.
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable

from app_server.channels.history import EPOCH_LIMIT, HistoryRules, TopicLogs
from app_server.control import relay as wire
from app_server.control.relay import ErrCode, Op
from app_server.exceptions import ChannelGap

log = logging.getLogger("app_server.error")
READ_CHUNK = 256 * 1024  # bytes read from one worker per wake
OUT_LIMIT = 16 * 1048576  # bytes queued for one worker before its deliveries are dropped
MAX_TOPIC = 1024  # bytes of a topic name


class RelayCore:
    """Subscriptions, history and ordering; fed frames, returns what to send to whom."""

    def __init__(self, epoch: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = HistoryRules()
        self.rules_seen: list[tuple[str, int, float | None]] = []
        self.logs: TopicLogs[bytes] = TopicLogs(self.rules, epoch, clock)
        self.subs: dict[str, dict[int, int]] = {}  # topic -> {worker: its subscriber count}
        self.topics_of: dict[int, set[str]] = {}  # worker -> its subscribed topics
        self.published = 0
        self.forwarded = 0

    def handle(self, wid: int, op: int, rid: int, body: bytes) -> list[tuple[int, bytes]]:
        """One request of worker ``wid``: the frames to send, as ``(worker, bytes)``."""
        try:
            if op == Op.PUB:
                topic, payload = wire.parse_pub(body)
                return self.publish(wid, rid, topic, payload)
            if op == Op.SUB:
                topic, count = wire.parse_sub(body)
                return [(wid, wire.ack(rid, self.subscribe(wid, topic, count)))]
            if op == Op.UNSUB:
                self.unsubscribe(wid, body.decode())
                return []
            if op == Op.COUNT:
                total = sum(self.subs.get(body.decode(), {}).values())
                return [(wid, wire.ack(rid, total))]
            if op == Op.FETCH:
                topic, since = wire.parse_fetch(body)
                try:
                    return [(wid, wire.replay(rid, self.logs.replay(topic, since)))]
                except ChannelGap as exc:
                    return [(wid, wire.err(rid, ErrCode.GAP, exc.reason))]
            if op == Op.HELLO:
                self.set_rules(wire.parse_hello(body))
                return []
            raise wire.RelayError(f"unknown relay request {op}")
        except (wire.RelayError, struct.error, ValueError, IndexError) as exc:
            # A short body (struct.error), a bad UTF-8 topic (ValueError): the
            # request fails, the master goes on.
            return [(wid, wire.err(rid, ErrCode.FAILED, str(exc) or type(exc).__name__))]

    def set_rules(self, rules: list[tuple[str, int, float | None]]) -> None:
        """The app's ``history()`` rules, as the latest worker to start sent them."""
        if rules == self.rules_seen:
            return
        fresh = HistoryRules()
        for pattern, size, ttl in rules:
            fresh.add(pattern, size, ttl)
        self.rules, self.rules_seen = fresh, list(rules)
        self.logs.rules = fresh  # kept logs keep their size; new topics follow the new rules

    def publish(self, wid: int, rid: int, topic: str, payload: bytes) -> list[tuple[int, bytes]]:
        _check(topic)
        offset = self.logs.append(topic, payload)
        self.published += 1
        out: list[tuple[int, bytes]] = []
        workers = self.subs.get(topic)
        if workers:
            packet = wire.deliver(topic, offset, payload)  # encoded once, shared by all
            out = [(worker, packet) for worker in workers]
            self.forwarded += len(out)
        out.append((wid, wire.ack(rid, offset)))  # after its own DELIVER: the same order
        return out

    def subscribe(self, wid: int, topic: str, count: int) -> int | None:
        """``wid`` has ``count`` subscribers of ``topic`` (and wants its messages)."""
        _check(topic)
        self.subs.setdefault(topic, {})[wid] = count
        self.topics_of.setdefault(wid, set()).add(topic)
        return self.logs.head(topic)

    def unsubscribe(self, wid: int, topic: str) -> None:
        workers = self.subs.get(topic)
        if workers is not None:
            workers.pop(wid, None)
            if not workers:
                del self.subs[topic]
        topics = self.topics_of.get(wid)
        if topics is not None:
            topics.discard(topic)

    def remove(self, wid: int) -> None:
        """The worker is gone: none of its subscriptions remain."""
        for topic in self.topics_of.pop(wid, set()):
            workers = self.subs.get(topic)
            if workers is not None:
                workers.pop(wid, None)
                if not workers:
                    del self.subs[topic]

    def subscriptions(self) -> int:
        return sum(sum(workers.values()) for workers in self.subs.values())


def _check(topic: str) -> None:
    if not topic or len(topic) > MAX_TOPIC:
        raise wire.RelayError(f"bad topic of {len(topic)} characters")


class _Peer:
    __slots__ = (
        "wid",
        "sock",
        "reader",
        "out",
        "queued",
        "sent_at",
        "dropping",
        "dropped",
        "writing",
    )

    def __init__(self, wid: int, sock: socket.socket) -> None:
        self.wid, self.sock = wid, sock
        self.reader = wire.FrameReader()
        self.out: deque[memoryview] = deque()
        self.queued = 0  # bytes in ``out``
        self.sent_at = 0.0  # when ``out`` last shrank (or became non-empty)
        self.dropping = False  # over OUT_LIMIT: deliveries dropped until it drains
        self.dropped = 0
        self.writing = False  # registered for EVENT_WRITE


class Relay:
    """The selector component: each worker's relay socket, read and written without blocking."""

    def __init__(
        self, selector: selectors.BaseSelector, epoch: int | None = None, out_limit: int = OUT_LIMIT
    ) -> None:
        self.selector = selector
        self.core = RelayCore(epoch if epoch is not None else random.randrange(1, EPOCH_LIMIT))
        self.peers: dict[int, _Peer] = {}
        self.out_limit = out_limit
        self.dropped = 0

    @staticmethod
    def pair() -> tuple[socket.socket, socket.socket]:
        """(master end, worker end), made before the fork; the master's is non-blocking."""
        master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        master_end.setblocking(False)
        return master_end, worker_end

    def add(self, wid: int, sock: socket.socket) -> None:
        peer = self.peers[wid] = _Peer(wid, sock)
        self.selector.register(sock, selectors.EVENT_READ, lambda mask: self._ready(peer, mask))

    def _ready(self, peer: _Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(peer)
        if mask & selectors.EVENT_READ and self.peers.get(peer.wid) is peer:
            self._read(peer)

    def _read(self, peer: _Peer) -> None:
        if peer.queued > self.out_limit:
            return  # it is not reading our answers: stop taking its requests too
        try:
            data = peer.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.remove(peer.wid)  # exited or killed: its subscriptions go now
            return
        try:
            frames = peer.reader.feed(data)
        except wire.RelayError as exc:
            log.error("worker %d: %s: closing its relay socket", peer.wid, exc)
            self.remove(peer.wid)
            return
        for op, rid, body in frames:
            for wid, packet in self.core.handle(peer.wid, op, rid, body):
                self._queue(wid, packet, op == Op.PUB and packet[4] == Op.DELIVER)
        for other in list(self.peers.values()):
            if other.out and not other.writing:
                self._flush(other)

    def _queue(self, wid: int, packet: bytes, droppable: bool) -> None:
        peer = self.peers.get(wid)
        if peer is None:
            return
        if droppable and (peer.dropping or peer.queued + len(packet) > self.out_limit):
            peer.dropping = True
            peer.dropped += 1
            self.dropped += 1
            return
        if not peer.out:
            peer.sent_at = time.monotonic()
        peer.out.append(memoryview(packet))
        peer.queued += len(packet)

    def _flush(self, peer: _Peer) -> None:
        out = peer.out
        while out:
            try:
                sent = peer.sock.send(out[0])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.remove(peer.wid)
                return
            peer.sent_at = time.monotonic()
            peer.queued -= sent
            if sent == len(out[0]):
                out.popleft()
            else:
                out[0] = out[0][sent:]
                break
        if not out and peer.dropping:
            # Its buffer drained: deliveries resume, and it recovers what it missed.
            log.warning(
                "worker %d fell behind on channel messages: %d deliveries dropped",
                peer.wid,
                peer.dropped,
            )
            peer.dropping, peer.dropped = False, 0
            packet = wire.frame(Op.RESYNC, 0)
            peer.out.append(memoryview(packet))
            peer.queued += len(packet)
            peer.sent_at = time.monotonic()
            self._flush(peer)
            return
        self._want_write(peer, bool(out))

    def _want_write(self, peer: _Peer, want: bool) -> None:
        if want == peer.writing or self.peers.get(peer.wid) is not peer:
            return
        peer.writing = want
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
        self.selector.modify(peer.sock, events, self.selector.get_key(peer.sock).data)

    def stalled(self, now: float, timeout_s: float) -> list[int]:
        """Workers that have taken nothing of their relay buffer for ``timeout_s``."""
        return [
            peer.wid for peer in self.peers.values() if peer.out and now - peer.sent_at > timeout_s
        ]

    def remove(self, wid: int) -> None:
        peer = self.peers.pop(wid, None)
        self.core.remove(wid)
        if peer is None:
            return
        try:
            self.selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        peer.sock.close()

    def close_in_child(self) -> None:
        """In a forked worker: drop the master's ends of every relay socket."""
        for peer in self.peers.values():
            peer.sock.close()
        self.peers.clear()

    def close(self) -> None:
        for wid in list(self.peers):
            self.remove(wid)
