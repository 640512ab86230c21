"""The rules of one HTTP/1.1 server connection, without I/O.

Owns: ``HttpConnection``: which phase a connection is in (``Phase``, with its
transitions in one table), which deadline applies now, whether the
connection is kept alive after a response (RFC 9112 §9.3), what comes after
a response (the next pipelined request, the rest of a request, idle, or the
pending error and close), the error refused requests get once the requests
queued before them are answered, what a drain does to an idle connection,
the ``--limit-concurrency`` refusal, the write-stall rule for a response
body, and how a protocol upgrade ends HTTP on the connection.

It takes times (the loop clock, in seconds) and facts (a request arrived,
the handler finished, the transport holds this many bytes) and answers with
decisions; ``workers.http_protocol`` carries them out on the transport. So
every rule here is unit-tested without a loop or a socket
(``tests/unit/test_http_connection.py``).

Rule: imports only ``protocols.http``; no asyncio, no socket, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from app_server.protocols.http.events import ProtocolError
from app_server.protocols.http.parser import Event, RequestParser

INF = float("inf")
# Reading pauses when this many complete requests wait behind the active one.
MAX_PIPELINED = 16
# After the last response, how long unread input is drained before closing.
LINGER_S = 2.0


class Phase(IntEnum):
    """The connection's state; each phase has its own deadline."""

    IDLE = 0  # keep-alive: waiting for a request's first byte (keep-alive timeout)
    READING = 1  # a request's head or body is arriving (request timeout, from the first byte)
    HANDLING = 2  # a handler runs, its response head not yet sent (response timeout)
    SENDING = 3  # a response body is being written (only a client that reads nothing)
    CLOSING = 4  # response sent, draining input before close (linger)
    UPGRADED = 5  # the socket now speaks WebSocket: no HTTP deadline
    CLOSED = 6


# The one transition table: the phases each phase may be entered from.
_ENTERED_FROM: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.READING, Phase.HANDLING, Phase.SENDING}),
    Phase.READING: frozenset({Phase.IDLE, Phase.READING, Phase.HANDLING, Phase.SENDING}),
    Phase.HANDLING: frozenset({Phase.IDLE, Phase.READING, Phase.HANDLING}),
    Phase.SENDING: frozenset({Phase.HANDLING, Phase.SENDING}),
    Phase.CLOSING: frozenset({Phase.IDLE, Phase.READING, Phase.HANDLING, Phase.SENDING}),
    Phase.UPGRADED: frozenset({Phase.HANDLING}),
    Phase.CLOSED: frozenset(Phase),
}


class ConnectionStateError(RuntimeError):
    """A transition the table does not allow: a bug in the caller."""

    def __init__(self, current: Phase, target: Phase, expected: frozenset[Phase]) -> None:
        names = ", ".join(sorted(p.name for p in expected))
        super().__init__(
            f"HTTP connection cannot enter {target.name} from {current.name}"
            f" (expected one of: {names})"
        )
        self.current = current
        self.target = target
        self.expected = expected


class AfterResponse(Enum):
    """What the connection does once a response is complete."""

    NEXT_REQUEST = "next"  # a pipelined request is queued: start it
    READ_REST = "read"  # part of the next request has arrived: keep reading it
    KEEP_ALIVE = "idle"  # keep-alive: wait for the next request
    SEND_ERROR = "error"  # the refused request's error goes out last, then close
    LINGERING_CLOSE = "close"  # no keep-alive: lingering close


class Expired(Enum):
    """What a passed deadline means in the current phase."""

    CLOSE_SOCKET = "close"  # idle keep-alive or linger over: close the socket
    REQUEST_TIMEOUT = "408"  # the request did not arrive in time
    RESPONSE_TIMEOUT = "503"  # the handler did not answer in time
    CHECK_STALL = "stall"  # a body write may be stalled: ask ``check_stall``


@dataclass(frozen=True, slots=True)
class Timeouts:
    keep_alive_s: float
    request_s: float
    response_s: float
    write_s: float  # a response body the client takes nothing of
    handshake_s: float  # a WebSocket upgrade request, until the app answers it
    linger_s: float = LINGER_S


# The members as module names: on Python 3.11 ``Phase.IDLE`` is a ~90 ns
# class-attribute lookup through the enum's metaclass, and these rules run
# several times per request.
IDLE, READING, HANDLING, SENDING, CLOSING, UPGRADED, CLOSED = Phase
NEXT_REQUEST, READ_REST, KEEP_ALIVE, SEND_ERROR, LINGERING_CLOSE = AfterResponse
CLOSE_SOCKET, REQUEST_TIMEOUT, RESPONSE_TIMEOUT, CHECK_STALL = Expired


