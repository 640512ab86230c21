"""The HTTP/1.1 connection: bytes from the socket to the app and back.

Owns: feeding the parser, the order of pipelined requests, starting one
handler at a time per connection, writing each response in one
``transport.write``, keep-alive and the deadline that applies now
(``Phase``): idle keep-alive, request head+body (fixed from the first byte,
so a slow sender cannot extend it), handler run time until the response head
is sent, a streamed body stalled on a client that reads nothing, and the
lingering close. Also the per-worker connection limit (``--limit-concurrency``:
a connection beyond it gets one 503 and is closed, no handler runs) and what
draining does to a connection (an idle keep-alive one is closed at once).
Deadlines are checked by the worker's ticker (``ServerState.tick``),
so the hot path arms no timer per request (deadlines are read from the
loop clock when armed; the ticker only compares).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from enum import Enum
from typing import Any

from app_server.metrics.sink import UNMATCHED
from app_server.protocols.http.events import ProtocolError, RequestHead, RouteMatch
from app_server.protocols.http.framing import (
    CONNECTION_CLOSE,
    CONNECTION_KEEP_ALIVE,
    CONTINUE_RESPONSE,
    LAST_CHUNK,
    encode_chunk,
    encode_error,
    encode_response,
    encode_streaming_head,
)
from app_server.protocols.http.parser import REQUEST_END, RequestParser
from app_server.protocols.websocket.handshake import UpgradeRefused, read_offer
from app_server.workers.sendfile import send_file
from app_server.workers.app_contract import (
    AppHandler,
    BaseResponse,
    ConnectionInfo,
    FileResponse,
    HTTPResponse,
    PreparedRequest,
    StreamingResponse,
)
from app_server.workers.flow_control import FlowControl
from app_server.workers.state import NEVER, ServerState
from app_server.workers.ws_protocol import WebSocketConnection

error_log = logging.getLogger("app_server.error")

# Reading pauses when this many complete requests wait behind the active one,
# or when a streamed body has this many unread bytes buffered.
MAX_PIPELINED = 16
STREAM_HIGH_WATER = 256 * 1024
LINGER_S = 2.0
INF = float("inf")


class Phase(Enum):
    IDLE = "idle"  # keep-alive: waiting for a request's first byte
    READING = "reading"  # a request's head or body is arriving
    HANDLING = "handling"  # a handler is running, its response head not yet sent
    SENDING = "sending"  # a streamed body is being written (the handler may still run)
    CLOSING = "closing"  # response sent, draining input before close
    UPGRADED = "upgraded"  # the socket now speaks WebSocket
    CLOSED = "closed"


class _Cycle:
    """One request on its way through the connection."""

    __slots__ = ("request", "parts", "complete", "reader", "started", "websocket")

    def __init__(self, request: PreparedRequest, reader: _StreamedBody | None) -> None:
        self.request = request
        self.parts: list[bytes] = []
        self.complete = False
        self.reader = reader
        self.started = 0.0
        self.websocket = False


class _StreamedBody:
    """The unbuffered body of a ``stream=True`` route, with read backpressure."""

    __slots__ = ("_protocol", "_chunks", "_size", "_done", "_waiter")

    def __init__(self, protocol: HttpProtocol) -> None:
        self._protocol = protocol
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > STREAM_HIGH_WATER:
            self._protocol.pause_input()
        self._wake()

    def end(self) -> None:
        self._done = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes | None:
        while not self._chunks:
            if self._done:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size <= STREAM_HIGH_WATER:
            self._protocol.resume_input()
        return chunk


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "state",
        "app",
        "loop",
        "transport",
        "parser",
        "conn",
        "phase",
        "deadline",
        "queue",
        "incoming",
        "task",
        "keep_alive",
        "reading_paused",
        "input_paused_by_us",
        "flow",
        "input_closed",
        "pending_error",
        "upgrade_tail",
        "_ws_cycle",
        "over_limit",
        "went_idle",
        "stall_mark",
    )

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.app: AppHandler[Any] = state.app
        self.loop = loop
        limits = state.limits
        self.parser = RequestParser(limits.request_max_header_size, limits.request_max_size)
        self.transport: Any = None
        self.conn: ConnectionInfo | None = None
        self.phase = Phase.IDLE
        self.deadline = INF
        self.queue: deque[_Cycle] = deque()
        self.incoming: _Cycle | None = None
        self.task: asyncio.Task[None] | None = None
        self.keep_alive = True
        self.input_paused_by_us = False
        self.flow = FlowControl()
        # No more requests are read from this connection (after a protocol
        # error or an upgrade we do not serve); queued ones are still answered.
        self.input_closed = False
        self.pending_error: tuple[int, str] | None = None
        # Bytes that followed a WebSocket upgrade request (already frames).
        self.upgrade_tail: bytes | None = None
        self._ws_cycle: _Cycle | None = None
        # Opened beyond --limit-concurrency: its first request gets a 503.
        self.over_limit = False
        # Has been idle after a request: a keep-alive connection, closed by a drain.
        self.went_idle = False
        # Bytes the transport held when the body started waiting on the client.
        self.stall_mark = 0

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn = _connection_info(transport, self.state)
        connections = self.state.connections
        connections.add(self)
        if len(connections) > self.state.max_connections:
            self.over_limit = True
        self.deadline = self.loop.time() + self.state.limits.keep_alive_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSED
        self.state.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.flow.connection_lost()
        if self.incoming is not None and self.incoming.reader is not None:
            self.incoming.reader.end()

    def eof_received(self) -> bool | None:
        incoming = self.incoming
        if incoming is not None and incoming.reader is not None:
            incoming.reader.end()
        if self.phase is Phase.CLOSING or (self.task is None and not self.queue):
            self.phase = Phase.CLOSED
            self.transport.close()
            return None
        # Half-closed by the peer with requests in flight: answer them, then close.
        self.keep_alive = False
        return True

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.phase is Phase.SENDING:
            self._body_progress()
        self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is Phase.CLOSING or self.input_closed:
            return  # lingering close or no more requests: read and discard
        if phase is Phase.IDLE:
            if self.over_limit:
                # Beyond --limit-concurrency: answered at once, no handler runs.
                self._refuse(503, "Service Unavailable")
                return
            self.phase = Phase.READING
            self.deadline = self.loop.time() + self.state.limits.request_timeout_s
        parser = self.parser
        try:
            parser.feed(data)
        except ProtocolError as exc:
            # Requests completed before the bad one are answered first, in order.
            if parser.events:
                self._on_events(parser.events)
            self._refuse(exc.status_hint, exc.detail)
            return
        if parser.events:
            self._on_events(parser.events)
        if parser.upgraded_at >= 0:
            self.input_closed = True
            if self.upgrade_tail is not None:
                # A WebSocket handshake is pending: what follows is for it.
                self.upgrade_tail = data[parser.upgraded_at:]
                self.pause_input()
            else:
                # Other protocol upgrades are not served: answer, then close.
                self.keep_alive = False

    # -- request events ----------------------------------------------------

    def _on_events(self, events: list[Any]) -> None:
        for event in events:
            cycle = self.incoming
            if event.__class__ is bytes:
                if cycle is not None:
                    if cycle.reader is not None:
                        cycle.reader.feed(event)
                    else:
                        cycle.parts.append(event)
            elif event is REQUEST_END:
                if cycle is not None:
                    cycle.complete = True
                    if cycle.reader is not None:
                        cycle.reader.end()
                    elif cycle.parts:
                        parts = cycle.parts
                        cycle.request.body = parts[0] if len(parts) == 1 else b"".join(parts)
                    self.incoming = None
            else:
                self._on_head(event)
        events.clear()
        self._maybe_start()

    def _on_head(self, head: RequestHead) -> None:
        if head.upgrade == b"websocket":
            cycle = _Cycle(self.app.prepare_websocket(head, self.conn), None)  # type: ignore[arg-type]  # set in connection_made
            cycle.websocket = True
            self.upgrade_tail = b""
            self.incoming = cycle
            self.queue.append(cycle)
            return
        request = self.app.prepare(head, self.conn)  # type: ignore[arg-type]  # set in connection_made
        reader = None
        if request.routing.streams_body:  # type: ignore[union-attr]  # prepare() always routes
            reader = _StreamedBody(self)
            request.set_stream(reader)
        cycle = _Cycle(request, reader)
        self.incoming = cycle
        self.queue.append(cycle)
        if len(self.queue) > MAX_PIPELINED:
            self.pause_input()
        if head.expect_continue:
            self.transport.write(CONTINUE_RESPONSE)

    def _maybe_start(self) -> None:
        if self.task is not None or not self.queue:
            if self.phase is Phase.READING and not self.parser.in_message and not self.queue:
                self._go_idle()
            return
        cycle = self.queue[0]
        if not (cycle.complete or cycle.reader is not None):
            return
        self.queue.popleft()
        self.phase = Phase.HANDLING
        now = self.loop.time()
        state = self.state
        if state.access_log is not None or state.recorder is not None:
            cycle.started = time.perf_counter()
        if cycle.websocket:
            self.deadline = now + self.state.ws_limits.timeout_s
            self._start_websocket(cycle)
            return
        self.deadline = now + state.limits.response_timeout_s
        self.task = self.loop.create_task(self._run(cycle))

    def _go_idle(self) -> None:
        self.phase = Phase.IDLE
        self.went_idle = True
        self.deadline = self.loop.time() + self.state.limits.keep_alive_timeout_s

    # -- running a handler -------------------------------------------------

    async def _run(self, cycle: _Cycle) -> None:
        request = cycle.request
        try:
            response = await self.app.handle_http(request)
            await self._send(request, response, cycle)
        except asyncio.CancelledError:
            if self.phase is Phase.CLOSED:
                return
            raise
        except (ConnectionError, RuntimeError) as exc:
            if self.phase is not Phase.CLOSED:
                error_log.warning("response to %s %s failed: %s", request.head.method, request.head.path, exc)
                self._abort()
            return
        finally:
            self.task = None
        self._after_response()

    def _start_websocket(self, cycle: _Cycle) -> None:
        """Hand the upgrade request to the app; it accepts or rejects the handshake."""
        self.keep_alive = False  # whatever happens, no more HTTP on this socket
        request = cycle.request
        offer = None
        routing = request.routing
        label = UNMATCHED
        if isinstance(routing, RouteMatch):
            label = routing.label
            try:
                offer = read_offer(request.head)
            except UpgradeRefused as exc:
                refusal = HTTPResponse(exc.detail, exc.status_hint, dict(exc.headers))
                self._write_rejection(refusal, cycle)
                return
        self._ws_cycle = cycle
        channel = WebSocketConnection(self, self.state, offer, request, label)
        # The task does not reference this object: once the handshake is
        # accepted the HTTP side (parser, queues) can be freed.
        task = self.loop.create_task(_serve_websocket(self.app, request, channel))
        channel.task = task
        self.task = task
        task.add_done_callback(self._websocket_task_done)

    def _websocket_task_done(self, task: asyncio.Task[None]) -> None:
        if self.task is task:
            self.task = None
        if not task.cancelled() and task.exception() is not None:
            error_log.error("WebSocket task failed", exc_info=task.exception())
            if self.phase is not Phase.UPGRADED:
                self._abort()

    def upgrade_done(self, websocket: Any) -> bytes:
        """The handshake was accepted: the socket is the WebSocket's from now on."""
        self.phase = Phase.UPGRADED
        self.deadline = INF
        # The WebSocket takes this connection's place in state.connections and
        # counts toward --max-requests when it closes (SPEC §5), not now.
        self.state.connections.discard(self)
        cycle = self._ws_cycle
        if cycle is not None:
            self._log_access(cycle.request, 101, 0, cycle)
            self._record(cycle, 101)
        tail = self.upgrade_tail or b""
        self.upgrade_tail = None
        self.input_paused_by_us = False  # the WebSocket manages reading now
        self._ws_cycle = None
        if self.task is not None:  # the WebSocket owns its task now
            self.task.remove_done_callback(self._websocket_task_done)
            self.task = None
        return tail

    def reject_upgrade(self, response: BaseResponse) -> None:
        """The handshake was refused: answer over HTTP and close."""
        self._write_rejection(response, self._ws_cycle)

    def _write_rejection(self, response: BaseResponse, cycle: _Cycle | None) -> None:
        if self.phase in (Phase.CLOSING, Phase.CLOSED, Phase.UPGRADED):
            return
        self.keep_alive = False
        if not isinstance(response, HTTPResponse):
            response = HTTPResponse("WebSocket handshake refused", 500)
        body = response.body
        self.transport.write(
            encode_response(
                response.status, response.header_block(), body, self.state.date,
                CONNECTION_CLOSE, False,
            )
        )
        self.state.count_served()
        if cycle is not None:
            self._log_access(cycle.request, response.status, len(body), cycle)
            self._record(cycle, response.status)
        self._close_lingering()

    async def _send(self, request: PreparedRequest, response: BaseResponse, cycle: _Cycle) -> None:
        head = request.head
        keep_alive = self.keep_alive and head.keep_alive and not self.state.draining
        if keep_alive and cycle.reader is not None and not cycle.complete:
            keep_alive = False  # the handler left part of a streamed body unread
        self.keep_alive = keep_alive
        connection = (
            (b"" if head.http_version == "1.1" else CONNECTION_KEEP_ALIVE)
            if keep_alive
            else CONNECTION_CLOSE
        )
        head_only = head.method == "HEAD"
        if response.__class__ is HTTPResponse or not isinstance(response, StreamingResponse):
            body = response.body  # type: ignore[attr-defined]
            self.transport.write(
                encode_response(
                    response.status, response.header_block(), body, self.state.date, connection,
                    head_only,
                )
            )
            size = len(body)
        elif isinstance(response, FileResponse):
            # send_file writes the head before it first waits: from then on
            # only a client that takes nothing is bounded (as for a stream).
            self.phase = Phase.SENDING
            self.deadline = INF
            self.stall_mark = 0
            size = await send_file(
                self, response, head.method, head.headers, self.state.date, connection,
                self._body_progress,
            )
        else:
            size = await self._send_streaming(response, connection, head_only)
        if self.state.access_log is not None:
            self._log_access(request, response.status, size, cycle)
        recorder = self.state.recorder
        if recorder is not None:
            recorder.request_done(
                request.routing, head.method, response.status, time.perf_counter() - cycle.started
            )

    def _record(self, cycle: _Cycle, status: int) -> None:
        recorder = self.state.recorder
        if recorder is not None:
            recorder.request_done(
                cycle.request.routing, cycle.request.head.method, status,
                time.perf_counter() - cycle.started,
            )

    def _write_error(self, status: int, detail: str) -> None:
        """A request refused by the protocol layer (400, 408, 431, 503...)."""
        self.transport.write(encode_error(status, detail, self.state.date))
        recorder = self.state.recorder
        if recorder is not None:
            recorder.request_refused(status)

    def _log_access(self, request: PreparedRequest, status: int, size: int, cycle: _Cycle) -> None:
        log = self.state.access_log
        if log is None:
            return
        conn = self.conn
        head = request.head
        log.record(
            f"{conn.peer_ip}:{conn.peer_port}",  # type: ignore[union-attr]
            head.method,
            head.raw_path.decode("latin-1"),
            status,
            size,
            time.perf_counter() - cycle.started,
            head.http_version,
        )

    async def _send_streaming(
        self, response: StreamingResponse, connection: bytes, head_only: bool
    ) -> int:
        length = response.content_length
        transport = self.transport
        transport.write(
            encode_streaming_head(
                response.status, response.header_block(), length, self.state.date, connection
            )
        )
        if head_only:
            return 0
        # The head is out: RESPONSE_TIMEOUT no longer applies (a body may take
        # as long as it needs); only a client that stops reading is bounded.
        self.phase = Phase.SENDING
        self.deadline = INF
        chunked = length is None
        sent = 0

        async def write(data: bytes) -> None:
            nonlocal sent
            if not data:
                return
            sent += len(data)
            transport.write(encode_chunk(data) if chunked else data)
            if self.flow.paused:
                await self._wait_for_client()

        await response.send_body(write)
        if chunked:
            transport.write(LAST_CHUNK)
        return sent

    async def _wait_for_client(self) -> None:
        """The transport's buffer is full: wait, with the stall clock running."""
        if self.phase is Phase.SENDING:
            self.stall_mark = self.transport.get_write_buffer_size()
            self._body_progress()
        await self.flow.drain()

    def _body_progress(self) -> None:
        """The body moved (bytes taken by the socket): restart the stall clock.

        Also the hook for a body written outside the transport (sendfile):
        call it after each piece sent, and hold the future awaited for the
        socket through ``flow.wait`` so that ``_check_stall`` sees the wait.
        """
        self.deadline = self.loop.time() + self.state.limits.response_write_timeout_s

    def _check_stall(self, now: float) -> None:
        """SENDING deadline: abort only if the client took nothing at all."""
        if not self.flow.is_waiting:
            self.deadline = INF  # not waiting on the client: the handler is producing
            return
        size = self.transport.get_write_buffer_size()
        if size < self.stall_mark:
            # The client took some bytes, if not yet down to the low-water
            # mark that resume_writing reports: that is progress.
            self.stall_mark = size
            self.deadline = now + self.state.limits.response_write_timeout_s
            return
        conn = self.conn
        error_log.warning(
            "response body to %s:%s stalled for %ss (client not reading): connection aborted",
            conn.peer_ip if conn else "?", conn.peer_port if conn else 0,
            self.state.limits.response_write_timeout_s,
        )
        self._abort()

    def _after_response(self) -> None:
        state = self.state
        state.requests_served += 1
        if state.requests_served >= state.recycle_at:
            state.recycle_at = NEVER  # once
            state.on_recycle()
        if self.phase is Phase.CLOSED:
            return
        if self.queue and (self.keep_alive or self.pending_error is not None):
            self.phase = Phase.READING
            self.resume_input()
            self._maybe_start()
            return
        if self.pending_error is not None:
            status, detail = self.pending_error
            self.pending_error = None
            self._write_error(status, detail)
            self._close_lingering()
            return
        if not self.keep_alive:
            self._close_lingering()
            return
        self.resume_input()
        if self.parser.in_message:
            self.phase = Phase.READING
            self.deadline = self.loop.time() + self.state.limits.request_timeout_s
        else:
            self._go_idle()

    # -- errors, deadlines, closing ---------------------------------------

    def _drop_incomplete(self) -> None:
        """Forget the request being read: it will never complete."""
        incoming = self.incoming
        if incoming is not None:
            self.incoming = None
            if incoming.reader is not None:
                incoming.reader.end()
            elif incoming in self.queue:
                self.queue.remove(incoming)

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a request we will not serve, then close.

        Requests already complete are answered first; the error response is
        the last one on the connection.
        """
        self.input_closed = True
        self._drop_incomplete()
        if self.task is not None or self.queue:
            self.pending_error = (status, detail)
            self._maybe_start()
            return
        self.keep_alive = False
        self._write_error(status, detail)
        self._close_lingering()

    def check_deadline(self, now: float) -> None:
        if now < self.deadline:
            return
        phase = self.phase
        if phase is Phase.IDLE:
            self.transport.close()
            self.phase = Phase.CLOSED
        elif phase is Phase.READING:
            self._refuse(408, "Request Timeout")
        elif phase is Phase.HANDLING:
            self._response_timeout()
        elif phase is Phase.SENDING:
            self._check_stall(now)
        elif phase is Phase.CLOSING:
            self.transport.close()
            self.phase = Phase.CLOSED

    def _response_timeout(self) -> None:
        task = self.task
        self.keep_alive = False
        self.queue.clear()
        if task is not None:
            task.cancel()
            self.task = None
        if self.upgrade_tail is not None:
            error_log.warning("WebSocket handshake not answered within the timeout")
        self._write_error(503, "Service Unavailable")
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close without destroying the response we just wrote.

        Closing a socket whose receive buffer holds unread bytes makes the
        kernel send RST, which can discard our response before the client
        reads it. So: shut down our sending side, read and discard until the
        client closes (or a short deadline passes), then close.
        """
        if self.phase in (Phase.CLOSING, Phase.CLOSED):
            return
        self.phase = Phase.CLOSING
        self.deadline = self.loop.time() + LINGER_S
        self.resume_input()
        transport = self.transport
        if transport.can_write_eof():
            try:
                transport.write_eof()
                return
            except (OSError, RuntimeError):
                pass
        transport.close()

    def _abort(self) -> None:
        self.phase = Phase.CLOSED
        self.transport.abort()

    def on_drain(self, code: int, reason: str) -> None:
        """Draining: an idle keep-alive connection is closed now (SPEC §5).

        Idle means no byte of a next request has arrived. A request already
        on its way when we close meets a close before any byte of its
        response, which an HTTP client retries on a new connection (RFC 9112
        §9.3.1); waiting for the keep-alive timeout instead would hold the
        drain (and a reload) for that long. A connection reading a request
        gets its response with ``Connection: close`` (``state.draining``). A
        new connection that has not sent its first request yet is left to
        send it: its client has nothing to retry on.
        """
        if self.phase is Phase.IDLE and self.went_idle:
            self.phase = Phase.CLOSED
            self.transport.close()

    # -- read flow control -------------------------------------------------

    def pause_input(self) -> None:
        if not self.input_paused_by_us and self.phase is not Phase.CLOSED:
            self.input_paused_by_us = True
            self.transport.pause_reading()

    def resume_input(self) -> None:
        if self.input_paused_by_us and self.phase is not Phase.CLOSED:
            self.input_paused_by_us = False
            self.transport.resume_reading()


async def _serve_websocket(
    app: AppHandler[Any], request: PreparedRequest, channel: WebSocketConnection
) -> None:
    await app.handle_websocket(request, channel)


def _connection_info(transport: Any, state: ServerState) -> ConnectionInfo:
    peer = transport.get_extra_info("peername")
    sock = transport.get_extra_info("sockname")
    scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
    if isinstance(peer, tuple):
        peer_ip, peer_port = str(peer[0]), int(peer[1])
    else:
        peer_ip, peer_port = "", 0
    if isinstance(sock, tuple):
        server_host, server_port = str(sock[0]), int(sock[1])
    else:
        server_host, server_port = str(sock or ""), 0
    return ConnectionInfo(peer_ip, peer_port, server_host, server_port, scheme, state.forwarded)
