"""What the hub needs from a channel backend, and the in-process one.

Owns: ``ChannelBackend``, the Protocol every backend conforms to (local,
Redis, and the master relay next), ``ChannelSink``, what a backend calls back
into (the worker's hub), and ``LocalBackend``: one process, no network, for
a single worker and for ``app_server.testing``.

A backend moves ``Payload`` objects and offsets; it never touches a
WebSocket. It delivers each topic's messages to the sink in offset order, and
only for topics the hub subscribed.
"""

from __future__ import annotations

import random
import time
from typing import Protocol

from app_server.channels.history import EPOCH_LIMIT, HistoryRules, TopicLogs
from app_server.channels.payload import Payload


class ChannelSink(Protocol):
    """The worker's side of a backend (the hub)."""

    def deliver(self, topic: str, offset: int | None, payload: Payload) -> None:
        """A message of a subscribed topic, called in offset order."""

    def backend_down(self, reason: str) -> None:
        """The backend is unreachable: publishes fail, messages may be missed."""

    def backend_up(self) -> None:
        """The backend is back and every subscribed topic is live again."""

    def local_count(self, topic: str) -> int:
        """Subscribers of ``topic`` in this worker."""


class ChannelBackend(Protocol):
    name: str

    async def start(self, sink: ChannelSink, rules: HistoryRules) -> None:
        """Connect (or get ready); the sink receives messages from now on."""

    async def publish(self, topic: str, payload: Payload) -> int | None:
        """Order and send a message; its offset for history topics, else None.

        Raises ``ChannelUnavailable`` at once while the backend is down.
        """

    async def subscribe(self, topic: str) -> int | None:
        """The first local subscriber of ``topic`` arrived: return once live.

        Returns the topic's current last offset for history topics (None
        otherwise), the position from which nothing will be missed.
        """

    async def unsubscribe(self, topic: str) -> None:
        """The last local subscriber of ``topic`` left."""

    async def count_changed(self, topic: str) -> None:
        """This worker's subscriber count of ``topic`` changed (see sink.local_count)."""

    async def count(self, topic: str) -> int:
        """Subscribers of ``topic`` in every worker and host."""

    async def fetch(self, topic: str, since: int) -> list[tuple[int, Payload]]:
        """Kept messages after ``since``, oldest first; ChannelGap when they are not all kept."""

    async def close(self) -> None:
        """Disconnect; no delivery after it returns."""


def new_epoch() -> int:
    """A random epoch, so a restarted process's offsets never match old ones."""
    return random.randrange(1, EPOCH_LIMIT)


class LocalBackend:
    """Every subscriber is in this process: publish delivers synchronously.

    Publishing assigns the offset and delivers in one step with no await in
    between, so delivery order is offset order. History lives in this
    process and is lost with it (a new process starts a new epoch).
    """

    name = "local"

    def __init__(self) -> None:
        self.sink: ChannelSink | None = None
        self.logs: TopicLogs[Payload] | None = None
        self.topics: set[str] = set()

    async def start(self, sink: ChannelSink, rules: HistoryRules) -> None:
        self.sink = sink
        self.logs = TopicLogs(rules, new_epoch(), time.monotonic)

    def _ready(self) -> tuple[ChannelSink, TopicLogs[Payload]]:
        if self.sink is None or self.logs is None:
            raise RuntimeError("the local channel backend is not started")
        return self.sink, self.logs

    async def publish(self, topic: str, payload: Payload) -> int | None:
        sink, logs = self._ready()
        offset = logs.append(topic, payload)
        if topic in self.topics:
            sink.deliver(topic, offset, payload)
        return offset

    async def subscribe(self, topic: str) -> int | None:
        _, logs = self._ready()
        self.topics.add(topic)
        return logs.head(topic)

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)

    async def count_changed(self, topic: str) -> None:
        return None

    async def count(self, topic: str) -> int:
        sink, _ = self._ready()
        return sink.local_count(topic)

    async def fetch(self, topic: str, since: int) -> list[tuple[int, Payload]]:
        _, logs = self._ready()
        return logs.replay(topic, since)

    async def close(self) -> None:
        self.topics.clear()
        self.sink = None
