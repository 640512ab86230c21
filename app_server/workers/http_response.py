"""Writing one HTTP response on a connection's transport.

Owns: turning the app's response into bytes on the transport (complete
bodies in one ``transport.write``, streamed bodies chunked or with their
length, files through ``sendfile``), the ``Connection`` header that states
the keep-alive decision, and what is recorded per response (access log
line, metrics). The connection's rules (``ResponseTarget.rules``) make the keep-alive
decision; the target records when a body starts and makes progress.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from app_server.protocols.http.connection import HttpConnection
from app_server.protocols.http.framing import (
    CONNECTION_CLOSE,
    CONNECTION_KEEP_ALIVE,
    LAST_CHUNK,
    encode_chunk,
    encode_error,
    encode_response,
    encode_streaming_head,
)
from app_server.workers.app_contract import (
    BaseResponse,
    ConnectionInfo,
    FileResponse,
    HTTPResponse,
    PreparedRequest,
    StreamingResponse,
)
from app_server.workers.flow_control import FlowControl
from app_server.workers.http_cycle import Cycle
from app_server.workers.sendfile import send_file
from app_server.workers.state import ServerState

error_log = logging.getLogger("app_server.error")


class ResponseTarget(Protocol):
    """The connection a response is written on (``HttpProtocol``)."""

    transport: Any
    state: ServerState
    flow: FlowControl
    conn: ConnectionInfo | None
    rules: HttpConnection

    def body_started(self) -> None: ...

    def body_progress(self) -> None: ...

    def waiting_on_client(self) -> None: ...


async def send_response(
    target: ResponseTarget, request: PreparedRequest, response: BaseResponse, cycle: Cycle
) -> None:
    head = request.head
    state = target.state
    keep_alive = target.rules.response_keep_alive(
        head.keep_alive, state.draining, cycle.reader is not None and not cycle.complete
    )
    connection = (
        (b"" if head.http_version == "1.1" else CONNECTION_KEEP_ALIVE)
        if keep_alive
        else CONNECTION_CLOSE
    )
    head_only = head.method == "HEAD"
    if response.__class__ is HTTPResponse or not isinstance(response, StreamingResponse):
        body = response.body  # type: ignore[attr-defined]  # every non-streaming response has one
        target.transport.write(
            encode_response(
                response.status, response.header_block(), body, state.date, connection, head_only
            )
        )
        size = len(body)
    elif isinstance(response, FileResponse):
        # send_file writes the head before it first waits: from then on only
        # a client that takes nothing is bounded (as for a stream).
        target.body_started()
        size = await send_file(
            target,
            response,
            head.method,
            head.headers,
            state.date,
            connection,
            target.body_progress,
        )
    else:
        size = await _send_streaming(target, response, connection, head_only)
    if state.access_log is not None:
        log_access(target, request, response.status, size, cycle)
    recorder = state.recorder
    if recorder is not None:
        recorder.request_done(
            request.routing, head.method, response.status, time.perf_counter() - cycle.started
        )


async def _send_streaming(
    target: ResponseTarget, response: StreamingResponse, connection: bytes, head_only: bool
) -> int:
    length = response.content_length
    transport = target.transport
    transport.write(
        encode_streaming_head(
            response.status, response.header_block(), length, target.state.date, connection
        )
    )
    if head_only:
        return 0
    target.body_started()
    chunked = length is None
    sent = 0
    flow = target.flow

    async def write(data: bytes) -> None:
        nonlocal sent
        if not data:
            return
        if transport.is_closing():
            # The peer reset the connection: writes would vanish without ever
            # pausing, and a producer that never waits would never yield.
            raise ConnectionResetError("client disconnected")
        sent += len(data)
        transport.write(encode_chunk(data) if chunked else data)
        if flow.paused:
            # The transport's buffer is full: wait, with the stall clock running.
            target.waiting_on_client()
            await flow.drain()

    await response.send_body(write)
    if chunked:
        transport.write(LAST_CHUNK)
    return sent


def write_rejection(target: ResponseTarget, response: BaseResponse, cycle: Cycle | None) -> None:
    """A refused WebSocket handshake, answered over HTTP (the caller closes)."""
    if not isinstance(response, HTTPResponse):
        response = HTTPResponse("WebSocket handshake refused", 500)
    state = target.state
    body = response.body
    target.transport.write(
        encode_response(
            response.status, response.header_block(), body, state.date, CONNECTION_CLOSE, False
        )
    )
    state.count_served()
    if cycle is not None:
        log_access(target, cycle.request, response.status, len(body), cycle)
        record(target, cycle, response.status)


def record(target: ResponseTarget, cycle: Cycle, status: int) -> None:
    recorder = target.state.recorder
    if recorder is not None:
        request = cycle.request
        recorder.request_done(
            request.routing, request.head.method, status, time.perf_counter() - cycle.started
        )


def log_access(
    target: ResponseTarget, request: PreparedRequest, status: int, size: int, cycle: Cycle
) -> None:
    log = target.state.access_log
    if log is None:
        return
    conn = target.conn
    head = request.head
    log.record(
        f"{conn.peer_ip}:{conn.peer_port}",  # type: ignore[union-attr]  # set in connection_made
        head.method,
        head.raw_path.decode("latin-1"),
        status,
        size,
        time.perf_counter() - cycle.started,
        head.http_version,
    )


def write_error(target: ResponseTarget, status: int, detail: str) -> None:
    """A request refused by the protocol layer (400, 408, 431, 503...)."""
    target.transport.write(encode_error(status, detail, target.state.date))
    recorder = target.state.recorder
    if recorder is not None:
        recorder.request_refused(status)


def shut_down_writing(transport: Any) -> None:
    """Send FIN after the last response, keep reading (a lingering close);
    a transport that cannot half-close is closed."""
    if transport.can_write_eof():
        try:
            transport.write_eof()
            return
        except (OSError, RuntimeError):
            pass
    transport.close()


def log_stall(target: ResponseTarget) -> None:
    conn = target.conn
    error_log.warning(
        "response body to %s:%s stalled for %ss (client not reading): connection aborted",
        conn.peer_ip if conn else "?",
        conn.peer_port if conn else 0,
        target.state.timeouts.write_s,
    )
