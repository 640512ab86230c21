"""The HTTP/1.1 connection's transport glue: bytes from the socket to the app and back.

Owns: ``HttpProtocol``, the ``asyncio.Protocol`` that feeds the parser, keeps
the queue of pipelined requests (answered in order, one handler at a time),
starts handlers, writes each response in one ``transport.write``, hands a
WebSocket upgrade to ``ws_protocol`` and pauses or resumes the transport.
The rules it follows (the phase and its deadline, keep-alive, what comes
after a response, the error after the queued responses, drain, the
``--limit-concurrency`` refusal, the write-stall rule) are decided by the
sans-IO ``protocols.http.connection.HttpConnection``; this module only
carries the decisions out. Deadlines are checked by the worker's ticker
(``ServerState.tick``), so the hot path arms no timer per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from app_server.metrics.sink import UNMATCHED
from app_server.protocols.http.connection import (
    CLOSE_SOCKET,
    CLOSED,
    LINGERING_CLOSE,
    NEXT_REQUEST,
    REQUEST_TIMEOUT,
    RESPONSE_TIMEOUT,
    SEND_ERROR,
    SENDING,
    UPGRADED,
    HttpConnection,
)
from app_server.protocols.http.events import RequestHead, RouteMatch
from app_server.protocols.http.framing import CONTINUE_RESPONSE
from app_server.protocols.http.parser import REQUEST_END, RequestParser
from app_server.protocols.websocket.handshake import UpgradeRefused, read_offer
from app_server.workers.app_contract import (
    AppHandler,
    BaseResponse,
    ConnectionInfo,
    HTTPResponse,
    ResponseAborted,
)
from app_server.workers.flow_control import FlowControl
from app_server.workers.http_cycle import Cycle, StreamedBody, connection_info
from app_server.workers.http_response import (
    log_access,
    log_stall,
    record,
    send_response,
    shut_down_writing,
    write_error,
    write_rejection,
)
from app_server.workers.state import NEVER, ServerState
from app_server.workers.ws_protocol import WebSocketConnection

error_log = logging.getLogger("app_server.error")


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "state",
        "transport",
        "conn",
        "flow",
        "app",
        "loop",
        "rules",
        "queue",
        "incoming",
        "task",
        "input_paused_by_us",
        "upgrade_tail",
        "_ws_cycle",
    )

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.transport: Any = None
        self.conn: ConnectionInfo | None = None
        self.flow = FlowControl()
        self.app: AppHandler[Any] = state.app
        self.loop = loop
        limits = state.limits
        self.rules = HttpConnection(
            RequestParser(limits.request_max_header_size, limits.request_max_size),
            state.timeouts,
            0.0,
        )
        self.queue: deque[Cycle] = deque()
        self.incoming: Cycle | None = None
        self.task: asyncio.Task[None] | None = None
        self.input_paused_by_us = False
        # Bytes that followed a WebSocket upgrade request (already frames).
        self.upgrade_tail: bytes | None = None
        self._ws_cycle: Cycle | None = None

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        state = self.state
        self.conn = connection_info(transport, state.forwarded)
        connections = state.connections
        connections.add(self)
        self.rules.over_limit = len(connections) > state.max_connections
        self.rules.deadline = self.loop.time() + state.timeouts.keep_alive_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.rules.closed()
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
        if self.rules.peer_finished(self.task is not None or bool(self.queue)):
            self.transport.close()
            return None
        return True  # half-closed with requests in flight: answer them, then close

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.rules.phase is SENDING:  # the client took bytes: the stall clock restarts
            self.body_progress()
        self.flow.resume_writing()

    def data_received(self, data: bytes) -> None:
        rules = self.rules
        events = rules.receive_data(data, self.loop.time())
        if events is None:
            return  # lingering close or no more requests: read and discard
        if events:
            self._on_events(events)
        if rules.refusal is not None:
            self._refuse(*rules.take_refusal())  # type: ignore[misc]  # checked just above
            return
        if (upgraded_at := rules.parser.upgraded_at) >= 0:
            rules.upgrade_seen(self.upgrade_tail is not None)
            if self.upgrade_tail is not None:
                # A WebSocket handshake is pending: what follows is for it.
                self.upgrade_tail = data[upgraded_at:]
                self.pause_input()

    # -- request events ----------------------------------------------------

    def _on_events(self, events: list[Any]) -> None:
        for event in events:
            cycle = self.incoming
            if event.__class__ is bytes:
                if cycle is not None:
                    cycle.take_body(event)
            elif event is REQUEST_END:
                if cycle is not None:
                    cycle.end_body()
                    self.incoming = None
            else:
                self._on_head(event)
        events.clear()
        self._maybe_start()

    def _on_head(self, head: RequestHead) -> None:
        conn: ConnectionInfo = self.conn  # type: ignore[assignment]  # set in connection_made
        if head.upgrade == b"websocket":
            cycle = Cycle(self.app.prepare_websocket(head, conn), None)
            cycle.websocket = True
            self.upgrade_tail = b""
            self.incoming = cycle
            self.queue.append(cycle)
            return
        request = self.app.prepare(head, conn)
        reader = None
        if request.routing.streams_body:
            reader = StreamedBody(self)
            request.set_stream(reader)
        cycle = Cycle(request, reader)
        self.incoming = cycle
        self.queue.append(cycle)
        if self.rules.should_pause_reading(len(self.queue)):
            self.pause_input()
        if head.expect_continue:
            self.transport.write(CONTINUE_RESPONSE)

    def _maybe_start(self) -> None:
        rules = self.rules
        if self.task is not None or not self.queue:
            rules.maybe_quiet(self.loop.time(), bool(self.queue))
            return
        cycle = self.queue[0]
        if not (cycle.complete or cycle.reader is not None):  # body complete, or streamed
            return
        self.queue.popleft()
        rules.handler_started(self.loop.time(), cycle.websocket)
        state = self.state
        if state.access_log is not None or state.recorder is not None:
            cycle.started = time.perf_counter()
        if cycle.websocket:
            self._start_websocket(cycle)
            return
        self.task = self.loop.create_task(self._run(cycle))

    # -- running a handler -------------------------------------------------

    async def _run(self, cycle: Cycle) -> None:
        request = cycle.request
        try:
            response = await self.app.handle_http(request)
            await send_response(self, request, response, cycle)
        except asyncio.CancelledError:
            if self.rules.phase is CLOSED:
                return
            raise
        except (ConnectionError, RuntimeError) as exc:
            if self.rules.phase is not CLOSED:
                if exc.__class__ is not ResponseAborted:
                    head = request.head
                    error_log.warning("response to %s %s failed: %s", head.method, head.path, exc)
                self._abort()
            return
        finally:
            self.task = None
        self._after_response()

    def _start_websocket(self, cycle: Cycle) -> None:
        """Hand the upgrade request to the app; it accepts or rejects the handshake."""
        self.rules.keep_alive = False  # whatever happens, no more HTTP on this socket
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
        task = self.loop.create_task(self.app.handle_websocket(request, channel))
        channel.task = task
        self.task = task
        task.add_done_callback(self._websocket_task_done)

    def _websocket_task_done(self, task: asyncio.Task[None]) -> None:
        if self.task is task:
            self.task = None
        if not task.cancelled() and task.exception() is not None:
            error_log.error("WebSocket task failed", exc_info=task.exception())
            if self.rules.phase is not UPGRADED:
                self._abort()

    def upgrade_done(self, websocket: Any) -> bytes:
        """The handshake was accepted: the socket is the WebSocket's from now on."""
        self.rules.upgraded()
        # The WebSocket takes this connection's place in state.connections and
        # counts toward --max-requests when it closes (SPEC §5), not now.
        self.state.connections.discard(self)
        cycle = self._ws_cycle
        if cycle is not None:
            log_access(self, cycle.request, 101, 0, cycle)
            record(self, cycle, 101)
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

    def _write_rejection(self, response: BaseResponse, cycle: Cycle | None) -> None:
        if not self.rules.is_open:
            return
        self.rules.keep_alive = False
        write_rejection(self, response, cycle)
        self._close_lingering()

    def _after_response(self) -> None:
        state = self.state
        state.requests_served += 1
        if state.requests_served >= state.recycle_at:
            state.recycle_at = NEVER  # once
            state.on_recycle()
        rules = self.rules
        if rules.phase is CLOSED:
            return
        step = rules.response_done(self.loop.time(), bool(self.queue))
        if step is SEND_ERROR:
            write_error(self, *rules.took_error())
        if step is SEND_ERROR or step is LINGERING_CLOSE:
            self._close_lingering()
            return
        self.resume_input()
        if step is NEXT_REQUEST:
            self._maybe_start()

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
        """Answer a request we will not serve, after the complete ones, then close."""
        self._drop_incomplete()
        if self.rules.refuse(status, detail, self.task is not None or bool(self.queue)):
            write_error(self, status, detail)
            self._close_lingering()
        else:
            self._maybe_start()

    def check_deadline(self, now: float) -> None:
        expired = self.rules.expired(now)
        if expired is None:
            return
        if expired is CLOSE_SOCKET:
            self.transport.close()
            self.rules.closed()
        elif expired is REQUEST_TIMEOUT:
            self._refuse(408, "Request Timeout")
        elif expired is RESPONSE_TIMEOUT:
            self._response_timeout()
        elif self.rules.check_stall(
            now, self.flow.is_waiting, self.transport.get_write_buffer_size()
        ):
            log_stall(self)
            self._abort()

    def _response_timeout(self) -> None:
        task = self.task
        self.rules.timed_out()
        self.queue.clear()
        if task is not None:
            task.cancel()
            self.task = None
        if self.upgrade_tail is not None:
            error_log.warning("WebSocket handshake not answered within the timeout")
        write_error(self, 503, "Service Unavailable")
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Shut down our sending side, then read and discard until the client
        closes or the linger deadline passes (see ``HttpConnection.start_closing``)."""
        if self.rules.start_closing(self.loop.time()):
            self.resume_input()
            shut_down_writing(self.transport)

    def _abort(self) -> None:
        self.rules.closed()
        self.transport.abort()

    def on_drain(self, code: int, reason: str) -> None:
        """Draining: an idle keep-alive connection is closed now (SPEC §5)."""
        if self.rules.drain_closes():
            self.transport.close()

    # -- what a response being written asks (http_response.ResponseTarget) --

    def body_started(self) -> None:
        self.rules.body_started()

    def body_progress(self) -> None:
        self.rules.body_progress(self.loop.time())

    def waiting_on_client(self) -> None:
        self.rules.waiting_on_client(self.loop.time(), self.transport.get_write_buffer_size())

    # -- read flow control -------------------------------------------------

    def pause_input(self) -> None:
        if not self.input_paused_by_us and self.rules.phase is not CLOSED:
            self.input_paused_by_us = True
            self.transport.pause_reading()

    def resume_input(self) -> None:
        if self.input_paused_by_us and self.rules.phase is not CLOSED:
            self.input_paused_by_us = False
            self.transport.resume_reading()