class HttpConnection:
    """One connection's phase, deadline and keep-alive state."""

    __slots__ = (
        "parser",
        "refusal",
        "phase",
        "deadline",
        "timeouts",
        "keep_alive",
        "input_closed",
        "pending_error",
        "over_limit",
        "went_idle",
        "stall_mark",
    )

    def __init__(
        self, parser: RequestParser, timeouts: Timeouts, now: float, over_limit: bool = False
    ) -> None:
        self.parser = parser
        # Set by receive_data when the bytes are refused: (status, detail).
        self.refusal: tuple[int, str] | None = None
        self.timeouts = timeouts
        self.phase = IDLE
        # A new connection gets the keep-alive timeout for its first request.
        self.deadline = now + timeouts.keep_alive_s
        self.keep_alive = True
        # No more requests are read (after a protocol error or an upgrade we
        # do not serve); those already queued are still answered.
        self.input_closed = False
        # The error a refused request gets after the queued ones: (status, detail).
        self.pending_error: tuple[int, str] | None = None
        # Opened beyond --limit-concurrency: its first request gets a 503.
        self.over_limit = over_limit
        # Has been idle after a request: a keep-alive connection, closed by a drain.
        self.went_idle = False
        # Bytes the transport held when the body started waiting on the client.
        self.stall_mark = 0

    def _enter(self, target: Phase) -> None:
        expected = _ENTERED_FROM[target]
        if self.phase not in expected:
            raise ConnectionStateError(self.phase, target, expected)
        self.phase = target

    # -- reading -------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event] | None:
        """Bytes from the client: the request events they complete, in order.

        None: the bytes are discarded (a lingering close, or no more requests
        are read). When the bytes cannot be served, ``refusal`` is set after
        the events of the requests complete before them (those are answered
        first): a protocol error's status, or 503 for a connection beyond
        ``--limit-concurrency`` (no handler runs for it). The request timeout
        runs from a request's first byte, so a slow sender cannot extend it.
        The caller drains the returned list.
        """
        if self.phase is CLOSING or self.input_closed:
            return None
        parser = self.parser
        if self.phase is IDLE:
            if self.over_limit:
                self.refusal = (503, "Service Unavailable")
                return parser.events
            self._enter(READING)
            self.deadline = now + self.timeouts.request_s
        try:
            parser.feed(data)
        except ProtocolError as exc:
            self.refusal = (exc.status_hint, exc.detail)
        return parser.events

    def take_refusal(self) -> tuple[int, str] | None:
        refusal = self.refusal
        self.refusal = None
        return refusal

    @property
    def upgraded_at(self) -> int:
        """Offset in the last bytes where an upgrade request ended, or -1."""
        return self.parser.upgraded_at

    @staticmethod
    def should_pause_reading(queued: int) -> bool:
        """Too many complete requests wait behind the active one."""
        return queued > MAX_PIPELINED

    def upgrade_seen(self, websocket_pending: bool) -> None:
        """The parser stopped at an upgrade: no more HTTP requests are read.

        A WebSocket handshake hands what follows to the WebSocket; any other
        upgrade is not served, so its response closes the connection.
        """
        self.input_closed = True
        if not websocket_pending:
            self.keep_alive = False

    def refuse(self, status: int, detail: str, busy: bool) -> bool:
        """A request we will not serve (400, 408, 431, 503...).

        Requests complete before it are answered first (``busy``: a handler
        runs or requests are queued): the error is then kept as the last
        response and False returned. True: answer it now, then close.
        """
        self.input_closed = True
        if busy:
            self.pending_error = (status, detail)
            return False
        self.keep_alive = False
        return True

    def took_error(self) -> tuple[int, str]:
        error = self.pending_error
        if error is None:
            raise RuntimeError("no pending error: response_done() answers SEND_ERROR only with one")
        self.pending_error = None
        return error

    def maybe_quiet(self, now: float, queued: bool) -> None:
        """Nothing to start: a connection reading with no partial request and
        nothing queued is idle again."""
        if self.phase is READING and not self.parser.in_message and not queued:
            self.went_quiet(now)

    def went_quiet(self, now: float) -> None:
        """Nothing in flight and no partial request: keep-alive idle."""
        self._enter(IDLE)
        self.went_idle = True
        self.deadline = now + self.timeouts.keep_alive_s

    # -- handling and sending ----------------------------------------------------

    def handler_started(self, now: float, websocket: bool) -> None:
        self._enter(HANDLING)
        timeouts = self.timeouts
        self.deadline = now + (timeouts.handshake_s if websocket else timeouts.response_s)

    def response_keep_alive(
        self, request_keep_alive: bool, draining: bool, body_unread: bool
    ) -> bool:
        """Whether this response keeps the connection (RFC 9112 §9.3).

        Not when the request asked to close, when the worker is draining, or
        when the handler left part of a streamed request body unread (the
        rest of it would be read as the next request).
        """
        keep_alive = self.keep_alive and request_keep_alive and not draining and not body_unread
        self.keep_alive = keep_alive
        return keep_alive

    def body_started(self) -> None:
        """The head is out: the response timeout no longer applies (a body may
        take as long as it needs); only a client that reads nothing is bounded."""
        self._enter(SENDING)
        self.deadline = INF
        self.stall_mark = 0

    def body_progress(self, now: float) -> None:
        """The body moved: restart the write-stall clock."""
        self.deadline = now + self.timeouts.write_s

    def waiting_on_client(self, now: float, buffered: int) -> None:
        """A body write waits for the client to take bytes: the stall clock runs."""
        if self.phase is SENDING:
            self.stall_mark = buffered
            self.deadline = now + self.timeouts.write_s

    def check_stall(self, now: float, waiting: bool, buffered: int) -> bool:
        """The SENDING deadline passed: True means abort (the client took nothing).

        Not waiting on the client: the handler is producing, no deadline.
        Fewer bytes buffered than at the last look: the client took some,
        if not yet down to the low-water mark, and that is progress.
        """
        if not waiting:
            self.deadline = INF
            return False
        if buffered < self.stall_mark:
            self.stall_mark = buffered
            self.deadline = now + self.timeouts.write_s
            return False
        return True

    def response_done(self, now: float, queued: bool) -> AfterResponse:
        """A response is complete: what next (``queued``: a request waits in
        the pipeline)."""
        if queued and (self.keep_alive or self.pending_error is not None):
            self._enter(READING)
            return NEXT_REQUEST
        if self.pending_error is not None:
            return SEND_ERROR
        if not self.keep_alive:
            return LINGERING_CLOSE
        if self.parser.in_message:  # part of the next request has arrived
            self._enter(READING)
            self.deadline = now + self.timeouts.request_s
            return READ_REST
        self.went_quiet(now)
        return KEEP_ALIVE

    def timed_out(self) -> None:
        """The handler missed its deadline: its 503 is the last response."""
        self.keep_alive = False

    # -- the end -----------------------------------------------------------------

    def expired(self, now: float) -> Expired | None:
        """What the deadline means if it has passed, else None."""
        if now < self.deadline:
            return None
        return _EXPIRED[self.phase]

    def start_closing(self, now: float) -> bool:
        """Close without destroying the response just written: False if the
        connection is closing already. The caller shuts down its sending
        side and reads and discards until the client closes or the linger
        deadline passes (closing with unread input makes the kernel send RST,
        which can discard the response before the client reads it)."""
        if self.phase is CLOSING or self.phase is CLOSED:
            return False
        self._enter(CLOSING)
        self.deadline = now + self.timeouts.linger_s
        return True

    def peer_finished(self, busy: bool) -> bool:
        """The client half-closed. True: close now (nothing in flight, or
        already closing). False: answer what is in flight, then close."""
        if self.phase is CLOSING or not busy:
            self.closed()
            return True
        self.keep_alive = False
        return False

    def drain_closes(self) -> bool:
        """Draining: True if the connection should close now (SPEC §5).

        Only an idle keep-alive connection: a request already on its way
        when we close meets a close before any byte of its response, which
        an HTTP client retries on a new connection (RFC 9112 §9.3.1). A
        connection reading a request gets its response with
        ``Connection: close``; a new connection that has not sent its first
        request is left to send it, as its client has nothing to retry on.
        """
        if self.phase is IDLE and self.went_idle:
            self.closed()
            return True
        return False

    def upgraded(self) -> None:
        """The WebSocket handshake was accepted: the socket is no longer HTTP."""
        self._enter(UPGRADED)
        self.deadline = INF

    def closed(self) -> None:
        """The socket is closed, aborted or lost."""
        self.phase = CLOSED

    @property
    def is_closed(self) -> bool:
        return self.phase is CLOSED

    @property
    def is_open(self) -> bool:
        """Still answering HTTP on this socket: not closing, closed or upgraded."""
        return self.phase < CLOSING


# What a passed deadline means, by phase (an upgraded or closed connection has none).
_EXPIRED: tuple[Expired | None, ...] = (
    CLOSE_SOCKET,
    REQUEST_TIMEOUT,
    RESPONSE_TIMEOUT,
    CHECK_STALL,
    CLOSE_SOCKET,
    None,
    None,
)
