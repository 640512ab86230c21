"""The HTTP connection rules (protocols/http/connection.py), driven with byte
literals and clock readings: no loop, no socket."""

from __future__ import annotations

import pytest

from app_server.protocols.http.connection import (
    INF,
    MAX_PIPELINED,
    AfterResponse,
    ConnectionStateError,
    Expired,
    HttpConnection,
    Phase,
    Timeouts,
)
from app_server.protocols.http.events import RequestHead
from app_server.protocols.http.parser import REQUEST_END, RequestParser

TIMEOUTS = Timeouts(
    keep_alive_s=5.0, request_s=60.0, response_s=30.0, write_s=10.0, handshake_s=7.0, linger_s=2.0
)
GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
WEBSOCKET = (
    b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def connection(now: float = 0.0, over_limit: bool = False) -> HttpConnection:
    return HttpConnection(RequestParser(8192, 1 << 20), TIMEOUTS, now, over_limit)


def receive(conn: HttpConnection, data: bytes, now: float) -> list[object]:
    events = conn.receive_data(data, now)
    assert events is not None
    taken = list(events)
    events.clear()  # the caller drains the list
    return taken


def serve_one(conn: HttpConnection, now: float) -> AfterResponse:
    """Handle the request that has arrived and complete its response at ``now``."""
    conn.handler_started(now, websocket=False)
    conn.response_keep_alive(True, draining=False, body_unread=False)
    return conn.response_done(now, queued=False)


# -- deadlines: which one applies now ------------------------------------------


def test_a_new_connection_waits_the_keep_alive_timeout_for_its_first_byte() -> None:
    conn = connection(now=100.0)
    assert conn.phase is Phase.IDLE
    assert conn.expired(104.9) is None
    assert conn.expired(105.0) is Expired.CLOSE_SOCKET


def test_the_request_timeout_runs_from_the_first_byte_and_later_bytes_do_not_extend_it() -> None:
    conn = connection()
    assert receive(conn, b"GE", 3.0) == []
    assert conn.phase is Phase.READING and conn.deadline == 63.0
    assert receive(conn, b"T / HTTP/1.1\r\nHost: a\r\n", 50.0) == []
    assert conn.deadline == 63.0
    assert conn.expired(62.9) is None
    assert conn.expired(63.0) is Expired.REQUEST_TIMEOUT


def test_a_handler_gets_the_response_timeout_and_a_websocket_handshake_its_own() -> None:
    conn = connection()
    events = receive(conn, GET, 1.0)
    assert isinstance(events[0], RequestHead) and events[1] is REQUEST_END
    conn.handler_started(2.0, websocket=False)
    assert conn.phase is Phase.HANDLING and conn.deadline == 32.0
    assert conn.expired(32.0) is Expired.RESPONSE_TIMEOUT

    ws = connection()
    receive(ws, WEBSOCKET, 1.0)
    ws.handler_started(2.0, websocket=True)
    assert ws.deadline == 9.0


def test_a_streamed_body_has_no_deadline_until_it_waits_on_the_client() -> None:
    conn = connection()
    receive(conn, GET, 0.0)
    conn.handler_started(0.0, websocket=False)
    conn.body_started()
    assert conn.phase is Phase.SENDING and conn.deadline == INF
    conn.waiting_on_client(5.0, buffered=1000)
    assert conn.expired(15.0) is Expired.CHECK_STALL
    # The client took some bytes: progress, the stall clock restarts.
    assert conn.check_stall(15.0, waiting=True, buffered=800) is False
    assert conn.deadline == 25.0
    # It took nothing since: the connection is aborted.
    assert conn.check_stall(25.0, waiting=True, buffered=800) is True
    # Not waiting on the client (the handler is producing): no deadline.
    assert conn.check_stall(30.0, waiting=False, buffered=800) is False
    assert conn.deadline == INF


# -- keep-alive ----------------------------------------------------------------


def test_keep_alive_after_a_response_returns_to_idle_with_the_keep_alive_timeout() -> None:
    conn = connection()
    receive(conn, GET, 1.0)
    assert serve_one(conn, 2.0) is AfterResponse.KEEP_ALIVE
    assert conn.phase is Phase.IDLE and conn.deadline == 7.0


@pytest.mark.parametrize(
    ("request_keep_alive", "draining", "body_unread"),
    [(False, False, False), (True, True, False), (True, False, True)],
    ids=["connection-close", "draining", "streamed-body-unread"],
)
def test_keep_alive_ends_on_close_drain_or_an_unread_body(
    request_keep_alive: bool, draining: bool, body_unread: bool
) -> None:
    conn = connection()
    receive(conn, GET, 0.0)
    conn.handler_started(0.0, websocket=False)
    assert conn.response_keep_alive(request_keep_alive, draining, body_unread) is False
    assert conn.response_done(1.0, queued=False) is AfterResponse.LINGERING_CLOSE
    assert conn.start_closing(1.0) is True
    assert conn.phase is Phase.CLOSING and conn.deadline == 3.0
    assert conn.expired(3.0) is Expired.CLOSE_SOCKET
    assert conn.receive_data(GET, 1.5) is None  # lingering: read and discarded
    assert conn.start_closing(1.5) is False  # once


def test_the_request_head_says_whether_the_client_keeps_the_connection() -> None:
    conn = connection()
    head = receive(conn, GET_CLOSE, 0.0)[0]
    assert isinstance(head, RequestHead) and head.keep_alive is False


# -- pipelining ----------------------------------------------------------------


def test_pipelined_requests_come_out_in_order_and_the_next_starts_after_the_response() -> None:
    conn = connection()
    events = receive(conn, GET + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n", 0.0)
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.raw_path for h in heads] == [b"/", b"/second"]
    conn.handler_started(0.0, websocket=False)
    conn.response_keep_alive(True, draining=False, body_unread=False)
    assert conn.response_done(1.0, queued=True) is AfterResponse.NEXT_REQUEST
    assert conn.phase is Phase.READING
    conn.handler_started(1.0, websocket=False)
    assert conn.phase is Phase.HANDLING


def test_a_partly_arrived_next_request_keeps_reading_with_a_fresh_request_timeout() -> None:
    conn = connection()
    receive(conn, GET + b"GET /next HTTP/1.1\r\nHo", 0.0)
    assert serve_one(conn, 4.0) is AfterResponse.READ_REST
    assert conn.phase is Phase.READING and conn.deadline == 64.0


def test_reading_pauses_beyond_the_pipelining_limit() -> None:
    assert HttpConnection.should_pause_reading(MAX_PIPELINED) is False
    assert HttpConnection.should_pause_reading(MAX_PIPELINED + 1) is True


def test_a_reader_with_nothing_queued_and_no_partial_request_goes_idle() -> None:
    conn = connection()
    receive(conn, b"\r\n", 1.0)  # a stray CRLF between requests (RFC 9112 §2.2)
    conn.maybe_quiet(1.0, queued=False)
    assert conn.phase is Phase.IDLE and conn.deadline == 6.0


# -- refusals and the pending error ------------------------------------------------


def test_the_error_of_a_bad_request_goes_out_after_the_requests_queued_before_it() -> None:
    conn = connection()
    events = receive(conn, GET + b"G\x00T / HTTP/1.1\r\n\r\n", 0.0)
    assert isinstance(events[0], RequestHead) and events[1] is REQUEST_END
    status, _ = conn.take_refusal() or (0, "")
    assert status == 400 and conn.take_refusal() is None
    # The first request's handler runs: the error waits for its response.
    assert conn.refuse(400, "Invalid method", busy=True) is False
    assert conn.receive_data(GET, 0.5) is None  # no more requests are read
    conn.handler_started(0.0, websocket=False)
    conn.response_keep_alive(True, draining=False, body_unread=False)
    assert conn.response_done(1.0, queued=False) is AfterResponse.SEND_ERROR
    assert conn.took_error() == (400, "Invalid method")
    assert conn.pending_error is None


def test_a_refusal_with_nothing_in_flight_is_answered_at_once_and_closes() -> None:
    conn = connection()
    receive(conn, b"GET / HT", 0.0)
    assert conn.refuse(408, "Request Timeout", busy=False) is True
    assert conn.keep_alive is False and conn.input_closed is True


def test_a_connection_beyond_the_concurrency_limit_gets_a_503_and_no_request() -> None:
    conn = connection(over_limit=True)
    assert receive(conn, GET, 0.0) == []
    assert conn.take_refusal() == (503, "Service Unavailable")
    assert conn.phase is Phase.IDLE


# -- drain, end of input, upgrade -----------------------------------------------------


def test_a_drain_closes_only_a_connection_idle_after_a_request() -> None:
    fresh = connection()
    assert fresh.drain_closes() is False  # its client has not sent its first request yet
    reading = connection()
    receive(reading, b"GET /", 0.0)
    assert reading.drain_closes() is False  # it gets its response with Connection: close
    idle = connection()
    receive(idle, GET, 0.0)
    serve_one(idle, 1.0)
    assert idle.drain_closes() is True
    assert idle.is_closed


def test_end_of_input_closes_an_idle_connection_and_lets_one_in_flight_finish() -> None:
    idle = connection()
    assert idle.peer_finished(busy=False) is True and idle.is_closed
    busy = connection()
    receive(busy, GET, 0.0)
    busy.handler_started(0.0, websocket=False)
    assert busy.peer_finished(busy=True) is False
    assert busy.keep_alive is False and busy.phase is Phase.HANDLING


def test_a_websocket_upgrade_ends_http_input_and_the_rest_is_for_the_websocket() -> None:
    conn = connection()
    data = WEBSOCKET + b"\x81\x00"
    events = receive(conn, data, 0.0)
    assert isinstance(events[0], RequestHead) and events[0].upgrade == b"websocket"
    assert data[conn.upgraded_at :] == b"\x81\x00"
    conn.upgrade_seen(websocket_pending=True)
    assert conn.input_closed and conn.keep_alive  # its handshake response decides
    conn.handler_started(0.0, websocket=True)
    conn.upgraded()
    assert conn.phase is Phase.UPGRADED and conn.expired(1e9) is None


def test_an_upgrade_we_do_not_serve_is_answered_then_closed() -> None:
    conn = connection()
    receive(conn, b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", 0.0)
    assert conn.upgraded_at >= 0
    conn.upgrade_seen(websocket_pending=False)
    assert conn.keep_alive is False and conn.input_closed


# -- the transition table ------------------------------------------------------------


def test_an_illegal_transition_names_the_state_and_the_expected_states() -> None:
    conn = connection()
    with pytest.raises(ConnectionStateError) as caught:
        conn.body_started()  # a body before any handler ran
    message = str(caught.value)
    assert "SENDING" in message and "from IDLE" in message and "HANDLING" in message
    assert caught.value.current is Phase.IDLE and caught.value.target is Phase.SENDING


def test_a_closed_connection_cannot_start_a_handler() -> None:
    conn = connection()
    receive(conn, GET, 0.0)
    conn.closed()
    with pytest.raises(ConnectionStateError):
        conn.handler_started(1.0, websocket=False)


def test_requests_queued_before_a_refused_one_are_all_answered_before_its_error() -> None:
    conn = connection()
    events = receive(conn, GET + GET + b"G\x00T / HTTP/1.1\r\n\r\n", 0.0)
    assert sum(isinstance(e, RequestHead) for e in events) == 2
    status, detail = conn.take_refusal() or (0, "")
    assert conn.refuse(status, detail, busy=True) is False
    conn.handler_started(0.0, websocket=False)
    # Even when this response ends keep-alive (here: the worker drains), the
    # request queued behind it is answered, then the error.
    conn.response_keep_alive(True, draining=True, body_unread=False)
    assert conn.response_done(1.0, queued=True) is AfterResponse.NEXT_REQUEST
    conn.handler_started(1.0, websocket=False)
    assert conn.response_done(2.0, queued=False) is AfterResponse.SEND_ERROR
