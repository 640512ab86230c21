"""A WebSocket connection in the worker: the socket after the handshake.

Owns: ``WebSocketConnection``, the channel the framework's ``WebSocket``
drives. Before the handshake completes it rides on the HTTP connection that
received the upgrade (``accept`` writes the 101 and takes the transport
over; ``reject`` hands an HTTP response back). After it, it is the
transport's protocol: it feeds bytes to the sans-IO ``Session``, queues
whole messages (at most ``max_queue``; reading pauses beyond that), answers
pings, sends keepalive pings and enforces the pong, handshake and closing
deadlines through the worker's ticker (``check_deadline``), and makes
``send`` wait while the transport's write buffer is above its high-water
mark, so neither a fast sender nor a slow reader can grow memory without
bound.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app_server.exceptions import WebSocketClosed
from app_server.protocols.websocket.frames import OP_BINARY, OP_TEXT, encode_frame
from app_server.protocols.websocket.lifecycle import (
    Deadline,
    Event,
    Lifecycle,
    Phase,
    Step,
    Transport,
)
from app_server.protocols.websocket.handshake import (
    Offer,
    accept_response,
    negotiate_deflate,
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
from app_server.status import CloseCode

if TYPE_CHECKING:
    from app_server.settings.model import WebSocketLimits
    from app_server.workers.state import ServerState

error_log = logging.getLogger("app_server.error")
INF = float("inf")
OPEN, CLOSE_SENT = Phase.OPEN, Phase.CLOSE_SENT
LINGER_S = 2.0
CORK_BYTES = 65536  # broadcast frames held per connection before writing anyway
_PING_PAYLOAD = struct.Struct("!Q")


class WebSocketConnection(asyncio.Protocol):
    __slots__ = (
        "http",
        "state",
        "limits",
        "loop",
        "transport",
        "offer",
        "request",
        "session",
        "lifecycle",
        "subprotocol",
        "queue",
        "max_queue",
        "reading_paused",
        "recv_waiter",
        "write_paused",
        "drain_waiters",
        "pings",
        "ping_count",
        "next_ping_at",
        "pong_deadline",
        "close_deadline",
        "deadline",
        "closed_waiter",
        "task",
        "out",
        "out_size",
        "route_label",
        "received",
        "sent",
        "__weakref__",
    )

    def __init__(
        self, http: Any, state: ServerState, offer: Offer | None, request: Any,
        route_label: str = "",
    ) -> None:
        self.http = http
        self.state = state
        self.limits: WebSocketLimits = state.ws_limits
        self.loop = asyncio.get_running_loop()
        self.transport: Any = http.transport
        self.offer = offer
        self.request = request
        self.session: Session | None = None
        # The one state of this connection: every close path goes through
        # _step(self.lifecycle.transition(...)).
        self.lifecycle = Lifecycle()
        self.subprotocol: str | None = None
        # A short list: it never holds more than max_queue messages, and a
        # list costs far less memory per idle connection than a deque.
        self.queue: list[Any] = []
        self.max_queue = max(1, self.limits.max_queue)
        self.reading_paused = False
        self.recv_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future[None]] = []
        # ping payload -> (waiter, time sent); insertion order is sending order
        self.pings: dict[bytes, tuple[asyncio.Future[float] | None, float]] = {}
        self.ping_count = 0
        self.next_ping_at = INF
        self.pong_deadline = INF
        self.close_deadline = INF
        self.deadline = INF
        self.closed_waiter: asyncio.Future[None] = self.loop.create_future()
        self.task: asyncio.Task[None] | None = None
        # Broadcast frames waiting for this loop pass to end (see write_frame).
        self.out: list[bytes] | None = None
        self.out_size = 0
        # Metrics: messages are counted here and folded into the recorder at close.
        self.route_label = route_label
        self.received = 0
        self.sent = 0

    # -- state views (the framework's WebSocket reads these) ----------------

    @property
    def accepted(self) -> bool:
        return self.lifecycle.accepted

    @property
    def rejected(self) -> bool:
        return self.lifecycle.rejected

    # -- handshake ---------------------------------------------------------

    def accept(self, subprotocol: str | None, headers: Any = ()) -> None:
        if self.offer is None:
            raise RuntimeError("this request cannot be accepted as a WebSocket")
        self.lifecycle.transition(Event.ACCEPT)
        limits = self.limits
        deflate = None
        extension_header = None
        if limits.compression == "permessage-deflate" and self.offer.extensions:
            negotiated = negotiate_deflate(self.offer.extensions, limits.max_size)
            if negotiated is not None:
                deflate, extension_header = negotiated
        self.subprotocol = subprotocol
        self.session = Session(limits.max_size, deflate)
        transport = self.transport
        transport.write(
            accept_response(self.offer.key, subprotocol, extension_header, _pairs(headers))
        )
        trailing = self.http.upgrade_done(self)
        self.http = None  # the HTTP side is done with; let it be freed
        self.state.connections.add(self)
        recorder = self.state.recorder
        if recorder is not None:
            recorder.websocket_opened(self.route_label)
        transport.set_protocol(self)
        now = self.loop.time()
        if limits.ping_interval_s:
            self.next_ping_at = now + limits.ping_interval_s
        self._rearm()
        if trailing:
            self.data_received(trailing)
        if not self.reading_paused and self.lifecycle.phase is not Phase.CLOSED:
            transport.resume_reading()

    def reject(self, response: Any) -> None:
        self.lifecycle.transition(Event.REJECT)
        self.http.reject_upgrade(response)
        if not self.closed_waiter.done():
            self.closed_waiter.set_result(None)

    # -- asyncio.Protocol --------------------------------------------------

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None or self.lifecycle.phase is Phase.CLOSED:
            return
        events = session.receive(data, self.max_queue - len(self.queue))
        if events:
            self._handle(events)
        # Stop reading while the app's queue is full, or while our answers
        # (pongs) are not being read: a flooding peer gets TCP backpressure.
        if (session.pending or self.write_paused) and not self.reading_paused:
            if self.lifecycle.phase is not Phase.CLOSED:
                self.reading_paused = True
                self.transport.pause_reading()
        if self.queue:
            self._wake_receiver()

    def _handle(self, events: list[Any]) -> None:
        session: Session = self.session  # type: ignore[assignment]  # set by accept
        lifecycle = self.lifecycle
        for kind, value in events:
            if kind is TEXT or kind is BYTES:
                # After our Close the peer may still send what it sent before its own.
                phase = lifecycle.phase
                if phase is OPEN or phase is CLOSE_SENT:
                    self.queue.append(value)
                    self.received += 1
            elif kind is PING:
                if lifecycle.phase is OPEN:
                    self._write(session.encode_pong(value))
            elif kind is PONG:
                self._on_pong(value)
            elif kind is CLOSE:
                self._step(lifecycle.transition(Event.PEER_CLOSE, *value))
            elif kind is FAIL:
                self._fail(*value)

    def eof_received(self) -> bool | None:
        self._step(self.lifecycle.transition(Event.LOST))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._step(self.lifecycle.transition(Event.LOST))
        for waiter in self.drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.drain_waiters.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume_reading()
        waiters, self.drain_waiters = self.drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- receiving ---------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next message; raises ``WebSocketClosed`` once the peer's close is known."""
        queue = self.queue
        while not queue:
            lifecycle = self.lifecycle
            if lifecycle.code is not None:
                raise WebSocketClosed(lifecycle.code, lifecycle.reason)
            waiter = self.loop.create_future()
            self.recv_waiter = waiter
            try:
                await waiter
            finally:
                self.recv_waiter = None
        message = queue.pop(0)
        if self.reading_paused:
            self._maybe_resume_reading()
        return message

    def _maybe_resume_reading(self) -> None:
        """Room in the queue and the write buffer drained: parse what waits, then read."""
        session = self.session
        if (
            not self.reading_paused
            or self.lifecycle.phase is Phase.CLOSED
            or self.write_paused
            or session is None
        ):
            return
        if session.pending:
            events = session.receive(b"", self.max_queue - len(self.queue))
            if events:
                self._handle(events)
            if session.pending or self.lifecycle.phase is Phase.CLOSED:
                return
        self.reading_paused = False
        self.transport.resume_reading()

    def _wake_receiver(self) -> None:
        waiter = self.recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- sending -----------------------------------------------------------

    def encode(self, data: str | bytes) -> bytes:
        """Frame bytes for one message on this connection."""
        session = self.session
        if session is not None and session.deflate is not None:
            return session.encode_message(data)
        if data.__class__ is str:
            return encode_frame(OP_TEXT, data.encode())  # type: ignore[union-attr]  # str here
        return encode_frame(OP_BINARY, bytes(data))  # type: ignore[arg-type]  # bytes here

    def check_open(self) -> None:
        """Raise unless messages may be sent: ``WebSocketClosed`` once a close is known."""
        if self.lifecycle.phase is not OPEN:
            seen = self.lifecycle.close_seen()
            if seen is not None:
                raise WebSocketClosed(*seen)
            raise RuntimeError("the WebSocket is not accepted yet")

    async def send(self, data: str | bytes) -> None:
        if self.lifecycle.phase is not OPEN:
            self.check_open()
        self._write(self.encode(data))
        self.sent += 1
        if self.write_paused:
            await self.drained()

    def send_shared(self, frame: bytes, message: str | bytes) -> bool:
        """Write a frame encoded once for many connections (broadcast); False when closed.

        ``frame`` is ``message`` framed without compression; a connection
        that negotiated compression encodes ``message`` itself.
        """
        if self.lifecycle.phase is not OPEN:
            return False
        session: Session = self.session  # type: ignore[assignment]  # OPEN: accepted
        if session.deflate is not None:
            frame = session.encode_message(message)
        return self.write_frame(frame)

    def write_frame(self, frame: bytes) -> bool:
        """Queue pre-encoded frame bytes if the connection is open (broadcast).

        Frames broadcast during one pass of the event loop are corked per
        connection and written with one ``transport.write`` at the end of the
        pass (``_flush_corked``): a fan-out of k messages to n connections
        costs n system calls instead of k * n. At most ``CORK_BYTES`` wait;
        beyond that the frames go out at once, so the transport's high-water
        mark (and the slow-reader pacing built on it) still sees them. Every
        other write on the connection flushes the cork first, keeping order.
        """
        if self.lifecycle.phase is not OPEN:
            return False
        self.sent += 1
        out = self.out
        if out is None:
            self.out = [frame]
            self.out_size = len(frame)
            corked = self.state.corked
            if not corked:
                self.loop.call_soon(_flush_corked, corked)
            corked.append(self)
        else:
            out.append(frame)
            self.out_size += len(frame)
            if self.out_size > CORK_BYTES:
                self.flush()
        return True

    def send_channel_frame(self, frame: bytes, message: str | bytes) -> int:
        """Write a channel message's frame: 1 written, 0 closed, -1 too slow.

        A connection whose outgoing bytes (transport buffer plus corked
        frames) would pass ``max_send_buffer`` is closed with 1013 (Try Again
        Later, SPEC §9) instead: the publisher and the other subscribers
        never wait for it, and its memory stays bounded. The Close frame
        queues behind what is buffered, so a client that reads on sees it.
        """
        if self.lifecycle.phase is not OPEN:
            return 0
        session: Session = self.session  # type: ignore[assignment]  # OPEN: accepted
        if session.deflate is not None:
            frame = session.encode_message(message)
        pending = self.out_size if self.out else 0
        if (
            self.transport.get_write_buffer_size() + pending + len(frame)
            > self.limits.max_send_buffer
        ):
            self.start_close(CloseCode.TRY_AGAIN_LATER, "slow consumer")
            return -1
        self.write_frame(frame)
        return 1

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the connection is closed, whatever the reason."""
        self.closed_waiter.add_done_callback(lambda _: callback())

    def _write(self, data: bytes) -> None:
        """Every write but a broadcast's: corked frames go first, keeping order."""
        out = self.out
        if out:
            self.out = []
            self.out_size = 0
            data = b"".join(out) + data if data else b"".join(out)
        self.transport.write(data)

    def flush(self) -> None:
        """Write the corked frames now (the connection stays on the flush list)."""
        out = self.out
        if out:
            if self.lifecycle.phase is Phase.CLOSED:
                self.out = []  # the socket is closed: nothing more goes out
                self.out_size = 0
            else:
                self._write(b"")

    async def drained(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        if not self.write_paused:
            return
        lifecycle = self.lifecycle
        if lifecycle.phase is Phase.CLOSED:
            raise WebSocketClosed(lifecycle.code or CloseCode.ABNORMAL_CLOSURE, lifecycle.reason)
        waiter = self.loop.create_future()
        self.drain_waiters.append(waiter)
        await waiter
        if lifecycle.phase is Phase.CLOSED and self.write_paused:
            raise WebSocketClosed(lifecycle.code or CloseCode.ABNORMAL_CLOSURE, lifecycle.reason)

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
                    recorder.ping_rtt.observe(now - sent)
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


def _flush_corked(corked: list[WebSocketConnection]) -> None:
    """End of the loop pass: write every corked connection's frames at once."""
    conns = corked[:]
    corked.clear()
    for conn in conns:
        conn.flush()
        conn.out = None  # off the list: the next broadcast puts it back


def _pairs(headers: Any) -> list[tuple[str, str]]:
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), str(v)) for k, v in items]
