"""Pings, pongs and the timers of a WebSocket connection.

Owns: ``Keepalive``, the part of ``WebSocketConnection`` that sends pings
(the application's, with a round-trip-time waiter, and the keepalive ones),
matches pongs to them (a pong acknowledges its ping and every earlier one),
and, called by the worker's ticker, fires the earliest of the keepalive
ping, the pong deadline (a 1011 failure) and the closing deadline (a
``DEADLINE`` event for the ``Lifecycle``).
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from app_server.protocols.websocket.lifecycle import Event, Lifecycle, Phase, Step
from app_server.protocols.websocket.session import Session
from app_server.status import CloseCode

if TYPE_CHECKING:
    import asyncio

    from app_server.settings.model import WebSocketLimits
    from app_server.workers.state import ServerState

INF = float("inf")
OPEN = Phase.OPEN
_PING_PAYLOAD = struct.Struct("!Q")


class Keepalive:
    """Mixed into ``WebSocketConnection``, which holds the attributes below."""

    # No instance layout of its own (the connection's __slots__ hold the
    # state), hidden from mypy, whose slots check would refuse the
    # assignments to attributes the connection declares.
    if not TYPE_CHECKING:
        __slots__ = ()

    if TYPE_CHECKING:
        lifecycle: Lifecycle
        state: ServerState
        limits: WebSocketLimits
        loop: asyncio.AbstractEventLoop
        pings: dict[bytes, tuple[asyncio.Future[float] | None, float]]
        ping_count: int
        next_ping_at: float
        pong_deadline: float
        close_deadline: float
        deadline: float

        def check_open(self) -> None: ...

        def _write(self, data: bytes) -> None: ...

        def _step(self, step: Step) -> None: ...

        def _fail(self, code: int, reason: str) -> None: ...

    # -- ping / pong -------------------------------------------------------

    def ping(self, payload: bytes = b"") -> asyncio.Future[float]:
        """Send a ping; the future resolves to the round-trip time in seconds."""
        self.check_open()
        if not payload or payload in self.pings:
            self.ping_count += 1
            payload = payload + _PING_PAYLOAD.pack(self.ping_count)
        waiter: asyncio.Future[float] = self.loop.create_future()
        self.pings[payload] = (waiter, time.perf_counter())
        self._write(Session.encode_ping(payload))
        return waiter

    def pong(self, payload: bytes = b"") -> None:
        self.check_open()
        self._write(Session.encode_pong(payload))

    def _on_pong(self, payload: bytes) -> None:
        if payload not in self.pings:
            return  # unsolicited pong: allowed, ignored
        now = time.perf_counter()
        # A pong acknowledges its ping and every ping sent before it.
        for key in list(self.pings):
            waiter, sent = self.pings.pop(key)
            if waiter is None:
                self.pong_deadline = INF
            elif not waiter.done():
                waiter.set_result(now - sent)
            if key == payload:
                recorder = self.state.recorder
                if recorder is not None:
                    recorder.ping_answered(now - sent)
                break
        self._rearm()

    def _keepalive(self, now: float) -> None:
        self.ping_count += 1
        payload = _PING_PAYLOAD.pack(self.ping_count)
        self.pings[payload] = (None, time.perf_counter())
        self._write(Session.encode_ping(payload))
        self.next_ping_at = now + (self.limits.ping_interval_s or INF)
        if self.limits.ping_timeout_s and self.pong_deadline == INF:
            self.pong_deadline = now + self.limits.ping_timeout_s

    # -- deadlines (called by the worker's ticker) ------------------------

    def _rearm(self) -> None:
        self.deadline = min(self.next_ping_at, self.pong_deadline, self.close_deadline)

    def check_deadline(self, now: float) -> None:
        if now < self.deadline:
            return
        if now >= self.close_deadline:
            self._step(self.lifecycle.transition(Event.DEADLINE))
            return
        if now >= self.pong_deadline:
            self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        if now >= self.next_ping_at and self.lifecycle.phase is OPEN:
            self._keepalive(now)
        self._rearm()
