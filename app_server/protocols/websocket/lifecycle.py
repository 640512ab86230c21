"""The life of one WebSocket connection, from the upgrade to the TCP close.

Owns: ``Phase`` (the one state of a connection), ``WebSocketState`` (what
each party looks like from the application, Starlette's three states),
``Lifecycle`` with its single ``transition`` function, and ``Step``, the
actions a transition asks of the transport glue. Sans-IO: events (the
handler closes, the peer's Close arrives, the peer broke the protocol, a
deadline passed, the transport is gone) go in; what to write and when to
close the socket come out. No loop, no clock, no socket.

Rules, in the spirit of h11's ``_state.py``:

1. Every change of phase happens in ``Lifecycle.transition``; nothing else
   assigns ``phase``, the close code the application sees, or the Close we
   sent.
2. A Close frame is sent at most once (``Step.send_close``), and the
   connection finishes at most once (``Step.finished``: wake the waiters,
   leave the channels, record the metrics, count toward --max-requests).
3. An event that cannot happen in the current phase raises
   ``InvalidWebSocketStateError`` naming the party, the phase and the
   phases that would have accepted it. Events that merely arrive late (a
   second close, a deadline after the end) are no-ops, because a
   connection is closed from several places that race.

The phases (RFC 6455 §7):

    CONNECTING --accept--> OPEN --close--> CLOSE_SENT --peer close/deadline--> CLOSED
         |                  |  \\--fail--> LINGERING --peer close/deadline--> CLOSED
         \\--reject--> REJECTED    \\--peer close (answered at once)--------> CLOSED

``CLOSE_SENT`` waits for the peer's Close within the closing-handshake
timeout (the application may still receive what the peer sent before it).
``LINGERING`` follows a protocol failure: our Close is out and our write
side shut, and input is discarded until the peer closes or the linger
deadline passes, so that closing with unread input does not reset the
connection and destroy our Close frame (RFC 6455 §7.1.1, §7.1.7).
"""

from __future__ import annotations

from enum import Enum

from app_server.exceptions import InvalidWebSocketStateError
from app_server.status import CloseCode


class WebSocketState(Enum):
    """One party's state as the application sees it."""

    CONNECTING = 0
    CONNECTED = 1
    DISCONNECTED = 2


class Phase(Enum):
    CONNECTING = "connecting"  # the upgrade is not answered yet
    REJECTED = "rejected"  # answered with an HTTP response
    OPEN = "open"
    CLOSE_SENT = "close sent"  # our Close is out; the peer's is awaited
    LINGERING = "lingering"  # failed: our Close is out, our write side shut
    CLOSED = "closed"  # the TCP connection is closed (or closing): final


