"""The closing side of a WebSocket connection: a ``Lifecycle`` step, carried out.

Owns: ``Closing``, the part of ``WebSocketConnection`` through which every
close path goes (the handler's ``close``, a drain, a slow consumer, the
peer's Close, a protocol failure, a deadline, the transport's loss, an
abort). Each asks the sans-IO ``Lifecycle`` for a transition and ``_step``
carries out the ``Step`` it returns: the Close frame (once), the socket
(linger, close or abort), the deadline, and, once, the end (``_finished``:
waiters, channels, metrics, --max-requests).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from app_server.exceptions import WebSocketClosed
from app_server.protocols.websocket.lifecycle import (
    Deadline,
    Event,
    Lifecycle,
    Phase,
    Step,
    Transport,
)
from app_server.protocols.websocket.session import Session
from app_server.status import CloseCode

if TYPE_CHECKING:
    from app_server.settings.model import WebSocketLimits
    from app_server.workers.state import ServerState

INF = float("inf")
OPEN = Phase.OPEN
# After a protocol failure, how long the peer may take to close once our
# Close is out and our write side is shut (capped by the closing timeout).
LINGER_S = 2.0


class Closing:
    """Mixed into ``WebSocketConnection``, which holds the attributes below."""

    # No instance layout of its own (the connection's __slots__ hold the
    # state), hidden from mypy, whose slots check would refuse the
    # assignments to attributes the connection declares.
    if not TYPE_CHECKING:
        __slots__ = ()

    if TYPE_CHECKING:
        lifecycle: Lifecycle
        session: Session | None
        state: ServerState
        limits: WebSocketLimits
        loop: asyncio.AbstractEventLoop
        transport: Any
        out: list[bytes] | None
        reading_paused: bool
        closed_waiter: asyncio.Future[None]
        pings: dict[bytes, tuple[asyncio.Future[float] | None, float]]
        next_ping_at: float
        pong_deadline: float
        close_deadline: float
        deadline: float
        route_label: str
        received: int
        sent: int

        def _write(self, data: bytes) -> None: ...

        def _wake_receiver(self) -> None: ...

        def _rearm(self) -> None: ...

    def on_drain(self, code: int, reason: str) -> None:
        """The worker is draining: say goodbye (1001 or 1012) once."""
        if self.lifecycle.phase is OPEN:
            self.start_close(code, reason)

    # -- closing: every path is a transition, carried out by _step ----------

    def start_close(self, code: int, reason: str) -> None:
        """Send our Close frame (once) and arm the closing-handshake deadline."""
        self._step(self.lifecycle.transition(Event.CLOSE, code, reason))

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and wait for it to finish (bounded by the timeout)."""
        if not self.lifecycle.accepted:
            return
        self.start_close(code, reason)
        await asyncio.shield(self.closed_waiter)

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed_waiter)

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol (or stopped answering): Close with ``code``, then TCP.

        Messages already queued, including those decoded from the same read
        just before the error, stay for the application to ``receive``; the
        close shows once they are taken (RFC 6455 §7.1.7 fails the connection,
        it does not take back what was delivered).
        """
        self._step(self.lifecycle.transition(Event.FAIL, code, reason))

    def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        self._step(self.lifecycle.transition(Event.ABORT))

    def _step(self, step: Step) -> None:
        """Carry out what a transition asks: the Close frame, the socket, the deadline, the end."""
        send = step.send_close
        if send is not None and self.session is not None:
            self._write(self.session.encode_close(*send))
        transport = step.transport
        if transport is Transport.LINGER:
            self._wake_receiver()
            if not self._linger():
                # The write side cannot be shut on its own: the linger is over at once.
                step = self.lifecycle.transition(Event.DEADLINE)
                transport = step.transport
        if transport is Transport.CLOSE:
            if self.out and not self.transport.is_closing():
                self._write(b"")  # corked frames go out before the FIN
            self.transport.close()
        elif transport is Transport.ABORT:
            self.transport.abort()
        deadline = step.deadline
        if deadline is not Deadline.NONE:
            timeout = self.limits.timeout_s
            if deadline is Deadline.LINGER:
                timeout = min(timeout, LINGER_S)
            self.close_deadline = self.loop.time() + timeout
            self.next_ping_at = self.pong_deadline = INF
            self._rearm()
        if step.finished:
            self._finished()

    def _linger(self) -> bool:
        """Shut our write side and read on (discarding) until the peer closes too.

        Closing with unread input would reset the connection and could
        destroy the Close frame just written (RFC 6455 §7.1.1).
        """
        transport = self.transport
        if not transport.can_write_eof():
            return False
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            return False
        if self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
        return True

    def _finished(self) -> None:
        """The connection is over (once): wake everyone waiting, record, count."""
        lifecycle = self.lifecycle
        code = lifecycle.code or CloseCode.ABNORMAL_CLOSURE
        if self.session is not None:  # it was accepted (not aborted during its handshake)
            recorder = self.state.recorder
            if recorder is not None:
                recorder.websocket_closed(self.route_label, code, self.received, self.sent)
            # A WebSocket counts toward --max-requests when it closes (SPEC §5):
            # counted at the upgrade, a worker would ask to be recycled while
            # its long-lived connections had only just begun.
            self.state.count_served()
        self.deadline = self.close_deadline = INF
        self._wake_receiver()
        for waiter, _ in list(self.pings.values()):
            if waiter is not None and not waiter.done():
                waiter.set_exception(WebSocketClosed(code, lifecycle.reason))
                waiter.exception()  # retrieved: nobody may be awaiting it
        self.pings.clear()
        if not self.closed_waiter.done():
            self.closed_waiter.set_result(None)  # on_close callbacks: leave the channels
