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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app_server.exceptions import WebSocketClosed
from app_server.protocols.websocket.frames import OP_BINARY, OP_TEXT, encode_frame
from app_server.protocols.websocket.handshake import (
    Offer,
    accept_response,
    negotiate_deflate,
)
from app_server.protocols.websocket.lifecycle import (
    Event,
    Lifecycle,
    Phase,
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
from app_server.workers.flow_control import FlowControl
from app_server.workers.ws_closing import Closing
from app_server.workers.ws_fanout import FanOut
from app_server.workers.ws_keepalive import Keepalive

if TYPE_CHECKING:
    from app_server.settings.model import WebSocketLimits
    from app_server.workers.state import ServerState

error_log = logging.getLogger("app_server.error")
INF = float("inf")
OPEN, CLOSE_SENT = Phase.OPEN, Phase.CLOSE_SENT


class WebSocketConnection(Closing, Keepalive, FanOut, asyncio.Protocol):
    """One WebSocket connection; its closing, keepalive and fan-out sides are mixed in."""

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
        "flow",
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
        self,
        http: Any,
        state: ServerState,
        offer: Offer | None,
        request: Any,
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
        self.queue: list[str | bytes] = []
        self.max_queue = max(1, self.limits.max_queue)
        self.reading_paused = False
        self.recv_waiter: asyncio.Future[None] | None = None
        self.flow = FlowControl()  # write backpressure (shared with HTTP)
        # ping payload -> (waiter, time sent); insertion order is sending order
        self.pings: dict[bytes, tuple[asyncio.Future[float] | None, float]] = {}
        self.ping_count = 0
        self.next_ping_at = INF
        self.pong_deadline = INF
        self.close_deadline = INF
        self.deadline = INF
        self.closed_waiter: asyncio.Future[None] = self.loop.create_future()
        self.task: asyncio.Task[None] | None = None
        # Broadcast frames waiting for this loop pass to end (see cork).
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

    @property
    def counted(self) -> bool:
        """Open and recorded: the metrics snapshot adds its messages (folded in at the end)."""
        return (
            self.session is not None
            and not self.lifecycle.closed
            and self.state.recorder is not None
        )

    # -- handshake ---------------------------------------------------------

    def accept(self, subprotocol: str | None, headers: Any = ()) -> None:
        if self.offer is None:
            raise RuntimeError("this request cannot be accepted as a WebSocket")
        limits = self.limits
        deflate = None
        extension_header = None
        if limits.compression == "permessage-deflate" and self.offer.extensions:
            negotiated = negotiate_deflate(self.offer.extensions, limits.max_size)
            if negotiated is not None:
                deflate, extension_header = negotiated
        session = Session(limits.max_size, deflate)
        self.lifecycle.transition(Event.ACCEPT)  # refused once the handshake was answered
        self.subprotocol = subprotocol
        self.session = session
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
            if not self.lifecycle.closed:  # _handle may have closed it
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
        self.flow.connection_lost()

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.paused = False
        self._maybe_resume_reading()
        self.flow.resume_writing()

    @property
    def write_paused(self) -> bool:
        return self.flow.paused

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
            # receive() resets session.pending; mypy keeps the narrowing from above.
            if session.pending or self.lifecycle.closed:  # type: ignore[unreachable]  # see above
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
            return encode_frame(OP_TEXT, data.encode())
        return encode_frame(OP_BINARY, bytes(data))  # type: ignore[arg-type]  # bytes: not a str

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

    async def drained(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        if not self.flow.paused:
            return
        lifecycle = self.lifecycle
        try:
            await self.flow.drain()
        except ConnectionResetError:  # lost, now or while waiting
            raise WebSocketClosed(
                lifecycle.code or CloseCode.ABNORMAL_CLOSURE, lifecycle.reason
            ) from None


def _pairs(headers: Any) -> list[tuple[str, str]]:
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), str(v)) for k, v in items]
