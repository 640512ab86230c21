"""The worker's side of channels: local subscribers and delivery.

Owns: ``ChannelHub``, one per worker. It keeps each topic's local
subscribers: WebSocket connections, grouped by envelope function so an
envelope is called once per worker per message and its result framed once,
and handler-side ``Subscription`` objects (``channels.subscription``) with
bounded queues. It tells the
backend when a topic gains its first local subscriber or loses its last,
delivers each topic's messages in offset order, replays history for
``since=`` (subscribe live first and buffer, fetch the history, then drop
the live duplicates by offset: no gap, no duplicate), recovers history
topics after a backend outage, and applies the slow-consumer rule: a
connection whose outgoing bytes pass ``WEBSOCKET_MAX_SEND_BUFFER`` with
channel traffic closes itself with 1013, is counted and dropped, and nobody
waits for it.

Counters (published, delivered, dropped, slow closes, gaps, backend
up/down) are plain attributes for a metrics reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from app_server.channels.backend import ChannelBackend
from app_server.channels.history import HistoryRules, check_since
from app_server.channels.payload import Payload
from app_server.channels.subscription import Subscription, is_newer
from app_server.exceptions import ChannelGap, ChannelUnavailable
from app_server.framework.websocket import to_message
from app_server.protocols.websocket.frames import OP_BINARY, OP_TEXT, encode_frame
from app_server.status import CloseCode

log = logging.getLogger("app_server.error")
Envelope = Callable[[str, "int | None", Any], Any]
SENT, SKIPPED, OVERFLOW = 1, 0, -1  # send_channel_frame results
GAP_CLOSE = (CloseCode.TRY_AGAIN_LATER, "channel gap")
MAX_TOPIC_LENGTH = 1024
DEFAULT_QUEUE = 1000


class ChannelConnection(Protocol):
    """What the hub needs from a WebSocket connection (the worker's one conforms)."""

    def send_channel_frame(self, frame: bytes, message: str | bytes) -> int:
        """Write one channel frame: SENT, SKIPPED (closed) or OVERFLOW (closed with 1013)."""

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the connection has closed, whatever the reason."""

    def start_close(self, code: int, reason: str) -> None: ...


def check_topic(topic: object) -> str:
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"a topic must be a non-empty string, got {topic!r}")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise ValueError(f"a topic is at most {MAX_TOPIC_LENGTH} characters, got {len(topic)}")
    return str(topic)


class _Group:
    """The WebSocket subscribers of a topic that share one envelope and send type."""

    __slots__ = ("envelope", "send_type", "members")

    def __init__(self, envelope: Envelope | None, send_type: str | None) -> None:
        self.envelope = envelope
        self.send_type = send_type
        self.members: dict[ChannelConnection, _Member] = {}

    def frame(self, topic: str, offset: int | None, payload: Payload) -> tuple[bytes, str | bytes]:
        if self.envelope is None:
            opcode = OP_TEXT if payload.is_text else OP_BINARY
            return encode_frame(opcode, payload.body), payload.message
        message = to_message(self.envelope(topic, offset, payload.data), self.send_type)
        if isinstance(message, str):
            return encode_frame(OP_TEXT, message.encode()), message
        return encode_frame(OP_BINARY, message), message


class _Member:
    """One WebSocket's subscription to one topic."""

    __slots__ = ("conn", "topic", "group", "last", "pending")

    def __init__(self, conn: ChannelConnection, topic: str, group: _Group) -> None:
        self.conn = conn
        self.topic = topic
        self.group = group
        self.last: int | None = None  # set after a replay: live duplicates are dropped
        self.pending: list[tuple[int | None, Payload]] | None = None  # buffered while replaying


class _Topic:
    __slots__ = ("name", "groups", "handlers", "count", "lock", "live", "last", "recovering")

    def __init__(self, name: str) -> None:
        self.name = name
        self.groups: dict[tuple[Any, str | None], _Group] = {}
        self.handlers: set[Subscription] = set()
        self.count = 0
        self.lock = asyncio.Lock()
        self.live = False
        self.last: int | None = None  # the last offset delivered (history topics)
        self.recovering: list[tuple[int | None, Payload]] | None = None


class ChannelHub:
    """A worker's channel subscribers and their delivery (see the module docstring)."""

    def __init__(self, backend: ChannelBackend, rules: HistoryRules) -> None:
        self.backend = backend
        self.rules = rules
        self.topics: dict[str, _Topic] = {}
        self.members: dict[ChannelConnection, dict[str, _Member]] = {}
        self.up = True
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Counters for metrics (read, never reset).
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.slow_closes = 0
        self.gaps = 0
        self.backend_downs = 0

    @property
    def subscriptions(self) -> int:
        return sum(state.count for state in self.topics.values())

    async def start(self) -> None:
        await self.backend.start(self, self.rules)

    async def close(self) -> None:
        self.closed = True  # from here no new task: leaving below spawns nothing
        for conn in list(self.members):
            self.leave_all(conn)
        for state in list(self.topics.values()):
            for sub in list(state.handlers):
                sub.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.backend.close()

    # -- publishing ----------------------------------------------------------

    async def publish(self, topic: str, data: Any) -> int | None:
        payload = Payload.of(data)
        topic = check_topic(topic)
        if not self.up:
            raise ChannelUnavailable(self.backend.name, "the backend is reconnecting")
        offset = await self.backend.publish(topic, payload)
        self.published += 1
        return offset

    async def count(self, topic: str) -> int:
        return await self.backend.count(check_topic(topic))

    def local_count(self, topic: str) -> int:
        state = self.topics.get(topic)
        return 0 if state is None else state.count

    # -- delivery (called by the backend) --------------------------------------

    def deliver(self, topic: str, offset: int | None, payload: Payload) -> None:
        state = self.topics.get(topic)
        if state is None:
            return
        if state.recovering is not None:
            state.recovering.append((offset, payload))  # after the missed ones (_resume)
            return
        if offset is not None:
            last = state.last
            if last is not None and not is_newer(offset, last):
                return  # already delivered
            state.last = offset
        self._fan_out(state, offset, payload)

    def _fan_out(self, state: _Topic, offset: int | None, payload: Payload) -> None:
        topic = state.name
        for group in state.groups.values():
            framed: tuple[bytes, str | bytes] | None = None
            for member in list(group.members.values()):
                if member.pending is not None:
                    member.pending.append((offset, payload))
                    continue
                if member.last is not None and offset is not None:
                    if not is_newer(offset, member.last):
                        continue
                    member.last = None
                if framed is None:
                    framed = self._frame(group, topic, offset, payload)
                    if framed is None:
                        break
                self._write(member, *framed)
        for sub in state.handlers:
            if sub.push(offset, payload):
                self.delivered += 1
            else:
                self.dropped += 1

    def _frame(
        self, group: _Group, topic: str, offset: int | None, payload: Payload
    ) -> tuple[bytes, str | bytes] | None:
        try:
            return group.frame(topic, offset, payload)
        except Exception:  # noqa: BLE001  an app's envelope failing drops its group's copy only
            log.exception("channel envelope %r failed on topic %r", group.envelope, topic)
            self.dropped += len(group.members)
            return None

    def _write(self, member: _Member, frame: bytes, message: str | bytes) -> None:
        status = member.conn.send_channel_frame(frame, message)
        if status == SENT:
            self.delivered += 1
            return
        self.dropped += 1
        if status == OVERFLOW:
            self.slow_closes += 1
            log.warning(
                "closing a slow WebSocket subscriber of %r with 1013: its send buffer is full",
                member.topic,
            )
        self.leave_all(member.conn)

    # -- WebSocket subscribers -----------------------------------------------------

    async def subscribe_websocket(
        self,
        conn: ChannelConnection,
        topic: str,
        since: int | None = None,
        envelope: Envelope | None = None,
        send_type: str | None = None,
    ) -> None:
        topic = check_topic(topic)
        if since is not None:
            since = check_since(topic, since)
        if envelope is not None and not callable(envelope):
            raise TypeError(f"envelope must be callable(topic, offset, data), got {envelope!r}")
        joined = self.members.get(conn)
        if joined is None:
            joined = self.members[conn] = {}
            conn.on_close(lambda: self.leave_all(conn))
        elif topic in joined:
            self._remove(joined.pop(topic))
        state = self._topic(topic)
        key = (envelope, send_type if envelope is not None else None)
        group = state.groups.get(key)
        if group is None:
            group = state.groups[key] = _Group(envelope, key[1])
        member = _Member(conn, topic, group)
        if since is not None:
            member.pending = []
        group.members[conn] = member
        joined[topic] = member
        state.count += 1
        try:
            await self._go_live(state)
            if since is not None:
                await self._replay_member(member, state, since)
        except BaseException:
            if joined.get(topic) is member:
                del joined[topic]
                self._remove(member)
            raise

    async def unsubscribe_websocket(self, conn: ChannelConnection, topic: str) -> None:
        joined = self.members.get(conn)
        if joined is not None and topic in joined:
            self._remove(joined.pop(topic))

    def leave_all(self, conn: ChannelConnection) -> None:
        """The connection closed (or is dropped): it leaves every topic."""
        joined = self.members.pop(conn, None)
        if joined:
            for member in joined.values():
                self._remove(member)

    def _remove(self, member: _Member) -> None:
        state = self.topics.get(member.topic)
        group = member.group
        if group.members.get(member.conn) is not member:
            return
        del group.members[member.conn]
        if state is None:
            return
        if not group.members:
            state.groups.pop((group.envelope, group.send_type), None)
        state.count -= 1
        self._count_changed(state)

    async def _replay_member(self, member: _Member, state: _Topic, since: int) -> None:
        missed = await self.backend.fetch(state.name, since)
        last = since
        group = member.group
        pending = member.pending or []
        member.pending = None
        for offset, payload in [*missed, *pending]:
            if offset is not None:
                if not is_newer(offset, last):
                    continue
                last = offset
            framed = self._frame(group, state.name, offset, payload)
            if framed is not None:
                self._write(member, *framed)
            if group.members.get(member.conn) is not member:
                return  # closed (slow, or by the peer) during the replay
        member.last = last

    # -- handler-side subscribers ----------------------------------------------------

    def subscribe(
        self, topic: str, since: int | None = None, max_queue: int = DEFAULT_QUEUE
    ) -> Subscription:
        topic = check_topic(topic)
        if since is not None:
            since = check_since(topic, since)
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a positive integer, got {max_queue!r}")
        return Subscription(self, topic, since, max_queue)

    async def join(self, sub: Subscription) -> None:
        if sub.active:
            raise RuntimeError(f"the subscription to {sub.topic!r} is already active")
        state = self._topic(sub.topic)
        sub.active = True
        if sub.since is not None:
            sub.pending = []
        state.handlers.add(sub)
        state.count += 1
        try:
            await self._go_live(state)
            if sub.since is not None:
                missed = await self.backend.fetch(sub.topic, sub.since)
                pending, sub.pending = sub.pending or [], None
                last = sub.since
                for offset, payload in [*missed, *pending]:
                    if offset is not None:
                        if not is_newer(offset, last):
                            continue
                        last = offset
                    sub.push(offset, payload)
                sub.last = last
        except BaseException:
            self.leave(sub)
            raise

    def leave(self, sub: Subscription) -> None:
        if not sub.active:
            return
        sub.active = False
        state = self.topics.get(sub.topic)
        if state is not None and sub in state.handlers:
            state.handlers.discard(sub)
            state.count -= 1
            self._count_changed(state)

    # -- topic life ------------------------------------------------------------------

    def _topic(self, topic: str) -> _Topic:
        state = self.topics.get(topic)
        if state is None:
            state = self.topics[topic] = _Topic(topic)
        return state

    async def _go_live(self, state: _Topic) -> None:
        """Return once the backend delivers the topic here and counts this subscriber."""
        async with state.lock:
            if not state.live:
                head = await self.backend.subscribe(state.name)
                state.live = True
                if head is not None and state.last is None:
                    state.last = head
            await self.backend.count_changed(state.name)

    def _count_changed(self, state: _Topic) -> None:
        self._spawn(self._settle(state))

    async def _settle(self, state: _Topic) -> None:
        """Report the new count; unsubscribe the backend when nobody is left."""
        async with state.lock:
            try:
                await self.backend.count_changed(state.name)
                if state.count == 0 and state.live:
                    await self.backend.unsubscribe(state.name)
                    state.live = False
            except ChannelUnavailable:
                pass  # the backend forgets this worker's topics when it reconnects
            if state.count == 0 and not state.live and self.topics.get(state.name) is state:
                del self.topics[state.name]

    def _spawn(self, coro: Any) -> None:
        if self.closed:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- backend faults ---------------------------------------------------------------

    def backend_down(self, reason: str) -> None:
        if not self.up:
            return
        self.up = False
        self.backend_downs += 1
        log.warning("channel backend %s is down (%s): reconnecting", self.backend.name, reason)
        for state in self.topics.values():
            if state.recovering is None:
                state.recovering = []

    def backend_up(self) -> None:
        if self.up:
            return
        self.up = True
        log.warning("channel backend %s is back: recovering subscriptions", self.backend.name)
        self._spawn(self._recover())

    async def _recover(self) -> None:
        lost: list[str] = []
        for state in list(self.topics.values()):
            if state.recovering is None:
                continue
            if state.last is None or self.rules.for_topic(state.name) is None:
                lost.append(state.name)
                self._gap(state, None, "the channel backend was down", close_websockets=False)
            else:
                try:
                    missed = await self.backend.fetch(state.name, state.last)
                except ChannelUnavailable:
                    return  # down again: the next backend_up retries
                except ChannelGap as exc:
                    lost.append(state.name)
                    self._gap(state, exc.since, exc.reason, close_websockets=True)
                    missed = []
                self._resume(state, missed)
                continue
            self._resume(state, [])
        if lost:
            self.gaps += len(lost)
            log.warning(
                "channel messages may have been lost while the backend was down on %d topic(s): %s",
                len(lost),
                ", ".join(sorted(lost)[:10]),
            )

    def _gap(self, state: _Topic, since: int | None, reason: str, close_websockets: bool) -> None:
        state.last = None
        for sub in state.handlers:
            sub.lost(since, reason)
        if close_websockets:
            # A live WebSocket cannot be told about the gap in-band: it is
            # closed so that the client reconnects with its last offset and
            # the app, seeing ChannelGap, sends a full state.
            for group in list(state.groups.values()):
                for member in list(group.members.values()):
                    member.conn.start_close(*GAP_CLOSE)
                    self.leave_all(member.conn)

    def _resume(self, state: _Topic, missed: list[tuple[int, Payload]]) -> None:
        buffered = state.recovering or []
        state.recovering = None
        for offset, payload in [*missed, *buffered]:
            if offset is not None and state.last is not None and not is_newer(offset, state.last):
                continue
            if offset is not None:
                state.last = offset
            self._fan_out(state, offset, payload)
