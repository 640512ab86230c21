"""``app.channels``: the application's handle on channels.

Owns: ``Channels``, the object an ``App`` owns as ``app.channels``.
``history()`` only records a rule, so it works at import time; ``publish``,
``subscribe`` and ``count`` need the running worker's hub, which the worker
attaches before the app's start hooks run, and raise a clear RuntimeError
before that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app_server.channels.history import HistoryRule, HistoryRules

if TYPE_CHECKING:
    from app_server.channels.hub import ChannelHub
    from app_server.channels.subscription import Subscription


class Channels:
    __slots__ = ("rules", "hub")

    def __init__(self) -> None:
        self.rules = HistoryRules()
        self.hub: ChannelHub | None = None

    def history(self, pattern: str, size: int = 100, ttl: float | None = None) -> HistoryRule:
        """Topics matching ``pattern`` (a glob: ``room:*``) keep their last ``size``
        messages, each for at most ``ttl`` seconds (None: no age limit). The
        first matching rule wins."""
        return self.rules.add(pattern, size, ttl)

    def running_hub(self, what: str) -> ChannelHub:
        hub = self.hub
        if hub is None:
            raise RuntimeError(
                f"app.channels.{what}() needs a running server: call it from a handler, a "
                "background task or a before_server_start hook or later (app.channels.history() "
                "is the only call that works at import time)"
            )
        return hub

    async def publish(self, topic: str, data: Any) -> int | None:
        """Send ``data`` (str, bytes, dict or list) to every subscriber of ``topic``.

        Returns the message's offset when the topic keeps history, else None;
        raises ``ChannelUnavailable`` at once when the backend is down.
        """
        return await self.running_hub("publish").publish(topic, data)

    def subscribe(
        self, topic: str, since: int | None = None, max_queue: int = 1000
    ) -> Subscription:
        """``async with app.channels.subscribe(topic) as sub: async for message in sub``."""
        return self.running_hub("subscribe").subscribe(topic, since, max_queue)

    async def count(self, topic: str) -> int:
        """Subscribers of ``topic`` in every worker and on every host."""
        return await self.running_hub("count").count(topic)

    def attach(self, hub: ChannelHub | None) -> None:
        """The worker hands its hub over at start (None at stop)."""
        self.hub = hub
