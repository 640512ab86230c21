"""Handler-side subscriptions and the messages they yield.

Owns: ``Subscription`` (``async with app.channels.subscribe(topic) as sub:
async for message in sub``), its bounded queue and the place where a loss
surfaces as ``ChannelGap``; ``ChannelMessage`` (``.topic``, ``.data``,
``.offset``); and ``is_newer``, the offset order across epochs that the hub
uses to drop duplicates.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from app_server.channels.history import split_offset
from app_server.channels.payload import Payload
from app_server.exceptions import ChannelGap


class SubscriptionHub(Protocol):
    """What a subscription needs from the hub that feeds it (``ChannelHub``).

    Owned here so the subscription does not import the hub that imports it.
    """

    async def join(self, sub: Subscription) -> None: ...

    def leave(self, sub: Subscription) -> None: ...


def is_newer(offset: int, last: int) -> bool:
    """``offset`` comes after ``last``: higher in the same epoch, or any other epoch."""
    if split_offset(offset)[0] != split_offset(last)[0]:
        return True
    return offset > last


class ChannelMessage:
    """One message as a handler-side subscriber sees it."""

    __slots__ = ("topic", "offset", "_payload")

    def __init__(self, topic: str, offset: int | None, payload: Payload) -> None:
        self.topic = topic
        self.offset = offset
        self._payload = payload

    @property
    def data(self) -> Any:
        """str, bytes, or the dict/list, as it was published."""
        return self._payload.data

    def __repr__(self) -> str:
        return f"ChannelMessage(topic={self.topic!r}, offset={self.offset}, data={self.data!r})"


class Subscription:
    """``async with app.channels.subscribe(topic) as sub: async for message in sub``.

    Messages wait in a bounded queue (``max_queue``). When it is full, or
    when the backend was down and the missed messages cannot be replayed,
    the iteration raises ``ChannelGap`` at the place of the loss; iterating
    again continues with the next messages.
    """

    def __init__(self, hub: SubscriptionHub, topic: str, since: int | None, max_queue: int) -> None:
        self.hub = hub
        self.topic = topic
        self.since = since
        self.max_queue = max_queue
        self.queue: deque[ChannelMessage | ChannelGap] = deque()
        self.last: int | None = None
        self.pending: list[tuple[int | None, Payload]] | None = None
        self.gapped = False
        self.active = False
        self._waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Subscription:
        await self.hub.join(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.active:
            self.hub.leave(self)
        self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChannelMessage:
        queue = self.queue
        while not queue:
            if not self.active:
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        item = queue.popleft()
        if isinstance(item, ChannelMessage):
            return item
        self.gapped = False
        raise item

    def push(self, offset: int | None, payload: Payload) -> bool:
        """Queue a message; False when it was dropped (queue full)."""
        if self.pending is not None:
            self.pending.append((offset, payload))
            return True
        if offset is not None and self.last is not None:
            if not is_newer(offset, self.last):
                return True  # a duplicate of a replayed message
            self.last = None
        if len(self.queue) >= self.max_queue:
            self.lost(offset, "the subscriber's queue is full")
            return False
        self.queue.append(ChannelMessage(self.topic, offset, payload))
        self._wake()
        return True

    def lost(self, since: int | None, reason: str) -> None:
        """Messages were lost here: the iteration raises ChannelGap at this place (once)."""
        if not self.gapped:
            self.gapped = True
            self.queue.append(ChannelGap(self.topic, since, reason))
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
