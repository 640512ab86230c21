"""The master channel backend, worker side: publish and subscribe through the master.

Owns: ``MasterBackend``, a ``ChannelBackend`` over the relay socket the
master made for this worker at spawn (``control.relay`` is the protocol,
``master.relay`` the other side). Every request carries an id and is
answered in order on the same stream: publish returns once the master has
ordered the message (its offset, or None), and this worker's own
subscribers get the message from the master's DELIVER like every other
worker's, never locally first, so they see the master's order. History
lives in the master, so offsets and epochs survive this worker's
replacement.

There is nothing to reconnect to: the socket is the master's, made before
the fork. If it is gone the master is gone (and this worker will be
stopped); every request then raises ``ChannelUnavailable`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from app_server.channels.backend import ChannelSink
from app_server.channels.history import HistoryRules
from app_server.channels.payload import Payload
from app_server.control import relay as wire
from app_server.control.relay import ErrCode, Op
from app_server.exceptions import ChannelGap, ChannelUnavailable

log = logging.getLogger("app_server.error")
_Answer = tuple[int, bytes]  # (op, body)


class MasterBackend:
    name = "master"

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sink: ChannelSink | None = None
        self.topics: set[str] = set()
        self.pending: dict[int, asyncio.Future[_Answer]] = {}
        self.next_rid = 0
        self.connected = False
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def start(self, sink: ChannelSink, rules: HistoryRules) -> None:
        self.sink = sink
        self.sock.setblocking(False)
        # A WebSocket message (and a replay) may be far larger than the
        # StreamReader's default 64 KiB line limit; frames are read by length.
        reader, writer = await asyncio.open_unix_connection(sock=self.sock, limit=1 << 20)
        self._writer = writer
        self.connected = True
        writer.write(wire.hello((r.pattern, r.size, r.ttl_s) for r in rules.rules))
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        head = wire.HEADER
        try:
            while True:
                length, op, rid = head.unpack(await reader.readexactly(head.size))
                body = await reader.readexactly(length - (head.size - wire.LENGTH.size))
                if op == Op.DELIVER:
                    topic, offset, raw = wire.parse_deliver(body)
                    if self.sink is not None:
                        self.sink.deliver(topic, offset, Payload.from_wire(raw))
                elif op == Op.RESYNC:
                    # The master dropped deliveries while we were behind: recover
                    # history topics from their last offsets, gap for the others.
                    if self.sink is not None:
                        self.sink.backend_down("this worker fell behind the master's relay")
                        self.sink.backend_up()
                else:
                    waiter = self.pending.pop(rid, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result((op, body))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except (ValueError, wire.RelayError) as exc:
            log.error("bad frame on the channel relay: %s", exc)
        self._lost("the master's relay socket closed")

    def _lost(self, reason: str) -> None:
        if not self.connected:
            return
        self.connected = False
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(ChannelUnavailable(self.name, reason))
        if self.sink is not None:
            self.sink.backend_down(reason)

    def _rid(self) -> int:
        self.next_rid = self.next_rid % 0xFFFFFFFF + 1
        return self.next_rid

    def _writer_or_fail(self) -> asyncio.StreamWriter:
        writer = self._writer
        if not self.connected or writer is None or writer.is_closing():
            raise ChannelUnavailable(self.name, "the master's relay socket is closed")
        return writer

    async def _ask(self, rid: int, packet: bytes) -> _Answer:
        writer = self._writer_or_fail()
        waiter: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self.pending[rid] = waiter
        writer.write(packet)
        try:
            await writer.drain()  # waits only past the transport's high-water mark
        except (ConnectionError, OSError) as exc:
            self.pending.pop(rid, None)
            self._lost(str(exc))
            raise ChannelUnavailable(self.name, str(exc)) from exc
        try:
            return await waiter
        finally:
            self.pending.pop(rid, None)

    def _value(self, topic: str, answer: _Answer, since: int = 0) -> int | None:
        op, body = answer
        if op == Op.ACK:
            return wire.parse_ack(body)
        if op == Op.ERR:
            code, reason = wire.parse_err(body)
            if code is ErrCode.GAP:
                raise ChannelGap(topic, since, reason)
            raise ChannelUnavailable(self.name, f"the master refused: {reason}")
        raise ChannelUnavailable(self.name, f"unexpected relay answer {op}")

    # -- the backend contract -----------------------------------------------------------

    async def publish(self, topic: str, payload: Payload) -> int | None:
        rid = self._rid()
        return self._value(topic, await self._ask(rid, wire.pub(rid, topic, payload.to_wire())))

    async def subscribe(self, topic: str) -> int | None:
        self.topics.add(topic)
        return await self._sub(topic)

    async def _sub(self, topic: str) -> int | None:
        count = self.sink.local_count(topic) if self.sink is not None else 0
        rid = self._rid()
        return self._value(topic, await self._ask(rid, wire.sub(rid, topic, count)))

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)
        if self.connected and self._writer is not None:
            self._writer.write(wire.topic_only(Op.UNSUB, 0, topic))

    async def count_changed(self, topic: str) -> None:
        if topic in self.topics:
            await self._sub(topic)  # acked: a count() anywhere after this includes it

    async def count(self, topic: str) -> int:
        rid = self._rid()
        value = self._value(topic, await self._ask(rid, wire.topic_only(Op.COUNT, rid, topic)))
        return value or 0

    async def fetch(self, topic: str, since: int) -> list[tuple[int, Payload]]:
        rid = self._rid()
        op, body = await self._ask(rid, wire.fetch(rid, topic, since))
        if op == Op.REPLAY:
            return [(offset, Payload.from_wire(raw)) for offset, raw in wire.parse_replay(body)]
        self._value(topic, (op, body), since)
        return []

    async def close(self) -> None:
        self.sink = None
        self.connected = False
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
        for waiter in self.pending.values():
            if not waiter.done():
                waiter.set_exception(ChannelUnavailable(self.name, "closed"))
        self.pending.clear()