class Event(Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    CLOSE = "close"  # the handler, a drain or a slow-consumer close
    PEER_CLOSE = "peer close"
    FAIL = "fail"  # the peer broke the protocol or stopped answering pings
    DEADLINE = "deadline"  # the closing handshake or the linger took too long
    LOST = "lost"  # EOF, connection_lost: the peer is gone
    ABORT = "abort"  # drop the connection without a handshake


class Transport(Enum):
    """What to do with the socket after a transition."""

    KEEP = 0
    LINGER = 1  # shut our write side, keep reading until the peer closes
    CLOSE = 2  # close once buffered bytes are written
    ABORT = 3  # close now, dropping buffered bytes


class Deadline(Enum):
    NONE = 0
    CLOSING = 1  # the peer must answer our Close within the timeout
    LINGER = 2  # the peer must close within min(timeout, linger)


class Step:
    """The actions one transition asks for, in this order."""

    __slots__ = ("send_close", "transport", "deadline", "finished")

    def __init__(
        self,
        send_close: tuple[int, str] | None = None,
        transport: Transport = Transport.KEEP,
        deadline: Deadline = Deadline.NONE,
        finished: bool = False,
    ) -> None:
        self.send_close = send_close  # the Close frame to write (code, reason)
        self.transport = transport
        self.deadline = deadline
        self.finished = finished  # the connection is over: tell everyone, once

    def __repr__(self) -> str:
        return (
            f"Step(send_close={self.send_close!r}, transport={self.transport.name}, "
            f"deadline={self.deadline.name}, finished={self.finished})"
        )


NOTHING = Step()
_C, _D = WebSocketState.CONNECTED, WebSocketState.DISCONNECTED
# phase -> (state, client_state, server_state). The client is disconnected
# once its Close (or its loss) is known; the server once its Close is sent.
_VIEWS: dict[Phase, tuple[WebSocketState, WebSocketState, WebSocketState]] = {
    Phase.CONNECTING: (WebSocketState.CONNECTING,) * 3,
    Phase.REJECTED: (_D, _D, _D),
    Phase.OPEN: (_C, _C, _C),
    Phase.CLOSE_SENT: (_D, _C, _D),
    Phase.LINGERING: (_D, _D, _D),
    Phase.CLOSED: (_D, _D, _D),
}
_ACCEPTED = frozenset({Phase.OPEN, Phase.CLOSE_SENT, Phase.LINGERING, Phase.CLOSED})
_CLOSABLE = (Phase.OPEN, Phase.CLOSE_SENT, Phase.LINGERING)
_CLOSING = (Phase.CLOSE_SENT, Phase.LINGERING)
_FROM_PEER = frozenset({Event.PEER_CLOSE, Event.FAIL, Event.LOST})  # the client's doing


class Lifecycle:
    """One connection's phase, the close code the application sees, and the Close we sent."""

    __slots__ = ("phase", "code", "reason", "sent")

    def __init__(self) -> None:
        self.phase = Phase.CONNECTING
        self.code: int | None = None  # the peer's close (or how the connection ended)
        self.reason = ""
        self.sent: tuple[int, str] | None = None  # our Close frame, once sent

    def __repr__(self) -> str:
        return f"<Lifecycle {self.phase.name} code={self.code} sent={self.sent}>"

    # -- views ---------------------------------------------------------------

    @property
    def state(self) -> WebSocketState:
        return _VIEWS[self.phase][0]

    @property
    def client_state(self) -> WebSocketState:
        return _VIEWS[self.phase][1]

    @property
    def server_state(self) -> WebSocketState:
        return _VIEWS[self.phase][2]

    @property
    def accepted(self) -> bool:
        return self.phase in _ACCEPTED

    @property
    def rejected(self) -> bool:
        return self.phase is Phase.REJECTED

    @property
    def closed(self) -> bool:
        """The connection is over (the socket is closed or closing)."""
        return self.phase is Phase.CLOSED

    def close_seen(self) -> tuple[int, str] | None:
        """The close the application is told of: the peer's, else the one we sent."""
        if self.code is not None:
            return (self.code, self.reason)
        return self.sent

    # -- the transition function ---------------------------------------------

    def transition(self, event: Event, code: int = 0, reason: str = "") -> Step:
        """Apply ``event`` (with the close ``code``/``reason`` it carries); return the actions."""
        phase = self.phase
        if phase is Phase.CONNECTING:
            return self._connecting(event)
        if phase is Phase.REJECTED or phase is Phase.CLOSED:
            if event is Event.ACCEPT or event is Event.REJECT:
                raise InvalidWebSocketStateError("server", phase, Phase.CONNECTING)
            return NOTHING  # everything else arrives late: already over
        if event is Event.CLOSE:
            if phase is not Phase.OPEN:
                return NOTHING  # our Close is already out: close is idempotent
            self.phase = Phase.CLOSE_SENT
            self.sent = (code, reason)
            return Step(send_close=self.sent, deadline=Deadline.CLOSING)
        if event is Event.PEER_CLOSE:
            return self._peer_close(code, reason)
        if event is Event.FAIL:
            return self._fail(code, reason)
        if event is Event.DEADLINE:
            if phase is Phase.OPEN:  # only a Close (ours or a failure) arms one
                raise InvalidWebSocketStateError("server", phase, _CLOSING)
            return self._finish(Transport.CLOSE)
        if event is Event.LOST:
            return self._finish(Transport.CLOSE)
        if event is Event.ABORT:
            return self._finish(Transport.ABORT)
        raise InvalidWebSocketStateError("server", phase, Phase.CONNECTING)  # ACCEPT, REJECT

    def _connecting(self, event: Event) -> Step:
        if event is Event.ACCEPT:
            self.phase = Phase.OPEN
            return NOTHING
        if event is Event.REJECT:
            self.phase = Phase.REJECTED
            self.code = CloseCode.ABNORMAL_CLOSURE
            return NOTHING
        if event is Event.ABORT:  # the handler failed before its handshake was answered
            return self._finish(Transport.ABORT)
        party = "client" if event in _FROM_PEER else "server"
        raise InvalidWebSocketStateError(party, Phase.CONNECTING, _CLOSABLE)

    def _peer_close(self, code: int, reason: str) -> Step:
        if self.code is None:
            self.code, self.reason = code, reason
        if self.phase is Phase.OPEN:
            # Answer with the same code (1005, "no code", answers with an
            # empty Close), then close: the closing handshake is complete.
            self.sent = (code, reason)
            return self._finish(Transport.CLOSE, send_close=self.sent)
        return self._finish(Transport.CLOSE)  # our Close was answered

    def _fail(self, code: int, reason: str) -> Step:
        if self.phase is Phase.LINGERING:
            return NOTHING  # already failing
        if self.code is None:
            self.code, self.reason = code, reason
        send = None
        if self.phase is Phase.OPEN:
            send = self.sent = (code, reason)
        self.phase = Phase.LINGERING
        return Step(send_close=send, transport=Transport.LINGER, deadline=Deadline.LINGER)

    def _finish(self, transport: Transport, send_close: tuple[int, str] | None = None) -> Step:
        if self.code is None:
            self.code = CloseCode.ABNORMAL_CLOSURE
        self.phase = Phase.CLOSED
        return Step(send_close=send_close, transport=transport, finished=True)
